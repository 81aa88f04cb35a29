//! Pure, deterministic protocol cores.
//!
//! Everything below this module is sans-I/O: no async runtime, no sockets, no
//! threads, no wall clock and no unseeded randomness. Callers pass time in as
//! plain numbers and perform the effects that the cores return. This keeps
//! every protocol testable by a seeded simulation and replayable by seed.

pub mod supervision;
pub mod topology;
pub mod wire;

/// FNV-1a of `text`: a stable hash for deriving per-name seeds.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
pub mod cluster_state;
pub mod control;
pub mod delivery;
pub mod faults;
pub mod membership;
pub mod mesh;
pub mod pbft;
pub mod placement;
pub mod raft;
pub mod routing;
