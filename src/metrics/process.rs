//! The process's own resident memory and CPU time, read at each scrape.
//! Under `powerhose` the broker runs in the supervisor's process: the
//! figures are that process's (the supervisor's threads mostly sleep).

/// Memory and CPU of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessUsage {
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// User and system CPU time of all its threads, in seconds.
    pub cpu_seconds: f64,
}

impl ProcessUsage {
    /// Now, read as the bench reads any process's ([`crate::bench::procs`]);
    /// a figure that cannot be read is 0 (a scrape never fails for it).
    pub fn now() -> ProcessUsage {
        use crate::bench::procs;
        ProcessUsage {
            resident_bytes: procs::rss(std::process::id()),
            cpu_seconds: procs::own_cpu_time().as_secs_f64(),
        }
    }
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
