//! Broker state: the pure "message in → messages out" logic, no sockets.
//!
//! Jobs go only to idle workers (oldest idle first); otherwise they wait in a
//! bounded FIFO per service. The broker remembers which job each worker holds,
//! so a worker that goes silent or disconnects has its job answered
//! (`WorkerLost`) or, when the job allows retries, re-queued at the front.
//! Time is passed in, so every rule here is unit-tested without sleeping.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::{Registration, Status};
use crate::status::{Counters, Histogram, ServiceStatus, WorkerStatus};

#[cfg(test)]
mod tests;

/// A message buffer the broker moves around without looking inside.
pub trait Payload {
    /// A copy, made only for jobs that may be retried.
    fn duplicate(&self) -> Self;
}

impl Payload for Vec<u8> {
    fn duplicate(&self) -> Self {
        self.clone()
    }
}

impl Payload for zmq::Message {
    fn duplicate(&self) -> Self {
        zmq::Message::from(&self[..])
    }
}

const SHUTTING_DOWN: &str = "the broker is shutting down";

/// How late a queued job's timeout may be answered.
pub const QUEUE_CHECK: Duration = Duration::from_millis(10);

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_queue: 10_000,
            heartbeat_interval: Duration::from_secs(1),
            liveness: 3,
            no_worker_grace: Duration::from_secs(2),
        }
    }
}

/// Where a reply goes: the client's routing identity and its request id.
#[derive(Debug)]
pub struct ClientRoute<M> {
    pub identity: M,
    pub req_id: u64,
    /// A Powerhose 0.7 (REQ) client, answered in the old format.
    pub legacy: bool,
}

#[derive(Debug)]
pub enum Body<M> {
    Payload(M),
    Text(Cow<'static, str>),
}

/// What the I/O loop must send.
#[derive(Debug)]
pub enum Output<M> {
    Reply {
        route: ClientRoute<M>,
        status: Status,
        pid: u32,
        body: Body<M>,
    },
    /// A job for the worker in slot `worker` (see [`BrokerState::worker_identity`]).
    Job {
        worker: usize,
        job_id: u64,
        timeout_ms: u32,
        headers: M,
        data: M,
    },
    Heartbeat {
        worker: usize,
    },
    /// Sent to a peer the broker does not know, so it registers again.
    Disconnect {
        identity: Vec<u8>,
    },
}

/// A worker's `RESULT`.
#[derive(Debug)]
pub struct Answer<M> {
    pub job_id: u64,
    pub status: Status,
    /// The worker timed the job out but its handler still runs.
    pub still_busy: bool,
    pub body: M,
}

/// A job as the broker holds it.
#[derive(Debug)]
pub struct Job<M> {
    pub route: ClientRoute<M>,
    pub headers: M,
    pub data: M,
    pub deadline: Instant,
    /// How many more times the job may be re-sent after its worker is lost.
    pub retries: u32,
    /// When the broker received it (for the latency histogram).
    pub received: Instant,
}

struct Queued<M> {
    job: Job<M>,
    since: Instant,
    /// The service asked for, kept only while the job waits in limbo.
    service: Option<Box<str>>,
}

#[derive(Debug)]
struct InFlight<M> {
    job_id: u64,
    route: ClientRoute<M>,
    /// Kept only when the job may be retried.
    retry: Option<(M, M, u32)>,
    deadline: Instant,
    received: Instant,
}

#[derive(PartialEq, Eq, Debug, Clone, Copy)]
pub enum WorkerState {
    Idle,
    Busy,
    /// Unregistered: finishing its job, then gone.
    Leaving,
    /// Its job timed out but the handler still runs: no new job until it
    /// registers again (`READY`).
    Stuck,
}

struct Worker<M> {
    identity: Vec<u8>,
    info: Registration,
    service: usize,
    state: WorkerState,
    job: Option<InFlight<M>>,
    expiry: Instant,
    last_seen: Instant,
    jobs_done: u64,
}

struct Service<M> {
    name: String,
    idle: VecDeque<usize>,
    queue: VecDeque<Queued<M>>,
    workers: usize,
}

pub struct BrokerState<M> {
    config: Config,
    pid: u32,
    services: Vec<Service<M>>,
    service_index: HashMap<String, usize>,
    /// Jobs that name no service (or the only one to come) while none exists.
    limbo: VecDeque<Queued<M>>,
    workers: Vec<Option<Worker<M>>>,
    free_slots: Vec<usize>,
    by_identity: HashMap<Vec<u8>, usize>,
    next_job_id: u64,
    next_heartbeat: Instant,
    pub counters: Counters,
    pub latency: Histogram,
    /// Shutting down: new jobs are refused at once.
    draining: bool,
}

impl<M: Payload> BrokerState<M> {
    pub fn new(config: Config, pid: u32, now: Instant) -> Self {
        BrokerState {
            next_heartbeat: now + config.heartbeat_interval,
            config,
            pid,
            services: Vec::new(),
            service_index: HashMap::new(),
            limbo: VecDeque::new(),
            workers: Vec::new(),
            free_slots: Vec::new(),
            by_identity: HashMap::new(),
            next_job_id: 1,
            counters: Counters::default(),
            latency: Histogram::new(),
            draining: false,
        }
    }

