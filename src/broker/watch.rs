//! Polling the broker's ZeroMQ sockets without paying for them when only
//! local (`unix://`) peers are talking.
//!
//! `zmq_poll` reads every ZeroMQ socket's `ZMQ_EVENTS` at every wake-up, and
//! each read of an idle socket is a `poll(2)` of its mailbox: five system
//! calls per wake-up of the broker's loop, whatever woke it. Here each socket
//! is polled through its `ZMQ_FD`, which libzmq signals when the socket's
//! state may have changed, and `ZMQ_EVENTS` is read only after that signal,
//! or after a turn of the loop that used a ZeroMQ socket (a send or receive
//! can consume the signal: libzmq's documentation asks for a fresh read of
//! `ZMQ_EVENTS` after each).

use crate::error::{Error, Result};

/// The ZeroMQ sockets of the loop, in a fixed order, and what is known of them.
pub(super) struct Watch<'s> {
    sockets: Vec<Option<&'s zmq::Socket>>,
    fds: Vec<std::os::fd::RawFd>,
    /// `ZMQ_EVENTS` must be read before the next sleep.
    check: bool,
    /// Readable at the last read of `ZMQ_EVENTS`.
    ready: Vec<bool>,
}

impl<'s> Watch<'s> {
    /// Watches these sockets (`None`: a slot with nothing to watch).
    pub fn new(sockets: Vec<Option<&'s zmq::Socket>>) -> Result<Watch<'s>> {
        let fd = |s: &Option<&zmq::Socket>| s.map_or(Ok(-1), |s| s.get_fd().map_err(Error::zmq("ZMQ_FD")));
        let fds = sockets.iter().map(fd).collect::<Result<Vec<_>>>()?;
        let ready = vec![false; sockets.len()];
        Ok(Watch { sockets, fds, check: true, ready })
    }

    /// Reads `ZMQ_EVENTS` if due; true if a socket is readable now (the
    /// loop must then not sleep).
    pub fn settle(&mut self) -> Result<bool> {
        if std::mem::take(&mut self.check) {
            for i in 0..self.sockets.len() {
                self.refresh(i)?;
            }
        }
        Ok(self.ready.iter().any(|&r| r))
    }

    fn refresh(&mut self, i: usize) -> Result<()> {
        if let Some(socket) = self.sockets[i] {
            self.ready[i] = socket.get_events().map_err(Error::zmq("ZMQ_EVENTS"))?.contains(zmq::POLLIN);
        }
        Ok(())
    }

    /// Each socket's `ZMQ_FD` (`-1` for an empty slot), to wait on.
    pub fn fds(&self) -> &[std::os::fd::RawFd] {
        &self.fds
    }

    /// After the wait: the sockets whose `ZMQ_FD` fired are read again.
    pub fn fired(&mut self, fired: &[bool]) -> Result<()> {
        for (i, &fired) in fired.iter().enumerate().take(self.sockets.len()) {
            if fired {
                self.refresh(i)?;
            }
        }
        Ok(())
    }

    /// Whether socket `i` had messages at the last look.
    pub fn readable(&self, i: usize) -> bool {
        self.ready[i]
    }

    /// Whether any socket had something this turn.
    pub fn any(&self) -> bool {
        self.ready.iter().any(|&r| r)
    }

    /// This turn used a ZeroMQ socket: look at all of them before sleeping.
    pub fn used(&mut self) {
        self.check = true;
        self.ready.fill(false);
    }
}
