//! Jobs in workers: what the broker keeps of each until its answer, and
//! cancelling a client's job wherever it is (waiting, given ahead, running).

use std::time::Instant;

use super::{live, BrokerState, ClientRoute, Output, Payload, WorkerState};
use crate::protocol::{Status, PRIORITY_AGE_STEP};

/// A job a worker holds.
#[derive(Debug)]
pub(super) struct InFlight<M> {
    pub job_id: u64,
    pub route: ClientRoute<M>,
    /// Kept only when the job may be retried.
    pub retry: Option<Retry<M>>,
    pub deadline: Instant,
    pub received: Instant,
    /// When it went to the worker (for the run-time histogram).
    pub dispatched: Instant,
    pub priority: u8,
    /// Its client cancelled it and was answered: the worker's answer is
    /// dropped, and it is neither retried nor answered again.
    pub cancelled: bool,
    /// Asked back for a job of higher priority (asked once).
    pub recalled: bool,
}

/// What it takes to send a job again after its worker is lost: copies of
/// its parts, and how many more times it may go.
#[derive(Debug)]
pub(super) struct Retry<M> {
    pub headers: M,
    pub data: M,
    pub retries: u32,
    pub inline: bool,
}

impl<M: Payload> BrokerState<M> {
    /// `CANCEL` of request `req_id` from `client`. A waiting job is taken
    /// out of its queue; a job a worker holds is marked, and the worker is
    /// told (its handler may stop early; its answer is dropped). Either way
    /// the client is answered `CANCELLED` now. A request already answered
    /// (or never seen) is left alone: its answer went, or goes, as it is.
    pub fn cancel(&mut self, client: &[u8], req_id: u64, out: &mut Vec<Output<M>>) {
        let ours = |route: &ClientRoute<M>| !route.legacy && route.req_id == req_id && route.identity.bytes() == client;
        // Each service's queue, then the limbo's (`None`: no service).
        for at in (0..self.services.len()).map(Some).chain([None]) {
            let queue = match at {
                Some(i) => &mut self.services[i].queue,
                None => &mut self.limbo,
            };
            if let Some(q) = queue.remove_first(|q| ours(&q.job.route)) {
                self.unqueued(&q.job);
                return self.reply(out, at, q.job.route, Status::Cancelled, "cancelled while waiting");
            }
        }
        for (slot, worker) in self.workers.iter_mut().enumerate() {
            let Some(worker) = worker else { continue };
            let Some(held) = worker.jobs.iter_mut().find(|j| !j.cancelled && ours(&j.route)) else { continue };
            held.cancelled = true;
            held.retry = None;
            let route = ClientRoute { identity: held.route.identity.duplicate(), req_id, legacy: false };
            let (job_id, service) = (held.job_id, worker.service);
            self.counters.cancelled_running += 1;
            self.reply(out, Some(service), route, Status::Cancelled, "cancelled while in a worker");
            return out.push(Output::Cancel { worker: slot, job_id });
        }
    }
}

impl<M: Payload> BrokerState<M> {
    /// Asks the worker in `slot` back for the jobs it holds ahead (not the
    /// one it runs, none from `upto` on) of lower priority than `priority`:
    /// given back unrun, they wait first in their lanes and the higher job
    /// goes ahead of them. Only jobs the broker received within the last
    /// [`PRIORITY_AGE_STEP`] are asked back, each once: a low job is not
    /// sent to and fro without end under a stream of higher ones.
    pub(super) fn recall_below(
        &mut self,
        now: Instant,
        slot: usize,
        priority: u8,
        upto: usize,
        out: &mut Vec<Output<M>>,
    ) {
        let worker = live(&mut self.workers, slot);
        if worker.state != WorkerState::Busy {
            return;
        }
        let ahead = worker.jobs.iter_mut().take(upto).skip(1);
        for held in ahead.filter(|j| !j.recalled && !j.cancelled && j.priority < priority) {
            if now.saturating_duration_since(held.received) < PRIORITY_AGE_STEP {
                held.recalled = true;
                self.counters.recalled += 1;
                out.push(Output::Recall { worker: slot, job_id: held.job_id });
            }
        }
    }

    /// A job of `priority` waits in service `i`'s queue with no worker to
    /// take it: one worker holding lower jobs ahead is asked for them back.
    pub(super) fn recall_for(&mut self, now: Instant, i: usize, priority: u8, out: &mut Vec<Output<M>>) {
        let holder = self.workers.iter().enumerate().find_map(|(slot, w)| {
            let w = w.as_ref()?;
            let lower = |j: &InFlight<M>| !j.recalled && j.priority < priority;
            (w.service == i && w.state == WorkerState::Busy && w.jobs.iter().skip(1).any(lower)).then_some(slot)
        });
        if let Some(slot) = holder {
            self.recall_below(now, slot, priority, usize::MAX, out);
        }
    }
}
