//! agentmesh: a runtime for swarms of cooperating agents spread over many
//! hosts. See docs/ARCHITECTURE.md for the architecture; `actors` draws a node's actor
//! tree and data path.

pub mod actors;
pub mod agent_api;
pub mod bench;
pub mod chaos;
pub mod clients;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod fuzzing;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod protocols;
pub mod sim;
