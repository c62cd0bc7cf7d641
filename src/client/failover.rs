//! The failover policy of a client of several brokers, apart from any I/O:
//! which broker the next request goes to, when a broker counts as down and
//! when it is tried again. Times are passed in, so tests state them.
//!
//! A broker is up until its connection drops, a request cannot be sent to it
//! within [`BROKER_SEND_WAIT`], or a ping is not answered within
//! [`BROKER_SILENCE`]; it is up again as soon as anything it sends arrives.
//! An up broker not heard from for [`BROKER_PROBE_INTERVAL`] is pinged; a
//! down one is pinged after a backoff ([`BROKER_RETRY_FIRST`] doubling to
//! [`BROKER_RETRY_MAX`]), or at once when its socket connects again.

use std::time::{Duration, Instant};

#[allow(unused_imports)] // named in the docs above
use crate::protocol::{BROKER_PROBE_INTERVAL, BROKER_RETRY_FIRST, BROKER_RETRY_MAX, BROKER_SEND_WAIT, BROKER_SILENCE};

#[derive(Clone, Copy, Debug)]
struct Down {
    /// When to ping it again.
    retry_at: Instant,
    backoff: Duration,
}

#[derive(Clone, Copy, Debug)]
struct State {
    /// When it last answered anything.
    heard: Instant,
    down: Option<Down>,
}

/// The state of every broker, by index.
#[derive(Debug)]
pub(crate) struct Failover {
    brokers: Vec<State>,
    /// Where the round robin goes on from.
    next: usize,
}

impl Failover {
    /// `n` brokers, all taken as up until one shows otherwise.
    pub fn new(n: usize, now: Instant) -> Failover {
        Failover { brokers: vec![State { heard: now, down: None }; n], next: 0 }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.brokers[i].down.is_none()
    }

    /// The broker for the next request, skipping those in `tried`: the up
    /// ones in turn; when none is left, the down ones, the one to be retried
    /// soonest first (a request to it is one more way to learn it is back);
    /// `None` once all were tried.
    pub fn pick(&mut self, tried: &[usize]) -> Option<usize> {
        let n = self.brokers.len();
        let fresh = |i: &usize| !tried.contains(i);
        if let Some(i) = (0..n).map(|k| (self.next + k) % n).filter(fresh).find(|&i| self.is_up(i)) {
            self.next = (i + 1) % n;
            return Some(i);
        }
        (0..n).filter(fresh).min_by_key(|&i| self.brokers[i].down.map(|d| d.retry_at))
    }

    /// It answered something: up, its backoff forgotten.
    pub fn heard(&mut self, i: usize, now: Instant) {
        self.brokers[i] = State { heard: now, down: None };
    }

    /// Its connection dropped, a request could not be sent, or a ping went
    /// unanswered: down, pinged again after the backoff (doubled if it was
    /// down already and this was such a ping).
    pub fn lost(&mut self, i: usize, now: Instant) {
        let backoff = match self.brokers[i].down {
            Some(d) if now >= d.retry_at => (d.backoff * 2).min(BROKER_RETRY_MAX),
            Some(_) => return,
            None => BROKER_RETRY_FIRST,
        };
        self.brokers[i].down = Some(Down { retry_at: now + backoff, backoff });
    }

    /// Its socket connected again: ping it now rather than after the backoff.
    pub fn connected(&mut self, i: usize, now: Instant) {
        if let Some(d) = &mut self.brokers[i].down {
            d.retry_at = d.retry_at.min(now);
        }
    }

    /// When broker `i` should next be pinged.
    pub fn probe_at(&self, i: usize) -> Instant {
        let b = &self.brokers[i];
        b.down.map_or(b.heard + BROKER_PROBE_INTERVAL, |d| d.retry_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn requests_go_round_the_up_brokers_and_skip_those_tried() {
        let t0 = Instant::now();
        let mut f = Failover::new(3, t0);
        assert_eq!([f.pick(&[]), f.pick(&[]), f.pick(&[]), f.pick(&[])], [Some(0), Some(1), Some(2), Some(0)]);
        f.lost(2, t0);
        assert_eq!([f.pick(&[]), f.pick(&[]), f.pick(&[])], [Some(1), Some(0), Some(1)], "2 is skipped");
        assert_eq!(f.pick(&[0, 1]), Some(2), "down, but the only one left");
        assert_eq!(f.pick(&[0, 1, 2]), None);
    }

    #[test]
    fn with_none_up_the_one_retried_soonest_goes_first() {
        let t0 = Instant::now();
        let mut f = Failover::new(2, t0);
        f.lost(1, t0);
        f.lost(0, t0 + 100 * MS);
        assert_eq!(f.pick(&[]), Some(1));
        assert_eq!(f.pick(&[1]), Some(0));
    }

    #[test]
    fn a_down_broker_is_pinged_with_a_growing_backoff_until_it_answers() {
        let t0 = Instant::now();
        let mut f = Failover::new(1, t0);
        assert_eq!(f.probe_at(0), t0 + BROKER_PROBE_INTERVAL, "up and quiet: pinged");
        f.heard(0, t0 + 300 * MS);
        assert_eq!(f.probe_at(0), t0 + 300 * MS + BROKER_PROBE_INTERVAL, "any answer puts the ping off");
        f.lost(0, t0);
        assert!(!f.is_up(0));
        assert_eq!(f.probe_at(0), t0 + BROKER_RETRY_FIRST);
        f.lost(0, t0 + MS);
        assert_eq!(f.probe_at(0), t0 + BROKER_RETRY_FIRST, "a second report before the retry changes nothing");
        let mut t = t0 + BROKER_RETRY_FIRST;
        let mut backoff = BROKER_RETRY_FIRST;
        for _ in 0..10 {
            f.lost(0, t); // the ping at the retry time went unanswered
            backoff = (backoff * 2).min(BROKER_RETRY_MAX);
            assert_eq!(f.probe_at(0), t + backoff);
            t += backoff;
        }
        assert_eq!(backoff, BROKER_RETRY_MAX, "capped");
        f.connected(0, t - MS);
        assert_eq!(f.probe_at(0), t - MS, "connected again: pinged at once");
        f.heard(0, t);
        assert!(f.is_up(0));
        f.lost(0, t + MS);
        assert_eq!(f.probe_at(0), t + MS + BROKER_RETRY_FIRST, "back up: the backoff starts over");
    }
}
