//! The native client: submits jobs to the broker's front socket and waits for
//! their answers, never longer than the caller's timeout.
//!
//! One `Client` is `Send + Sync`: threads share it and keep many jobs in
//! flight over its one DEALER socket (request ids; a REQ socket whose peer
//! dies is stuck for good). See `mux` for how threads share the socket.

mod job;
mod mux;

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use job::{JobRequest, TimeoutPolicy};

use crate::auth::CurveClient;
use crate::error::{Error, Result};
use crate::protocol::{encode_headers, encode_request_tail, Command, CommandFrame, Control, Status, INLINE_MAX};
use crate::status::BrokerStatus;
use job::LateCounts;
use mux::{Mux, Outcome, Reply};

/// A connection to a broker's front socket.
pub struct Client {
    endpoint: String,
    mux: Mux,
    late: Mutex<LateCounts>,
}

impl Client {
    /// Connects (in the background: this never blocks on the broker).
    pub fn connect(endpoint: &str) -> Result<Client> {
        Client::connect_with(endpoint, None)
    }

    /// Connects with CURVE credentials (a broker started with
    /// `--curve-secret`; see [`CurveClient::from_files`]), or in plaintext
    /// with `None`.
    pub fn connect_with(endpoint: &str, curve: Option<&CurveClient>) -> Result<Client> {
        Ok(Client { endpoint: endpoint.to_string(), mux: Mux::connect(endpoint, curve)?, late: Mutex::default() })
    }

    /// The broker endpoint this client was connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs one job and returns its result, or a typed error: the handler's
    /// message ([`Error::Handler`]), [`Error::Timeout`], [`Error::NoWorker`],
    /// [`Error::BrokerUnreachable`], ...
    pub fn execute(&self, job: impl Into<JobRequest>, timeout: Duration) -> Result<Vec<u8>> {
        let id = self.mux.next_id();
        let outcome = self.mux.call(vec![(id, request_frames(id, job.into(), timeout))], Instant::now() + timeout)?;
        self.result(outcome.into_iter().next().expect("one outcome"), timeout)
    }

