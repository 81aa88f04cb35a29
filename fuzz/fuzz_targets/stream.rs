//! Fuzz target: see `agentmesh::fuzzing::stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh::fuzzing::stream(data));
