//! Messages from clients (the front socket): native requests, control and
//! status queries, and Powerhose 0.7 jobs, each answered or submitted.

use std::time::{Duration, Instant};

use super::{Io, Msg, MAX_FRAMES};
use crate::auth::Role;
use crate::broker::state::{BrokerState, ClientRoute, Job, Output};
use crate::broker::warnings::Kind;
use crate::protocol::parse::{parse_front, parse_oversized_front, Front};
use crate::protocol::{encode_headers, CommandFrame, Control, Status};

impl Io<'_> {
    pub fn on_front(&mut self, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let mut frames = std::mem::take(&mut self.frames);
        let identity = frames.remove(0);
        let Some(role) = self.front_role(now, &mut frames) else {
            frames.clear();
            self.frames = frames;
            return;
        };
        if let Some(size) = self.oversized(&identity) {
            self.refuse_oversized(now, identity, frames.first().map(|f| &f[..]), size, state, out);
            frames.clear();
            self.frames = frames;
            self.flush(state, out);
            return;
        }
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
            parse_oversized_front(frames.first().map(|f| &f[..]), frames.len())
        } else {
            parse_front(&views[..count])
        };
        if let Front::Request { req_id, timeout_ms, service, retries, priority, inline: Some(_), .. } = parsed {
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
                priority,
                received: now,
                inline: true,
            };
            state.submit(now, service, job, out);
        } else {
            self.settle_front(now, role, identity, parsed, data, state, out);
        }
        frames.clear();
        self.frames = frames;
        self.flush(state, out);
    }

    /// A message over `--max-message-bytes` (but under ZeroMQ's hard cap, or
    /// it would not be here): counted, logged, and answered when it says
    /// whom to answer (a REQ envelope, or a command frame's request id).
    fn refuse_oversized(
        &mut self,
        now: Instant,
        identity: Msg,
        first: Option<&[u8]>,
        size: usize,
        state: &mut BrokerState<Msg>,
        out: &mut Vec<Output<Msg>>,
    ) {
        state.counters.oversized += 1;
        let limit = self.max_message_bytes;
        self.warnings.warn(
            now,
            Kind::Client,
            format_args!("a client's message of {size} bytes refused: over --max-message-bytes {limit}"),
        );
        let route = match first {
            Some([]) => ClientRoute { identity, req_id: 0, legacy: true },
            Some(head) if CommandFrame::is_native(head) => match CommandFrame::decode(head) {
                Ok(cmd) => ClientRoute { identity, req_id: cmd.id, legacy: false },
                Err(_) => return,
            },
            _ => return,
        };
        let text = format!("request of {size} bytes is over the broker's --max-message-bytes {limit}");
        self.reply_text(out, route, Status::BadRequest, text);
    }

    #[allow(clippy::too_many_arguments)]
    fn settle_front(
        &mut self,
        now: Instant,
        role: Role,
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
            Front::LegacyJob { service, retries, priority, headers, data } => {
                let job = Job {
                    route: ClientRoute { identity, req_id: 0, legacy: true },
                    headers: Msg::from(encode_headers(headers.iter().copied())),
                    data: Msg::from(data),
                    deadline: now + self.options.legacy_timeout,
                    retries,
                    priority,
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
            Front::Cancel { req_id } => state.cancel(&identity, req_id, out),
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
                let json = serde_json::to_string(&self.status(now, state, role)).expect("status serialises");
                self.reply_text(out, ClientRoute { identity, req_id, legacy: false }, Status::Ok, json);
            }
            Front::Control { req_id, request } => {
                let (status, text) = match (request, &self.options.control) {
                    (Err(e), _) => (Status::BadRequest, e),
                    (Ok(_), _) if !role.may_control() => {
                        self.gate.failures.operators += 1;
                        self.warnings.warn(
                            now,
                            Kind::Auth,
                            format_args!("a {} asked to reload or scale: refused", role.name()),
                        );
                        (
                            Status::BadRequest,
                            "reload and scale need an operator's key (--allow-operators) or the owner's ipc socket"
                                .into(),
                        )
                    }
                    (Ok(_), None) => {
                        (Status::BadRequest, "this broker has no supervisor (start it with `powerhose`)".into())
                    }
                    (Ok(Control::Scale { workers: Some(n), .. }), Some(sink)) if n > sink.max_workers => (
                        Status::BadRequest,
                        format!("scale to {n} refused: at most {} workers (--max-workers)", sink.max_workers),
                    ),
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
            Front::Request { req_id, timeout_ms, service, headers, retries, priority, .. } => {
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
                    priority,
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
                self.warnings.warn(now, Kind::Client, format_args!("unanswerable client message dropped: {why}"));
            }
        }
    }
}
