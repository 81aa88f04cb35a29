//! Fuzz target: see `agentmesh::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh::fuzzing::frame(data));
