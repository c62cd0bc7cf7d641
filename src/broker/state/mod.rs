//! Broker state: the pure "message in → messages out" logic, no sockets.
//!
//! Jobs go to idle workers first (oldest idle first); otherwise they wait in
//! a bounded FIFO per service. A busy worker may be given more jobs ahead
//! (prefetch) only while its measured time per job is short: it holds at most
//! `1 + prefetch_budget / time per job` jobs, so no job waits more than about
//! the budget behind another's work, and a slow worker gets one job at a time.
//! The broker remembers every job a worker holds, so a worker that goes silent
//! or disconnects has its jobs answered (`WorkerLost`) or, when a job allows
//! retries, re-queued at the front. A *local* worker (connected over ipc,
//! its pid vouched for by the kernel) is not judged by heartbeats alone: its
//! death is certain when its process is gone, and while its process still
//! runs (starved of CPU on a busy machine, say) its silence is waited out up
//! to [`protocol::LOCAL_SILENCE_LIMIT`] liveness windows; a process that is stopped or
//! neither runs nor waits to run is hung, and heartbeats decide. Time and
//! the processes' state are passed in, so every rule here is unit-tested
//! without sleeping.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{self, Registration, Status, LOCAL_SILENCE_LIMIT, MAX_PREFETCH};
use crate::status::{Counters, Histogram};
use inflight::{InFlight, Retry};
use lanes::Lanes;

#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod elsewhere_tests;
mod inflight;
mod lanes;
mod ledger;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod liveness_tests;
mod messages;
mod metrics;
#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod prefetch_tests;
#[cfg(test)]
mod priority_tests;
#[cfg(test)]
mod recall_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;
mod timers;
mod workers;

pub use messages::{Answer, Body, ClientRoute, Job, Output, Payload};
pub use metrics::{Buckets, Outcome, ServiceMetrics, ServiceSnapshot, BOUNDS_US, NO_SERVICE, WORKER_STATES};

const SHUTTING_DOWN: &str = "the broker is shutting down";

/// How late a queued job's timeout may be answered.
pub const QUEUE_CHECK: Duration = Duration::from_millis(10);

/// What the process of a local worker is doing, as the I/O side found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vitality {
    /// No such process (or a zombie): the worker is dead for certain.
    Gone,
    /// Stopped, or neither running nor waiting to run since the last look.
    Hung,
    /// Running or waiting for a CPU: silent only because it is starved.
    Running,
}

/// Tunables of the routing rules.
#[derive(Clone, Debug)]
pub struct Config {
    /// Jobs waiting per service before new ones are refused with `Busy`.
    pub max_queue: usize,
    /// How often the broker heartbeats workers (and expects them to).
    pub heartbeat_interval: Duration,
    /// Missed intervals before a worker is declared dead.
    pub liveness: u32,
    /// How long a job waits for a worker to appear before `NoWorker`.
    pub no_worker_grace: Duration,
    /// How much expected work may stand before a job in a busy worker's
    /// prefetch (zero: one job per worker at a time).
    pub prefetch_budget: Duration,
    /// Bytes that waiting jobs may hold in all (a client: half of it).
    pub max_queue_bytes: usize,
    /// A job's timeout is cut to this.
    pub max_timeout: Duration,
    /// Where a job that names no service goes (`--default-service`); when
    /// `None`, the first service that ever registers becomes it, for good:
    /// a service that comes later never reshapes where such jobs go.
    pub default_service: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_queue: protocol::MAX_QUEUE,
            heartbeat_interval: protocol::HEARTBEAT_INTERVAL,
            liveness: protocol::LIVENESS,
            no_worker_grace: protocol::NO_WORKER_GRACE,
            prefetch_budget: protocol::PREFETCH_BUDGET,
            max_queue_bytes: protocol::MAX_QUEUE_BYTES,
            max_timeout: protocol::MAX_TIMEOUT,
            default_service: None,
        }
    }
}

struct Queued<M> {
    job: Job<M>,
    since: Instant,
    /// The service asked for, kept only while the job waits in limbo.
    service: Option<Box<str>>,
}

/// What a registered worker is doing, as `STATUS` shows it.
#[derive(PartialEq, Eq, Debug, Clone, Copy)]
pub enum WorkerState {
    /// Waiting for a job.
    Idle,
    /// Holding at least one job.
    Busy,
    /// Unregistered: finishing its jobs, then gone.
    Leaving,
    /// Its job timed out but the handler still runs: no new job until it
    /// registers again (`READY`).
    Stuck,
    /// It serves several brokers and runs another one's job (it gave ours
    /// back with `RETURN_ELSEWHERE`): no new job until its next `READY`.
    Elsewhere,
}

struct Worker<M> {
    identity: Vec<u8>,
    info: Registration,
    service: usize,
    state: WorkerState,
    /// Jobs it holds, in the order it runs them.
    jobs: VecDeque<InFlight<M>>,
    expiry: Instant,
    last_seen: Instant,
    jobs_done: u64,
    /// Moving average of the time it takes per job, in µs (unknown at first).
    job_us: Option<f64>,
    /// When its current job started (dispatch, or the previous job's answer).
    current_since: Instant,
    /// Its process id as the kernel reported it for a local (ipc) connection.
    local_pid: Option<u32>,
    /// Silent past its liveness while its process runs (logged once).
    starved: bool,
    /// Jobs it answered on its lane, as its last heartbeat said.
    lane_jobs: u64,
}

