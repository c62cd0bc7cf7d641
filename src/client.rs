//! The native client: submits jobs to the broker's front socket and waits for
//! their answers, never longer than the caller's timeout.
//!
//! One DEALER socket with request ids (a REQ socket whose peer dies is stuck
//! for good). The socket uses ZeroMQ's `immediate` mode, so a message is only
//! queued on a live connection: that is how "broker unreachable" is told apart
//! from "no answer in time".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::{encode_headers, Command, CommandFrame, Status};

/// One job: data, headers and the service that should run it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRequest {
    pub service: String,
    pub headers: Vec<(String, String)>,
    pub data: Vec<u8>,
}

impl JobRequest {
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        JobRequest { data: data.into(), ..Default::default() }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The service to run the job; empty means "the only one there is".
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Lets the broker re-send the job up to `n` times if its worker dies.
    pub fn retry(self, n: u32) -> Self {
        self.header("retry", n.to_string())
    }
}

impl From<Vec<u8>> for JobRequest {
    fn from(data: Vec<u8>) -> Self {
        JobRequest::new(data)
    }
}

impl From<&[u8]> for JobRequest {
    fn from(data: &[u8]) -> Self {
        JobRequest::new(data)
    }
}

impl From<&str> for JobRequest {
    fn from(data: &str) -> Self {
        JobRequest::new(data.as_bytes())
    }
}

/// A connection to a broker's front socket. `Send + Sync`; calls from several
/// threads take turns on the one socket.
pub struct Client {
    endpoint: String,
    socket: Mutex<zmq::Socket>,
    next_id: AtomicU64,
    _ctx: zmq::Context,
}

/// What came back for one request.
struct Reply {
    status: Status,
    pid: u32,
    body: zmq::Message,
}

impl Client {
    /// Connects (in the background: this never blocks on the broker).
    pub fn connect(endpoint: &str) -> Result<Client> {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::DEALER).map_err(Error::zmq("creating the client socket"))?;
        socket.set_immediate(true).map_err(Error::zmq("immediate"))?;
        socket.set_linger(0).map_err(Error::zmq("linger"))?;
        socket.set_sndhwm(0).map_err(Error::zmq("sndhwm"))?;
        socket.set_rcvhwm(0).map_err(Error::zmq("rcvhwm"))?;
        socket.connect(endpoint).map_err(Error::zmq(format!("connecting to {endpoint}")))?;
        Ok(Client { endpoint: endpoint.to_string(), socket: Mutex::new(socket), next_id: AtomicU64::new(1), _ctx: ctx })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs one job and returns its result, or a typed error: the handler's
    /// message ([`Error::Handler`]), [`Error::Timeout`], [`Error::NoWorker`],
    /// [`Error::BrokerUnreachable`], ...
    pub fn execute(&self, job: impl Into<JobRequest>, timeout: Duration) -> Result<Vec<u8>> {
        let job = job.into();
        let headers = encode_headers(job.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let timeout_ms = timeout.as_millis().clamp(1, u32::MAX as u128) as u32;
        let reply =
            self.call(Command::Request, timeout_ms, job.service.as_bytes(), Some((headers, &job.data)), timeout)?;
        match reply.status {
            Status::Ok => Ok(reply.body.to_vec()),
            status => Err(status_error(status, reply.pid, &reply.body, timeout)),
        }
    }

    /// The broker's process id (answered by the broker itself, whatever the workers do).
    pub fn ping(&self, timeout: Duration) -> Result<u32> {
        let reply = self.call(Command::Ping, 0, b"", None, timeout)?;
        std::str::from_utf8(&reply.body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Protocol("PING answered without a pid".into()))
    }

    /// How many workers serve `service` (all services when empty).
    pub fn workers(&self, service: &str, timeout: Duration) -> Result<usize> {
        let reply = self.call(Command::Service, 0, service.as_bytes(), None, timeout)?;
        std::str::from_utf8(&reply.body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Protocol("SERVICE answered without a count".into()))
    }

    fn call(
        &self,
        command: Command,
        arg: u32,
        tail: &[u8],
        parts: Option<(Vec<u8>, &[u8])>,
        timeout: Duration,
    ) -> Result<Reply> {
        let deadline = Instant::now() + timeout;
        let req_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let socket = self.socket.lock().expect("client socket lock");
        self.wait_connected(&socket, deadline, timeout)?;
        let frame = CommandFrame::new(command, req_id, arg, tail).encode();
        let sent = match parts {
            None => socket.send(frame, zmq::DONTWAIT),
            Some((headers, data)) => socket
                .send(frame, zmq::SNDMORE | zmq::DONTWAIT)
                .and_then(|_| socket.send(headers, zmq::SNDMORE | zmq::DONTWAIT))
                .and_then(|_| socket.send(data, zmq::DONTWAIT)),
        };
        sent.map_err(Error::zmq("sending to the broker"))?;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.silence_error(&socket, timeout));
            }
            let mut items = [socket.as_poll_item(zmq::POLLIN)];
            crate::shutdown::poll(&mut items, (deadline - now).as_millis() as i64 + 1)?;
            if !items[0].is_readable() {
                continue;
            }
            let mut frames = socket.recv_multipart(zmq::DONTWAIT).map_err(Error::zmq("receiving"))?.into_iter();
            let (Some(head), body) = (frames.next(), frames.next()) else {
                continue;
            };
            let Ok(cmd) = CommandFrame::decode(&head) else {
                tracing::warn!("malformed reply from the broker ignored");
                continue;
            };
            if cmd.command != Command::Reply || cmd.id != req_id {
                // A late answer to a request we already gave up on.
                continue;
            }
            let status =
                Status::from_u32(cmd.arg).ok_or_else(|| Error::Protocol(format!("unknown status {}", cmd.arg)))?;
            let pid = cmd.tail.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes"))).unwrap_or(0);
            return Ok(Reply { status, pid, body: body.map(zmq::Message::from).unwrap_or_else(zmq::Message::new) });
        }
    }

    /// With `immediate`, the socket is writable only once connected.
    fn wait_connected(&self, socket: &zmq::Socket, deadline: Instant, timeout: Duration) -> Result<()> {
        loop {
            let mut items = [socket.as_poll_item(zmq::POLLOUT)];
            let left = deadline.saturating_duration_since(Instant::now());
            crate::shutdown::poll(&mut items, left.as_millis() as i64)?;
            if items[0].is_writable() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::BrokerUnreachable { endpoint: self.endpoint.clone(), waited: timeout });
            }
        }
    }

    /// No answer in time: was the broker there at all?
    fn silence_error(&self, socket: &zmq::Socket, timeout: Duration) -> Error {
        let mut items = [socket.as_poll_item(zmq::POLLOUT)];
        match crate::shutdown::poll(&mut items, 0) {
            Ok(_) if !items[0].is_writable() => {
                Error::BrokerUnreachable { endpoint: self.endpoint.clone(), waited: timeout }
            }
            _ => Error::Timeout(timeout),
        }
    }
}

fn status_error(status: Status, pid: u32, body: &[u8], timeout: Duration) -> Error {
    let text = String::from_utf8_lossy(body).into_owned();
    match status {
        Status::Ok => unreachable!("not an error"),
        Status::HandlerError => Error::Handler { pid, message: text },
        Status::Timeout => Error::Timeout(timeout),
        Status::NoWorker => Error::NoWorker(text),
        Status::WorkerLost => Error::WorkerLost(text),
        Status::Busy => Error::Busy(text),
        Status::UnknownService => Error::UnknownService(text),
        Status::BadRequest => Error::BadRequest(text),
    }
}
