//! Sending what the state machine emits: jobs to workers (patched inline
//! frames or two-frame ones), replies to clients in either wire format,
//! heartbeats and disconnects.

use super::{Io, Msg};
use crate::broker::state::{Body, BrokerState, ClientRoute, Output};
use crate::broker::warnings::Kind;
use crate::protocol::{inline, job_arg, legacy, Command, CommandFrame, Status};

impl Io<'_> {
    /// Sends every pending output. A peer that is gone is logged, not fatal.
    pub fn flush(&mut self, state: &BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        for output in out.drain(..) {
            let result = match output {
                Output::Reply { route, status, pid, body } => match self.send_reply(route, status, pid, body) {
                    // The client's pipe is full (FRONT_SEND_HWM): it does not read.
                    Err(zmq::Error::EAGAIN) => {
                        self.replies_dropped += 1;
                        let message = format_args!("a reply to a client that does not read its replies was dropped");
                        self.warnings.warn(std::time::Instant::now(), Kind::Client, message);
                        continue;
                    }
                    other => other,
                },
                Output::Job { worker, job_id, timeout_ms, backlog, headers, mut data, inline } => {
                    let Some(identity) = state.worker_identity(worker) else {
                        tracing::error!(job_id, "a job for a freed worker slot was dropped (a bug)");
                        continue;
                    };
                    let arg = job_arg(timeout_ms, backlog);
                    if inline && state.worker_reads_inline(worker) {
                        inline::request_into_job(&mut data, job_id, arg);
                        self.send_to(true, [identity.into(), data])
                    } else if inline {
                        // A worker that reads only two-frame JOBs: unpack the request.
                        let Ok((headers, bytes)) = inline::unpack_request(&data) else {
                            tracing::error!(job_id, "an inline request no longer parses (a bug)");
                            continue;
                        };
                        CommandFrame::new(Command::Job, job_id, arg, headers).encode_into(&mut self.buf);
                        self.send_to(true, [identity.into(), (&self.buf[..]).into(), bytes.into()])
                    } else {
                        CommandFrame::new(Command::Job, job_id, arg, &headers).encode_into(&mut self.buf);
                        self.send_to(true, [identity.into(), (&self.buf[..]).into(), data])
                    }
                }
                Output::Cancel { worker, job_id } => self.send_about_job(state, worker, Command::CancelJob, job_id),
                Output::Recall { worker, job_id } => self.send_about_job(state, worker, Command::Recall, job_id),
                Output::Heartbeat { worker } => {
                    let Some(identity) = state.worker_identity(worker) else { continue };
                    CommandFrame::new(Command::Heartbeat, 0, 0, b"").encode_into(&mut self.buf);
                    self.send_to(true, [identity.into(), (&self.buf[..]).into()])
                }
                Output::Disconnect { identity } => {
                    CommandFrame::new(Command::Disconnect, 0, 0, b"").encode_into(&mut self.buf);
                    self.send_to(true, [identity.into(), (&self.buf[..]).into()])
                }
            };
            if let Err(e) = result {
                tracing::debug!("dropped a message to a departed peer: {e}");
            }
        }
    }

    /// `CANCEL_JOB` or `RECALL` of job `job_id` to the worker in `slot`.
    fn send_about_job(
        &mut self,
        state: &BrokerState<Msg>,
        slot: usize,
        command: Command,
        job_id: u64,
    ) -> Result<(), zmq::Error> {
        let Some(identity) = state.worker_identity(slot) else { return Ok(()) };
        CommandFrame::new(command, job_id, 0, b"").encode_into(&mut self.buf);
        self.send_to(true, [identity.into(), (&self.buf[..]).into()])
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
            return self.send_to(false, [route.identity, Msg::new(), reply.into()]);
        }
        let pid_bytes = pid.to_le_bytes();
        let reply = CommandFrame::new(Command::Reply, route.req_id, status as u32, &pid_bytes);
        let body = match body {
            Body::Payload(m) => m,
            Body::Text(t) => t.as_bytes().into(),
            // The RESULT frame becomes the REPLY.
            Body::Frame(mut frame) => {
                if inline::result_into_reply(&mut frame, route.req_id, status, pid) {
                    return self.send_to(false, [route.identity, frame]);
                }
                return self.send_to(false, [route.identity, reply.with_data(inline::inline_data(&frame)).message()]);
            }
        };
        reply.encode_into(&mut self.buf);
        self.send_to(false, [route.identity, (&self.buf[..]).into(), body])
    }
}

impl Io<'_> {
    /// Sends `[identity, frames..]` to the peer behind `identity` on the
    /// back (workers) or the front (clients): over its local connection if
    /// it has one, else on the ZeroMQ socket.
    fn send_to<const N: usize>(&mut self, back: bool, parts: [Msg; N]) -> Result<(), zmq::Error> {
        if let Some(i) = self.locals.find(back, &parts[0]) {
            let mut frames: [&[u8]; N] = [&[]; N];
            for (frame, part) in frames.iter_mut().zip(&parts) {
                *frame = part;
            }
            return self.send_local(i, &frames[1..]);
        }
        self.zmq_used = true;
        send_parts(if back { self.back } else { self.front }, parts)
    }

    /// Whether a ZeroMQ socket was written since the last call.
    pub fn take_zmq_used(&mut self) -> bool {
        std::mem::take(&mut self.zmq_used)
    }
}

fn send_parts<const N: usize>(socket: &zmq::Socket, parts: [Msg; N]) -> Result<(), zmq::Error> {
    let last = N - 1;
    for (i, part) in parts.into_iter().enumerate() {
        socket.send(part, if i < last { zmq::SNDMORE | zmq::DONTWAIT } else { zmq::DONTWAIT })?;
    }
    Ok(())
}
