//! The broker's I/O: reads messages off the front and back sockets, turns
//! them into [`state`](super::state) events with the pure parsers of
//! [`crate::protocol::parse`], and sends what the state machine emits.

use std::time::{Duration, Instant};

use super::state::{Answer, Body, BrokerState, ClientRoute, Job, Output};
use super::vitals::Peers;
use super::BrokerOptions;
use crate::error::{Error, Result};
use crate::protocol::parse::{parse_back, parse_front, Back, Front};
use crate::protocol::{encode_headers, inline, job_arg, legacy, Command, CommandFrame, Status};
use crate::status::BrokerStatus;

type Msg = zmq::Message;

/// Messages read from one socket before the other gets a turn.
const READS_PER_TURN: usize = 256;
/// The most frames a message may have; more is malformed anyway.
const MAX_FRAMES: usize = 4;

/// The loop's sockets and reusable buffers.
pub(super) struct Io<'a> {
    front: &'a zmq::Socket,
    back: &'a zmq::Socket,
    frames: Vec<Msg>,
    /// The message being handled had more than [`MAX_FRAMES`] frames.
    truncated: bool,
    buf: Vec<u8>,
    pid: u32,
    started: Instant,
    options: &'a BrokerOptions,
    /// The back socket's monitor: who is connected over ipc.
    events: Option<&'a zmq::Socket>,
    peers: Peers,
}

impl<'a> Io<'a> {
    pub fn new(front: &'a zmq::Socket, back: &'a zmq::Socket, options: &'a BrokerOptions) -> Self {
        Io {
            front,
            back,
            frames: Vec::new(),
            truncated: false,
            buf: Vec::new(),
            pid: std::process::id(),
            started: Instant::now(),
            options,
            events: None,
            peers: Peers::default(),
        }
    }

    /// Reads the back socket's connections from its monitor.
    pub fn watch(&mut self, events: &'a zmq::Socket) {
        self.events = Some(events);
    }

    /// Applies pending monitor events.
    pub fn read_events(&mut self) {
        let Some(events) = self.events else { return };
        while let Some((event, fd)) = super::vitals::read_event(events) {
            self.peers.on_event(event, fd);
        }
    }

    fn status(&self, now: Instant, state: &BrokerState<Msg>) -> BrokerStatus {
        BrokerStatus {
            pid: self.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            frontend: self.options.frontend.clone(),
            backend: self.options.backend.clone(),
            services: state.services().collect(),
            waiting_for_workers: state.waiting_for_workers(),
            workers: state.workers(now),
            counters: state.counters.clone(),
            latency_ms: state.latency.latency(),
        }
    }

