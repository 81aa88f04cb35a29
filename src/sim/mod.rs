//! Seeded, virtual-time simulations of the pure protocol cores. Everything
//! here is deterministic given its seed: a failing run is replayed by
//! running the same seed again.

pub mod linearizability;
pub mod mesh;
pub mod pbft;
pub mod placement;
pub mod raft;
