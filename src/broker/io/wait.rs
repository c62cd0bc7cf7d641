//! The broker loop's one wait: every descriptor it serves in one epoll set
//! (the ZeroMQ sockets' `ZMQ_FD`s, the shutdown and notice pipes, the local
//! listeners and connections), registered once and changed only when what
//! the loop wants of one changes: a paused front, bytes left to write, a
//! listener pausing for want of descriptors. `poll(2)` registered every
//! descriptor at every wake-up, which with sixteen callers cost the broker
//! more than the messages themselves. Local clients sit in a set of their
//! own, which the loop's set watches as one descriptor: while requests may
//! wait (every worker has short jobs ahead) it is left out, and read at
//! each wake-up instead, so one wake-up reads the requests that came since.

use std::os::fd::RawFd;

use super::local::Ready;
use super::Io;
use crate::error::{Error, Result};
use crate::sys::epoll::{Epoll, ERR, IN, OUT};

/// Tokens: below `SHUTDOWN`, a ZeroMQ socket's slot in the loop's order.
const SHUTDOWN: u64 = 1 << 40;
const INBOX: u64 = SHUTDOWN + 1;
const LISTENER: u64 = 2 << 40;
const PEER: u64 = 3 << 40;
/// The clients' set became readable.
const CLIENTS: u64 = INBOX + 1;

/// What one wait found.
#[derive(Debug, Default)]
pub(in crate::broker) struct Wake {
    /// Per ZeroMQ socket slot: its `ZMQ_FD` fired.
    pub zmq: Vec<bool>,
    /// The shutdown pipe is readable.
    pub stop: bool,
    /// The notice pipe is readable.
    pub inbox: bool,
    /// Local listeners and connections to serve.
    pub local: Vec<Ready>,
}

