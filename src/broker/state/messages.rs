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
    /// The bytes (what queued jobs are counted in, and a client's identity).
    fn bytes(&self) -> &[u8];
}

impl Payload for Vec<u8> {
    fn duplicate(&self) -> Self {
        self.clone()
    }
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Payload for zmq::Message {
    fn duplicate(&self) -> Self {
        zmq::Message::from(&self[..])
    }
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Where a reply goes: the client's routing identity and its request id.
#[derive(Debug)]
pub struct ClientRoute<M> {
    /// The client's ROUTER identity frame.
    pub identity: M,
    /// The client's request id, echoed in the reply (0 for a legacy client).
    pub req_id: u64,
    /// A Powerhose 0.7 (REQ) client, answered in the old format.
    pub legacy: bool,
}

/// A reply's body, in whichever form the broker holds it.
#[derive(Debug)]
pub enum Body<M> {
    /// The worker's answer as its own frame: sent on as it is.
    Payload(M),
    /// The worker's whole inline `RESULT` frame: the body is at its end, and
    /// the frame itself becomes the `REPLY` (patched in place).
    Frame(M),
    /// The broker's own message (an error it raised).
    Text(Cow<'static, str>),
}

/// What the I/O loop must send.
#[derive(Debug)]
pub enum Output<M> {
    /// An answer to a client's job.
    Reply {
        /// Which client and request.
        route: ClientRoute<M>,
        /// The outcome.
        status: Status,
        /// The worker that ran the job, or the broker's own pid for its errors.
        pid: u32,
        /// The result or the message.
        body: Body<M>,
    },
    /// A job for the worker in slot `worker` (see [`super::BrokerState::worker_identity`]).
    Job {
        /// The worker's slot.
        worker: usize,
        /// The broker's id for the job, which the worker's `RESULT` names.
        job_id: u64,
        /// Time left to the client's deadline, in ms (at least 1).
        timeout_ms: u32,
        /// More jobs wait for this service: the worker may hold the answer briefly.
        backlog: bool,
        /// The encoded headers.
        headers: M,
        /// The job's data (or the whole inline frame, see `inline`).
        data: M,
        /// `data` is the client's whole inline `REQUEST` frame (see [`Job::inline`]).
        inline: bool,
    },
    /// Job `job_id`, which the worker in slot `worker` holds, was cancelled.
    Cancel {
        /// The worker's slot.
        worker: usize,
        /// The broker's id for the job.
        job_id: u64,
    },
    /// The worker in slot `worker` should give job `job_id` back unrun:
    /// a job of higher priority waits behind it.
    Recall {
        /// The worker's slot.
        worker: usize,
        /// The broker's id for the job.
        job_id: u64,
    },
    /// A heartbeat for a worker.
    Heartbeat {
        /// The worker's slot.
        worker: usize,
    },
    /// Sent to a peer the broker does not know, so it registers again.
    Disconnect {
        /// The peer's ROUTER identity.
        identity: Vec<u8>,
    },
}

/// A worker's `RESULT`.
#[derive(Debug)]
pub struct Answer<M> {
    /// The broker's id of the job answered.
    pub job_id: u64,
    /// The outcome the worker reports.
    pub status: Status,
    /// The worker timed the job out but its handler still runs.
    pub still_busy: bool,
    /// The handler's run time, when the worker reports it.
    pub run_us: Option<u32>,
    /// The result or error message (or the whole inline frame, see `inline`).
    pub body: M,
    /// `body` is the worker's whole inline `RESULT` frame.
    pub inline: bool,
}

/// A job as the broker holds it.
#[derive(Debug)]
pub struct Job<M> {
    /// Where its answer goes.
    pub route: ClientRoute<M>,
    /// Its encoded headers.
    pub headers: M,
    /// Its data.
    pub data: M,
    /// The client's deadline: receipt plus the client's timeout.
    pub deadline: Instant,
    /// How many more times the job may be re-sent after its worker is lost.
    pub retries: u32,
    /// Its level, 0 to [`crate::protocol::PRIORITY_MAX`]: higher goes first.
    pub priority: u8,
    /// When the broker received it (for the latency histogram).
    pub received: Instant,
    /// `data` is the client's whole inline `REQUEST` frame (data at its
    /// end, `headers` empty): it goes to the worker as the `JOB`, patched.
    pub inline: bool,
}

impl<M: Payload> Job<M> {
    /// What the job holds while it waits, in bytes (headers and data).
    pub fn size(&self) -> usize {
        self.headers.bytes().len() + self.data.bytes().len()
    }
}
