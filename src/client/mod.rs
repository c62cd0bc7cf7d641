//! The native client: submits jobs to the broker's front socket and waits for
//! their answers, never longer than the caller's timeout.
//!
//! One `Client` is `Send + Sync`: threads share it and keep many jobs in
//! flight over its one DEALER socket (request ids; a REQ socket whose peer
//! dies is stuck for good). See `mux` for how threads share the socket, and
//! `many` for a client of several brokers ([`Client::connect_many`]).

mod drive;
mod failover;
mod job;
mod lane_job;
mod lanes;
mod local;
mod many;
mod mux;
mod reply;
mod submit;
mod submitter;

use std::borrow::Cow;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use job::{JobRequest, TimeoutPolicy};
pub use submit::{Cancel, JobHandle};
pub use submitter::ZMQ_SUBMITTERS;

use crate::auth::CurveClient;
use crate::error::{Error, Result};
use crate::protocol::{Command, CommandFrame, Control, Status, BROKER_SEND_WAIT};
use crate::status::BrokerStatus;
use job::{job_retries, request_frames, with_retries, LateCounts};
use mux::{Mux, Outcome, Reply};

/// A connection to a broker's front socket, or to several brokers'.
pub struct Client {
    endpoint: String,
    route: Route,
    late: Mutex<LateCounts>,
    /// Kept for the connection [`Client::submit`] opens of its own.
    curve: Option<CurveClient>,
    /// Started by the first [`Client::submit`].
    submitter: OnceLock<Result<submitter::Submitter>>,
}

// The single broker's Mux stays inline, not boxed: no indirection on the
// benchmarked path; a client is one per application, not per request.
#[allow(clippy::large_enum_variant)]
enum Route {
    /// One broker: the requests go straight to its socket.
    One(Mux),
    /// Several: spread over those up, and sent elsewhere when one is lost.
    Many(many::Many),
    /// One broker over the local transport (`unix://`).
    Local(local::Local),
}