    pub fn worker_identity(&self, slot: usize) -> &[u8] {
        &self.workers[slot].as_ref().expect("live worker slot").identity
    }

    fn reply(
        &mut self,
        out: &mut Vec<Output<M>>,
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
            Status::Ok | Status::HandlerError => {}
        }
        out.push(Output::Reply { route, status, pid: self.pid, body: Body::Text(msg.into()) });
    }

    /// A client's job. `service` may be empty when the broker serves one service.
    pub fn submit(&mut self, now: Instant, service: &str, job: Job<M>, out: &mut Vec<Output<M>>) {
        if self.draining {
            return self.reply(out, job.route, Status::NoWorker, SHUTTING_DOWN);
        }
        if job.deadline <= now {
            return self.reply(out, job.route, Status::Timeout, "job expired before it reached the broker");
        }
        let target = if service.is_empty() {
            match self.services.len() {
                0 => None,
                1 => Some(0),
                _ => {
                    let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                    let msg = format!("several services are served ({}); name one", names.join(", "));
                    return self.reply(out, job.route, Status::BadRequest, msg);
                }
            }
        } else {
            match self.service_index.get(service) {
                Some(&i) => Some(i),
                None if self.services.is_empty() => None,
                None => {
                    let msg = format!("no worker has ever served {service:?}");
                    return self.reply(out, job.route, Status::UnknownService, msg);
                }
            }
        };
        match target {
            None => {
                if self.limbo.len() >= self.config.max_queue {
                    return self.reply(out, job.route, Status::Busy, "queue full");
                }
                // Re-resolved when a worker registers.
                self.limbo.push_back(Queued { job, since: now, service: Some(service.into()) });
            }
            Some(i) => {
                if self.services[i].queue.len() >= self.config.max_queue {
                    let msg = format!("queue of {} is full ({} jobs)", self.services[i].name, self.config.max_queue);
                    return self.reply(out, job.route, Status::Busy, msg);
                }
                self.services[i].queue.push_back(Queued { job, since: now, service: None });
                self.dispatch(now, i, out);
            }
        }
    }

    /// Sends queued jobs of service `i` to its idle workers.
    fn dispatch(&mut self, now: Instant, i: usize, out: &mut Vec<Output<M>>) {
        while !self.services[i].idle.is_empty() {
            let Some(Queued { job, .. }) = self.services[i].queue.pop_front() else {
                return;
            };
            if job.deadline <= now {
                self.reply(out, job.route, Status::Timeout, "job expired while queued");
                continue;
            }
            let slot = self.services[i].idle.pop_front().expect("checked non-empty");
            let job_id = self.next_job_id;
            self.next_job_id += 1;
            let timeout_ms = (job.deadline - now).as_millis().clamp(1, u32::MAX as u128) as u32;
            let retry = (job.retries > 0).then(|| (job.headers.duplicate(), job.data.duplicate(), job.retries));
            let worker = self.workers[slot].as_mut().expect("idle worker is live");
            worker.state = WorkerState::Busy;
            worker.job =
                Some(InFlight { job_id, route: job.route, retry, deadline: job.deadline, received: job.received });
            out.push(Output::Job { worker: slot, job_id, timeout_ms, headers: job.headers, data: job.data });
        }
    }

