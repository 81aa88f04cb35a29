//! `agentmesh bench`: measured, reproducible benchmarks. Each writes
//! DIR/report.json (docs/ARCHITECTURE.md section 8 names its fields),
//! DIR/report.md and SVG plots.

pub mod agents;
pub mod crypto;
pub mod failover;
pub mod fanout;
mod pace;
pub mod pbft;
pub mod placement;
mod plots;
pub mod raft;
pub mod report;
mod resources;
pub mod storm;
mod summary;
pub mod workers;

pub use agents::{agents, AgentsOptions};
pub use fanout::{fanout, FanoutOptions};
pub use pbft::{pbft, PbftOptions};
pub use placement::{placement, PlacementOptions};
pub use raft::{raft, RaftOptions};
pub use storm::{storm, StormOptions};
pub use summary::summary;
