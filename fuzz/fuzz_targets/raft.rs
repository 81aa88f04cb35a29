//! Fuzz target: see `agentmesh::fuzzing::raft`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| agentmesh::fuzzing::raft(data));
