//! Processes for benchmarks: spawned with a guard that kills them on drop,
//! optionally pinned to one CPU, and measured (CPU time of all their threads,
//! resident memory) through /proc.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::syscall;

/// A child process killed (SIGKILL) when dropped.
pub struct Guarded {
    /// The process.
    pub child: Child,
}

impl Guarded {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins the calling thread (and so the threads and processes it starts after) to `cpu`.
pub fn pin_self(cpu: usize) -> Result<()> {
    pin_to(cpu).map_err(Error::io(format!("pinning to CPU {cpu}")))
}

/// Pins the calling thread to `cpu`; only async-signal-safe calls, for `pre_exec` too.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    let set = crate::sys::cpu_set_of(cpu).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: sched_setaffinity(0) changes this thread's set; `set` is a whole cpu_set_t.
    unsafe { syscall!(sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)) }.map(drop)
}

/// Starts `exe args`, pinned to `pin` if given, its output discarded.
pub fn spawn(exe: &Path, args: &[&str], pin: Option<usize>, env: &[(&str, &str)]) -> Result<Guarded> {
    start(exe, args, pin, env, Stdio::null())
}

/// Like [`spawn`], with its standard output a pipe to read: how a helper
/// says it is ready.
pub fn spawn_reporting(exe: &Path, args: &[&str], pin: Option<usize>) -> Result<(Guarded, ChildStdout)> {
    let mut guarded = start(exe, args, pin, &[], Stdio::piped())?;
    let out = guarded.child.stdout.take().ok_or_else(|| {
        Error::io(format!("reading {}'s output", exe.display()))(std::io::ErrorKind::BrokenPipe.into())
    })?;
    Ok((guarded, out))
}

fn start(exe: &Path, args: &[&str], pin: Option<usize>, env: &[(&str, &str)], stdout: Stdio) -> Result<Guarded> {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdout(stdout).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls between fork and exec; a refusal
    // fails the spawn (a process that could outlive the bench, or runs
    // unpinned, would spoil its figures).
    unsafe {
        cmd.pre_exec(move || {
            syscall!(prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            pin.map_or(Ok(()), pin_to)
        });
    }
    let child = cmd.spawn().map_err(Error::io(format!("starting {}", exe.display())))?;
    Ok(Guarded { child })
}

/// Child pids of `pid`, forked by any of its threads.
pub fn children(pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids.sort_unstable();
    pids
}

/// CPU time used so far by all threads of `pid` (from schedstat, in ns).
pub fn cpu_time(pid: u32) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

/// CPU time of this process (user + system), all threads, those that ended
/// included (summing the live threads' would go back when one ends).
pub fn own_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes `usage`.
    if let Err(e) = unsafe { syscall!(getrusage(libc::RUSAGE_SELF, &mut usage)) } {
        // Only a bad `who` or pointer fails, neither of which is possible here.
        tracing::warn!("getrusage failed: {e}");
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Resident memory of `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A short description of the machine, for reports.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpus} vCPU, {}", model.unwrap_or("unknown CPU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_and_memory_are_measured() {
        // Accounting may be coarse (clock ticks): work until it moves, bounded.
        let before = own_cpu_time();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while own_cpu_time() == before && start.elapsed() < Duration::from_secs(5) {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(own_cpu_time() > before, "5 s of work did not show in the CPU time");
        assert!(rss(std::process::id()) > 1024 * 1024);
        assert!(machine().contains("vCPU"));
    }
}
