//! Result coalescing: a worker holds finished results briefly and sends
//! several together, in one write, so one wake-up of the broker serves
//! several jobs. It does so under backlog at the broker, and while jobs
//! given ahead wait at hand (many callers each waiting on one job).
//!
//! Every message costs each process on its way a few thread wake-ups in
//! libzmq, and on a small VM a wake-up costs more than a short job's
//! messaging. A result is held only when the broker said other jobs waited
//! there as this one left (`JOB_BACKLOG`) and the worker has another job at
//! hand: clients' jobs are queuing anyway, and the held results never wait
//! longer than the coalescing time. A job that runs over what the worker expects cannot
//! stretch that: a timer ([`crate::sys::Timer`]) wakes the pulse thread,
//! which sends them.

use super::socket::BrokerSocket;
use std::time::{Duration, Instant};

use super::wire::{send_raw, send_result};
use crate::protocol::{ResultTail, Status, HOLD_AHEAD_JOBS, HOLD_AHEAD_MAX, MAX_HELD};

/// A finished job whose result is not sent yet.
pub struct Finished {
    /// The broker that sent the job: its socket's index.
    pub origin: usize,
    pub job_id: u64,
    pub status: Status,
    pub run_us: u32,
    /// The body, or when `inline` the whole `RESULT` frame, ready to send.
    pub body: zmq::Message,
    /// The job came inline, so its answer goes inline too.
    pub inline: bool,
}

impl Finished {
    /// Sends it to its broker without blocking; false when that one is not connected.
    pub fn send(self, sockets: &[BrokerSocket]) -> crate::error::Result<bool> {
        let socket = &sockets[self.origin];
        if self.inline {
            return send_raw(socket, &self.body);
        }
        let tail = ResultTail { still_busy: false, run_us: Some(self.run_us) };
        send_result(socket, self.job_id, self.status, tail, self.body)
    }
}

/// Results held back, oldest first.
#[derive(Default)]
pub struct Held {
    results: Vec<Finished>,
    /// When the oldest was held.
    since: Option<Instant>,
    /// When they must be sent at the latest.
    due: Option<Instant>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// The broker the held results go to (they are all one broker's).
    pub fn origin(&self) -> Option<usize> {
        self.results.first().map(|f| f.origin)
    }

