//! The job thread's loop over its brokers: registering with each (again
//! after silence), heartbeating each, dialling again, and taking the
//! brokers in turn, so that one broker's stream never starves another's;
//! the jobs themselves are run by [`super::jobs`].

use super::socket::BrokerSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::jobs::JobLoop;
use super::wire::{send, send_raw};
use super::Link;
use crate::error::{Error, Result};
use crate::protocol::{Command, CommandFrame, RETURN_ELSEWHERE};
use crate::wakeup::Wakeup;

/// A broker told we are free again (it had a job turned away while we ran
/// another broker's) answers with its job within a round trip; until this
/// long has passed, its job is awaited before another broker's next one,
/// or the broker that kept us busy would win every race and starve it.
const TURN_WAIT: Duration = Duration::from_millis(5);

/// The job thread's view of one broker's registration.
struct Registering {
    /// Not registered (or the broker went silent): `READY` is sent when it
    /// is connected, again after a backoff while it does not answer.
    lost: bool,
    backoff: Duration,
    next_ready: Instant,
    redial: crate::redial::Redial,
    /// When it is due a heartbeat (anything sent to it counts: a RESULT
    /// postpones it).
    next_heartbeat: Instant,
    /// Whether its socket had a connection (POLLOUT) at this turn's start.
    connected: bool,
}

