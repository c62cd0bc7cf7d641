//! Readiness notifications in systemd's `sd_notify` form: a datagram of
//! `KEY=VALUE` lines (`READY=1`, `STATUS=...`, `WATCHDOG=1`) sent to the
//! unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! one). systemd reads them for `Type=notify` units; a `powerhose` pool that
//! has no local broker reads its own workers' the same way ([`Listener`]).
//! Under `WatchdogSec=`, systemd also expects `WATCHDOG=1` regularly
//! ([`Watchdog`]), and restarts a service that stops sending it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The environment variable naming the socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The longest notification read; ours are a few dozen bytes.
const MAX_DATAGRAM: usize = 4096;

fn address(name: &str) -> std::io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(name),
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`;
/// `Ok(false)` when the variable is not set (not run by a notify-aware
/// supervisor: nothing to do).
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(name) = std::env::var_os(NOTIFY_SOCKET) else { return Ok(false) };
    let name = name.to_string_lossy();
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address(&name)?)?;
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it: a supervisor
/// that cannot be told must not stop the service.
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("could not notify ${NOTIFY_SOCKET} ({state:?}): {e}");
    }
}

/// The variable systemd sets to the watchdog's period, in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";

/// The variable naming the process the watchdog is for (systemd's main
/// process); a process of another pid must not feed it.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The shortest interval between two `WATCHDOG=1`, whatever
/// `$WATCHDOG_USEC` says: a loop that feeds it must never spin.
const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_millis(1);

/// systemd's watchdog (`WatchdogSec=`): `WATCHDOG=1` is due every half of
/// `$WATCHDOG_USEC` (sd_notify's convention), from a loop whose turning
/// proves the service alive. The schedule is pure ([`due`](Self::due),
/// [`deadline`](Self::deadline)); [`feed`](Self::feed) also sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watchdog {
    interval: Duration,
    next: Instant,
}

impl Watchdog {
    /// The watchdog `vars` describe for process `pid`: `None` unless
    /// `WATCHDOG_USEC` is a positive number and `WATCHDOG_PID` is unset or
    /// `pid`. The first `WATCHDOG=1` is due at `now`.
    pub fn from_env(vars: impl Fn(&str) -> Option<String>, pid: u32, now: Instant) -> Option<Watchdog> {
        let usec: u64 = vars(WATCHDOG_USEC)?.trim().parse().ok().filter(|&usec| usec > 0)?;
        if let Some(for_pid) = vars(WATCHDOG_PID) {
            if for_pid.trim().parse::<u32>().ok() != Some(pid) {
                return None;
            }
        }
        let interval = (Duration::from_micros(usec) / 2).max(MIN_WATCHDOG_INTERVAL);
        Some(Watchdog { interval, next: now })
    }

    /// [`from_env`](Self::from_env) on this process's environment and pid.
    pub fn from_process_env() -> Option<Watchdog> {
        Watchdog::from_env(|name| std::env::var(name).ok(), std::process::id(), Instant::now())
    }

    /// How often `WATCHDOG=1` is sent: half of `$WATCHDOG_USEC`.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next `WATCHDOG=1` is due: a loop's poll must wake by then.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Whether `WATCHDOG=1` is due at `now`; if so the next one is
    /// scheduled an interval after `now` (a late loop is not made to catch up).
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }

    /// Sends `WATCHDOG=1` to `$NOTIFY_SOCKET` if it is [`due`](Self::due).
    pub fn feed(&mut self, now: Instant) {
        if self.due(now) {
            notify_or_log("WATCHDOG=1");
        }
    }
}

/// One notification: its sender's `MAINPID` (else `None`) and whether it
/// says `READY=1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// `MAINPID=`: the process the notification is about.
    pub pid: Option<u32>,
    /// `READY=1`.
    pub ready: bool,
}

/// Reads one datagram's lines.
pub fn parse(datagram: &[u8]) -> Notification {
    let text = String::from_utf8_lossy(datagram);
    let mut n = Notification { pid: None, ready: false };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => n.ready = true,
            Some(("MAINPID", pid)) => n.pid = pid.trim().parse().ok(),
            _ => {}
        }
    }
    n
}

