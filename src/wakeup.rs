//! Wake-ups that poll loops can wait on next to their ZeroMQ sockets: a
//! self-pipe written by signal handlers (SIGTERM and SIGINT for a stop,
//! SIGCHLD, SIGHUP, ...) or by `trigger` from another thread.

use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::syscall;

/// Clonable handle; every clone sees the same wake-ups.
#[derive(Clone, Debug)]
pub struct Wakeup {
    inner: Arc<(UnixStream, UnixStream)>,
    /// Set by every trigger and signal, never cleared: see [`Wakeup::ever_triggered`].
    ever: Arc<AtomicBool>,
}

impl Wakeup {
    /// A handle that nothing triggers yet.
    pub fn new() -> Result<Self> {
        let (read, write) = UnixStream::pair().map_err(Error::io("creating the shutdown pipe"))?;
        read.set_nonblocking(true).map_err(Error::io("shutdown pipe"))?;
        write.set_nonblocking(true).map_err(Error::io("shutdown pipe"))?;
        Ok(Wakeup { inner: Arc::new((read, write)), ever: Arc::default() })
    }

    /// Also trigger on these signals (the handler only sets a flag and
    /// writes to the pipe).
    pub fn on_signals(self, signals: &[i32]) -> Result<Self> {
        for &sig in signals {
            let write = self.inner.1.try_clone().map_err(Error::io("shutdown pipe"))?;
            // The flag first: a poller the pipe wakes finds it set.
            signal_hook::flag::register(sig, Arc::clone(&self.ever))
                .map_err(Error::io(format!("installing handler for signal {sig}")))?;
            signal_hook::low_level::pipe::register(sig, write)
                .map_err(Error::io(format!("installing handler for signal {sig}")))?;
        }
        Ok(self)
    }

    /// Triggers on SIGTERM and SIGINT.
    pub fn on_terminate(self) -> Result<Self> {
        self.on_signals(&[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
    }

    /// Wakes every poller of this handle (and its clones) until cleared.
    pub fn trigger(&self) {
        self.ever.store(true, Ordering::Release);
        // A full pipe already holds a stop request.
        let _ = (&self.inner.1).write(&[1]);
    }

    /// Whether it was ever triggered, cleared or not: for a stop, which is
    /// never cleared, the same answer as [`Wakeup::requested`] without a
    /// system call (a lane asks between every two jobs).
    pub fn ever_triggered(&self) -> bool {
        self.ever.load(Ordering::Acquire)
    }

    /// Whether a stop was requested (does not consume it).
    pub fn requested(&self) -> bool {
        let mut buf = [0u8; 1];
        // SAFETY: MSG_PEEK on our own non-blocking socket into a 1-byte buffer.
        match unsafe { syscall!(recv(self.fd(), buf.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)) } {
            Ok(n) => n > 0,
            // EAGAIN: nothing written since the last clear.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // Our own socket pair, open as long as `self`: not expected; the
            // poll on fd() still sees a request.
            Err(e) => {
                tracing::warn!("could not peek at the wake-up pipe: {e}");
                false
            }
        }
    }

    /// Consumes pending requests; returns how many there were (one per
    /// `trigger` or signal, so counted signals like SIGTTIN add up).
    pub fn clear(&self) -> usize {
        let mut buf = [0u8; 64];
        let mut count = 0;
        while let Ok(n @ 1..) = (&self.inner.0).read(&mut buf) {
            count += n;
        }
        count
    }

    /// The fd to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.inner.0.as_raw_fd()
    }

    /// A poll item for `zmq::poll`.
    pub fn poll_item(&self) -> zmq::PollItem<'static> {
        zmq::PollItem::from_fd(self.fd(), zmq::POLLIN)
    }
}

