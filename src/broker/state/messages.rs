//! What goes in and out of the state machine: the jobs and answers the I/O
//! loop hands it, and the messages it asks the I/O loop to send. Generic
//! over the buffer type, so tests drive it with plain vectors.

use std::borrow::Cow;
use std::time::Instant;

use crate::protocol::Status;

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
    /// The worker's whole inline `RESULT` frame: the body is at its end, and
    /// the frame itself becomes the `REPLY` (patched in place).
    Frame(M),
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
        /// More jobs wait for this service: the worker may hold the answer briefly.
        backlog: bool,
        headers: M,
        data: M,
        /// `data` is the client's whole inline `REQUEST` frame (see [`Job::inline`]).
        inline: bool,
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
    /// The handler's run time, when the worker reports it.
    pub run_us: Option<u32>,
    pub body: M,
    /// `body` is the worker's whole inline `RESULT` frame.
    pub inline: bool,
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
    /// `data` is the client's whole inline `REQUEST` frame (data at its
    /// end, `headers` empty): it goes to the worker as the `JOB`, patched.
    pub inline: bool,
}
