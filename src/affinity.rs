//! CPU affinity for `--io-cpu`: the broker, the workers' I/O threads (libzmq's
//! and the pulse thread) and a co-located client on one CPU, the job threads
//! on every CPU.
//!
//! Why: on a small machine every hand-off between I/O threads that sit on
//! different CPUs costs an inter-processor wake-up (expensive on VMs) and
//! preempts a job thread there. Measured on the 2-vCPU test VM with two
//! crypto_job workers (README): ~100 µs jobs went from 71–76% to 79–81% of
//! the in-process throughput, ~1 ms jobs from 93–94% to 95%.
//!
//! Linux threads inherit their creator's affinity, so pinning the calling
//! thread while a ZeroMQ context makes its first socket (which starts the I/O
//! thread) places that I/O thread; [`PinGuard`] then gives the caller its
//! own affinity back.

use crate::error::{Error, Result};

/// The calling thread's CPU set.
fn current() -> Result<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity(0) reads this thread's set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(Error::io("reading the CPU affinity")(std::io::Error::last_os_error()));
        }
        Ok(set)
    }
}

fn set(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity(0) changes this thread's set only.
    match unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The CPUs the calling thread may use, for messages.
fn allowed(of: &libc::cpu_set_t) -> String {
    let cpus: Vec<String> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, of) }).map(|c| c.to_string()).collect();
    cpus.join(",")
}

/// Pins the calling thread to `cpu` for good (threads it starts inherit it).
pub fn pin_thread(cpu: usize) -> Result<()> {
    let before = current()?;
    if cpu >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(cpu, &before) } {
        return Err(Error::Config(format!("--io-cpu {cpu}: not a CPU this process may use ({})", allowed(&before))));
    }
    // SAFETY: a zeroed cpu_set_t is valid; cpu < CPU_SETSIZE was checked.
    let mut only: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut only) };
    set(&only).map_err(Error::io(format!("pinning to CPU {cpu}")))
}

/// Pins the calling thread to a CPU until dropped, then restores its
/// previous affinity; does nothing for `None`.
pub struct PinGuard {
    saved: Option<libc::cpu_set_t>,
}

impl PinGuard {
    pub fn new(cpu: Option<usize>) -> Result<PinGuard> {
        let Some(cpu) = cpu else { return Ok(PinGuard { saved: None }) };
        let saved = current()?;
        pin_thread(cpu)?;
        Ok(PinGuard { saved: Some(saved) })
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            if let Err(e) = set(saved) {
                tracing::warn!("could not restore the CPU affinity: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(cpu: usize) -> bool {
        let set = current().unwrap();
        (0..libc::CPU_SETSIZE as usize).all(|c| unsafe { libc::CPU_ISSET(c, &set) } == (c == cpu))
    }

    #[test]
    fn a_guard_pins_threads_started_inside_and_restores_the_caller() {
        // On a thread of its own: the test harness's threads keep their affinity.
        std::thread::spawn(|| {
            let before = allowed(&current().unwrap());
            let guard = PinGuard::new(Some(0)).unwrap();
            assert!(only(0));
            let child = std::thread::spawn(|| only(0));
            drop(guard);
            assert!(child.join().unwrap(), "a thread started under the guard inherits the pin");
            assert_eq!(allowed(&current().unwrap()), before);
            assert!(PinGuard::new(None).is_ok());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_impossible_cpu_is_a_one_line_error() {
        let err = PinGuard::new(Some(100_000)).err().unwrap().to_string();
        assert!(err.contains("--io-cpu 100000: not a CPU this process may use"), "{err}");
        assert!(!err.contains('\n'));
    }
}