    /// Runs many jobs at once (all in flight together) and returns their
    /// results in order; `timeout` bounds them all together.
    pub fn execute_many<J: Into<JobRequest>>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        timeout: Duration,
    ) -> Vec<Result<Vec<u8>>> {
        let requests: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let id = self.mux.next_id();
                (id, request_frames(id, job.into(), timeout))
            })
            .collect();
        match self.mux.call(requests, Instant::now() + timeout) {
            Ok(outcomes) => outcomes.into_iter().map(|o| self.result(o, timeout)).collect(),
            Err(e) => vec![Err(e)],
        }
    }

    /// Streams jobs through the broker keeping up to `window` in flight (a
    /// sliding window on this thread); `done(index, result)` is called for
    /// each job as its answer arrives. Each job gets `timeout`.
    pub fn pipeline<J: Into<JobRequest>>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        window: usize,
        timeout: Duration,
        mut done: impl FnMut(usize, Result<Vec<u8>>),
    ) -> Result<()> {
        let mut jobs = jobs.into_iter().enumerate();
        let index_of = std::cell::RefCell::new(std::collections::HashMap::with_capacity(window));
        let next = |id: u64| {
            let (index, job) = jobs.next()?;
            index_of.borrow_mut().insert(id, index);
            Some(request_frames(id, job.into(), timeout))
        };
        self.mux.pipeline(next, window.max(1), timeout, |id, outcome| {
            let index = index_of.borrow_mut().remove(&id).expect("an id this pipeline sent");
            done(index, self.result(outcome, timeout));
        })
    }

    /// Runs one job under Powerhose's timeout policy (see [`TimeoutPolicy`]).
    pub fn execute_with_policy(&self, job: impl Into<JobRequest>, policy: &TimeoutPolicy) -> Result<Vec<u8>> {
        let start = Instant::now();
        let limit = policy.max_overflow.max(policy.timeout);
        let id = self.mux.next_id();
        let outcome = self.mux.call(vec![(id, request_frames(id, job.into(), limit))], start + limit)?;
        let pid = match &outcome[0] {
            Outcome::Reply(reply) if reply.status == Status::Ok => Some(reply.pid),
            _ => None,
        };
        let result = self.result(outcome.into_iter().next().expect("one outcome"), limit);
        if let Some(pid) = pid {
            let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
            if !late.accept(policy, pid, start.elapsed()) {
                return Err(Error::Timeout(policy.timeout));
            }
        }
        result
    }

    /// The broker's process id (answered by the broker itself, whatever the workers do).
    pub fn ping(&self, timeout: Duration) -> Result<u32> {
        let reply = self.control(Command::Ping, b"", timeout)?;
        parse_number(reply.body(), "PING answered without a pid")
    }

    /// How many workers serve `service` (all services when empty).
    pub fn workers(&self, service: &str, timeout: Duration) -> Result<usize> {
        let reply = self.control(Command::Service, service.as_bytes(), timeout)?;
        parse_number(reply.body(), "SERVICE answered without a count")
    }

    /// The broker's status: services, workers, counters, latency.
    pub fn status(&self, timeout: Duration) -> Result<BrokerStatus> {
        let reply = self.control(Command::Status, b"", timeout)?;
        serde_json::from_slice(reply.body()).map_err(|e| Error::Protocol(format!("STATUS answer is not valid: {e}")))
    }

    /// Asks the cluster's supervisor to replace every worker, one at a time.
    pub fn reload(&self, timeout: Duration) -> Result<()> {
        self.supervise(&Control::Reload, timeout)
    }

    /// Asks the cluster's supervisor to run `workers` workers (or change by `delta`).
    pub fn scale(&self, workers: Option<usize>, delta: Option<i64>, timeout: Duration) -> Result<()> {
        self.supervise(&Control::Scale { workers, delta }, timeout)
    }

    fn supervise(&self, request: &Control, timeout: Duration) -> Result<()> {
        let json = serde_json::to_vec(request).expect("control serialises");
        let reply = self.control(Command::Control, &json, timeout)?;
        match reply.status {
            Status::Ok => Ok(()),
            _ => Err(Error::BadRequest(String::from_utf8_lossy(reply.body()).into_owned())),
        }
    }

    fn control(&self, command: Command, tail: &[u8], timeout: Duration) -> Result<Reply> {
        let id = self.mux.next_id();
        let frames = vec![CommandFrame::new(command, id, 0, tail).encode().into()];
        match self.mux.call(vec![(id, frames)], Instant::now() + timeout)?.into_iter().next() {
            Some(Outcome::Reply(reply)) => Ok(reply),
            Some(Outcome::Timeout) => Err(Error::Timeout(timeout)),
            _ => Err(self.unreachable(timeout)),
        }
    }

    fn result(&self, outcome: Outcome, timeout: Duration) -> Result<Vec<u8>> {
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Timeout => return Err(Error::Timeout(timeout)),
            Outcome::Unreachable => return Err(self.unreachable(timeout)),
        };
        let text = || String::from_utf8_lossy(reply.body()).into_owned();
        match reply.status {
            Status::Ok => Ok(reply.body().to_vec()),
            Status::HandlerError => Err(Error::Handler { pid: reply.pid, message: text() }),
            Status::Timeout => Err(Error::JobTimedOut { pid: reply.pid, message: text() }),
            Status::NoWorker => Err(Error::NoWorker(text())),
            Status::WorkerLost => Err(Error::WorkerLost(text())),
            Status::Busy => Err(Error::Busy(text())),
            Status::UnknownService => Err(Error::UnknownService(text())),
            Status::BadRequest => Err(Error::BadRequest(text())),
        }
    }

    fn unreachable(&self, waited: Duration) -> Error {
        Error::BrokerUnreachable { endpoint: self.endpoint.clone(), waited }
    }
}

fn request_frames(id: u64, job: JobRequest, timeout: Duration) -> Vec<zmq::Message> {
    let timeout_ms = timeout.as_millis().clamp(1, u32::MAX as u128) as u32;
    let headers = encode_headers(job.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let tail = encode_request_tail(&job.service, &headers);
    let frame = CommandFrame::new(Command::Request, id, timeout_ms, &tail);
    if job.data.len() <= INLINE_MAX {
        return vec![frame.with_data(&job.data).message()];
    }
    vec![frame.message(), job.data.into()]
}

fn parse_number<T: std::str::FromStr>(body: &[u8], what: &str) -> Result<T> {
    std::str::from_utf8(body).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Error::Protocol(what.into()))
}
