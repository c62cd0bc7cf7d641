//! A client of several brokers: one [`Mux`] per broker, requests spread over
//! those up ([`Failover`] decides), and two kinds of helper threads that keep
//! the policy informed without touching the request path:
//!
//! - a watcher reads every socket's monitor: a dropped connection fails that
//!   broker's requests in flight at once ([`Mux::fail_sent`]), and a socket
//!   that connects again has its broker pinged at once;
//! - one prober per broker pings it when it has been quiet, or is down and
//!   due for another try: a broker alive but silent (stopped) is found out
//!   within `BROKER_PROBE_INTERVAL + BROKER_SILENCE`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::failover::Failover;
use super::job::{job_retries, request_frames, with_retries};
use super::mux::{Mux, Outcome};
use super::JobRequest;
use crate::auth::CurveClient;
use crate::error::{Error, Result};
use crate::protocol::{Command, CommandFrame, BROKER_SEND_WAIT, BROKER_SILENCE};
use crate::wakeup::Wakeup;

/// One broker: its endpoint and its connection.
pub(crate) struct Broker {
    pub endpoint: String,
    pub mux: Mux,
}

struct Shared {
    brokers: Vec<Broker>,
    policy: Mutex<Failover>,
    stop: AtomicBool,
    /// Wakes the watcher (to stop).
    wake: Wakeup,
}

impl Shared {
    fn policy(&self) -> MutexGuard<'_, Failover> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The brokers of a client and the threads watching them.
pub(crate) struct Many {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Builds a request's frames for an id, given how many retries it still has.
pub(crate) type MakeFrames<'a> = dyn FnMut(u64, u32) -> Vec<zmq::Message> + 'a;

impl Many {
    pub(crate) fn connect(endpoints: &[String], curve: Option<&CurveClient>) -> Result<Many> {
        let mut brokers = Vec::with_capacity(endpoints.len());
        let mut monitors = Vec::with_capacity(endpoints.len());
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for endpoint in endpoints {
            let mux = Mux::connect(endpoint, curve)?;
            monitors.push(mux.monitor(&SEQ.fetch_add(1, Ordering::Relaxed).to_string())?);
            brokers.push(Broker { endpoint: endpoint.clone(), mux });
        }
        let shared = Arc::new(Shared {
            policy: Mutex::new(Failover::new(brokers.len(), Instant::now())),
            brokers,
            stop: AtomicBool::new(false),
            wake: Wakeup::new()?,
        });
        let mut threads = Vec::new();
        for i in 0..endpoints.len() {
            let shared = shared.clone();
            threads.push(
                thread::Builder::new()
                    .name("ph-probe".into())
                    .spawn(move || probe(&shared, i))
                    .map_err(Error::io("starting a broker prober thread"))?,
            );
        }
        let probers: Vec<thread::Thread> = threads.iter().map(|t| t.thread().clone()).collect();
        let watcher = shared.clone();
        let spawned = thread::Builder::new().name("ph-watch".into()).spawn(move || watch(&watcher, monitors, probers));
        threads.push(spawned.map_err(Error::io("starting the broker watcher thread"))?);
        Ok(Many { shared, threads })
    }

    pub(crate) fn brokers(&self) -> &[Broker] {
        &self.shared.brokers
    }

    /// Every endpoint, for a message about them all.
    pub(crate) fn endpoints(&self) -> String {
        self.brokers().iter().map(|b| b.endpoint.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Sends one request to a broker that is up, and on to another while it
    /// cannot be sent (no retry used) or, with `retries` left, while the
    /// broker it went to is lost with it. Returns the broker it ended with.
    pub(crate) fn call(&self, make: &mut MakeFrames, mut retries: u32, deadline: Instant) -> Result<(usize, Outcome)> {
        let mut tried = Vec::new();
        let mut last = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok((last, Outcome::Unreachable));
            }
            // All tried: round again (each try waits for a connection, so this never spins).
            let Some(i) = self.shared.policy().pick(&tried).or_else(|| {
                tried.clear();
                self.shared.policy().pick(&tried)
            }) else {
                return Ok((last, Outcome::Unreachable));
            };
            last = i;
            let mux = &self.brokers()[i].mux;
            let id = mux.next_id();
            let send_by = (now + BROKER_SEND_WAIT).min(deadline);
            let outcome = mux.call_within(vec![(id, make(id, retries))], deadline, send_by)?.pop().expect("one");
            match outcome {
                Outcome::Reply(_) => self.shared.policy().heard(i, Instant::now()),
                Outcome::Timeout => {}
                Outcome::Unreachable => {
                    self.shared.policy().lost(i, Instant::now());
                    tried.push(i);
                    continue;
                }
                Outcome::Lost if retries > 0 => {
                    retries -= 1;
                    tried.push(i);
                    continue;
                }
                Outcome::Lost => {}
            }
            return Ok((i, outcome));
        }
    }

    /// The broker for a batch: the next one up (or the least bad).
    pub(crate) fn pick(&self) -> usize {
        self.shared.policy().pick(&[]).unwrap_or(0)
    }

    /// What a batch sent to broker `i` says about it.
    pub(crate) fn report(&self, i: usize, outcomes: &[Outcome]) {
        let now = Instant::now();
        if outcomes.iter().any(|o| matches!(o, Outcome::Reply(_))) {
            self.shared.policy().heard(i, now);
        } else if outcomes.iter().any(|o| matches!(o, Outcome::Unreachable | Outcome::Lost)) {
            self.shared.policy().lost(i, now);
        }
    }