/// One request, as [`Client::send`] takes it.
enum Request<'a> {
    /// Borrowed from a caller who keeps it ([`Client::execute_ref`]).
    Job(Cow<'a, JobRequest>, Duration),
    Control(Command, &'a [u8]),
}

impl Client {
    /// Connects (in the background: this never blocks on the broker).
    pub fn connect(endpoint: &str) -> Result<Client> {
        Client::connect_with(endpoint, None)
    }

    /// Connects with CURVE credentials (a broker started with
    /// `--curve-secret`; see [`CurveClient::from_files`]), or in plaintext
    /// with `None`.
    /// A `unix://` endpoint takes no credentials: only the broker's user
    /// can connect to it.
    pub fn connect_with(endpoint: &str, curve: Option<&CurveClient>) -> Result<Client> {
        let route = match crate::local::is_local(endpoint) {
            true => Route::Local(local::Local::new(endpoint)?),
            false => Route::One(Mux::connect(endpoint, curve)?),
        };
        Ok(Client::new(endpoint.to_string(), route, curve))
    }

    /// Connects to several brokers (one alone is [`Client::connect_with`]).
    /// Each request goes to the next broker that is up, in turn; a broker
    /// whose connection drops, or that leaves a ping unanswered for
    /// [`BROKER_SILENCE`](crate::protocol::BROKER_SILENCE), is skipped until
    /// it answers again (pinged with a backoff). A request that cannot be
    /// sent goes to another broker; one whose broker's connection drops
    /// while it is there is answered [`Error::BrokerLost`] at once, or, if
    /// the job allows a retry ([`JobRequest::retry`]), sent to another broker
    /// with one retry fewer. Delivery is therefore at most once without a
    /// retry and at least once with one.
    ///
    /// Control commands (`ping`, `status`, `workers`, ...) go to one broker
    /// that is up. [`Client::execute_many`] sends its jobs to one broker, and
    /// a [`Client::pipeline`] streams to one broker at a time (the next when
    /// it is lost); requests spread over the brokers from call to call.
    pub fn connect_many(endpoints: &[impl AsRef<str>], curve: Option<&CurveClient>) -> Result<Client> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        match endpoints.as_slice() {
            [] => Err(Error::BadFlag("a client needs at least one broker endpoint".into())),
            [one] => Client::connect_with(one, curve),
            several if several.iter().any(|e| crate::local::is_local(e)) => Err(Error::BadFlag(
                "a client of several brokers reaches them over ipc:// or tcp://, not unix://".into(),
            )),
            _ => {
                let endpoint = endpoints[0].clone();
                let route = Route::Many(many::Many::connect(&endpoints, curve)?);
                Ok(Client::new(endpoint, route, curve))
            }
        }
    }

    fn new(endpoint: String, route: Route, curve: Option<&CurveClient>) -> Client {
        let (late, submitter) = (Mutex::default(), OnceLock::new());
        Client { endpoint, route, late, curve: curve.cloned(), submitter }
    }

    /// The broker endpoint this client was connected to (the first one, for
    /// a client of several).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every broker endpoint this client uses.
    pub fn endpoints(&self) -> Vec<&str> {
        match &self.route {
            Route::One(_) | Route::Local(_) => vec![self.endpoint.as_str()],
            Route::Many(many) => many.brokers().iter().map(|b| b.endpoint.as_str()).collect(),
        }
    }

    /// Sends one request and waits for its outcome until `deadline`; returns
    /// it with the endpoint of the broker it came from.
    fn send(&self, request: Request, deadline: Instant) -> Result<(Outcome, &str)> {
        match &self.route {
            Route::Local(local) if matches!(&request, Request::Job(job, _) if lanes::may_take(job)) => {
                let Request::Job(job, timeout) = request else { unreachable!("matched a job") };
                Ok((self.local_job(local, &job, timeout, deadline)?, &self.endpoint))
            }
            Route::One(_) | Route::Local(_) => {
                let id = self.next_id();
                let frames = match request {
                    Request::Job(job, timeout) => request_frames(id, job.into_owned(), timeout),
                    Request::Control(command, tail) => vec![CommandFrame::new(command, id, 0, tail).encode().into()],
                };
                let outcome = self.call_one(vec![(id, frames)], deadline)?.into_iter().next().expect("one outcome");
                Ok((outcome, &self.endpoint))
            }
            Route::Many(many) => {
                let (i, outcome) = match request {
                    Request::Job(job, timeout) => {
                        let retries = job_retries(&job);
                        let mut make = |id, left| request_frames(id, with_retries(job.as_ref().clone(), left), timeout);
                        many.call(&mut make, retries, deadline)?
                    }
                    Request::Control(command, tail) => {
                        let mut make = |id, _| vec![CommandFrame::new(command, id, 0, tail).encode().into()];
                        many.call(&mut make, 0, deadline)?
                    }
                };
                Ok((outcome, &many.brokers()[i].endpoint))
            }
        }
    }

    /// Runs one job and returns its result, or a typed error: the handler's
    /// message ([`Error::Handler`]), [`Error::Timeout`], [`Error::NoWorker`],
    /// [`Error::BrokerUnreachable`], ...
    pub fn execute(&self, job: impl Into<JobRequest>, timeout: Duration) -> Result<Vec<u8>> {
        let (outcome, endpoint) = self.send(Request::Job(Cow::Owned(job.into()), timeout), Instant::now() + timeout)?;
        self.result(outcome, timeout, endpoint)
    }

    /// [`Self::execute`] for a job the caller keeps (a template sent again
    /// and again): on a worker's lane nothing of it is copied but into the
    /// request's bytes; elsewhere it is copied as `execute` would need.
    pub fn execute_ref(&self, job: &JobRequest, timeout: Duration) -> Result<Vec<u8>> {
        let (outcome, endpoint) = self.send(Request::Job(Cow::Borrowed(job), timeout), Instant::now() + timeout)?;
        self.result(outcome, timeout, endpoint)
    }

    /// Runs many jobs at once (all in flight together) and returns their
    /// results in order; `timeout` bounds them all together.
    pub fn execute_many<J: Into<JobRequest>>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        timeout: Duration,
    ) -> Vec<Result<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        if let Route::Many(many) = &self.route {
            return self.execute_many_over(many, jobs, deadline, timeout);
        }
        let requests: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let id = self.next_id();
                (id, request_frames(id, job.into(), timeout))
            })
            .collect();
        match self.call_one(requests, deadline) {
            Ok(outcomes) => outcomes.into_iter().map(|o| self.result(o, timeout, &self.endpoint)).collect(),
            Err(e) => vec![Err(e)],
        }
    }

    /// [`Self::execute_many`] over several brokers: all the jobs to one, and
    /// those it could not take or lost one by one to the others.
    fn execute_many_over<J: Into<JobRequest>>(
        &self,
        many: &many::Many,
        jobs: impl IntoIterator<Item = J>,
        deadline: Instant,
        timeout: Duration,
    ) -> Vec<Result<Vec<u8>>> {
        let jobs: Vec<JobRequest> = jobs.into_iter().map(Into::into).collect();
        let i = many.pick();
        let mux = &many.brokers()[i].mux;
        let requests: Vec<_> = jobs
            .iter()
            .map(|job| {
                let id = mux.next_id();
                (id, request_frames(id, job.clone(), timeout))
            })
            .collect();
        let outcomes = match mux.call_within(requests, deadline, (Instant::now() + BROKER_SEND_WAIT).min(deadline)) {
            Ok(outcomes) => outcomes,
            Err(e) => return vec![Err(e)],
        };
        many.report(i, &outcomes);
        outcomes
            .into_iter()
            .zip(jobs)
            .map(|(outcome, job)| match outcome {
                Outcome::Unreachable | Outcome::Lost => {
                    // Not sent: as it is; lost: only if it allows a retry, with one fewer.
                    let retries = job_retries(&job);
                    let job = match outcome {
                        Outcome::Lost if retries == 0 => {
                            return Err(Error::BrokerLost { endpoint: many.brokers()[i].endpoint.clone() })
                        }
                        Outcome::Lost => with_retries(job, retries - 1),
                        _ => job,
                    };
                    let (outcome, endpoint) = self.send(Request::Job(Cow::Owned(job), timeout), deadline)?;
                    self.result(outcome, timeout, endpoint)
                }
                outcome => self.result(outcome, timeout, &many.brokers()[i].endpoint),
            })
            .collect()
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
        if let Route::Many(many) = &self.route {
            let jobs = jobs.into_iter().map(Into::into).enumerate();
            return many.pipeline(jobs, window.max(1), timeout, |i, o, b| {
                done(i, self.result(o, timeout, &many.brokers()[b].endpoint))
            });
        }
        let mut jobs = jobs.into_iter().enumerate();
        let index_of = std::cell::RefCell::new(std::collections::HashMap::with_capacity(window));
        let next = |id: u64| {
            let (index, job) = jobs.next()?;
            index_of.borrow_mut().insert(id, index);
            Some(request_frames(id, job.into(), timeout))
        };
        let done = |id, outcome| {
            let index = index_of.borrow_mut().remove(&id).expect("an id this pipeline sent");
            done(index, self.result(outcome, timeout, &self.endpoint));
        };
        match &self.route {
            Route::One(mux) => mux.pipeline(next, window.max(1), timeout, done),
            Route::Local(local) => local.pipeline(next, window.max(1), timeout, done),
            Route::Many(_) => unreachable!("streamed above"),
        }
    }

    /// A request id of the single broker's connection.
    fn next_id(&self) -> u64 {
        match &self.route {
            Route::One(mux) => mux.next_id(),
            Route::Local(local) => local.next_id(),
            Route::Many(_) => unreachable!("a client of several brokers numbers its requests per broker"),
        }
    }

    /// [`Mux::call`] on the single broker's connection.
    fn call_one(&self, requests: Vec<(u64, Vec<zmq::Message>)>, deadline: Instant) -> Result<Vec<Outcome>> {
        match &self.route {
            Route::One(mux) => mux.call(requests, deadline),
            Route::Local(local) => local.call(requests, deadline),
            Route::Many(_) => unreachable!("a client of several brokers sends through Many"),
        }
    }

    /// Runs one job under Powerhose's timeout policy (see [`TimeoutPolicy`]).
    pub fn execute_with_policy(&self, job: impl Into<JobRequest>, policy: &TimeoutPolicy) -> Result<Vec<u8>> {
        let start = Instant::now();
        let limit = policy.max_overflow.max(policy.timeout);
        let (outcome, endpoint) = self.send(Request::Job(Cow::Owned(job.into()), limit), start + limit)?;
        let pid = match &outcome {
            Outcome::Reply(reply) if reply.status == Status::Ok => Some(reply.pid),
            _ => None,
        };
        let result = self.result(outcome, limit, endpoint);
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
        match self.send(Request::Control(command, tail), Instant::now() + timeout)? {
            (Outcome::Reply(reply), _) => Ok(reply),
            (Outcome::Timeout, _) => Err(Error::Timeout(timeout)),
            (Outcome::Lost, endpoint) => Err(Error::BrokerLost { endpoint: endpoint.to_string() }),
            (Outcome::Unreachable, _) => Err(self.unreachable(timeout)),
        }
    }

    /// The typed result of an outcome from the broker at `endpoint`.
    fn result(&self, outcome: Outcome, timeout: Duration, endpoint: &str) -> Result<Vec<u8>> {
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Timeout => return Err(Error::Timeout(timeout)),
            Outcome::Unreachable => return Err(self.unreachable(timeout)),
            Outcome::Lost => return Err(Error::BrokerLost { endpoint: endpoint.to_string() }),
        };
        let text = || String::from_utf8_lossy(reply.body()).into_owned();
        match reply.status {
            Status::Ok => Ok(reply.into_body()),
            Status::HandlerError => Err(Error::Handler { pid: reply.pid, message: text() }),
            Status::Timeout => Err(Error::JobTimedOut { pid: reply.pid, message: text() }),
            Status::NoWorker => Err(Error::NoWorker(text())),
            Status::WorkerLost => Err(Error::WorkerLost(text())),
            Status::Busy => Err(Error::Busy(text())),
            Status::UnknownService => Err(Error::UnknownService(text())),
            Status::BadRequest => Err(Error::BadRequest(text())),
            Status::Cancelled => Err(Error::Cancelled),
        }
    }

    fn unreachable(&self, waited: Duration) -> Error {
        let endpoint = match &self.route {
            Route::One(_) | Route::Local(_) => self.endpoint.clone(),
            Route::Many(many) => many.endpoints(),
        };
        Error::BrokerUnreachable { endpoint, waited }
    }
}

fn parse_number<T: std::str::FromStr>(body: &[u8], what: &str) -> Result<T> {
    std::str::from_utf8(body).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Error::Protocol(what.into()))
}
