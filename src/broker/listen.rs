//! Running out of file descriptors. When libzmq cannot accept a connection
//! (`EMFILE`, `ENFILE`) it reports `ACCEPT_FAILED` to the socket's monitor
//! and returns, but the connection still waits in the listening socket's
//! queue, which stays readable: its I/O thread would retry at once, forever
//! (a broker at 100% CPU that takes no one new, and says nothing). The
//! broker stops listening on that endpoint instead (new connections are
//! refused by the kernel and retried by ZeroMQ peers), says so, and listens
//! again after a backoff. The cost: libzmq's `unbind` also closes the
//! connections accepted on that endpoint (they belong to its listener), and
//! what was in flight on them is lost; their peers reconnect once it
//! listens again. The decisions are [`Backoff`]'s, pure (time is passed
//! in); [`Listener`] does the I/O.

use std::time::{Duration, Instant};

use super::warnings::{Kind, Warnings};
use crate::endpoint::EndpointLock;
use crate::protocol::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};

/// When one endpoint listens: a pause after each failure for want of file
/// descriptors, doubling while they go on.
#[derive(Debug)]
pub(super) struct Backoff {
    /// When to listen again; `None` while listening.
    rebind_at: Option<Instant>,
    /// The next pause.
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { rebind_at: None, delay: ACCEPT_BACKOFF_MIN }
    }
}

impl Backoff {
    /// An accept failed with `errno`: the pause to take, if it is for want
    /// of descriptors and the endpoint still listens (failures reported
    /// before it stopped come after the decision).
    pub fn accept_failed(&mut self, now: Instant, errno: i32) -> Option<Duration> {
        let exhausted = errno == libc::EMFILE || errno == libc::ENFILE;
        (exhausted && self.rebind_at.is_none()).then(|| self.pause(now))
    }

    /// A connection was accepted: the endpoint works, pauses start over.
    pub fn accepted(&mut self) {
        if self.rebind_at.is_none() {
            self.delay = ACCEPT_BACKOFF_MIN;
        }
    }

    /// When to listen again, while not listening.
    pub fn deadline(&self) -> Option<Instant> {
        self.rebind_at
    }

    /// Listening again worked.
    pub fn rebound(&mut self) {
        self.rebind_at = None;
    }

    /// Listening again failed: the next pause.
    pub fn rebind_failed(&mut self, now: Instant) -> Duration {
        self.pause(now)
    }

    fn pause(&mut self, now: Instant) -> Duration {
        let pause = self.delay;
        self.rebind_at = Some(now + pause);
        self.delay = (pause * 2).min(ACCEPT_BACKOFF_MAX);
        pause
    }
}

/// One listening endpoint of the broker, stopped and started again as its
/// [`Backoff`] says.
pub(super) struct Listener<'a> {
    role: &'static str,
    kind: Kind,
    socket: &'a zmq::Socket,
    /// As bound (a tcp port resolved), which is what `unbind` takes.
    endpoint: String,
    /// An ipc endpoint's lock, told of each new socket file (made 0600).
    lock: Option<&'a mut EndpointLock>,
    backoff: Backoff,
    /// Accepts that failed (any reason), for `STATUS`.
    pub failures: u64,
}

impl<'a> Listener<'a> {
    /// `socket` is bound to `endpoint`; `role` names it in logs.
    pub fn new(
        role: &'static str,
        kind: Kind,
        socket: &'a zmq::Socket,
        endpoint: &str,
        lock: Option<&'a mut EndpointLock>,
    ) -> Self {
        let endpoint = socket.get_last_endpoint().ok().and_then(Result::ok).unwrap_or_else(|| endpoint.to_string());
        Listener { role, kind, socket, endpoint, lock, backoff: Backoff::default(), failures: 0 }
    }

