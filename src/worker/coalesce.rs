//! Result coalescing: under backlog a worker holds finished results briefly
//! and sends several together, so one wake-up of the broker (and of the
//! client behind it) serves several jobs.
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
use crate::protocol::{ResultTail, Status, MAX_HELD};

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
    pub fn due(&self, coalesce: Duration) -> Option<Instant> {
        self.since.map(|t| t + coalesce)
    }

    /// Holds `finished`; true when it is the first (the timer must be armed).
    pub fn push(&mut self, now: Instant, finished: Finished) -> bool {
        self.results.push(finished);
        self.since.get_or_insert(now);
        self.results.len() == 1
    }

    /// Sends every held result, oldest first; false if a send found no broker
    /// (the rest are dropped too: their clients' deadlines end them).
    pub fn flush(&mut self, sockets: &[BrokerSocket]) -> crate::error::Result<bool> {
        self.since = None;
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
        assert!(held.push(t0, f(1)));
        assert!(!held.push(t0 + MS, f(2)));
        assert_eq!(held.due(5 * MS), Some(t0 + 5 * MS));
    }
}
