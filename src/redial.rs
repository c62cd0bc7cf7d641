//! Dialling a broker again. libzmq reconnects a dropped connection by
//! itself, but gives up on an endpoint for good once a handshake fails
//! (a CURVE key the broker refused: not yet in its allow-list, or removed
//! from it). A socket unconnected for a while is therefore disconnected and
//! connected again, with a backoff: a key allowed later gets in without a
//! restart. The timing is decided here, apart from the socket calls.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::{REDIAL_FIRST, REDIAL_MAX};

/// When to dial again.
#[derive(Debug)]
pub(crate) struct Redial {
    endpoint: String,
    /// When the socket was first seen unconnected, this time round.
    since: Option<Instant>,
    next: Instant,
    backoff: Duration,
}

impl Redial {
    pub fn new(endpoint: &str, now: Instant) -> Redial {
        Redial { endpoint: endpoint.to_string(), since: None, next: now, backoff: REDIAL_FIRST }
    }

    /// Whether to dial again now, given whether the socket is connected.
    pub fn due(&mut self, connected: bool, now: Instant) -> bool {
        if connected {
            self.since = None;
            self.backoff = REDIAL_FIRST;
            return false;
        }
        let since = *self.since.get_or_insert_with(|| {
            self.next = now + REDIAL_FIRST;
            now
        });
        if now < self.next {
            return false;
        }
        debug_assert!(now >= since);
        self.next = now + self.backoff;
        self.backoff = (self.backoff * 2).min(REDIAL_MAX);
        true
    }

    /// When [`Self::due`] may next say yes (while unconnected).
    pub fn next(&self) -> Option<Instant> {
        self.since.map(|_| self.next)
    }

    /// How long the socket has been unconnected.
    pub fn unconnected_for(&self, now: Instant) -> Duration {
        self.since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Disconnects and connects `socket` again if due; true if it did.
    pub fn check(&mut self, socket: &zmq::Socket, connected: bool, now: Instant) -> Result<bool> {
        if !self.due(connected, now) {
            return Ok(false);
        }
        // Not connected: the endpoint may be gone from libzmq's list already.
        let _ = socket.disconnect(&self.endpoint);
        socket.connect(&self.endpoint).map_err(Error::zmq(format!("connecting to {}", self.endpoint)))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconnected_socket_is_redialled_with_a_growing_backoff() {
        let t0 = Instant::now();
        let mut r = Redial::new("tcp://127.0.0.1:1", t0);
        assert!(!r.due(true, t0), "connected: nothing to do");
        assert_eq!(r.next(), None);
        assert!(!r.due(false, t0), "just lost: libzmq gets its chance first");
        assert!(!r.due(false, t0 + REDIAL_FIRST - Duration::from_millis(1)));
        let mut at = t0 + REDIAL_FIRST;
        let mut gap = REDIAL_FIRST;
        for _ in 0..8 {
            assert!(r.due(false, at), "due at {:?}", at - t0);
            assert!(!r.due(false, at), "once");
            assert_eq!(r.next(), Some(at + gap));
            at += gap;
            gap = (gap * 2).min(REDIAL_MAX);
        }
        assert_eq!(r.unconnected_for(at), at - t0);
        // Connected again: the next loss starts from the first delay.
        assert!(!r.due(true, at));
        assert!(!r.due(false, at));
        assert_eq!(r.next(), Some(at + REDIAL_FIRST));
    }
}
