//! CPU time and memory of this process or of another one, from /proc
//! (Linux). Elsewhere the figures are absent rather than made up.

use std::time::Duration;

/// A process to read: this one, or a child by its id.
#[derive(Clone, Copy, Debug)]
pub enum Process {
    This,
    Id(u32),
}

impl Process {
    fn file(self, name: &str) -> Option<String> {
        let path = match self {
            Process::This => format!("/proc/self/{name}"),
            Process::Id(id) => format!("/proc/{id}/{name}"),
        };
        std::fs::read_to_string(path).ok()
    }
}

/// User plus system CPU time this process has used.
pub fn cpu_time() -> Option<Duration> {
    cpu_time_of(Process::This)
}

/// User plus system CPU time `process` has used.
pub fn cpu_time_of(process: Process) -> Option<Duration> {
    let stat = process.file("stat")?;
    // The command name may hold spaces; fields count from after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_s = clock_ticks_per_second();
    Some(Duration::from_secs_f64(
        (user + system) as f64 / ticks_per_s,
    ))
}

/// Resident memory of this process now (`VmRSS`) and at its peak
/// (`VmHWM`), in bytes.
pub fn resident_bytes() -> Option<(u64, u64)> {
    resident_bytes_of(Process::This)
}

/// Resident memory of `process` now and at its peak, in bytes.
pub fn resident_bytes_of(process: Process) -> Option<(u64, u64)> {
    let status = process.file("status")?;
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
