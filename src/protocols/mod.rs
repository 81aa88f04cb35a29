//! Pure, deterministic protocol cores.
//!
//! Everything below this module is sans-I/O: no async runtime, no sockets, no
//! threads, no wall clock and no unseeded randomness. Callers pass time in as
//! plain numbers and perform the effects that the cores return. This keeps
//! every protocol testable by a seeded simulation and replayable by seed.

pub mod supervision;
pub mod wire;
