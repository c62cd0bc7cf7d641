//! epoll(7), checked: the broker's loop waits on every descriptor it serves
//! in one call whose cost does not grow with the number of connections
//! (`poll(2)` walks and registers every descriptor at every wake-up: with
//! sixteen callers that was most of the broker's time per job). Level
//! triggered: a descriptor left readable is reported again.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up (always reported, whatever was asked).
pub const ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// Events reported at most per wait; more are reported by the next one.
const BATCH: usize = 256;

/// An epoll instance and the buffer its events are read into.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoll({})", self.fd.as_raw_fd())
    }
}

impl Epoll {
    /// A new, empty instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH] })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is valid for the call; the kernel copies it.
        unsafe { syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event)) }.map(drop)
    }

    /// Watches `fd` for `events`, reported with `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Stops watching `fd` (closing it does too, when it is its last copy).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Its own descriptor: readable while any registered one is ready, so
    /// a set can be watched from another set.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Waits up to `timeout_ms` (-1: for ever) for events: (token, events)
    /// pairs. A signal's interruption is no events.
    pub fn wait(&mut self, timeout_ms: i64) -> io::Result<impl Iterator<Item = (u64, u32)> + '_> {
        let timeout = timeout_ms.clamp(-1, i32::MAX as i64) as i32;
        let (ptr, len) = (self.events.as_mut_ptr(), self.events.len() as libc::c_int);
        // SAFETY: `events` holds `len` writable epoll_event structs.
        let n = match unsafe { syscall!(epoll_wait(self.fd.as_raw_fd(), ptr, len, timeout)) } {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(self.events[..n].iter().map(|e| (e.u64, e.events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readiness_is_reported_by_token_until_consumed_and_interest_changes() {
        let mut epoll = Epoll::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        epoll.add(b.as_raw_fd(), 7, IN).unwrap();
        assert_eq!(epoll.wait(0).unwrap().count(), 0);
        a.write_all(b"x").unwrap();
        let got: Vec<_> = epoll.wait(1000).unwrap().collect();
        assert_eq!(got, [(7, IN)]);
        // Level-triggered: still there until read.
        assert_eq!(epoll.wait(0).unwrap().count(), 1);
        epoll.modify(b.as_raw_fd(), 8, OUT).unwrap();
        let got: Vec<_> = epoll.wait(0).unwrap().collect();
        assert_eq!(got, [(8, OUT)]);
        epoll.delete(b.as_raw_fd()).unwrap();
        assert_eq!(epoll.wait(0).unwrap().count(), 0);
        // A closed peer is an error or hang-up even when only IN is asked.
        epoll.add(b.as_raw_fd(), 9, IN).unwrap();
        drop(a);
        let got: Vec<_> = epoll.wait(1000).unwrap().collect();
        assert!(got[0].0 == 9 && got[0].1 & (IN | ERR) != 0, "{got:?}");
    }
}