impl<M> Worker<M> {
    /// How many jobs it may hold: see the module documentation. A worker
    /// that holds finished results under backlog gets that much more ahead,
    /// or it would run dry while its answers wait.
    fn capacity(&self, budget: Duration) -> usize {
        match self.job_us {
            Some(us) if !budget.is_zero() => {
                let ahead = budget.as_micros() as f64 + self.info.coalesce_us as f64;
                (1 + (ahead / us.max(1.0)) as usize).min(MAX_PREFETCH)
            }
            _ => 1,
        }
    }
}

/// The worker in `slot`, which the caller knows is live: slots come from
/// `by_identity`, the idle lists and dispatch, which name live ones only.
/// (A function of the field, not of `self`, so other fields stay free.)
fn live<M>(workers: &mut [Option<Worker<M>>], slot: usize) -> &mut Worker<M> {
    workers[slot].as_mut().expect("slots in use name live workers")
}

struct Service<M> {
    name: String,
    idle: VecDeque<usize>,
    queue: Lanes<M>,
    workers: usize,
    /// When its last worker left (meaningful while `workers` is 0): a job
    /// waits for a replacement the whole grace period from then, even if it
    /// was queued earlier, behind a worker that was stuck and died.
    workerless_since: Instant,
    /// Its outcomes and histograms (`--metrics`).
    metrics: ServiceMetrics,
}

/// Services, their queues and workers, and the jobs each worker holds.
pub struct BrokerState<M> {
    config: Config,
    pid: u32,
    services: Vec<Service<M>>,
    service_index: HashMap<String, usize>,
    /// Jobs that name no service (or the only one to come) while none exists.
    limbo: Lanes<M>,
    workers: Vec<Option<Worker<M>>>,
    free_slots: Vec<usize>,
    by_identity: HashMap<Vec<u8>, usize>,
    next_job_id: u64,
    next_heartbeat: Instant,
    /// Outcome counters, as `STATUS` reports them.
    pub counters: Counters,
    /// Receipt-to-answer time of jobs workers answered, in µs.
    pub latency: Histogram,
    /// Shutting down: new jobs are refused at once.
    draining: bool,
    /// Where jobs that name no service go (see [`Config::default_service`]).
    default_service: Option<String>,
    /// What waiting jobs hold, in all and per client.
    ledger: ledger::Ledger,
    /// The figures of jobs that reached no service (see [`NO_SERVICE`]).
    unrouted: ServiceMetrics,
    /// The figures of services forgotten, by name, until they return.
    retired: HashMap<String, ServiceMetrics>,
}

impl<M: Payload> BrokerState<M> {
    /// An empty state; `pid` is the broker's, for the replies it makes itself.
    pub fn new(config: Config, pid: u32, now: Instant) -> Self {
        BrokerState {
            next_heartbeat: now + config.heartbeat_interval,
            default_service: config.default_service.clone(),
            config,
            pid,
            services: Vec::new(),
            service_index: HashMap::new(),
            limbo: Lanes::default(),
            workers: Vec::new(),
            free_slots: Vec::new(),
            by_identity: HashMap::new(),
            next_job_id: 1,
            counters: Counters::default(),
            latency: Histogram::new(),
            draining: false,
            ledger: ledger::Ledger::default(),
            unrouted: ServiceMetrics::default(),
            retired: HashMap::new(),
        }
    }

    /// The identity of the worker in `slot`; `None` if the slot is free (an
    /// output must never name one: the I/O loop logs and skips it).
    pub fn worker_identity(&self, slot: usize) -> Option<&[u8]> {
        self.workers.get(slot)?.as_ref().map(|w| w.identity.as_slice())
    }

    /// Whether the worker in `slot` said it reads inline `JOB`s.
    pub fn worker_reads_inline(&self, slot: usize) -> bool {
        self.workers.get(slot).and_then(Option::as_ref).is_some_and(|w| w.info.inline)
    }

