//! Wake-ups that poll loops can wait on next to their ZeroMQ sockets: a
//! self-pipe written by signal handlers (SIGTERM and SIGINT for a stop,
//! SIGCHLD, SIGHUP, ...) or by `trigger` from another thread.

use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::syscall;

/// Clonable handle; every clone sees the same wake-ups.
#[derive(Clone, Debug)]
pub struct Wakeup {
    inner: Arc<(UnixStream, UnixStream)>,
}

impl Wakeup {
    /// A handle that nothing triggers yet.
    pub fn new() -> Result<Self> {
        let (read, write) = UnixStream::pair().map_err(Error::io("creating the shutdown pipe"))?;
        read.set_nonblocking(true).map_err(Error::io("shutdown pipe"))?;
        write.set_nonblocking(true).map_err(Error::io("shutdown pipe"))?;
        Ok(Wakeup { inner: Arc::new((read, write)) })
    }

    /// Also trigger on these signals (the handler only writes to the pipe).
    pub fn on_signals(self, signals: &[i32]) -> Result<Self> {
        for &sig in signals {
            let write = self.inner.1.try_clone().map_err(Error::io("shutdown pipe"))?;
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
        // A full pipe already holds a stop request.
        let _ = (&self.inner.1).write(&[1]);
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
/// poll sees.
pub fn poll(items: &mut [zmq::PollItem<'_>], timeout_ms: i64) -> Result<i32> {
    match zmq::poll(items, timeout_ms) {
        Ok(n) => Ok(n),
        Err(zmq::Error::EINTR) => Ok(0),
        Err(e) => Err(Error::zmq("polling")(e)),
    }
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
    }
}
