//! Unix `SOCK_SEQPACKET` sockets and an epoll set: the plumbing of the
//! relay floor (bench/relay.rs). A local transport that keeps message
//! boundaries with nothing between the program and the kernel, so the relay
//! measures what any local broker must pay at least.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::syscall;

/// A listening or connected `SOCK_SEQPACKET` socket, closed on drop.
pub struct Seq(OwnedFd);

/// The local transport's address of `path` (a path too long is refused).
fn address(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    crate::local::conn::address(path).map_err(|_| Error::IpcPathTooLong { path: path.to_path_buf() })
}

/// Owns a descriptor a call just returned.
fn owned(fd: RawFd) -> Seq {
    // SAFETY: `fd` was just returned by socket or accept4 and nothing else holds it.
    Seq(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Seq {
    fn new() -> io::Result<Seq> {
        // SAFETY: socket takes no pointers.
        unsafe { syscall!(socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0)) }.map(owned)
    }

    /// A socket listening on `path` (which must not exist yet).
    pub fn listen(path: &Path) -> Result<Seq> {
        let (addr, len) = address(path)?;
        let context = || format!("listening on {}", path.display());
        let s = Seq::new().map_err(Error::io(context()))?;
        // SAFETY: bind reads `len` bytes from `addr`, a sockaddr_un at least that long.
        unsafe { syscall!(bind(s.fd(), (&addr as *const libc::sockaddr_un).cast(), len)) }
            .map_err(Error::io(context()))?;
        // SAFETY: listen takes no pointers.
        unsafe { syscall!(listen(s.fd(), 128)) }.map_err(Error::io(context()))?;
        Ok(s)
    }

    /// A socket connected to the one listening on `path`.
    pub fn connect(path: &Path) -> Result<Seq> {
        let (addr, len) = address(path)?;
        let context = || format!("connecting to {}", path.display());
        let s = Seq::new().map_err(Error::io(context()))?;
        // SAFETY: connect reads `len` bytes from `addr`, a sockaddr_un at least that long.
        unsafe { syscall!(connect(s.fd(), (&addr as *const libc::sockaddr_un).cast(), len)) }
            .map_err(Error::io(context()))?;
        Ok(s)
    }

    /// The next connection on a listening socket.
    pub fn accept(&self) -> io::Result<Seq> {
        // SAFETY: null address pointers: the peer's address is not asked for.
        let fd =
            unsafe { syscall!(accept4(self.fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)) }?;
        Ok(owned(fd))
    }

    /// Sends `msg` as one message.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: send reads msg.len() bytes from `msg`. MSG_NOSIGNAL: a
            // peer that left makes EPIPE, not a SIGPIPE that kills the sender.
            match unsafe { syscall!(send(self.fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL)) } {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A SOCK_SEQPACKET message goes whole or not at all.
                other => return other.map(drop),
            }
        }
    }

    /// Receives one message into `buf`: its length, 0 once the peer closed
    /// (the relay sends no empty message, so 0 is never a message).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: recv writes at most buf.len() bytes into `buf`; with
            // MSG_TRUNC it returns the message's whole length, so a message
            // cut short is seen rather than relayed truncated.
            match unsafe { syscall!(recv(self.fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC)) } {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(n) if n as usize > buf.len() => {
                    let what = format!("a {n}-byte message for a {}-byte buffer", buf.len());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, what));
                }
                Ok(n) => return Ok(n as usize),
            }
        }
    }

    /// Makes `recv` fail with `EAGAIN` after `wait` without a message, so a
    /// helper that died or hung cannot stall the bench for good.
    pub fn set_recv_timeout(&self, wait: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_usec: wait.subsec_micros() as libc::suseconds_t,
        };
        let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: setsockopt reads `len` bytes from `tv`, a whole timeval.
        unsafe {
            syscall!(setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                len
            ))
        }
        .map(drop)
    }

    /// The descriptor, for an epoll set.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An epoll set of descriptors, each with a token, for readability only.
pub struct Epoll(OwnedFd);

impl Epoll {
    /// An empty set.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: `fd` was just returned by epoll_create1 and nothing else holds it.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for input; `wait` reports it with `token`. Closing
    /// `fd` takes it out of the set.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: epoll_ctl reads one epoll_event from `event`.
        unsafe { syscall!(epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)) }.map(drop)
    }

    /// Waits for input on any descriptor of the set: the tokens of those
    /// ready, into `tokens` (cleared first).
    pub fn wait(&self, events: &mut [libc::epoll_event], tokens: &mut Vec<u64>) -> io::Result<()> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        let n = loop {
            // SAFETY: epoll_wait writes at most `max` events into `events`.
            match unsafe { syscall!(epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, -1)) } {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        tokens.clear();
        // A by-value read of the (packed on x86-64) struct's field.
        tokens.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// Whether `fd` has input within `wait` (false when the time ran out).
pub fn readable_within(fd: RawFd, wait: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: poll reads and writes the one pollfd in `pfd`.
        match unsafe { syscall!(poll(&mut pfd, 1, ms)) } {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // POLLHUP counts: the read that follows sees the end.
            other => return other.map(|n| n > 0),
        }
    }
}