    fn refresh(&mut self, now: Instant, identity: &[u8]) -> Option<usize> {
        let slot = *self.by_identity.get(identity)?;
        let expiry = now + self.config.heartbeat_interval * self.config.liveness;
        let worker = self.workers[slot].as_mut().expect("indexed worker is live");
        worker.expiry = expiry;
        worker.last_seen = now;
        Some(slot)
    }

    /// `READY`: a worker (re-)registers and is idle.
    pub fn worker_ready(&mut self, now: Instant, identity: &[u8], info: Registration, out: &mut Vec<Output<M>>) {
        if self.by_identity.contains_key(identity) {
            // A worker that registers again has forgotten whatever it held.
            self.remove_worker(now, identity, "worker restarted while holding the job", out);
        }
        let service = match self.service_index.get(&info.service) {
            Some(&i) => i,
            None => {
                self.services.push(Service {
                    name: info.service.clone(),
                    idle: VecDeque::new(),
                    queue: VecDeque::new(),
                    workers: 0,
                });
                self.service_index.insert(info.service.clone(), self.services.len() - 1);
                self.services.len() - 1
            }
        };
        let worker = Worker {
            identity: identity.to_vec(),
            info,
            service,
            state: WorkerState::Idle,
            job: None,
            expiry: now + self.config.heartbeat_interval * self.config.liveness,
            last_seen: now,
            jobs_done: 0,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.workers[s] = Some(worker);
                s
            }
            None => {
                self.workers.push(Some(worker));
                self.workers.len() - 1
            }
        };
        self.by_identity.insert(identity.to_vec(), slot);
        self.services[service].workers += 1;
        self.services[service].idle.push_back(slot);
        self.resolve_limbo(now, out);
        self.dispatch(now, service, out);
    }

    fn resolve_limbo(&mut self, now: Instant, out: &mut Vec<Output<M>>) {
        if self.limbo.is_empty() || self.services.is_empty() {
            return;
        }
        // Jobs in limbo named no service or one nobody served yet; with the
        // services known now, submit them again to get the ordinary answer.
        for queued in std::mem::take(&mut self.limbo) {
            self.submit(now, queued.service.as_deref().unwrap_or(""), queued.job, out);
        }
    }

    /// `RESULT`: the worker's answer to the job it holds; it is idle again.
    pub fn worker_result(&mut self, now: Instant, identity: &[u8], answer: Answer<M>, out: &mut Vec<Output<M>>) {
        let Answer { job_id, status, still_busy, body } = answer;
        let Some(slot) = self.refresh(now, identity) else {
            return out.push(Output::Disconnect { identity: identity.to_vec() });
        };
        let worker = self.workers[slot].as_mut().expect("live");
        let holds = worker.job.as_ref().is_some_and(|j| j.job_id == job_id);
        if !holds {
            self.counters.bad_requests += 1;
            tracing::warn!(job_id, "worker {} answered a job it does not hold; ignored", worker.info.pid);
            return;
        }
        let inflight = worker.job.take().expect("checked");
        worker.jobs_done += 1;
        let pid = worker.info.pid;
        let service = worker.service;
        match status {
            Status::Ok => self.counters.ok += 1,
            Status::Timeout => self.counters.timeouts += 1,
            _ => self.counters.errors += 1,
        }
        self.latency.record(now.saturating_duration_since(inflight.received).as_micros() as u64);
        out.push(Output::Reply { route: inflight.route, status, pid, body: Body::Payload(body) });
        if worker.state == WorkerState::Leaving {
            self.forget(slot);
            out.push(Output::Disconnect { identity: identity.to_vec() });
        } else if still_busy {
            worker.state = WorkerState::Stuck;
        } else {
            worker.state = WorkerState::Idle;
            self.services[service].idle.push_back(slot);
            self.dispatch(now, service, out);
        }
    }

    /// `HEARTBEAT` from a worker.
    pub fn worker_heartbeat(&mut self, now: Instant, identity: &[u8], out: &mut Vec<Output<M>>) {
        if self.refresh(now, identity).is_none() {
            out.push(Output::Disconnect { identity: identity.to_vec() });
        }
    }

    /// `DISCONNECT` from a worker: no new jobs; a job in progress may still
    /// finish. Acknowledged with a `DISCONNECT` once the worker holds nothing:
    /// after the ack no job can still be on its way to it.
    pub fn worker_disconnect(&mut self, now: Instant, identity: &[u8], out: &mut Vec<Output<M>>) {
        let Some(slot) = self.refresh(now, identity) else {
            return out.push(Output::Disconnect { identity: identity.to_vec() });
        };
        let worker = self.workers[slot].as_mut().expect("live");
        let service = worker.service;
        self.services[service].idle.retain(|&s| s != slot);
        if worker.job.is_some() {
            worker.state = WorkerState::Leaving;
        } else {
            self.forget(slot);
            out.push(Output::Disconnect { identity: identity.to_vec() });
        }
    }

    /// Drops a worker's bookkeeping (its job must already be dealt with).
    fn forget(&mut self, slot: usize) {
        let worker = self.workers[slot].take().expect("live");
        self.by_identity.remove(&worker.identity);
        let service = &mut self.services[worker.service];
        service.idle.retain(|&s| s != slot);
        service.workers -= 1;
        self.free_slots.push(slot);
    }

    /// Removes a worker that died or restarted; its job is retried or answered.
    fn remove_worker(&mut self, now: Instant, identity: &[u8], why: &'static str, out: &mut Vec<Output<M>>) {
        let Some(&slot) = self.by_identity.get(identity) else {
            return;
        };
        let inflight = self.workers[slot].as_mut().expect("live").job.take();
        let service = self.workers[slot].as_ref().expect("live").service;
        self.forget(slot);
        let Some(inflight) = inflight else { return };
        match inflight.retry {
            Some((headers, data, retries)) if inflight.deadline > now => {
                self.counters.retried += 1;
                let job = Job {
                    route: inflight.route,
                    headers,
                    data,
                    deadline: inflight.deadline,
                    retries: retries - 1,
                    received: inflight.received,
                };
                // Retried jobs go first: they have waited longest.
                self.services[service].queue.push_front(Queued { job, since: now, service: None });
                self.dispatch(now, service, out);
            }
            _ => self.reply(out, inflight.route, Status::WorkerLost, why),
        }
    }

    /// Periodic work: heartbeats, dead workers, expired and orphaned jobs.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Output<M>>) {
        if now >= self.next_heartbeat {
            for (slot, w) in self.workers.iter().enumerate() {
                if w.is_some() {
                    out.push(Output::Heartbeat { worker: slot });
                }
            }
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        let dead: Vec<Vec<u8>> =
            self.workers.iter().flatten().filter(|w| w.expiry <= now).map(|w| w.identity.clone()).collect();
        for identity in dead {
            tracing::warn!(
                "worker {} silent for {} heartbeats: dropped",
                String::from_utf8_lossy(&identity),
                self.config.liveness
            );
            self.remove_worker(now, &identity, "worker stopped answering heartbeats", out);
        }
        let grace = self.config.no_worker_grace;
        for i in 0..self.services.len() {
            let no_workers = self.services[i].workers == 0;
            let name = self.services[i].name.clone();
            self.expire(now, out, |s| &mut s.services[i].queue, move |q| no_workers && now >= q.since + grace, &name);
        }
        self.expire(now, out, |s| &mut s.limbo, |q| now >= q.since + grace, "any service");
    }

    fn expire(
        &mut self,
        now: Instant,
        out: &mut Vec<Output<M>>,
        queue: impl Fn(&mut Self) -> &mut VecDeque<Queued<M>>,
        orphaned: impl Fn(&Queued<M>) -> bool,
        service: &str,
    ) {
        if !queue(self).iter().any(|q| q.job.deadline <= now || orphaned(q)) {
            return;
        }
        for q in std::mem::take(queue(self)) {
            if q.job.deadline <= now {
                self.reply(out, q.job.route, Status::Timeout, "job expired while queued");
            } else if orphaned(&q) {
                self.reply(out, q.job.route, Status::NoWorker, format!("no worker for {service}"));
            } else {
                queue(self).push_back(q);
            }
        }
    }

    /// The supervisor saw a local worker process exit: act now rather than
    /// after the missed heartbeats (its job is retried or answered at once).
    pub fn worker_died(&mut self, now: Instant, pid: u32, host: &str, out: &mut Vec<Output<M>>) {
        let dead = self.workers.iter().flatten().find(|w| w.info.pid == pid && w.info.host == host);
        if let Some(identity) = dead.map(|w| w.identity.clone()) {
            self.remove_worker(now, &identity, "the worker process died", out);
        }
    }

    /// Stops taking jobs: queued ones are answered at once and new ones
    /// refused, so clients can go elsewhere; jobs in workers still finish.
    pub fn drain(&mut self, out: &mut Vec<Output<M>>) {
        self.draining = true;
        let queued: Vec<Queued<M>> = self
            .services
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.queue))
            .chain(std::mem::take(&mut self.limbo))
            .collect();
        for q in queued {
            self.reply(out, q.job.route, Status::NoWorker, SHUTTING_DOWN);
        }
    }

    /// The broker is exiting: every job it still holds gets an answer.
    pub fn abandon(&mut self, out: &mut Vec<Output<M>>) {
        self.drain(out);
        let held: Vec<InFlight<M>> = self.workers.iter_mut().flatten().filter_map(|w| w.job.take()).collect();
        for job in held {
            self.reply(out, job.route, Status::WorkerLost, "the broker shut down before the worker answered");
        }
    }

    /// When [`tick`](Self::tick) next has something to do. While jobs wait,
    /// at least every [`QUEUE_CHECK`]: scanning queues on every message would
    /// make each job cost as much as the queue is long.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let mut at = self.next_heartbeat;
        for w in self.workers.iter().flatten() {
            at = at.min(w.expiry);
        }
        if !self.limbo.is_empty() || self.services.iter().any(|s| !s.queue.is_empty()) {
            at = at.min(now + QUEUE_CHECK);
        }
        at
    }

    /// Per-service figures.
    pub fn services(&self) -> impl Iterator<Item = ServiceStatus> + '_ {
        self.services.iter().map(|s| ServiceStatus {
            name: s.name.clone(),
            workers: s.workers,
            idle: s.idle.len(),
            queued: s.queue.len(),
        })
    }

    /// Jobs in limbo: waiting for a worker of a service nobody serves yet.
    pub fn waiting_for_workers(&self) -> usize {
        self.limbo.len()
    }

    /// Registered workers, oldest registration slot first.
    pub fn workers(&self, now: Instant) -> Vec<WorkerStatus> {
        self.workers
            .iter()
            .flatten()
            .map(|w| WorkerStatus {
                identity: String::from_utf8_lossy(&w.identity).into_owned(),
                pid: w.info.pid,
                host: w.info.host.clone(),
                service: w.info.service.clone(),
                plugin: w.info.plugin.clone(),
                plugin_version: w.info.plugin_version.clone(),
                state: match w.state {
                    WorkerState::Idle => "idle",
                    WorkerState::Busy => "busy",
                    WorkerState::Leaving => "leaving",
                    WorkerState::Stuck => "stuck",
                }
                .into(),
                jobs_done: w.jobs_done,
                last_seen_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
            })
            .collect()
    }
}