/// A socket that receives notifications, bound at a path (0600 in the
/// caller's private directory); removed on drop.
pub struct Listener {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Listener {
    /// Binds at `path` (an old file there is removed first), non-blocking.
    pub fn bind(path: &Path) -> std::io::Result<Listener> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        socket.set_nonblocking(true)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(Listener { socket, path: path.to_path_buf() })
    }

    /// The value to give children as `$NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The notifications waiting, without blocking.
    pub fn drain(&self) -> Vec<Notification> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut out = Vec::new();
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(parse(&buf[..n]));
        }
        out
    }

    /// The socket's descriptor, to poll.
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_parsed_line_by_line() {
        assert_eq!(parse(b"READY=1\nMAINPID=42\n"), Notification { pid: Some(42), ready: true });
        assert_eq!(parse(b"STATUS=starting"), Notification { pid: None, ready: false });
        assert_eq!(parse(b"READY=0\nMAINPID=x"), Notification { pid: None, ready: false });
        assert_eq!(parse(b""), Notification { pid: None, ready: false });
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_watchdog_is_ours_only_with_a_period_and_our_pid_or_none() {
        let now = Instant::now();
        let dog = Watchdog::from_env(vars(&[("WATCHDOG_USEC", "200000")]), 42, now).unwrap();
        assert_eq!(dog.interval(), Duration::from_millis(100), "half the period");
        assert_eq!(dog.deadline(), now, "the first is due at once");
        let ours = Watchdog::from_env(vars(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "42")]), 42, now);
        assert_eq!(ours, Some(dog));
        for pairs in [
            &[][..],
            &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "43")][..],
            &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "x")][..],
            &[("WATCHDOG_USEC", "0")][..],
            &[("WATCHDOG_USEC", "")][..],
            &[("WATCHDOG_USEC", "-5")][..],
            &[("WATCHDOG_PID", "42")][..],
        ] {
            assert_eq!(Watchdog::from_env(vars(pairs), 42, now), None, "{pairs:?}");
        }
        let tiny = Watchdog::from_env(vars(&[("WATCHDOG_USEC", "1")]), 42, now).unwrap();
        assert_eq!(tiny.interval(), MIN_WATCHDOG_INTERVAL, "never a spinning loop");
    }

    #[test]
    fn the_watchdog_is_due_every_interval_from_when_it_was_last_fed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut dog = Watchdog::from_env(vars(&[("WATCHDOG_USEC", "2000000")]), 1, t0).unwrap();
        assert!(dog.due(t0));
        assert!(!dog.due(t0), "fed: not due again at once");
        assert_eq!(dog.deadline(), t0 + ms(1000));
        assert!(!dog.due(t0 + ms(999)));
        assert!(dog.due(t0 + ms(1000)));
        assert_eq!(dog.deadline(), t0 + ms(2000));
        // A loop that woke late is not made to catch up: one, then an interval.
        assert!(dog.due(t0 + ms(3500)));
        assert!(!dog.due(t0 + ms(4000)));
        assert_eq!(dog.deadline(), t0 + ms(4500));
    }

    #[test]
    fn a_listener_receives_what_is_sent_to_its_path_and_abstract_names_work() {
        let dir = tempfile::tempdir().unwrap();
        let listener = Listener::bind(&dir.path().join("notify")).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let target = address(listener.path().to_str().unwrap()).unwrap();
        sender.send_to_addr(b"READY=1\nMAINPID=7", &target).unwrap();
        assert_eq!(listener.drain(), vec![Notification { pid: Some(7), ready: true }]);
        assert!(listener.drain().is_empty());
        let name = format!("@powerhose-test-{}", std::process::id());
        let abstract_socket = UnixDatagram::bind_addr(&address(&name).unwrap()).unwrap();
        sender.send_to_addr(b"WATCHDOG=1", &address(&name).unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let n = abstract_socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let path = listener.path().to_path_buf();
        drop(listener);
        assert!(!path.exists(), "removed on drop");
    }
}
