//! Fuzz target: see `agentmesh::fuzzing::pbft`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh::fuzzing::pbft(data));
