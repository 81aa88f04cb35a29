//! The process's clocks: a monotonic one for timers and round trips, and
//! the wall clock for envelope timestamps. Only the shells read them; the
//! pure protocols are handed the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds on a clock that never goes back, shared by the process
/// (for timers and round trips, never sent as a time of day).
pub fn monotonic_micros() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Milliseconds on the same clock (for timers).
pub fn monotonic_ms() -> u64 {
    monotonic_micros() / 1_000
}

/// Wall-clock microseconds since the Unix epoch (for envelope timestamps,
/// which are compared across nodes).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}
