//! This process's CPU time and memory, from /proc (Linux). Elsewhere the
//! figures are absent rather than made up.

use std::time::Duration;

/// User plus system CPU time this process has used.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields count from after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_s = clock_ticks_per_second();
    Some(Duration::from_secs_f64(
        (user + system) as f64 / ticks_per_s,
    ))
}

/// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
pub fn resident_bytes() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kilobytes * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The kernel's USER_HZ: 100 on every Linux this runs on (it is fixed by
/// the ABI, whatever HZ the kernel was built with).
fn clock_ticks_per_second() -> f64 {
    100.0
}
