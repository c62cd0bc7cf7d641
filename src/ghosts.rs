//! `--purge-ghosts`: finds broker processes of this user on an endpoint that
//! are not the broker answering PING there (zombies that lost the endpoint, or
//! a hung broker still holding its lock) and stops them. A stopped process
//! (SIGSTOP, ^Z, a debugger) is spared unless forced: resumed, it would be
//! the live broker.
//!
//! A process counts as a broker by its executable (`/proc/PID/exe` named
//! `powerhose-broker` or `powerhose`), never by its command line alone, and
//! brokers run only to check, report or purge are left alone.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::endpoint::{runtime_dir_path, EndpointLock};
use crate::error::{Error, Result};
use crate::syscall;

/// A broker process that is not the live one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ghost {
    /// Its process id.
    pub pid: u32,
    /// Why it counts as a ghost (it holds the endpoint's lock, or does not answer `PING`).
    pub why: &'static str,
    /// Its command line, for the operator to recognise it.
    pub cmdline: String,
}

const BROKER_EXES: [&str; 2] = ["powerhose-broker", "powerhose"];
const NOT_SERVING: [&str; 3] = ["--check", "--status", "--purge-ghosts"];

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// Whether `pid` runs a broker: by executable, and not as a one-shot command.
fn is_serving_broker(pid: u32) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else { return false };
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = name.trim_end_matches(" (deleted)");
    BROKER_EXES.contains(&name)
        && cmdline(pid).is_some_and(|args| !args.iter().any(|a| NOT_SERVING.contains(&a.as_str())))
}