/// `zmq::poll` that treats a signal's interruption (EINTR) as "nothing ready":
/// the signal handlers here only write to a [`Wakeup`] pipe, which the next
/// poll sees. Items that are all plain descriptors (no ZeroMQ socket) go to
/// one `poll(2)`: `zmq_poll` makes two (a first pass that does not wait).
pub fn poll(items: &mut [zmq::PollItem<'_>], timeout_ms: i64) -> Result<i32> {
    if let Some(n) = poll_fds(items, timeout_ms)? {
        return Ok(n);
    }
    match zmq::poll(items, timeout_ms) {
        Ok(n) => Ok(n),
        Err(zmq::Error::EINTR) => Ok(0),
        Err(e) => Err(Error::zmq("polling")(e)),
    }
}

/// `zmq_pollitem_t`, which `zmq::PollItem` is (`#[repr(C)]`, the same
/// fields in the same order: the zmq crate passes it to `zmq_poll` as one).
#[repr(C)]
struct RawItem {
    socket: *mut std::ffi::c_void,
    fd: RawFd,
    events: libc::c_short,
    revents: libc::c_short,
}

const _: () = assert!(std::mem::size_of::<RawItem>() == std::mem::size_of::<zmq::PollItem<'static>>());
const _: () = assert!(std::mem::align_of::<RawItem>() == std::mem::align_of::<zmq::PollItem<'static>>());

/// [`poll`] for descriptors only; `None` if an item is a ZeroMQ socket.
fn poll_fds(items: &mut [zmq::PollItem<'_>], timeout_ms: i64) -> Result<Option<i32>> {
    // SAFETY: RawItem has PollItem's layout (checked above for size and
    // alignment; both are zmq_pollitem_t), and the slice is borrowed
    // mutably for as long as `raw` lives.
    let raw = unsafe { std::slice::from_raw_parts_mut(items.as_mut_ptr().cast::<RawItem>(), items.len()) };
    if raw.iter().any(|item| !item.socket.is_null()) {
        return Ok(None);
    }
    // ZeroMQ's event bits differ from poll(2)'s past POLLIN (and the zmq
    // crate has no POLLPRI, which nothing here asks for).
    let to_libc = |e: libc::c_short| {
        let mut out = 0;
        for (z, l) in [(zmq::POLLIN, libc::POLLIN), (zmq::POLLOUT, libc::POLLOUT)] {
            if e & z.bits() != 0 {
                out |= l;
            }
        }
        out
    };
    // On the stack for the few items of a worker's or a caller's wait: this
    // runs once per job there.
    let mut stack = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 8];
    let mut heap = Vec::new();
    let fds: &mut [libc::pollfd] = match stack.get_mut(..raw.len()) {
        Some(fds) => fds,
        None => {
            heap.resize(raw.len(), libc::pollfd { fd: -1, events: 0, revents: 0 });
            &mut heap
        }
    };
    for (fd, item) in fds.iter_mut().zip(raw.iter()) {
        *fd = libc::pollfd { fd: item.fd, events: to_libc(item.events), revents: 0 };
    }
    let timeout = timeout_ms.clamp(-1, i32::MAX as i64) as i32;
    // SAFETY: `fds` is a valid array of fds.len() pollfds.
    let n = match unsafe { crate::syscall!(poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout)) } {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(Error::io("polling")(e)),
    };
    for (item, fd) in raw.iter_mut().zip(fds.iter()) {
        let mut revents = 0;
        for (l, z) in [(libc::POLLIN, zmq::POLLIN), (libc::POLLOUT, zmq::POLLOUT)] {
            if fd.revents & l != 0 {
                revents |= z.bits();
            }
        }
        // As zmq_poll does: anything else (POLLERR, POLLHUP, POLLNVAL) is an error.
        if fd.revents & !(libc::POLLIN | libc::POLLOUT) != 0 {
            revents |= zmq::POLLERR.bits();
        }
        item.revents = revents;
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_is_seen_by_clones_and_clear_resets() {
        let a = Wakeup::new().unwrap();
        let b = a.clone();
        assert!(!b.requested());
        a.trigger();
        assert!(b.requested());
        let mut items = [b.poll_item()];
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 1);
        b.clear();
        assert!(!a.requested());
        assert!(a.ever_triggered(), "cleared, but it was triggered");
    }

    #[test]
    fn a_signal_is_seen_without_reading_the_pipe() {
        let a = Wakeup::new().unwrap().on_signals(&[libc::SIGURG]).unwrap();
        let b = Wakeup::new().unwrap();
        assert!(!a.ever_triggered());
        // SAFETY: raise(3) with a signal whose handler is installed above;
        // it runs before raise returns, on this thread.
        assert_eq!(unsafe { libc::raise(libc::SIGURG) }, 0);
        assert!(a.ever_triggered() && a.requested());
        assert!(!b.ever_triggered(), "another wake-up is not triggered by it");
    }

    #[test]
    fn descriptors_alone_are_polled_directly_with_zeromqs_event_bits() {
        let (a, b) = (Wakeup::new().unwrap(), Wakeup::new().unwrap());
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(y);
        let mut items = [
            a.poll_item(),
            b.poll_item(),
            zmq::PollItem::from_fd(x.as_raw_fd(), zmq::POLLOUT),
            zmq::PollItem::from_fd(-1, zmq::POLLIN),
        ];
        assert_eq!(poll(&mut items, 0).unwrap(), 1);
        assert!(!items[0].is_readable() && items[2].is_error() && items[3].get_revents().is_empty());
        b.trigger();
        assert_eq!(poll(&mut items, 1000).unwrap(), 2);
        assert!(!items[0].is_readable() && items[1].is_readable());
        // With a ZeroMQ socket among them, zmq_poll does it.
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::PAIR).unwrap();
        let mut items = [b.poll_item(), socket.as_poll_item(zmq::POLLIN)];
        assert_eq!(poll(&mut items, 0).unwrap(), 1);
        assert!(items[0].is_readable() && !items[1].is_readable());
    }
}
