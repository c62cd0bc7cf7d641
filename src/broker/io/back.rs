//! Messages from workers (the back socket): registrations, answers,
//! returned jobs, heartbeats and departures.

use std::time::Instant;

use super::{Io, Msg};
use crate::broker::state::{Answer, BrokerState, Output};
use crate::broker::warnings::Kind;
use crate::protocol::parse::{parse_back, Back};

impl Io<'_> {
    pub fn on_back(&mut self, now: Instant, state: &mut BrokerState<Msg>, out: &mut Vec<Output<Msg>>) {
        let mut frames = std::mem::take(&mut self.frames);
        let identity = frames.remove(0);
        let Some(key) = self.back_sender(now, &identity, &mut frames, state, out) else {
            frames.clear();
            self.frames = frames;
            self.flush(state, out);
            return;
        };
        if let Some(size) = self.oversized(&identity) {
            // Nobody to answer: a worker refuses to send a result over its own
            // limit (`worker::jobs`), so this one is misconfigured or not
            // ours; the job it may hold is answered at its deadline.
            state.counters.oversized += 1;
            let limit = self.max_message_bytes;
            let message = format_args!("a worker's message of {size} bytes dropped: over --max-message-bytes {limit}");
            self.warnings.warn(now, Kind::Worker, message);
            frames.clear();
            self.frames = frames;
            return;
        }
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
                if let Some(key) = key {
                    self.worker_key(&identity, key);
                }
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
            Back::Return { job_id, headers, elsewhere } => {
                let (headers, data) = (Msg::from(headers), body.expect("RETURN has its data"));
                state.worker_return(now, &identity, job_id, headers, data, elsewhere, out);
            }
            Back::Heartbeat { lane_jobs } => {
                state.worker_heartbeat(now, &identity, out);
                state.worker_lane_jobs(&identity, lane_jobs);
            }
            Back::Disconnect => {
                tracing::info!("worker {} unregistered", String::from_utf8_lossy(&identity));
                state.worker_disconnect(now, &identity, out);
            }
            Back::Bad(why) => {
                state.counters.bad_requests += 1;
                self.warnings.warn(now, Kind::Worker, format_args!("bad message from a worker: {why}"));
            }
        }
        frames.clear();
        self.frames = frames;
        self.flush(state, out);
    }
}
