//! The answers the broker makes itself, and the per-service figures behind
//! `--metrics`: how jobs ended, how long they waited in the queue and ran,
//! kept by the loop as plain counters (no lock, no allocation per job), and
//! the snapshot a scrape takes of them.
//!
//! A service's figures live in its [`Service`](super::Service), so the hot
//! path reaches them by index; when an idle service is forgotten they are
//! set aside by name and given back if it returns, so counters never go
//! backwards while the broker runs.

use std::time::{Duration, Instant};

use super::lanes::LEVELS;
use std::borrow::Cow;

use super::{Body, BrokerState, ClientRoute, Output, Payload, WorkerState};
use crate::protocol::Status;

/// Upper bounds of the time buckets, in µs: 100 µs to a minute, the span of
/// a job's queue wait and run time (`le` of the Prometheus histograms).
pub const BOUNDS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A histogram of durations in the buckets of [`BOUNDS_US`] (and one past
/// the last): what a Prometheus histogram exposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    counts: [u64; BOUNDS_US.len() + 1],
    sum_us: u64,
}

impl Buckets {
    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[BOUNDS_US.partition_point(|&bound| bound < us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// Each bucket's upper bound in seconds (`+Inf` last) and the durations
    /// in it alone (not cumulative).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = BOUNDS_US.iter().map(|&us| us as f64 / 1e6).chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().copied())
    }
}

/// How a job ended, as counted per service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A worker answered with success.
    Ok,
    /// A worker answered with an error (handler failed or panicked).
    Error,
    /// Timed out, in a worker or while waiting.
    Timeout,
    /// Its worker was lost and no retry was left.
    Lost,
    /// Refused: the queue (or the client's share of it) was full.
    Busy,
    /// No worker came in time, or the broker was shutting down.
    NoWorker,
    /// Its client cancelled it.
    Cancelled,
}

impl Outcome {
    /// Every outcome, in the order of [`ServiceMetrics::outcomes`].
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Lost,
        Outcome::Busy,
        Outcome::NoWorker,
        Outcome::Cancelled,
    ];

    /// The `outcome` label.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Lost => "worker_lost",
            Outcome::Busy => "busy",
            Outcome::NoWorker => "no_worker",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome of a job answered with `status`; `None` for requests that
    /// never were jobs of a service (malformed, or for an unknown service:
    /// counted as bad requests, and a label per made-up name would let any
    /// client grow the exposition without bound).
    pub fn of(status: Status) -> Option<Outcome> {
        Some(match status {
            Status::Ok => Outcome::Ok,
            Status::HandlerError => Outcome::Error,
            Status::Timeout => Outcome::Timeout,
            Status::WorkerLost => Outcome::Lost,
            Status::Busy => Outcome::Busy,
            Status::NoWorker => Outcome::NoWorker,
            Status::Cancelled => Outcome::Cancelled,
            Status::BadRequest | Status::UnknownService => return None,
        })
    }
}

/// One service's counters and histograms since the broker started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceMetrics {
    /// Jobs by [`Outcome`], in the order of [`Outcome::ALL`].
    pub outcomes: [u64; Outcome::ALL.len()],
    /// From joining the service's queue to going to a worker. A job given
    /// back or retried joins it again and is counted again.
    pub queue_wait: Buckets,
    /// From going to a worker to its answer (time held ahead included),
    /// for the answers workers gave.
    pub run: Buckets,
}

impl ServiceMetrics {
    /// Jobs that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize]
    }
}

/// The service label of jobs that never reached a service's queue: waiting
/// for a first worker, refused while the broker was draining, expired on
/// arrival.
pub const NO_SERVICE: &str = "(none)";

/// A service as a scrape sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// Its name ([`NO_SERVICE`] for jobs that reached none).
    pub name: String,
    /// Its counters and histograms.
    pub metrics: ServiceMetrics,
    /// Jobs waiting, by priority (0 to 9).
    pub queued: [usize; LEVELS],
    /// Bytes (headers and data) those jobs hold, by priority.
    pub queued_bytes: [usize; LEVELS],
    /// Its registered workers, by state, in the order of [`WORKER_STATES`].
    pub workers: [usize; WORKER_STATES.len()],
}

