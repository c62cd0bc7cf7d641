//! The process's own resident memory and CPU time, read at each scrape.
//! Under `powerhose` the broker runs in the supervisor's process: the
//! figures are that process's (the supervisor's threads mostly sleep).

use crate::syscall;

/// Memory and CPU of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// User and system CPU time of all its threads, in seconds.
    pub cpu_seconds: f64,
}

impl ProcessUsage {
    /// Now; a figure that cannot be read is 0 (a scrape never fails for it).
    pub fn now() -> ProcessUsage {
        ProcessUsage { resident_bytes: resident_bytes().unwrap_or(0), cpu_seconds: cpu_seconds().unwrap_or(0.0) }
    }
}

/// `/proc/self/statm`'s second field (resident pages) times the page size.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { syscall!(sysconf(libc::_SC_PAGESIZE)) }.ok()?;
    Some(pages * u64::try_from(page).ok()?)
}

fn cpu_seconds() -> Option<f64> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes of its own type.
    unsafe { syscall!(getrusage(libc::RUSAGE_SELF, &mut usage)) }.ok()?;
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_spends_cpu() {
        let before = ProcessUsage::now();
        assert!(before.resident_bytes > 1 << 20, "{before:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        assert!(ProcessUsage::now().cpu_seconds > before.cpu_seconds);
    }
}
