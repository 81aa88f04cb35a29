//! The integration tests, in one binary: each file below is a module,
//! and `common` holds what several share. One binary compiles and links
//! once, which keeps the suite's build short; `cargo test --release
//! --test suite MODULE::` runs one file's tests.

mod agent_api;
mod bench;
mod chaos;
mod cluster;
mod common;
mod config_errors;
mod control;
mod disk_faults;
mod faults;
mod hostile;
mod mesh;
mod mesh_sim;
mod namespaces;
mod pbft;
mod pbft_cluster;
mod placement_cli;
mod placement_cluster;
mod placement_sim;
mod process_agents;
mod processes;
mod protocols;
mod raft;
mod topology;
mod wire;
