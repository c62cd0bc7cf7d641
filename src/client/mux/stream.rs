//! The pipelined side of the [`Mux`](super::Mux): one caller keeps a window
//! of requests in flight and holds the socket for the whole stream, serving
//! other callers' requests and replies meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::{Mux, Outcome};
use crate::error::{Error, Result};

impl Mux {
    /// Keeps up to `window` requests from `next` in flight on the socket,
    /// reporting each outcome to `done` as it comes; each request gets
    /// `timeout`. Holds the socket throughout, serving other callers too.
    pub(crate) fn pipeline(
        &self,
        next: impl FnMut(u64) -> Option<Vec<zmq::Message>>,
        window: usize,
        timeout: Duration,
        done: impl FnMut(u64, Outcome),
    ) -> Result<()> {
        self.pipeline_within(next, window, timeout, None, done).map(drop)
    }

    /// [`Self::pipeline`] for a client of several brokers: it stops early
    /// (true) when the connection drops (requests in flight are reported
    /// `Lost`) or when, with nothing in flight, there has been no connection
    /// for `send_wait`; the caller goes on with the rest elsewhere.
    pub(crate) fn pipeline_within(
        &self,
        mut next: impl FnMut(u64) -> Option<Vec<zmq::Message>>,
        window: usize,
        timeout: Duration,
        send_wait: Option<Duration>,
        mut done: impl FnMut(u64, Outcome),
    ) -> Result<bool> {
        self.pipelines_waiting.fetch_add(1, Ordering::AcqRel);
        // A leader serving calls polls this pipe: it yields the socket.
        self.wake.trigger();
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        self.pipelines_waiting.fetch_sub(1, Ordering::AcqRel);
        let result = self.stream(&socket, &mut next, window, timeout, send_wait, &mut done);
        // On every path, errors included: callers parked meanwhile take over.
        drop(socket);
        self.hand_over();
        result
    }

    fn stream(
        &self,
        socket: &zmq::Socket,
        next: &mut impl FnMut(u64) -> Option<Vec<zmq::Message>>,
        window: usize,
        timeout: Duration,
        send_wait: Option<Duration>,
        done: &mut impl FnMut(u64, Outcome),
    ) -> Result<bool> {
        let me = thread::current().id();
        let epoch = self.lost_epoch.load(Ordering::Acquire);
        let mut unconnected_since: Option<Instant> = None;
        let mut stopped = false;
        // Sent ids in order; all share one timeout, so deadlines are ordered too.
        let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(window);
        let mut order: VecDeque<u64> = VecDeque::with_capacity(window);
        let mut exhausted = false;
        loop {
            self.flush(socket)?;
            let connected = self.connected.load(Ordering::Acquire);
            // One clock read per burst of sends: deadlines differ by µs at most.
            let deadline = Instant::now() + timeout;
            while !exhausted && in_flight.len() < window && connected {
                let id = self.next_id();
                let Some(frames) = next(id) else {
                    exhausted = true;
                    break;
                };
                let last = frames.len() - 1;
                // By copy: a signal may interrupt a send on an application's thread.
                for (i, frame) in frames.iter().enumerate() {
                    let flags = if i < last { zmq::SNDMORE } else { 0 };
                    crate::sys::zmq_send_copy(socket, frame, flags | zmq::DONTWAIT)
                        .map_err(Error::zmq("sending to the broker"))?;
                }
                in_flight.insert(id, deadline);
                order.push_back(id);
            }
            let now = Instant::now();
            while let Some(&id) = order.front() {
                match in_flight.get(&id) {
                    None => {
                        order.pop_front();
                    }
                    Some(&deadline) if deadline <= now => {
                        order.pop_front();
                        in_flight.remove(&id);
                        done(id, Outcome::Timeout);
                    }
                    Some(_) => break,
                }
            }
            if exhausted && in_flight.is_empty() {
                return Ok(stopped);
            }
            if let Some(wait) = send_wait.filter(|_| !connected && in_flight.is_empty()) {
                if now.duration_since(*unconnected_since.get_or_insert(now)) >= wait {
                    return Ok(true);
                }
            } else {
                unconnected_since = None;
            }
            let wait = match (order.front().and_then(|id| in_flight.get(id)), connected) {
                (Some(deadline), _) => deadline.saturating_duration_since(now).as_millis() as i64 + 1,
                (None, true) => -1,
                // Not connected and nothing in flight: look again shortly.
                (None, false) => 10,
            };
            let mut items = [socket.as_poll_item(zmq::POLLIN), self.wake.poll_item()];
            crate::wakeup::poll(&mut items, wait)?;
            if items[1].is_readable() {
                self.wake.clear();
                if self.lost_epoch.load(Ordering::Acquire) != epoch && !stopped {
                    // The connection dropped: what is in flight will never be answered.
                    stopped = true;
                    exhausted = true;
                    for id in order.drain(..) {
                        if in_flight.remove(&id).is_some() {
                            done(id, Outcome::Lost);
                        }
                    }
                    continue;
                }
            }
            if items[0].is_readable() {
                while let Some((id, reply)) = self.recv_reply(socket)? {
                    if in_flight.remove(&id).is_some() {
                        done(id, Outcome::Reply(reply));
                    } else {
                        self.deliver(id, reply, me);
                    }
                }
            }
        }
    }
}