/// The front endpoint a broker process serves: its `--frontend`, else the
/// default computed from its own environment.
fn frontend_of(pid: u32) -> Option<String> {
    let args = cmdline(pid)?;
    for (i, arg) in args.iter().enumerate() {
        if let Some(v) = arg.strip_prefix("--frontend=") {
            return Some(v.to_string());
        }
        if arg == "--frontend" {
            return args.get(i + 1).cloned();
        }
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    let var = |name: &str| {
        environ.split(|&b| b == 0).find_map(|kv| {
            let rest = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(OsString::from_vec(rest.to_vec()))
        })
    };
    Some(crate::endpoint::frontend_in(&runtime_dir_path(var, uid)))
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    crate::sys::process_state(pid).is_some_and(|s| s != 'Z')
}

/// Broker processes of this user on `frontend` other than `live` (and us).
pub fn find_ghosts(frontend: &str, live: Option<u32>) -> Vec<Ghost> {
    let uid = crate::sys::uid();
    let me = std::process::id();
    let skip = |pid: u32| pid == me || Some(pid) == live;
    let mut ghosts = Vec::new();
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for entry in entries {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let owned = entry.metadata().is_ok_and(|m| m.uid() == uid);
        if skip(pid) || !owned || !is_serving_broker(pid) {
            continue;
        }
        if frontend_of(pid).as_deref() == Some(frontend) {
            ghosts.push(Ghost { pid, why: "serves this endpoint but does not answer PING", cmdline: describe(pid) });
        }
    }
    if let Some(holder) = EndpointLock::holder_pid(frontend) {
        const HOLDS: &str = "holds the endpoint's lock but does not answer PING";
        let owned = std::fs::metadata(format!("/proc/{holder}")).is_ok_and(|m| m.uid() == uid);
        if let Some(ghost) = ghosts.iter_mut().find(|g| g.pid == holder) {
            ghost.why = HOLDS;
        } else if !skip(holder) && owned && is_serving_broker(holder) {
            ghosts.push(Ghost { pid: holder, why: HOLDS, cmdline: describe(holder) });
        }
    }
    ghosts.retain(|g| alive(g.pid));
    ghosts
}

fn describe(pid: u32) -> String {
    cmdline(pid).map(|a| a.join(" ")).unwrap_or_default()
}

/// Tries to PING the broker on `frontend` up to [`PING_TRIES`] times within
/// `timeout`: a broker busy or slow for a moment is still live, never a ghost.
fn live_broker(frontend: &str, timeout: Duration) -> Result<Option<u32>> {
    let client = Client::connect(frontend)?;
    let each = timeout / PING_TRIES;
    Ok((0..PING_TRIES).find_map(|_| client.ping(each).ok()))
}

/// PINGs tried before a broker counts as not answering.
const PING_TRIES: u32 = 3;

/// Whether `pid` is stopped (SIGSTOP, a shell's ^Z, a debugger): it may be
/// resumed, and then it is the live broker again.
pub fn stopped(pid: u32) -> bool {
    matches!(crate::sys::process_state(pid), Some('T' | 't'))
}

/// Finds the live broker by PING, then stops every ghost (SIGTERM, SIGKILL
/// after `grace`), reporting each step on `out`; a stopped ghost only with
/// `force`. Returns how many ghosts were found.
pub fn purge(
    frontend: &str,
    timeout: Duration,
    grace: Duration,
    dry_run: bool,
    force: bool,
    out: &mut impl Write,
) -> Result<usize> {
    let io = |e| Error::io("writing the report")(e);
    let live = live_broker(frontend, timeout)?;
    match live {
        Some(pid) => writeln!(out, "live broker on {frontend}: pid {pid} (spared)").map_err(io)?,
        None => writeln!(out, "no broker answers on {frontend} ({PING_TRIES} PINGs within {timeout:?})").map_err(io)?,
    }
    let ghosts = find_ghosts(frontend, live);
    if ghosts.is_empty() {
        writeln!(out, "no ghost brokers").map_err(io)?;
    }
    for ghost in &ghosts {
        writeln!(out, "ghost broker pid {} ({}): {}", ghost.pid, ghost.why, ghost.cmdline).map_err(io)?;
        if stopped(ghost.pid) && !force {
            // Its silence may be a pause: SIGCONT would make it the live broker again.
            let pid = ghost.pid;
            writeln!(out, "  spared: stopped, not hung (resume it with `kill -CONT {pid}`, or use --force to kill it)")
                .map_err(io)?;
            continue;
        }
        if dry_run {
            writeln!(out, "  dry run: left running").map_err(io)?;
            continue;
        }
        let outcome = stop(ghost.pid, grace);
        writeln!(out, "  {outcome}").map_err(io)?;
    }
    Ok(ghosts.len())
}

fn stop(pid: u32, grace: Duration) -> &'static str {
    // SAFETY: signalling a process we identified as our own ghost broker.
    signalled(unsafe { syscall!(kill(pid as i32, libc::SIGTERM)) }, pid, "SIGTERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid) {
            return "terminated (SIGTERM)";
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above; a hung (even stopped) process still dies on SIGKILL.
    signalled(unsafe { syscall!(kill(pid as i32, libc::SIGKILL)) }, pid, "SIGKILL");
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        "still alive after SIGKILL"
    } else {
        "killed (SIGKILL after the grace period)"
    }
}

/// Logs a failed `kill` but for ESRCH (the ghost exited by itself, which
/// the caller's `alive` check sees next); the outcome line tells the rest.
fn signalled(result: std::io::Result<libc::c_int>, pid: u32, signal: &str) {
    match result {
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => tracing::warn!("could not send {signal} to pid {pid}: {e}"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_process_is_not_a_broker() {
        assert!(!is_serving_broker(std::process::id()));
        assert!(frontend_of(std::process::id()).is_some_and(|f| f.starts_with("unix://")));
        assert!(find_ghosts("ipc:///nonexistent/front.ipc", None).is_empty());
    }

    #[test]
    fn a_stopped_process_is_seen_as_stopped() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        // Running, sleeping, or in an uninterruptible wait while it execs
        // (seen under load): anything but stopped.
        assert!(!stopped(pid), "{pid} stopped before it was signalled: {:?}", crate::sys::process_state(pid));
        // SAFETY: signals the child this test started.
        unsafe { syscall!(kill(pid as i32, libc::SIGSTOP)) }.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped(pid) {
            assert!(Instant::now() < deadline, "{pid} never stopped: {:?}", crate::sys::process_state(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(crate::sys::process_state(pid), None);
    }
}