/// Worker states, in the order of [`ServiceSnapshot::workers`], with their
/// `state` label.
pub const WORKER_STATES: [(WorkerState, &str); 5] = [
    (WorkerState::Idle, "idle"),
    (WorkerState::Busy, "busy"),
    (WorkerState::Leaving, "leaving"),
    (WorkerState::Stuck, "stuck"),
    (WorkerState::Elsewhere, "elsewhere"),
];

impl<M: Payload> BrokerState<M> {
    /// Answers a job (or request) the broker ends itself; `at` is the
    /// service whose job it was, if it reached one.
    pub(super) fn reply(
        &mut self,
        out: &mut Vec<Output<M>>,
        at: Option<usize>,
        route: ClientRoute<M>,
        status: Status,
        msg: impl Into<Cow<'static, str>>,
    ) {
        match status {
            Status::Timeout => self.counters.timeouts += 1,
            Status::WorkerLost => self.counters.lost += 1,
            Status::Busy => self.counters.busy += 1,
            Status::NoWorker => self.counters.no_worker += 1,
            Status::BadRequest | Status::UnknownService => self.counters.bad_requests += 1,
            Status::Cancelled => self.counters.cancelled += 1,
            Status::Ok | Status::HandlerError => {}
        }
        self.count_outcome(at, status);
        out.push(Output::Reply { route, status, pid: self.pid, body: Body::Text(msg.into()) });
    }

    /// Counts a job's end against service `at` (`None`: it reached none).
    pub(super) fn count_outcome(&mut self, at: Option<usize>, status: Status) {
        let Some(outcome) = Outcome::of(status) else { return };
        let metrics = match at.and_then(|i| self.services.get_mut(i)) {
            Some(service) => &mut service.metrics,
            None => &mut self.unrouted,
        };
        metrics.outcomes[outcome as usize] += 1;
    }

    /// A job of service `i` leaves its queue for a worker.
    pub(super) fn count_dispatch(&mut self, i: usize, now: Instant, since: Instant) {
        self.services[i].metrics.queue_wait.record(now.saturating_duration_since(since));
    }

    /// A worker of service `i` answered a job it was given at `dispatched`.
    pub(super) fn count_run(&mut self, i: usize, now: Instant, dispatched: Instant) {
        self.services[i].metrics.run.record(now.saturating_duration_since(dispatched));
    }

    /// Every service's figures, then those of jobs that reached none (the
    /// limbo's queue among them); for a scrape, not the hot path.
    pub fn service_snapshots(&self) -> Vec<ServiceSnapshot> {
        let mut all: Vec<ServiceSnapshot> = self
            .services
            .iter()
            .map(|s| ServiceSnapshot {
                name: s.name.clone(),
                metrics: s.metrics.clone(),
                queued: s.queue.depths(),
                queued_bytes: bytes_by_level(&s.queue),
                workers: [0; WORKER_STATES.len()],
            })
            .collect();
        for w in self.workers.iter().flatten() {
            let state = WORKER_STATES.iter().position(|(s, _)| *s == w.state).expect("every state is listed");
            all[w.service].workers[state] += 1;
        }
        // Services forgotten keep their counters (they never go backwards).
        all.extend(self.retired.iter().map(|(name, metrics)| ServiceSnapshot {
            name: name.clone(),
            metrics: metrics.clone(),
            queued: [0; LEVELS],
            queued_bytes: [0; LEVELS],
            workers: [0; WORKER_STATES.len()],
        }));
        all.push(ServiceSnapshot {
            name: NO_SERVICE.into(),
            metrics: self.unrouted.clone(),
            queued: self.limbo.depths(),
            queued_bytes: bytes_by_level(&self.limbo),
            workers: [0; WORKER_STATES.len()],
        });
        all
    }
}

/// What the jobs of each level hold (summed at a scrape: the hot path keeps
/// only the broker-wide total).
fn bytes_by_level<M: Payload>(lanes: &super::Lanes<M>) -> [usize; LEVELS] {
    let mut bytes = [0; LEVELS];
    for q in lanes.iter() {
        bytes[usize::from(q.job.priority).min(LEVELS - 1)] += q.job.size();
    }
    bytes
}
