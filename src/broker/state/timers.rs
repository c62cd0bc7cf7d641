//! Time-driven work (heartbeats, dead workers, expired and orphaned jobs),
//! shutting down (drain, abandon), and the figures `STATUS` reports.

use super::lanes::Lanes;
use std::time::Instant;

use super::{
    live, BrokerState, InFlight, Output, Payload, Queued, Status, Vitality, WorkerState, LOCAL_SILENCE_LIMIT,
    QUEUE_CHECK, SHUTTING_DOWN,
};
use crate::protocol::{REQUESTS_WAIT_AHEAD, REQUESTS_WAIT_MAX, SERVICE_FORGET_GRACE};
use crate::status::{ServiceStatus, WorkerStatus};

impl<M: Payload> BrokerState<M> {
    /// Periodic work: heartbeats, dead workers, expired and orphaned jobs.
    /// `probe` tells what a local worker's process is doing (see
    /// [`Vitality`]); it is asked only about silent local workers.
    pub fn tick(&mut self, now: Instant, mut probe: impl FnMut(u32) -> Vitality, out: &mut Vec<Output<M>>) {
        let window = self.config.heartbeat_interval * self.config.liveness;
        let mut dead: Vec<(Vec<u8>, &'static str)> = Vec::new();
        for w in self.workers.iter_mut().flatten().filter(|w| w.expiry <= now) {
            let silent = now.saturating_duration_since(w.last_seen);
            let why = match w.local_pid.map(&mut probe) {
                Some(Vitality::Gone) => "the worker process died",
                Some(Vitality::Running) if silent < window * LOCAL_SILENCE_LIMIT => {
                    if !w.starved {
                        tracing::warn!(
                            "worker {} silent for {silent:.1?}, but its process runs (starved of CPU?): keeping its jobs",
                            w.info.pid
                        );
                        w.starved = true;
                    }
                    w.expiry = now + self.config.heartbeat_interval;
                    continue;
                }
                _ => "worker stopped answering heartbeats",
            };
            tracing::warn!("worker {} ({}) silent for {silent:.1?}: dropped ({why})", w.info.pid, w.info.host);
            dead.push((w.identity.clone(), why));
        }
        // Out of rotation first (found by the fuzzer): removing one dead
        // worker re-dispatches its retried jobs, which must not go to another
        // dead worker about to be removed.
        for (identity, _) in &dead {
            let slot = self.by_identity[identity];
            let worker = live(&mut self.workers, slot);
            worker.state = WorkerState::Stuck;
            let service = worker.service;
            self.services[service].idle.retain(|&s| s != slot);
        }
        for (identity, why) in dead {
            self.remove_worker(now, &identity, why, out);
        }
        // After the dead are gone: a heartbeat must not name a freed slot.
        if now >= self.next_heartbeat {
            for (slot, w) in self.workers.iter().enumerate() {
                if w.is_some() {
                    out.push(Output::Heartbeat { worker: slot });
                }
            }
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        let grace = self.config.no_worker_grace;
        for i in 0..self.services.len() {
            let no_workers = self.services[i].workers == 0;
            let since = self.services[i].workerless_since;
            let name = self.services[i].name.clone();
            self.expire(
                now,
                out,
                Some(i),
                |s| &mut s.services[i].queue,
                move |q| no_workers && now >= q.since.max(since) + grace,
                &name,
            );
        }
        self.expire(now, out, None, |s| &mut s.limbo, |q| now >= q.since + grace, "any service");
        self.forget_idle_services(now);
    }

    /// Drops services that have had no worker and no job for
    /// [`SERVICE_FORGET_GRACE`]. The last service takes the freed index, so
    /// its workers are pointed at it (a forgotten one has none).
    fn forget_idle_services(&mut self, now: Instant) {
        for i in (0..self.services.len()).rev() {
            let s = &self.services[i];
            if s.workers > 0 || !s.queue.is_empty() || now < s.workerless_since + SERVICE_FORGET_GRACE {
                continue;
            }
            let gone = self.services.swap_remove(i);
            self.service_index.remove(&gone.name);
            self.retired.insert(gone.name.clone(), gone.metrics);
            tracing::info!("service {} forgotten: no worker for {SERVICE_FORGET_GRACE:?}", gone.name);
            if let Some(moved) = self.services.get(i) {
                let from = self.services.len();
                self.service_index.insert(moved.name.clone(), i);
                for w in self.workers.iter_mut().flatten().filter(|w| w.service == from) {
                    w.service = i;
                }
            }
        }
    }

    fn expire(
        &mut self,
        now: Instant,
        out: &mut Vec<Output<M>>,
        at: Option<usize>,
        queue: impl Fn(&mut Self) -> &mut Lanes<M>,
        orphaned: impl Fn(&Queued<M>) -> bool,
        service: &str,
    ) {
        if !queue(self).iter().any(|q| q.job.deadline <= now || orphaned(q)) {
            return;
        }
        for q in queue(self).take_all() {
            if q.job.deadline <= now {
                self.unqueued(&q.job);
                self.reply(out, at, q.job.route, Status::Timeout, "job expired while queued");
            } else if orphaned(&q) {
                self.unqueued(&q.job);
                self.reply(out, at, q.job.route, Status::NoWorker, format!("no worker for {service}"));
            } else {
                queue(self).push_back(q);
            }
        }
    }

    /// Stops taking jobs: queued ones are answered at once and new ones
    /// refused, so clients can go elsewhere; jobs in workers still finish.
    pub fn drain(&mut self, out: &mut Vec<Output<M>>) {
        self.draining = true;
        let mut queued: Vec<(Option<usize>, Queued<M>)> = Vec::new();
        for (i, s) in self.services.iter_mut().enumerate() {
            queued.extend(s.queue.take_all().into_iter().map(|q| (Some(i), q)));
        }
        queued.extend(self.limbo.take_all().into_iter().map(|q| (None, q)));
        for (at, q) in queued {
            self.unqueued(&q.job);
            self.reply(out, at, q.job.route, Status::NoWorker, SHUTTING_DOWN);
        }
    }

    /// The broker is exiting: every job it still holds gets an answer.
    pub fn abandon(&mut self, out: &mut Vec<Output<M>>) {
        self.drain(out);
        let held: Vec<(usize, InFlight<M>)> = self
            .workers
            .iter_mut()
            .flatten()
            .flat_map(|w| std::mem::take(&mut w.jobs).into_iter().map(|j| (w.service, j)).collect::<Vec<_>>())
            .collect();
        for (service, job) in held.into_iter().filter(|(_, j)| !j.cancelled) {
            let why = "the broker shut down before the worker answered";
            self.reply(out, Some(service), job.route, Status::WorkerLost, why);
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
            queued_by_priority: s.queue.depths().to_vec(),
        })
    }

    /// Every service has jobs waiting, so no worker may take another and a
    /// new request could only join a queue. The I/O loop then reads the
    /// front only when it wakes anyway (a worker's message, or the queue
    /// check at most [`QUEUE_CHECK`] away): under load that saves the broker
    /// a wake-up per request.
    pub fn saturated(&self) -> bool {
        !self.services.is_empty() && self.services.iter().all(|s| !s.queue.is_empty())
    }

    /// Every worker is busy with at least [`REQUESTS_WAIT_AHEAD`] jobs, each
    /// taking at most [`REQUESTS_WAIT_MAX`]: a new request may then wait in
    /// its socket until the loop wakes anyway, for a worker's next answer
    /// (due within about a job's time; a worker sends before it can run dry)
    /// or [`REQUESTS_WAIT_MAX`] at most, and be read with the others that
    /// came meanwhile. With many callers each waiting on one short job, that
    /// saves the broker a wake-up per request.
    pub fn requests_may_wait(&self) -> bool {
        let limit = REQUESTS_WAIT_MAX.as_micros() as f64;
        let mut workers = self.workers.iter().flatten().peekable();
        workers.peek().is_some()
            && workers.all(|w| {
                w.state == WorkerState::Busy
                    && w.jobs.len() >= REQUESTS_WAIT_AHEAD
                    && w.job_us.is_some_and(|us| us <= limit)
            })
    }

    /// Jobs in limbo: waiting for a worker of a service nobody serves yet.
    pub fn waiting_for_workers(&self) -> usize {
        self.limbo.len()
    }

    /// Registered workers, by slot.
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
                    WorkerState::Elsewhere => "elsewhere",
                }
                .into(),
                jobs_done: w.jobs_done,
                in_flight: w.jobs.len(),
                last_seen_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
            })
            .collect()
    }
}