    /// How long the oldest has waited.
    pub fn age(&self, now: Instant) -> Duration {
        self.since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// When the held results must be sent at the latest.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Holds `finished` for `limit` at most from the oldest's hold; true
    /// when it is the first (the timer must be armed).
    pub fn push(&mut self, now: Instant, finished: Finished, limit: Duration) -> bool {
        self.results.push(finished);
        self.since.get_or_insert(now);
        self.due.get_or_insert(now + limit);
        self.results.len() == 1
    }

    /// Sends every held result, oldest first; false if a send found no broker
    /// (the rest are dropped too: their clients' deadlines end them).
    pub fn flush(&mut self, sockets: &[BrokerSocket]) -> crate::error::Result<bool> {
        self.since = None;
        self.due = None;
        let mut all = true;
        for f in self.results.drain(..) {
            all &= f.send(sockets)?;
        }
        Ok(all)
    }
}

/// A hold pays only when this many answers can share one send: for longer
/// jobs the wake-ups it saves are a rounding error next to the job, and the
/// wait is pure latency (README, "Why the defaults").
const MIN_SHARED: u32 = 4;

/// Whether a just-finished result may wait for the next job's: only under
/// backlog, for jobs short enough that several answers fit in the
/// coalescing time, with room left, the next job (as long as jobs have taken
/// lately) ending before the oldest held result is due, and another job at
/// hand (asked last: it reads the socket).
pub fn may_hold(
    coalesce: Duration,
    backlog: bool,
    held: usize,
    held_for: Duration,
    expected: Duration,
    job_at_hand: impl FnOnce() -> bool,
) -> bool {
    !coalesce.is_zero()
        && backlog
        && expected * MIN_SHARED <= coalesce
        && held < MAX_HELD
        && held_for + expected < coalesce
        && job_at_hand()
}

/// Whether a just-finished result may wait for the next ones because jobs
/// given ahead wait at hand: at least [`HOLD_AHEAD_JOBS`] of them, so the
/// worker has work while its callers get their answers and send again, for
/// short jobs only (the oldest waits [`HOLD_AHEAD_MAX`] at most, within the
/// coalescing time), with room left. `at_hand(n)` counts the jobs waiting,
/// reading the socket until it has seen `n` (asked last).
///
/// Why: with many callers each waiting on one job, the broker keeps every
/// worker supplied but no job waits at the broker, so the backlog rule never
/// holds; every answer then costs the broker a wake-up of its own, the
/// largest cost of a ~100 µs job after the job itself.
pub fn may_hold_ahead(
    coalesce: Duration,
    held: usize,
    held_for: Duration,
    expected: Duration,
    at_hand: impl FnOnce(usize) -> usize,
) -> bool {
    !coalesce.is_zero()
        && held < MAX_HELD
        && held_for + expected < ahead_limit(coalesce)
        && at_hand(HOLD_AHEAD_JOBS) >= HOLD_AHEAD_JOBS
}

/// How long answers held by [`may_hold_ahead`] may wait.
pub fn ahead_limit(coalesce: Duration) -> Duration {
    coalesce.min(HOLD_AHEAD_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn holds_only_under_backlog_with_a_job_at_hand_and_time_left() {
        assert!(may_hold(5 * MS, true, 0, Duration::ZERO, MS, || true));
        assert!(!may_hold(Duration::ZERO, true, 0, Duration::ZERO, MS, || true), "coalescing off");
        assert!(!may_hold(5 * MS, false, 0, Duration::ZERO, MS, || true), "no backlog: answer at once");
        assert!(!may_hold(5 * MS, true, 0, Duration::ZERO, MS, || false), "nothing else to do: send");
        assert!(!may_hold(5 * MS, true, MAX_HELD, Duration::ZERO, MS, || true), "full");
        assert!(may_hold(5 * MS, true, 3, 3 * MS, MS, || true));
        assert!(!may_hold(5 * MS, true, 4, 4 * MS, MS, || true), "the next job would end past the due time");
        assert!(!may_hold(5 * MS, true, 0, Duration::ZERO, 6 * MS, || true), "jobs longer than the coalescing time");
        assert!(may_hold(16 * MS, true, 0, Duration::ZERO, 4 * MS, || true), "four fit");
        assert!(
            !may_hold(15 * MS, true, 0, Duration::ZERO, 4 * MS, || true),
            "fewer than four answers would share a send"
        );
        assert!(!may_hold(5 * MS, false, 0, Duration::ZERO, MS, || panic!("the socket is read only when needed")));
    }

    #[test]
    fn held_results_are_due_from_the_oldest() {
        let mut held = Held::default();
        let t0 = Instant::now();
        let f = |id| Finished {
            origin: 0,
            job_id: id,
            status: Status::Ok,
            run_us: 1,
            body: zmq::Message::new(),
            inline: false,
        };
        assert!(held.push(t0, f(1), 5 * MS));
        assert!(!held.push(t0 + MS, f(2), 5 * MS));
        assert_eq!(held.due(), Some(t0 + 5 * MS));
    }

    #[test]
    fn holds_ahead_only_with_work_at_hand_for_short_jobs() {
        let us = Duration::from_micros;
        let enough = |_| HOLD_AHEAD_JOBS;
        assert!(may_hold_ahead(15 * MS, 0, Duration::ZERO, us(100), enough));
        assert!(!may_hold_ahead(15 * MS, 0, Duration::ZERO, us(100), |_| HOLD_AHEAD_JOBS - 1), "it would run dry");
        assert!(!may_hold_ahead(Duration::ZERO, 0, Duration::ZERO, us(100), enough), "coalescing off");
        assert!(!may_hold_ahead(15 * MS, MAX_HELD, Duration::ZERO, us(100), enough), "full");
        assert!(!may_hold_ahead(15 * MS, 0, Duration::ZERO, HOLD_AHEAD_MAX, enough), "long jobs: sent at once");
        assert!(may_hold_ahead(15 * MS, 5, us(500), us(100), enough));
        assert!(
            !may_hold_ahead(15 * MS, 8, HOLD_AHEAD_MAX - us(50), us(100), enough),
            "the oldest would wait too long"
        );
        assert!(!may_hold_ahead(us(150), 1, us(100), us(100), enough), "never past the coalescing time");
        let asked = |n| {
            assert_eq!(n, HOLD_AHEAD_JOBS, "asked for as many as it needs");
            n
        };
        assert!(may_hold_ahead(15 * MS, 0, Duration::ZERO, us(100), asked));
        assert!(!may_hold_ahead(15 * MS, MAX_HELD, Duration::ZERO, us(100), |_| panic!("read only when needed")));
        assert_eq!(ahead_limit(15 * MS), HOLD_AHEAD_MAX);
        assert_eq!(ahead_limit(us(300)), us(300));
    }
}