    /// A pipeline over the brokers: one broker at a time takes the stream;
    /// when it is lost or cannot be reached the rest goes to the next, with
    /// the requests lost with it that allow a retry sent first (with one
    /// retry fewer). `done(index, outcome, broker)`.
    pub(crate) fn pipeline(
        &self,
        jobs: impl Iterator<Item = (usize, JobRequest)>,
        window: usize,
        timeout: Duration,
        mut done: impl FnMut(usize, Outcome, usize),
    ) -> Result<()> {
        let jobs = std::cell::RefCell::new(jobs.peekable());
        let again: std::cell::RefCell<VecDeque<(usize, JobRequest)>> = Default::default();
        let mut tried = Vec::new();
        loop {
            if again.borrow().is_empty() && jobs.borrow_mut().peek().is_none() {
                return Ok(());
            }
            let Some(i) = self.shared.policy().pick(&tried) else {
                // None can be reached: the next job says so, and all are tried again.
                let job = again.borrow_mut().pop_front().or_else(|| jobs.borrow_mut().next());
                if let Some((index, _)) = job {
                    done(index, Outcome::Unreachable, tried.last().copied().unwrap_or(0));
                }
                tried.clear();
                continue;
            };
            // Only jobs that may be sent again are kept (a copy) while in flight.
            let in_flight: std::cell::RefCell<HashMap<u64, (usize, Option<JobRequest>)>> = Default::default();
            let next = |id: u64| {
                let (index, job) = again.borrow_mut().pop_front().or_else(|| jobs.borrow_mut().next())?;
                // A copy only of a job that may be sent again.
                let keep = (job_retries(&job) > 0).then(|| job.clone());
                let message = request_frames(id, job, timeout);
                in_flight.borrow_mut().insert(id, (index, keep));
                Some(message)
            };
            let mut answered = false;
            let stopped = self.brokers()[i].mux.pipeline_within(
                next,
                window,
                timeout,
                Some(BROKER_SEND_WAIT),
                |id, outcome| {
                    let (index, job) = in_flight.borrow_mut().remove(&id).expect("an id this pipeline sent");
                    answered |= matches!(outcome, Outcome::Reply(_));
                    match (outcome, job) {
                        (Outcome::Lost, Some(job)) => {
                            let n = job_retries(&job) - 1;
                            again.borrow_mut().push_back((index, with_retries(job, n)));
                        }
                        (outcome, _) => done(index, outcome, i),
                    }
                },
            )?;
            let mut policy = self.shared.policy();
            if answered {
                policy.heard(i, Instant::now());
            }
            if stopped {
                policy.lost(i, Instant::now());
                tried.push(i);
            }
        }
    }
}

impl Drop for Many {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.trigger();
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pings broker `i` whenever the policy says it is due, until stopped.
fn probe(shared: &Shared, i: usize) {
    let mux = &shared.brokers[i].mux;
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let at = shared.policy().probe_at(i);
        if at > now {
            thread::park_timeout(at - now);
            continue;
        }
        let id = mux.next_id();
        let frames = vec![CommandFrame::new(Command::Ping, id, 0, b"").encode().into()];
        let answered = match mux.call_within(vec![(id, frames)], now + BROKER_SILENCE, now + BROKER_SEND_WAIT) {
            Ok(outcomes) => matches!(outcomes.first(), Some(Outcome::Reply(_))),
            Err(e) => {
                tracing::warn!(broker = %shared.brokers[i].endpoint, "pinging the broker: {e}");
                false
            }
        };
        let mut policy = shared.policy();
        match answered {
            true => policy.heard(i, Instant::now()),
            false => {
                if policy.is_up(i) {
                    tracing::warn!(broker = %shared.brokers[i].endpoint, "broker silent: skipped for now");
                }
                policy.lost(i, Instant::now());
            }
        }
    }
}

/// Reads the sockets' monitors until stopped: see the module's comment.
fn watch(shared: &Shared, monitors: Vec<zmq::Socket>, probers: Vec<thread::Thread>) {
    while !shared.stop.load(Ordering::Acquire) {
        let mut items: Vec<_> = monitors.iter().map(|m| m.as_poll_item(zmq::POLLIN)).collect();
        items.push(shared.wake.poll_item());
        if let Err(e) = crate::wakeup::poll(&mut items, -1) {
            tracing::warn!("watching the broker connections: {e}");
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        if items[monitors.len()].is_readable() {
            shared.wake.clear();
        }
        let readable: Vec<usize> = (0..monitors.len()).filter(|&i| items[i].is_readable()).collect();
        drop(items);
        for i in readable {
            while let Some(event) = monitor_event(&monitors[i]) {
                if event == zmq::SocketEvent::DISCONNECTED as u16 {
                    tracing::debug!(broker = %shared.brokers[i].endpoint, "connection to the broker dropped");
                    shared.brokers[i].mux.fail_sent();
                    shared.policy().lost(i, Instant::now());
                } else {
                    shared.policy().connected(i, Instant::now());
                    probers[i].unpark();
                }
            }
        }
    }
}

/// One monitor event's number, without blocking (`None` when there is none).
fn monitor_event(socket: &zmq::Socket) -> Option<u16> {
    let parts = socket.recv_multipart(zmq::DONTWAIT).ok()?;
    // The first frame is the event (u16) and its value (u32); the second the endpoint.
    parts.first().and_then(|f| f.get(..2)).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}
