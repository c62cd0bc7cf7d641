//! A one-shot monotonic timer (timerfd) that a poll loop waits on next to
//! its ZeroMQ sockets: the worker's pulse thread sends held results when it
//! fires (see `worker::coalesce`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Arming and disarming cost a syscall but wake nobody; only a timer that
/// fires does.
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// A disarmed timer (a monotonic-clock timerfd).
    pub fn new() -> std::io::Result<Timer> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { syscall!(timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)) }?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Timer { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Fires once after `after` (zero disarms).
    pub fn set(&self, after: Duration) {
        let value = libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as _ };
        let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: valid descriptor and itimerspec; the old value is not wanted.
        let set = unsafe { syscall!(timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())) };
        // Only an invalid value fails, and a Duration is never one (tv_nsec < 10^9, no
        // negative): nothing for the caller to do, but a failure must not pass unseen.
        if let Err(e) = set {
            tracing::warn!("could not set a timer to {after:?}: {e}");
        }
    }

    /// Consumes a firing so the descriptor stops being readable.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer.
        match unsafe { syscall!(read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())) } {
            // EAGAIN: it had not fired (or was cleared already), nothing to consume.
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                tracing::warn!("could not clear a timer: {e}")
            }
            _ => {}
        }
    }

    /// Readable once the timer has fired, until [`clear`](Self::clear).
    pub fn poll_item(&self) -> zmq::PollItem<'static> {
        zmq::PollItem::from_fd(self.fd.as_raw_fd(), zmq::POLLIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_timer_fires_once_and_can_be_disarmed() {
        let timer = Timer::new().unwrap();
        let mut items = [timer.poll_item()];
        timer.set(MS);
        assert_eq!(zmq::poll(&mut items, 1000).unwrap(), 1);
        timer.clear();
        assert_eq!(zmq::poll(&mut items, 0).unwrap(), 0, "cleared");
        timer.set(MS);
        timer.set(Duration::ZERO);
        assert_eq!(zmq::poll(&mut items, 20).unwrap(), 0, "disarmed");
    }
}
