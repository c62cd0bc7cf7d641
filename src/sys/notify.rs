//! Readiness notifications in systemd's `sd_notify` form: a datagram of
//! `KEY=VALUE` lines (`READY=1`, `STATUS=...`, `WATCHDOG=1`) sent to the
//! unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! one). systemd reads them for `Type=notify` units; a `powerhose` pool that
//! has no local broker reads its own workers' the same way ([`Listener`]).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

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