    /// Reads up to [`READS_PER_TURN`] messages from `socket` without blocking; true
    /// when it stopped at that bound (more may wait).
    pub fn drain(&mut self, socket: &zmq::Socket, mut handle: impl FnMut(&mut Self, Instant)) -> Result<bool> {
        for _ in 0..READS_PER_TURN {
            self.frames.clear();
            self.truncated = false;
            loop {
                let mut msg = Msg::new();
                match crate::sys::zmq_recv(socket, &mut msg, zmq::DONTWAIT) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => return Ok(false),
                    Err(e) => return Err(Error::zmq("receiving")(e)),
                }
                let more = msg.get_more();
                // Past MAX_FRAMES the message is malformed: keep reading it
                // to its end, but not its frames.
                if self.frames.len() <= MAX_FRAMES {
                    self.frames.push(msg);
                } else {
                    self.truncated = true;
                }
                if !more {
                    break;
                }
            }
            handle(self, Instant::now());
        }
        Ok(true)
    }

    fn reply_text(&self, out: &mut Vec<Output<Msg>>, route: ClientRoute<Msg>, status: Status, text: String) {
        out.push(Output::Reply { route, status, pid: self.pid, body: Body::Text(text.into()) });
    }

    pub fn on_front(&mut self, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let mut frames = std::mem::take(&mut self.frames);
        let identity = frames.remove(0);
        // A native job's data is never looked at: it is set aside before
        // parsing (a placeholder stands in for it) and moves on uncopied.
        let native = frames.first().is_some_and(|f| CommandFrame::is_native(f));
        let data = if native && frames.len() >= 2 { frames.pop() } else { None };
        let mut views: [&[u8]; MAX_FRAMES] = [&[]; MAX_FRAMES];
        for (view, frame) in views.iter_mut().zip(&frames) {
            *view = frame;
        }
        let count = frames.len() + usize::from(data.is_some());
        let parsed = if self.truncated || count > MAX_FRAMES {
            Front::Garbage("too many frames".into())
        } else {
            parse_front(&views[..count])
        };
        if let Front::Request { req_id, timeout_ms, service, retries, inline: Some(_), .. } = parsed {
            // The REQUEST frame itself becomes the JOB: copy the service name
            // out of it (on the stack when short) so the frame can move on.
            let mut stack = [0u8; 64];
            let long;
            let service = match stack.get_mut(..service.len()) {
                Some(name) => {
                    name.copy_from_slice(service.as_bytes());
                    std::str::from_utf8(name).expect("copied from a str")
                }
                None => {
                    long = service.to_string();
                    long.as_str()
                }
            };
            let job = Job {
                route: ClientRoute { identity, req_id, legacy: false },
                headers: Msg::new(),
                data: frames.pop().expect("the REQUEST frame"),
                deadline: now + Duration::from_millis(timeout_ms as u64),
                retries,
                received: now,
                inline: true,
            };
            state.submit(now, service, job, out);
        } else {
            self.settle_front(now, identity, parsed, data, state, out);
        }
        frames.clear();
        self.frames = frames;
        self.flush(state, out);
    }

    fn settle_front(
        &mut self,
        now: Instant,
        identity: Msg,
        parsed: Front<'_>,
        data: Option<Msg>,
        state: &mut BrokerState<Msg>,
        out: &mut Vec<Output<Msg>>,
    ) {
        match parsed {
            Front::LegacyPing => {
                let route = ClientRoute { identity, req_id: 0, legacy: true };
                self.reply_text(out, route, Status::Ok, self.pid.to_string());
            }
            Front::LegacyJob { service, retries, headers, data } => {
                let job = Job {
                    route: ClientRoute { identity, req_id: 0, legacy: true },
                    headers: Msg::from(encode_headers(headers.iter().copied())),
                    data: Msg::from(data),
                    deadline: now + self.options.legacy_timeout,
                    retries,
                    received: now,
                    inline: false,
                };
                let service = service.to_string();
                state.submit(now, &service, job, out);
            }
            Front::LegacyBad(why) => {
                state.counters.bad_requests += 1;
                self.reply_text(out, ClientRoute { identity, req_id: 0, legacy: true }, Status::BadRequest, why);
            }
            Front::Ping { req_id } => {
                self.reply_text(out, ClientRoute { identity, req_id, legacy: false }, Status::Ok, self.pid.to_string())
            }
            Front::Service { req_id, name } => {
                let name = String::from_utf8_lossy(name);
                let count: usize =
                    state.services().filter(|s| name.is_empty() || s.name == name).map(|s| s.workers).sum();
                let status = if count > 0 { Status::Ok } else { Status::NoWorker };
                self.reply_text(out, ClientRoute { identity, req_id, legacy: false }, status, count.to_string());
            }
            Front::Status { req_id } => {
                let json = serde_json::to_string(&self.status(now, state)).expect("status serialises");
                self.reply_text(out, ClientRoute { identity, req_id, legacy: false }, Status::Ok, json);
            }
            Front::Control { req_id, request } => {
                let (status, text) = match (request, &self.options.control) {
                    (Err(e), _) => (Status::BadRequest, e),
                    (Ok(_), None) => {
                        (Status::BadRequest, "this broker has no supervisor (start it with `powerhose`)".into())
                    }
                    (Ok(request), Some(sink)) => {
                        tracing::info!(?request, "control request");
                        match sink.tx.send(request) {
                            Ok(()) => {
                                sink.wake.trigger();
                                (Status::Ok, "accepted".into())
                            }
                            Err(_) => (Status::BadRequest, "the supervisor is stopping".into()),
                        }
                    }
                };
                if status != Status::Ok {
                    state.counters.bad_requests += 1;
                }
                self.reply_text(out, ClientRoute { identity, req_id, legacy: false }, status, text);
            }
            Front::Request { req_id, timeout_ms, service, headers, retries, .. } => {
                // Headers are small; they travel on in the JOB's command frame.
                let headers = if headers.is_empty() { Msg::new() } else { Msg::from(headers) };
                let data = data.expect("a request has its data frame");
                let route = ClientRoute { identity, req_id, legacy: false };
                let job = Job {
                    route,
                    headers,
                    data,
                    deadline: now + Duration::from_millis(timeout_ms as u64),
                    retries,
                    received: now,
                    inline: false,
                };
                state.submit(now, service, job, out);
            }
            Front::BadNative { req_id, why } => {
                state.counters.bad_requests += 1;
                self.reply_text(out, ClientRoute { identity, req_id, legacy: false }, Status::BadRequest, why);
            }
            Front::Garbage(why) => {
                state.counters.bad_requests += 1;
                tracing::warn!("unanswerable client message dropped: {why}");
            }
        }
    }

    pub fn on_back(&mut self, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let mut frames = std::mem::take(&mut self.frames);
        let identity = frames.remove(0);
        let body = if frames.len() == 2 { frames.pop() } else { None };
        let mut views: [&[u8]; 2] = [&[]; 2];
        let n = frames.len().min(1);
        if let Some(head) = frames.first() {
            views[0] = head;
        }
        if let Some(b) = &body {
            views[n] = b;
        }
        let count = n + usize::from(body.is_some());
        let parsed = if self.truncated || frames.len() > 1 {
            Back::Bad("too many frames".into())
        } else {
            parse_back(&views[..count])
        };
        match parsed {
            Back::Ready(reg) => {
                tracing::info!(pid = reg.pid, service = %reg.service, host = %reg.host, "worker registered");
                // Its connection's event was sent before its READY: read it.
                self.read_events();
                let local = self.peers.connected(reg.pid).then_some(reg.pid);
                state.worker_ready(now, &identity, reg, out);
                if let Some(pid) = local {
                    state.worker_is_local(&identity, pid);
                }
            }
            Back::Result { job_id, status, tail, inline } => {
                let (still_busy, run_us, inline) = (tail.still_busy, tail.run_us, inline.is_some());
                // An inline RESULT frame is its own body: it becomes the REPLY.
                let body = if inline { frames.pop() } else { body }.unwrap_or_else(Msg::new);
                let answer = Answer { job_id, status, still_busy, run_us, body, inline };
                state.worker_result(now, &identity, answer, out);
            }
            Back::Return { job_id, headers } => {
                let headers = Msg::from(headers);
                state.worker_return(now, &identity, job_id, headers, body.expect("RETURN has its data"), out);
            }
            Back::Heartbeat => state.worker_heartbeat(now, &identity, out),
            Back::Disconnect => {
                tracing::info!("worker {} unregistered", String::from_utf8_lossy(&identity));
                state.worker_disconnect(now, &identity, out);
            }
            Back::Bad(why) => {
                state.counters.bad_requests += 1;
                tracing::warn!("bad message from a worker: {why}");
            }
        }
        frames.clear();
        self.frames = frames;
        self.flush(state, out);
    }

    /// Sends every pending output. A peer that is gone is logged, not fatal.
    pub fn flush(&mut self, state: &BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        for output in out.drain(..) {
            let result = match output {
                Output::Reply { route, status, pid, body } => self.send_reply(route, status, pid, body),
                Output::Job { worker, job_id, timeout_ms, backlog, headers, mut data, inline } => {
                    let Some(identity) = state.worker_identity(worker) else {
                        tracing::error!(job_id, "a job for a freed worker slot was dropped (a bug)");
                        continue;
                    };
                    let arg = job_arg(timeout_ms, backlog);
                    if inline && state.worker_reads_inline(worker) {
                        inline::request_into_job(&mut data, job_id, arg);
                        send_parts(self.back, [identity.into(), data])
                    } else if inline {
                        // A worker that reads only two-frame JOBs: unpack the request.
                        let Ok((headers, bytes)) = inline::unpack_request(&data) else {
                            tracing::error!(job_id, "an inline request no longer parses (a bug)");
                            continue;
                        };
                        CommandFrame::new(Command::Job, job_id, arg, headers).encode_into(&mut self.buf);
                        send_parts(self.back, [identity.into(), (&self.buf[..]).into(), bytes.into()])
                    } else {
                        CommandFrame::new(Command::Job, job_id, arg, &headers).encode_into(&mut self.buf);
                        send_parts(self.back, [identity.into(), (&self.buf[..]).into(), data])
                    }
                }
                Output::Heartbeat { worker } => {
                    let Some(identity) = state.worker_identity(worker) else { continue };
                    CommandFrame::new(Command::Heartbeat, 0, 0, b"").encode_into(&mut self.buf);
                    send_parts(self.back, [identity.into(), (&self.buf[..]).into()])
                }
                Output::Disconnect { identity } => {
                    CommandFrame::new(Command::Disconnect, 0, 0, b"").encode_into(&mut self.buf);
                    send_parts(self.back, [identity.into(), (&self.buf[..]).into()])
                }
            };
            if let Err(e) = result {
                tracing::debug!("dropped a message to a departed peer: {e}");
            }
        }
    }

    fn send_reply(
        &mut self,
        route: ClientRoute<Msg>,
        status: Status,
        pid: u32,
        body: Body<Msg>,
    ) -> Result<(), zmq::Error> {
        if route.legacy {
            let bytes: &[u8] = match &body {
                Body::Payload(m) => m,
                Body::Frame(f) => inline::inline_data(f),
                Body::Text(t) => t.as_bytes(),
            };
            // A PING's pong is the bare pid; everything else is PID:OK/ERROR:...
            let reply = match (&body, status) {
                (Body::Text(_), Status::Ok) => bytes.to_vec(),
                _ => legacy::encode_reply(pid, status == Status::Ok, bytes),
            };
            return send_parts(self.front, [route.identity, Msg::new(), reply.into()]);
        }
        let pid_bytes = pid.to_le_bytes();
        let reply = CommandFrame::new(Command::Reply, route.req_id, status as u32, &pid_bytes);
        let body = match body {
            Body::Payload(m) => m,
            Body::Text(t) => t.as_bytes().into(),
            // The RESULT frame becomes the REPLY.
            Body::Frame(mut frame) => {
                if inline::result_into_reply(&mut frame, route.req_id, status, pid) {
                    return send_parts(self.front, [route.identity, frame]);
                }
                return send_parts(
                    self.front,
                    [route.identity, reply.with_data(inline::inline_data(&frame)).message()],
                );
            }
        };
        reply.encode_into(&mut self.buf);
        send_parts(self.front, [route.identity, (&self.buf[..]).into(), body])
    }
}

fn send_parts<const N: usize>(socket: &zmq::Socket, parts: [Msg; N]) -> Result<(), zmq::Error> {
    let last = N - 1;
    for (i, part) in parts.into_iter().enumerate() {
        socket.send(part, if i < last { zmq::SNDMORE | zmq::DONTWAIT } else { zmq::DONTWAIT })?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "io_tests.rs"]
mod tests;
