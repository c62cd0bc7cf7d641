//! Where and how I/O threads run: CPU affinity for `--io-cpu` (the broker,
//! the workers' I/O threads and a co-located client on one CPU, the job
//! threads on every CPU), and `SCHED_BATCH` for a worker's I/O threads.
//!
//! Why: on a small machine every hand-off between I/O threads that sit on
//! different CPUs costs an inter-processor wake-up (expensive on VMs) and
//! preempts a job thread there; keeping them on one CPU raises CPU-bound
//! jobs' throughput (the figures are in README, "Why the defaults").
//!
//! Linux threads inherit their creator's affinity, so pinning the calling
//! thread while a ZeroMQ context makes its first socket (which starts the I/O
//! thread) places that I/O thread; [`PinGuard`] then gives the caller its
//! own affinity back.
//!
//! Threads inherit the scheduling policy too: [`BatchGuard`] starts a
//! worker's I/O threads under `SCHED_BATCH`, which the kernel never lets
//! preempt a running job thread on wake-up. Under load their messages then
//! wait for the end of the job thread's time slice (a few ms at most) and
//! leave in batches, instead of each costing a preemption and a wake-up
//! down the line: CPU-bound jobs gain throughput, and the broker and the
//! client spend less CPU per job (README, "Why the defaults"). An idle CPU
//! still runs such a thread at once, so a quiet machine's latency is
//! unchanged.

use crate::error::{Error, Result};
use crate::sys::{cpu_isset, cpu_set_of};
use crate::syscall;

const SET_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

/// The calling thread's CPU set.
fn current() -> Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity(0) writes this thread's set into `set`, of SET_SIZE bytes.
    unsafe { syscall!(sched_getaffinity(0, SET_SIZE, &mut set)) }.map_err(Error::io("reading the CPU affinity"))?;
    Ok(set)
}

fn set(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity(0) changes this thread's set only; `set` is SET_SIZE bytes.
    unsafe { syscall!(sched_setaffinity(0, SET_SIZE, set)) }.map(drop)
}

/// The CPUs the calling thread may use, for messages.
fn allowed(of: &libc::cpu_set_t) -> String {
    let cpus: Vec<String> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| cpu_isset(c, of)).map(|c| c.to_string()).collect();
    cpus.join(",")
}

/// Pins the calling thread to `cpu` for good (threads it starts inherit it).
pub fn pin_thread(cpu: usize) -> Result<()> {
    let before = current()?;
    let only = cpu_set_of(cpu).filter(|_| cpu_isset(cpu, &before));
    let Some(only) = only else {
        return Err(Error::BadCpu { cpu, allowed: allowed(&before) });
    };
    set(&only).map_err(Error::io(format!("pinning to CPU {cpu}")))
}

/// Pins the calling thread to a CPU until dropped, then restores its
/// previous affinity; does nothing for `None`.
pub struct PinGuard {
    saved: Option<libc::cpu_set_t>,
}

impl PinGuard {
    /// Pins now; [`Error::BadCpu`] if `cpu` is not one this process may use.
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

/// Runs the calling thread under `SCHED_BATCH` until dropped, then under its
/// policy of before; threads started meanwhile keep `SCHED_BATCH`. Does
/// nothing when off, or when the thread does not run under the default
/// policy (the operator chose another, e.g. with `chrt`).
pub struct BatchGuard {
    active: bool,
}

fn set_policy(policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: on Linux pid 0 is the calling thread; param is a valid struct.
    unsafe { syscall!(sched_setscheduler(0, policy, &param)) }.map(drop)
}

/// The calling thread's scheduling policy.
fn policy() -> std::io::Result<libc::c_int> {
    // SAFETY: no pointers; pid 0 is the calling thread.
    unsafe { syscall!(sched_getscheduler(0)) }
}

impl BatchGuard {
    /// A refusal (a seccomp filter, say) costs only throughput: it is logged
    /// and the threads run under the default policy.
    pub fn new(on: bool) -> BatchGuard {
        if !on {
            return BatchGuard { active: false };
        }
        match policy() {
            Ok(libc::SCHED_OTHER) => {}
            Ok(_) => return BatchGuard { active: false },
            Err(e) => {
                tracing::warn!("I/O threads stay under the default scheduling policy (reading the policy failed: {e})");
                return BatchGuard { active: false };
            }
        }
        if let Err(e) = set_policy(libc::SCHED_BATCH) {
            tracing::warn!("I/O threads stay under the default scheduling policy (SCHED_BATCH refused: {e})");
            return BatchGuard { active: false };
        }
        BatchGuard { active: true }
    }

    /// Whether threads started now run under `SCHED_BATCH`.
    pub fn active(&self) -> bool {
        self.active
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = set_policy(libc::SCHED_OTHER) {
                tracing::warn!("could not restore the scheduling policy: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(cpu: usize) -> bool {
        let set = current().unwrap();
        (0..libc::CPU_SETSIZE as usize).all(|c| cpu_isset(c, &set) == (c == cpu))
    }

    fn policy() -> libc::c_int {
        super::policy().unwrap()
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
    fn a_batch_guard_covers_threads_started_inside_and_restores_the_caller() {
        std::thread::spawn(|| {
            assert_eq!(policy(), libc::SCHED_OTHER);
            let guard = BatchGuard::new(true);
            assert_eq!(policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(policy);
            drop(guard);
            assert_eq!(child.join().unwrap(), libc::SCHED_BATCH, "a thread started under the guard inherits it");
            assert_eq!(policy(), libc::SCHED_OTHER);
            drop(BatchGuard::new(false));
            assert_eq!(policy(), libc::SCHED_OTHER);
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