impl JobLoop<'_> {
    pub(super) fn run(&self, shutdown: &Wakeup) -> Result<()> {
        let interval = self.options.heartbeat_interval;
        let broker_timeout = interval * self.options.liveness;
        let start = Instant::now();
        let mut brokers: Vec<Registering> = (self.options.backends.iter())
            .map(|b| Registering {
                lost: true,
                backoff: interval,
                next_ready: start,
                redial: crate::redial::Redial::new(b, start),
                next_heartbeat: start + interval,
                connected: false,
            })
            .collect();
        let mut frames: Vec<zmq::Message> = Vec::with_capacity(3);
        let mut announced = false;
        // --exit-on-broker-loss: only once a broker was had, and every one is lost.
        let mut registered_once = false;
        let mut sockets = Link::lock(&self.link.sockets);
        // A stop request is seen by the poll below (its pipe stays
        // readable): no system call of its own at every turn.
        let mut stop = shutdown.requested();
        loop {
            let retiring = self.retire_at.is_some_and(|at| Instant::now() >= at);
            if stop || retiring || self.link.unregistered.load(Ordering::Acquire) {
                let why = if retiring { "max age reached" } else { "stop requested" };
                // Acknowledgements are awaited from the brokers that hear us.
                let live: Vec<bool> = brokers.iter().map(|b| !b.lost).collect();
                return self.leave(sockets, &mut frames, why, &live);
            }
            let now = Instant::now();
            for (i, broker) in brokers.iter_mut().enumerate() {
                let socket = &sockets[i];
                if self.link.peers[i].reregister.swap(false, Ordering::AcqRel) {
                    tracing::info!(backend = %self.options.backends[i], "broker asked us to register again");
                    if !send_raw(socket, self.ready)? {
                        broker.lost = true;
                    }
                }
                let last_heard = self.link.last_heard(i).unwrap_or(now);
                if !broker.lost && now >= last_heard + broker_timeout {
                    tracing::warn!(
                        backend = %self.options.backends[i],
                        "broker silent for {broker_timeout:?}; registering again as soon as it answers"
                    );
                    broker.lost = true;
                }
                let connected = socket.connected(now)?;
                if socket.take_reconnected() {
                    // A new local connection: the broker behind it may not
                    // know us (it restarted), so register on it now.
                    (broker.lost, broker.next_ready) = (true, now);
                }
                // Read once per turn; a dial below makes it unconnected.
                broker.connected = connected;
                let redialled = match socket.zmq() {
                    Some(zmq) => broker.redial.check(zmq, connected || !broker.lost, now)?,
                    None => false,
                };
                if redialled {
                    broker.connected = false;
                    tracing::warn!(
                        "no connection to the broker at {} for {:.0?}; dialling again (a broker with \
                         --curve-secret refuses keys not in its --allow-workers: see its log)",
                        self.options.backends[i],
                        broker.redial.unconnected_for(now)
                    );
                }
                if broker.lost && connected && now >= broker.next_ready {
                    // Sent: registered, as far as we know; the silence timer
                    // runs again, and the backoff grows until it answers.
                    if send_raw(socket, self.ready)? {
                        tracing::info!(backend = %self.options.backends[i], "registered with the broker");
                        registered_once = true;
                        broker.lost = false;
                        self.link.heard(i);
                        self.link.peers[i].owes_ready.store(false, Ordering::Release);
                        if !std::mem::replace(&mut announced, true) {
                            // A supervisor (systemd, or a pool with remote
                            // brokers) learns that we serve.
                            let pid = std::process::id();
                            crate::sys::notify::notify_or_log(&format!("READY=1\nMAINPID={pid}"));
                        }
                    }
                    broker.next_ready = now + broker.backoff;
                    broker.backoff = (broker.backoff * 2).min(Duration::from_secs(32));
                }
            }
            if self.options.exit_on_broker_loss && registered_once && brokers.iter().all(|b| b.lost) {
                return Err(Error::Protocol(format!("no broker heard for {broker_timeout:?}; exiting as asked")));
            }
            for (i, broker) in brokers.iter_mut().enumerate() {
                if now >= broker.next_heartbeat {
                    let lane_jobs = self.link.lane_jobs.load(Ordering::Relaxed);
                    send(&sockets[i], CommandFrame::new(Command::Heartbeat, lane_jobs, 0, b""), None)?;
                    broker.next_heartbeat = now + interval;
                }
            }
            // Serving one broker must not starve the others of heartbeats
            // or of the check for their silence: the reading below stops
            // for this, then goes on.
            let mut chores = brokers.iter().map(|b| b.next_heartbeat).min().unwrap_or(now + interval);
            for (i, broker) in brokers.iter().enumerate() {
                if !broker.lost {
                    chores = chores.min(self.link.last_heard(i).unwrap_or(now) + broker_timeout);
                }
            }
            let mut wake = chores;
            let mut items = Vec::with_capacity(sockets.len() + 1);
            for (i, broker) in brokers.iter().enumerate() {
                let connected = broker.connected;
                if let Some(at) = sockets[i].dial_at() {
                    wake = wake.min(at);
                }
                if broker.lost {
                    wake = wake.min(broker.next_ready);
                    if let Some(at) = broker.redial.next() {
                        wake = wake.min(at);
                    }
                } else {
                    wake = wake.min(self.link.last_heard(i).unwrap_or(now) + broker_timeout);
                }
                // While lost and unconnected, a new connection (POLLOUT) wakes us to register.
                let events = if broker.lost && !connected { zmq::POLLIN | zmq::POLLOUT } else { zmq::POLLIN };
                items.push(sockets[i].poll_item(events));
            }
            if let Some(at) = self.retire_at {
                wake = wake.min(at);
            }
            items.push(shutdown.poll_item());
            items.push(self.link.lane_free.poll_item());
            // Messages already read (stashed) are handled without waiting.
            let timeout = if Link::lock(&self.link.stash).is_empty() && !sockets.iter().any(|s| s.buffered()) {
                wake.saturating_duration_since(now).as_millis() as i64 + 1
            } else {
                0
            };
            crate::wakeup::poll(&mut items, timeout)?;
            if items[brokers.len()].is_readable() {
                stop = true;
                continue;
            }
            if items[brokers.len() + 1].is_readable() {
                // The lane's job ended: the brokers turned away hear READY.
                self.link.lane_free.clear();
                self.free_again(&sockets)?;
            }
            let mut readable = false;
            for (i, item) in items[..brokers.len()].iter().enumerate() {
                sockets[i].polled(item);
                if item.is_writable() {
                    brokers[i].next_ready = Instant::now();
                }
                readable |= item.is_readable() || sockets[i].buffered();
            }
            drop(items);
            if !readable && Link::lock(&self.link.stash).is_empty() {
                continue;
            }
            // Brokers just told we are free, and until when their job is
            // awaited before the others' (see TURN_WAIT).
            let mut favour: Option<(Vec<bool>, Instant)> = None;
            loop {
                let now = Instant::now();
                let favoured = favour.as_ref().filter(|(_, until)| now < *until).map(|(f, _)| f.as_slice());
                let Some(origin) = self.next_message(&sockets, &mut frames, favoured)? else {
                    match favour.as_ref() {
                        Some((f, until)) if now < *until => {
                            // Held answers do not wait for another broker's turn.
                            self.link.flush_held(&sockets)?;
                            let mut items: Vec<_> = (f.iter().zip(sockets.iter()))
                                .filter(|(on, _)| **on)
                                .map(|(_, s)| s.poll_item(zmq::POLLIN))
                                .collect();
                            crate::wakeup::poll(&mut items, (*until - now).as_micros().div_ceil(1000) as i64)?;
                            drop(items);
                            // Looked at again whatever the poll said: a rare path.
                            for (_, socket) in f.iter().zip(sockets.iter()).filter(|(on, _)| **on) {
                                socket.mark_readable();
                            }
                            continue;
                        }
                        _ => break,
                    }
                };
                self.link.heard(origin);
                let broker = &mut brokers[origin];
                (broker.lost, broker.backoff) = (false, interval);
                let ran_job;
                (sockets, ran_job) = self.handle(sockets, origin, &frames)?;
                let now = Instant::now();
                if ran_job {
                    brokers[origin].next_heartbeat = now + interval;
                    // Free for a moment: a broker we turned away may send
                    // again, and its job comes before the others' next ones.
                    let told = self.free_again(&sockets)?;
                    favour = told.iter().any(|t| *t).then(|| (told, now + TURN_WAIT));
                }
                if now >= chores {
                    break;
                }
            }
            // Nothing at hand: nothing may stay held while we wait, and the
            // brokers we turned away as busy may send again.
            self.link.flush_held(&sockets)?;
            self.free_again(&sockets)?;
        }
    }

    /// Gives back the jobs stashed from brokers other than `origin`, as
    /// busy elsewhere: they must not wait behind `origin`'s job.
    pub(super) fn give_back_others(&self, sockets: &[BrokerSocket], origin: usize) {
        let others: Vec<super::FromBroker> = {
            let mut stash = Link::lock(&self.link.stash);
            if stash.iter().all(|(o, _)| *o == origin) {
                return;
            }
            let (others, mine): (Vec<_>, Vec<_>) = stash.drain(..).partition(|(o, _)| *o != origin);
            stash.extend(mine);
            others
        };
        for (j, frames) in others {
            super::pulse::give_back(&sockets[j], frames, RETURN_ELSEWHERE);
            self.link.peers[j].owes_ready.store(true, Ordering::Release);
        }
    }

    /// `READY` to each broker we gave a job back as busy elsewhere: we are idle.
    /// Returns, per broker, whether it was told.
    pub(super) fn free_again(&self, sockets: &[BrokerSocket]) -> Result<Vec<bool>> {
        let mut told = vec![false; sockets.len()];
        // Not free while a lane's job has the turn (the job thread runs
        // none here): READY once it ends (see `Link::lane_free`), not now,
        // or the broker would send the job back at once, and again.
        if self.link.handler.is_busy() {
            return Ok(told);
        }
        for (i, peer) in self.link.peers.iter().enumerate() {
            if peer.owes_ready.swap(false, Ordering::AcqRel) && !self.link.unregistered.load(Ordering::Acquire) {
                tracing::debug!(backend = %self.options.backends[i], "free again: READY");
                told[i] = send_raw(&sockets[i], self.ready)?;
                if !told[i] {
                    // Not connected now: it is still owed, or that broker
                    // would wait for it for good.
                    peer.owes_ready.store(true, Ordering::Release);
                }
            }
        }
        Ok(told)
    }

    /// The next message and its broker, the brokers taken in turn (so that
    /// one broker's jobs held ahead never keep another's waiting): for each,
    /// what the pulse thread stashed from it first, then its socket.
    /// With `only`, the brokers marked there alone.
    pub(super) fn next_message(
        &self,
        sockets: &[BrokerSocket],
        frames: &mut Vec<zmq::Message>,
        only: Option<&[bool]>,
    ) -> Result<Option<usize>> {
        let n = sockets.len();
        let first = self.turn.get();
        for k in 0..n {
            let i = (first + k) % n;
            if only.is_some_and(|only| !only[i]) {
                continue;
            }
            let stashed = {
                let mut stash = Link::lock(&self.link.stash);
                let at = stash.iter().position(|(origin, _)| *origin == i);
                at.and_then(|at| stash.remove(at))
            };
            let got = match stashed {
                Some((_, message)) => {
                    *frames = message;
                    true
                }
                None => sockets[i].recv_polled(frames)?,
            };
            if got {
                self.turn.set((i + 1) % n);
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}
