//! Fuzz target: see `agentmesh::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh::fuzzing::config(data));