    /// A client's job. An empty `service` means the default service (see
    /// [`Config::default_service`]).
    pub fn submit(&mut self, now: Instant, service: &str, mut job: Job<M>, out: &mut Vec<Output<M>>) {
        job.deadline = job.deadline.min(job.received + self.config.max_timeout);
        if self.draining {
            return self.reply(out, None, job.route, Status::NoWorker, SHUTTING_DOWN);
        }
        if job.deadline <= now {
            return self.reply(out, None, job.route, Status::Timeout, "job expired before it reached the broker");
        }
        // No service named: the default one, whatever else registers later.
        let named = if service.is_empty() { self.default_service.as_deref() } else { Some(service) };
        let target = match named.map(|name| (name, self.service_index.get(name))) {
            // No default yet (no worker ever registered): wait for the first.
            None => None,
            Some((_, Some(&i))) => Some(i),
            Some((_, None)) if self.services.is_empty() => None,
            Some((name, None)) => {
                let msg = format!("no worker serves {name:?}");
                return self.reply(out, None, job.route, Status::UnknownService, msg);
            }
        };
        let (client, size) = (job.route.identity.bytes(), job.size());
        match self.ledger.admits(client, size, self.config.max_queue_bytes, self.config.max_queue) {
            Ok(()) => self.ledger.charge(client, size),
            Err(ledger::Refusal::Full) => {
                let msg = format!("queue full ({} MiB waiting)", self.ledger.bytes() >> 20);
                return self.reply(out, target, job.route, Status::Busy, msg);
            }
            Err(ledger::Refusal::ClientShare) => {
                let msg = "this client holds its share of the queue; others are served first";
                return self.reply(out, target, job.route, Status::Busy, msg);
            }
        }
        match target {
            None => {
                if self.limbo.len() >= self.config.max_queue {
                    self.unqueued(&job);
                    return self.reply(out, None, job.route, Status::Busy, "queue full");
                }
                // Re-resolved when a worker registers.
                self.limbo.push_back(Queued { job, since: now, service: Some(service.into()) });
            }
            Some(i) => {
                if self.services[i].queue.len() >= self.config.max_queue {
                    self.unqueued(&job);
                    let msg = format!("queue of {} is full ({} jobs)", self.services[i].name, self.config.max_queue);
                    return self.reply(out, Some(i), job.route, Status::Busy, msg);
                }
                self.services[i].queue.push_back(Queued { job, since: now, service: None });
                self.dispatch(now, i, out);
            }
        }
    }

    /// A job stops waiting: what it held is no longer the queue's.
    fn unqueued(&mut self, job: &Job<M>) {
        self.ledger.credit(job.route.identity.bytes(), job.size());
    }

    /// A job admitted before waits again (returned, or retried after its
    /// worker was lost): it is charged, never refused.
    fn requeued(&mut self, i: usize, now: Instant, job: Job<M>) {
        self.ledger.charge(job.route.identity.bytes(), job.size());
        self.services[i].queue.push_front(Queued { job, since: now, service: None });
    }

    /// Bytes that waiting jobs hold.
    pub fn queued_bytes(&self) -> usize {
        self.ledger.bytes()
    }

    /// Sends queued jobs of service `i` to idle workers, then to busy ones
    /// with prefetch capacity (the least loaded first).
    fn dispatch(&mut self, now: Instant, i: usize, out: &mut Vec<Output<M>>) {
        loop {
            let Some(lane) = self.services[i].queue.next_lane(now) else { return };
            if self.services[i].queue.head(lane).job.deadline <= now {
                let Queued { job, .. } = self.services[i].queue.pop_lane(lane);
                self.unqueued(&job);
                self.reply(out, Some(i), job.route, Status::Timeout, "job expired while queued");
                continue;
            }
            let Some(slot) = self.services[i].idle.pop_front().or_else(|| self.prefetch_candidate(i)) else {
                let waiting = self.services[i].queue.head(lane).job.priority;
                return self.recall_for(now, i, waiting, out);
            };
            let Queued { job, since, .. } = self.services[i].queue.pop_lane(lane);
            self.unqueued(&job);
            self.count_dispatch(i, now, since);
            // Jobs still wait here (the pool is beyond what its workers may
            // hold): its answer may be held for coalescing, see worker::coalesce.
            let backlog = !self.services[i].queue.is_empty();
            let job_id = self.next_job_id;
            self.next_job_id += 1;
            let timeout_ms = (job.deadline - now).as_millis().clamp(1, u32::MAX as u128) as u32;
            let retry = (job.retries > 0).then(|| Retry {
                headers: job.headers.duplicate(),
                data: job.data.duplicate(),
                retries: job.retries,
                inline: job.inline,
            });
            let worker = live(&mut self.workers, slot);
            if worker.jobs.is_empty() {
                worker.current_since = now;
            }
            worker.state = WorkerState::Busy;
            let (deadline, received, priority) = (job.deadline, job.received, job.priority);
            let (cancelled, recalled) = (false, false);
            let inflight = InFlight {
                job_id,
                route: job.route,
                retry,
                deadline,
                received,
                dispatched: now,
                priority,
                cancelled,
                recalled,
            };
            worker.jobs.push_back(inflight);
            let behind = worker.jobs.len() - 1;
            self.recall_below(now, slot, priority, behind, out);
            let (headers, data, inline) = (job.headers, job.data, job.inline);
            out.push(Output::Job { worker: slot, job_id, timeout_ms, backlog, headers, data, inline });
        }
    }

    /// A busy worker of service `i` that may take one more job ahead.
    fn prefetch_candidate(&self, i: usize) -> Option<usize> {
        let budget = self.config.prefetch_budget;
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(slot, w)| w.as_ref().map(|w| (slot, w)))
            .filter(|(_, w)| w.service == i && w.state == WorkerState::Busy && w.jobs.len() < w.capacity(budget))
            .min_by_key(|(_, w)| w.jobs.len())
            .map(|(slot, _)| slot)
    }
}
