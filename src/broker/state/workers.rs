//! Worker events: registration, answers, returned jobs, heartbeats, departures
//! and deaths, and what each does to the jobs a worker holds.

use std::collections::VecDeque;
use std::time::Instant;

use super::lanes::Lanes;
use super::{live, Answer, BrokerState, Job, Output, Payload, Retry, Service, Worker, WorkerState};
use crate::protocol::{Registration, Status};

/// Weight of the newest sample in a worker's time-per-job average.
const EWMA: f64 = 0.2;

impl<M: Payload> BrokerState<M> {
    fn refresh(&mut self, now: Instant, identity: &[u8]) -> Option<usize> {
        let slot = *self.by_identity.get(identity)?;
        let expiry = now + self.config.heartbeat_interval * self.config.liveness;
        let worker = live(&mut self.workers, slot);
        if worker.starved {
            let silent = now.saturating_duration_since(worker.last_seen);
            tracing::info!("worker {} heard again after {silent:.1?} of silence", worker.info.pid);
            worker.starved = false;
        }
        worker.expiry = expiry;
        worker.last_seen = now;
        Some(slot)
    }

    /// `READY`: a worker registers and is idle. Again from the same
    /// identity (the same process: identities hold the pid and random
    /// bits), it says it is free again (a stuck handler returned) or that
    /// it thought us gone: it keeps the jobs it holds, since any still on
    /// their way reach it and are answered.
    pub fn worker_ready(&mut self, now: Instant, identity: &[u8], info: Registration, out: &mut Vec<Output<M>>) {
        if let Some(slot) = self.refresh(now, identity) {
            let worker = live(&mut self.workers, slot);
            worker.info = Registration { service: worker.info.service.clone(), ..info };
            if worker.state == WorkerState::Leaving {
                return;
            }
            let service = worker.service;
            worker.state = if worker.jobs.is_empty() { WorkerState::Idle } else { WorkerState::Busy };
            let idle = &mut self.services[service].idle;
            if worker.state == WorkerState::Idle && !idle.contains(&slot) {
                idle.push_back(slot);
            }
            return self.dispatch(now, service, out);
        }
        if self.default_service.is_none() {
            tracing::info!("default service: {} (the first to register; --default-service names one)", info.service);
            self.default_service = Some(info.service.clone());
        }
        let service = match self.service_index.get(&info.service) {
            Some(&i) => i,
            None => {
                let name = info.service.clone();
                self.services.push(Service {
                    name: name.clone(),
                    idle: VecDeque::new(),
                    queue: Lanes::default(),
                    workers: 0,
                    workerless_since: now,
                    metrics: self.retired.remove(&name).unwrap_or_default(),
                });
                self.service_index.insert(name, self.services.len() - 1);
                self.services.len() - 1
            }
        };
        let worker = Worker {
            identity: identity.to_vec(),
            info,
            service,
            state: WorkerState::Idle,
            jobs: VecDeque::new(),
            expiry: now + self.config.heartbeat_interval * self.config.liveness,
            last_seen: now,
            jobs_done: 0,
            job_us: None,
            current_since: now,
            local_pid: None,
            starved: false,
            lane_jobs: 0,
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
        for queued in self.limbo.take_all() {
            self.unqueued(&queued.job);
            self.submit(now, queued.service.as_deref().unwrap_or(""), queued.job, out);
        }
    }

    /// `RESULT`: the worker's answer to one of the jobs it holds.
    pub fn worker_result(&mut self, now: Instant, identity: &[u8], answer: Answer<M>, out: &mut Vec<Output<M>>) {
        let Answer { job_id, status, still_busy, run_us, body, inline } = answer;
        let Some(slot) = self.refresh(now, identity) else {
            return out.push(Output::Disconnect { identity: identity.to_vec() });
        };
        let worker = live(&mut self.workers, slot);
        let Some(position) = worker.jobs.iter().position(|j| j.job_id == job_id) else {
            self.counters.bad_requests += 1;
            tracing::warn!(job_id, "worker {} answered a job it does not hold; ignored", worker.info.pid);
            return;
        };
        let inflight = worker.jobs.remove(position).expect("position is valid");
        worker.jobs_done += 1;
        // The handler's own time when the worker reports it (answers held
        // and sent together arrive at once); else the time seen from here,
        // since the job's start or the previous answer.
        let seen = now.saturating_duration_since(worker.current_since).as_micros() as f64;
        let sample = run_us.map_or(seen, f64::from);
        worker.job_us = Some(worker.job_us.map_or(sample, |avg| avg * (1.0 - EWMA) + sample * EWMA));
        worker.current_since = now;
        let (pid, service, state, idle) = (worker.info.pid, worker.service, worker.state, worker.jobs.is_empty());
        // A cancelled job's client has its answer: this one is dropped.
        if !inflight.cancelled {
            match status {
                Status::Ok => self.counters.ok += 1,
                Status::Timeout => self.counters.timeouts += 1,
                _ => self.counters.errors += 1,
            }
            self.latency.record(now.saturating_duration_since(inflight.received).as_micros() as u64);
            // As the broker-wide counters: a worker's other statuses are errors.
            let ended = if matches!(status, Status::Ok | Status::Timeout) { status } else { Status::HandlerError };
            self.count_outcome(Some(service), ended);
            self.count_run(service, now, inflight.dispatched);
            let body = if inline { super::Body::Frame(body) } else { super::Body::Payload(body) };
            out.push(Output::Reply { route: inflight.route, status, pid, body });
        }
        if state == WorkerState::Leaving {
            if idle {
                self.forget(now, slot);
                out.push(Output::Disconnect { identity: identity.to_vec() });
            }
        } else if still_busy {
            // Its handler still runs: nothing new until it registers again.
            live(&mut self.workers, slot).state = WorkerState::Stuck;
        } else {
            if idle {
                live(&mut self.workers, slot).state = WorkerState::Idle;
                self.services[service].idle.push_back(slot);
            }
            self.dispatch(now, service, out);
        }
    }

    /// `RETURN`: a worker hands back a job it will not run (its handler is
    /// stuck, or it is busy with another broker's job: `elsewhere`); the job
    /// goes first in line again, deadline unchanged. Busy elsewhere, the
    /// worker gets nothing more until its next `READY`.
    #[allow(clippy::too_many_arguments)]
    pub fn worker_return(
        &mut self,
        now: Instant,
        identity: &[u8],
        job_id: u64,
        headers: M,
        data: M,
        elsewhere: bool,
        out: &mut Vec<Output<M>>,
    ) {
        let Some(slot) = self.refresh(now, identity) else {
            return out.push(Output::Disconnect { identity: identity.to_vec() });
        };
        let worker = live(&mut self.workers, slot);
        let Some(position) = worker.jobs.iter().position(|j| j.job_id == job_id) else {
            self.counters.bad_requests += 1;
            return;
        };
        let inflight = worker.jobs.remove(position).expect("position is valid");
        let (service, idle, state) = (worker.service, worker.jobs.is_empty(), worker.state);
        let retries = inflight.retry.map_or(0, |r| r.retries);
        let job = Job {
            route: inflight.route,
            headers,
            data,
            deadline: inflight.deadline,
            retries,
            priority: inflight.priority,
            received: inflight.received,
            inline: false,
        };
        // A cancelled job is answered already: it does not wait again.
        if !inflight.cancelled {
            self.requeued(service, now, job);
        }
        if idle && state == WorkerState::Leaving {
            self.forget(now, slot);
            out.push(Output::Disconnect { identity: identity.to_vec() });
        } else if elsewhere && state != WorkerState::Leaving {
            live(&mut self.workers, slot).state = WorkerState::Elsewhere;
            self.services[service].idle.retain(|&s| s != slot);
        } else if idle && state == WorkerState::Busy {
            live(&mut self.workers, slot).state = WorkerState::Idle;
            self.services[service].idle.push_back(slot);
        }
        self.dispatch(now, service, out);
    }

    /// `HEARTBEAT` from a worker.
    pub fn worker_heartbeat(&mut self, now: Instant, identity: &[u8], out: &mut Vec<Output<M>>) {
        if self.refresh(now, identity).is_none() {
            out.push(Output::Disconnect { identity: identity.to_vec() });
        }
    }

    /// A worker's count of the jobs it answered on its lane (its heartbeats
    /// carry it): what it adds since the last is counted.
    pub fn worker_lane_jobs(&mut self, identity: &[u8], total: u64) {
        let Some(&slot) = self.by_identity.get(identity) else { return };
        let worker = live(&mut self.workers, slot);
        self.counters.lane_jobs += total.saturating_sub(worker.lane_jobs);
        worker.lane_jobs = worker.lane_jobs.max(total);
    }

    /// `DISCONNECT` from a worker: no new jobs; those it holds may still
    /// finish. Acknowledged with a `DISCONNECT` once the worker holds nothing:
    /// after the ack no job can still be on its way to it.
    pub fn worker_disconnect(&mut self, now: Instant, identity: &[u8], out: &mut Vec<Output<M>>) {
        let Some(slot) = self.refresh(now, identity) else {
            return out.push(Output::Disconnect { identity: identity.to_vec() });
        };
        let worker = live(&mut self.workers, slot);
        let service = worker.service;
        self.services[service].idle.retain(|&s| s != slot);
        if worker.jobs.is_empty() {
            self.forget(now, slot);
            out.push(Output::Disconnect { identity: identity.to_vec() });
        } else {
            worker.state = WorkerState::Leaving;
        }
    }

    /// The supervisor saw a local worker process exit: act now rather than
    /// after the missed heartbeats (its jobs are retried or answered at once).
    pub fn worker_died(&mut self, now: Instant, pid: u32, host: &str, out: &mut Vec<Output<M>>) {
        let dead = self.workers.iter().flatten().find(|w| w.info.pid == pid && w.info.host == host);
        if let Some(identity) = dead.map(|w| w.identity.clone()) {
            self.remove_worker(now, &identity, "the worker process died", out);
        }
    }

    /// A local worker's connection closed (its process exited, or it gave
    /// up on this broker): its jobs are retried or answered now.
    pub fn worker_connection_closed(&mut self, now: Instant, identity: &[u8], out: &mut Vec<Output<M>>) {
        self.remove_worker(now, identity, "the worker's connection closed", out);
    }

    /// The worker's key was removed from the allow-list: it is dropped now
    /// (its jobs retried or answered, as if it died) and told to go.
    pub fn worker_revoked(&mut self, now: Instant, identity: &[u8], out: &mut Vec<Output<M>>) {
        if self.by_identity.contains_key(identity) {
            self.remove_worker(now, identity, "its worker's key was revoked", out);
            out.push(Output::Disconnect { identity: identity.to_vec() });
        }
    }

    /// Whether a worker with this identity is registered.
    pub fn knows_worker(&self, identity: &[u8]) -> bool {
        self.by_identity.contains_key(identity)
    }

    /// The worker behind `identity` is connected over ipc and the kernel
    /// says its process is `pid`: its death is judged by its process.
    pub fn worker_is_local(&mut self, identity: &[u8], pid: u32) {
        if let Some(&slot) = self.by_identity.get(identity) {
            live(&mut self.workers, slot).local_pid = Some(pid);
        }
    }

    /// Drops a worker's bookkeeping (its jobs must already be dealt with).
    pub(super) fn forget(&mut self, now: Instant, slot: usize) {
        let worker = self.workers[slot].take().expect("live");
        self.by_identity.remove(&worker.identity);
        let service = &mut self.services[worker.service];
        service.idle.retain(|&s| s != slot);
        service.workers -= 1;
        if service.workers == 0 {
            service.workerless_since = now;
        }
        self.free_slots.push(slot);
    }

    /// Removes a worker that died or restarted; each job it held is retried
    /// (first in line) if it allows it, or answered `WorkerLost`.
    pub(super) fn remove_worker(&mut self, now: Instant, identity: &[u8], why: &'static str, out: &mut Vec<Output<M>>) {
        let Some(&slot) = self.by_identity.get(identity) else { return };
        let held = std::mem::take(&mut live(&mut self.workers, slot).jobs);
        let service = live(&mut self.workers, slot).service;
        self.forget(now, slot);
        // Reversed, so that pushing each to the front keeps their order.
        for inflight in held.into_iter().rev().filter(|j| !j.cancelled) {
            match inflight.retry {
                Some(Retry { headers, data, retries, inline }) if inflight.deadline > now => {
                    self.counters.retried += 1;
                    let job = Job {
                        route: inflight.route,
                        headers,
                        data,
                        deadline: inflight.deadline,
                        retries: retries - 1,
                        priority: inflight.priority,
                        received: inflight.received,
                        inline,
                    };
                    self.requeued(service, now, job);
                }
                _ => self.reply(out, Some(service), inflight.route, Status::WorkerLost, why),
            }
        }
        self.dispatch(now, service, out);
    }
}