impl Io<'_> {
    /// Creates the loop's epoll set with its own descriptors: the ZeroMQ
    /// sockets' (`-1`: an empty slot), the shutdown pipe and the notices'.
    pub fn wait_on(&mut self, zmq_fds: &[RawFd], shutdown: RawFd, inbox: Option<RawFd>) -> Result<()> {
        let epoll = Epoll::new().map_err(Error::io("creating the broker's epoll set"))?;
        let add = |fd: RawFd, token: u64| epoll.add(fd, token, IN).map_err(Error::io("watching a descriptor"));
        for (slot, &fd) in zmq_fds.iter().enumerate().filter(|(_, &fd)| fd >= 0) {
            add(fd, slot as u64)?;
        }
        add(shutdown, SHUTDOWN)?;
        if let Some(fd) = inbox {
            add(fd, INBOX)?;
        }
        let clients = Epoll::new().map_err(Error::io("creating the broker's epoll set"))?;
        add(clients.raw_fd(), CLIENTS)?;
        self.zmq_slots = zmq_fds.len();
        self.locals.listening = vec![false; self.locals.listeners.len()];
        self.locals.epoll = Some(epoll);
        self.locals.clients = Some(clients);
        self.locals.clients_watched = true;
        Ok(())
    }

    /// The set a local connection is watched in: the loop's for workers,
    /// the clients' own for clients.
    fn set_of(&self, back: bool) -> Option<&Epoll> {
        if back {
            self.locals.epoll.as_ref()
        } else {
            self.locals.clients.as_ref()
        }
    }

    /// Watches new local connection `i` for reading.
    pub(super) fn register_peer(&self, i: usize, fd: RawFd, back: bool) -> std::io::Result<()> {
        match self.set_of(back) {
            Some(epoll) => epoll.add(fd, PEER + i as u64, IN),
            None => Ok(()),
        }
    }

    /// Stops watching a local connection about to close.
    pub(super) fn unregister_peer(&self, fd: RawFd, back: bool) {
        if let Some(epoll) = self.set_of(back) {
            // Closing the descriptor would do it too; an error only means it is gone.
            let _ = epoll.delete(fd);
        }
    }

    /// Brings the registrations up to date: listeners pause and resume,
    /// clients are not watched while the front is paused (they are read at
    /// every turn then, as the ZeroMQ front is) nor while their replies
    /// back up, and connections with bytes left to write are watched for room.
    fn sync_interest(&mut self, front_paused: bool) {
        let Some(epoll) = &self.locals.epoll else { return };
        for (n, (listener, backoff, _)) in self.locals.listeners.iter().enumerate() {
            let want = backoff.deadline().is_none();
            if want != self.locals.listening[n] {
                let done = match want {
                    true => epoll.add(listener.fd(), LISTENER + n as u64, IN),
                    false => epoll.delete(listener.fd()),
                };
                match done {
                    Ok(()) => self.locals.listening[n] = want,
                    Err(e) => tracing::warn!("could not change how a listener is watched: {e}"),
                }
            }
        }
        let Some(clients) = &self.locals.clients else { return };
        for (i, peer) in self.locals.peers.iter_mut().enumerate() {
            let Some(peer) = peer else { continue };
            let mut want = if peer.back || (!front_paused && !peer.reads_paused()) { IN } else { 0 };
            if peer.conn.unwritten() > 0 {
                want |= OUT;
            }
            if want != peer.interest {
                let set = if peer.back { epoll } else { clients };
                match set.modify(peer.conn.fd(), PEER + i as u64, want) {
                    Ok(()) => peer.interest = want,
                    Err(e) => tracing::warn!("could not change how a local connection is watched: {e}"),
                }
            }
        }
    }

    /// Waits up to `timeout_ms` for any descriptor of the loop; while
    /// `requests_wait`, not for the clients' (they are read all the same).
    pub fn wait(&mut self, timeout_ms: i64, front_paused: bool, requests_wait: bool) -> Result<Wake> {
        self.sync_interest(front_paused);
        self.watch_clients(!requests_wait);
        let mut wake = Wake { zmq: vec![false; self.zmq_slots], ..Wake::default() };
        let epoll = self.locals.epoll.as_mut().expect("wait_on was called");
        let mut clients_ready = !self.locals.clients_watched;
        for (token, events) in epoll.wait(timeout_ms).map_err(Error::io("waiting"))? {
            match token {
                SHUTDOWN => wake.stop = true,
                INBOX => wake.inbox = true,
                CLIENTS => clients_ready = true,
                t if t < SHUTDOWN => wake.zmq[t as usize] = true,
                t if t < PEER => wake.local.push(Ready::Accept((t - LISTENER) as usize)),
                t => wake.local.push(peer_ready(t, events)),
            }
        }
        if clients_ready {
            let clients = self.locals.clients.as_mut().expect("wait_on was called");
            let ready = clients.wait(0).map_err(Error::io("waiting"))?;
            wake.local.extend(ready.map(|(t, events)| peer_ready(t, events)));
        }
        if front_paused {
            // Read at every turn while paused: unwatched, they may hold requests.
            let clients = self.locals.peers.iter().enumerate();
            let clients = clients.filter(|(_, p)| p.as_ref().is_some_and(|p| !p.back && !p.reads_paused()));
            wake.local.extend(clients.map(|(i, _)| Ready::Peer(i, true, false)));
        }
        Ok(wake)
    }

    /// Puts the clients' set in the loop's set, or takes it out.
    fn watch_clients(&mut self, watch: bool) {
        let (Some(epoll), Some(clients)) = (&self.locals.epoll, &self.locals.clients) else { return };
        if watch == self.locals.clients_watched {
            return;
        }
        let done = match watch {
            true => epoll.add(clients.raw_fd(), CLIENTS, IN),
            false => epoll.delete(clients.raw_fd()),
        };
        match done {
            Ok(()) => self.locals.clients_watched = watch,
            Err(e) => tracing::warn!("could not change how the clients are watched: {e}"),
        }
    }
}

/// A local connection's readiness from its token and events.
fn peer_ready(token: u64, events: u32) -> Ready {
    let (read, write) = (events & (IN | ERR) != 0, events & OUT != 0);
    Ready::Peer((token - PEER) as usize, read, write)
}