    /// Applies one monitor event (others than accepts are ignored).
    pub fn on_event(&mut self, now: Instant, event: u16, value: i32, warnings: &mut Warnings) {
        if event == zmq::SocketEvent::ACCEPTED as u16 {
            self.backoff.accepted();
            return;
        }
        if event != zmq::SocketEvent::ACCEPT_FAILED as u16 {
            return;
        }
        self.failures += 1;
        let error = std::io::Error::from_raw_os_error(value);
        let Some(pause) = self.backoff.accept_failed(now, value) else {
            tracing::debug!(endpoint = %self.endpoint, "accepting a connection failed: {error}");
            return;
        };
        let limit = crate::sys::fd_limits().map_or_else(|e| format!("unknown: {e}"), |(soft, _)| soft.to_string());
        let (role, endpoint) = (self.role, &self.endpoint);
        warnings.warn(
            now,
            self.kind,
            format_args!(
                "{role} endpoint {endpoint}: a connection could not be accepted ({error}; open file limit \
                 {limit}): not listening for {pause:?} (its connections are closed; peers reconnect)"
            ),
        );
        if let Err(e) = self.socket.unbind(&self.endpoint) {
            tracing::error!("could not stop listening on the {role} endpoint {endpoint}: {e}");
        }
    }

    /// When to listen again, if not listening.
    pub fn deadline(&self) -> Option<Instant> {
        self.backoff.deadline()
    }

    /// Listens again if its pause is over.
    pub fn rebind_if_due(&mut self, now: Instant, warnings: &mut Warnings) {
        if self.backoff.deadline().is_none_or(|at| now < at) {
            return;
        }
        let (role, endpoint) = (self.role, &self.endpoint);
        let bound = self.socket.bind(endpoint).map_err(|e| e.to_string()).and_then(|()| match &mut self.lock {
            Some(lock) => lock.bound().map_err(|e| e.to_string()),
            None => Ok(()),
        });
        match bound {
            Ok(()) => {
                self.backoff.rebound();
                tracing::info!("listening again on the {role} endpoint {endpoint}");
            }
            Err(e) => {
                let pause = self.backoff.rebind_failed(now);
                let message =
                    format_args!("{role} endpoint {endpoint}: listening again failed ({e}): next try in {pause:?}");
                warnings.warn(now, self.kind, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn only_running_out_of_descriptors_stops_listening_and_stale_failures_are_ignored() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.accept_failed(t0, libc::ECONNABORTED), None, "a peer that left: nothing to do");
        assert_eq!(b.deadline(), None);
        assert_eq!(b.accept_failed(t0, libc::EMFILE), Some(100 * MS));
        assert_eq!(b.deadline(), Some(t0 + 100 * MS));
        // Reported before the endpoint stopped: already decided.
        assert_eq!(b.accept_failed(t0 + MS, libc::EMFILE), None);
        assert_eq!(b.deadline(), Some(t0 + 100 * MS));
    }

    #[test]
    fn pauses_double_while_failing_up_to_the_cap_and_start_over_after_an_accept() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.accept_failed(t0, libc::ENFILE), Some(100 * MS));
        // Binding again fails too (no descriptor for the listening socket).
        assert_eq!(b.rebind_failed(t0 + 100 * MS), 200 * MS);
        assert_eq!(b.deadline(), Some(t0 + 300 * MS));
        b.rebound();
        assert_eq!(b.deadline(), None);
        // Listening, but the next accept fails again: the pause keeps growing.
        assert_eq!(b.accept_failed(t0 + 301 * MS, libc::EMFILE), Some(400 * MS));
        let mut now = t0 + 701 * MS;
        let mut pauses = Vec::new();
        for _ in 0..5 {
            let pause = b.rebind_failed(now);
            pauses.push(pause);
            now += pause;
        }
        assert_eq!(pauses, [800 * MS, 1600 * MS, 2000 * MS, 2000 * MS, 2000 * MS]);
        // An accept while not listening (reported late) changes nothing...
        b.accepted();
        b.rebound();
        assert_eq!(b.accept_failed(now, libc::EMFILE), Some(2000 * MS));
        b.rebound();
        // ... one once listening again starts the pauses over.
        b.accepted();
        assert_eq!(b.accept_failed(now + 3000 * MS, libc::EMFILE), Some(100 * MS));
    }
}
