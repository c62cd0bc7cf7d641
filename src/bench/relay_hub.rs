//! The relay floor's helper roles: a hub (one epoll loop taking clients'
//! requests to workers with room and the answers back) and a worker that
//! echoes or runs a plugin's handler (see [`Work`]), over
//! Unix `SOCK_SEQPACKET`. The least any local broker must do per job, with
//! no protocol, queue policy or library of its own: what ours is held to.
//!
//! A request goes to a worker with a 4-byte header, the sending client's
//! slot, which the worker sends back with the answer; the hub strips it and
//! forwards the rest to that client. Slots are never reused (a suite opens a
//! few hundred connections), so an answer for a client that left cannot
//! reach a newer one.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use super::seqpacket::{Epoll, Seq};
use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;

/// The header a request carries to a worker and back: the client's slot.
pub(super) const HEADER: usize = 4;
/// The largest payload relayed.
pub(super) const MAX_MESSAGE: usize = 64 * 1024;

/// Writes `slot` into the header at the start of `buf`.
pub(super) fn tag(buf: &mut [u8], slot: u32) {
    buf[..HEADER].copy_from_slice(&slot.to_le_bytes());
}

/// The slot and the payload of a tagged message.
pub(super) fn untag(msg: &[u8]) -> Option<(usize, &[u8])> {
    let (head, payload) = msg.split_at_checked(HEADER)?;
    Some((u32::from_le_bytes(head.try_into().ok()?) as usize, payload))
}

/// Which worker takes which request: workers with room in the order they
/// got it (a worker that may hold several requests is there once for each
/// it may take), and requests waiting (oldest first) while none has.
#[derive(Debug, Default)]
pub(super) struct Routes {
    idle: VecDeque<usize>,
    queued: VecDeque<Vec<u8>>,
}

impl Routes {
    /// The worker to send this tagged request to now, or `None`: it is
    /// queued (copied; the usual case, a worker idle, copies nothing).
    pub(super) fn request(&mut self, tagged: &[u8]) -> Option<usize> {
        let worker = self.idle.pop_front();
        if worker.is_none() {
            self.queued.push_back(tagged.to_vec());
        }
        worker
    }

    /// `worker` has room for one more (it joined, or answered): the queued
    /// request it takes now, or `None` and it waits its turn among the idle.
    pub(super) fn free(&mut self, worker: usize) -> Option<Vec<u8>> {
        let next = self.queued.pop_front();
        if next.is_none() {
            self.idle.push_back(worker);
        }
        next
    }

    /// `worker` left. A request it held is lost and its client's wait runs
    /// out: the bench's workers only leave when the bench is over.
    pub(super) fn gone(&mut self, worker: usize) {
        self.idle.retain(|&w| w != worker);
    }
}

// Epoll tokens: the kind in the high half, the slot in the low half.
const CLIENTS_LISTENING: u64 = 0;
const WORKERS_LISTENING: u64 = 1;
const CLIENT: u64 = 2;
const WORKER: u64 = 3;

fn token(kind: u64, slot: usize) -> u64 {
    (kind << 32) | slot as u64
}

fn send_job(workers: &[Option<Seq>], worker: usize, msg: &[u8]) -> Result<()> {
    let ctx = "relay hub: sending a request to a worker";
    // Routes only name connected workers, and a send fails only when one
    // died: either way the bench's run is spoilt, so the hub stops.
    let w = workers[worker].as_ref().ok_or_else(|| Error::io(ctx)(io::ErrorKind::NotConnected.into()))?;
    w.send(msg).map_err(Error::io(ctx))
}

/// The hub: listens on `front` for clients and on `back` for workers, and
/// serves until killed; each worker holds up to `ahead` requests (1: it
/// gets the next when it answers). `report` hears "listening" once both
/// sockets are, then "workers N" as each worker connects: the bench's
/// readiness signals.
pub(super) fn hub(
    front: &Path,
    back: &Path,
    ahead: usize,
    mut report: impl FnMut(&str) -> io::Result<()>,
) -> Result<()> {
    let (clients_listening, workers_listening) = (Seq::listen(front)?, Seq::listen(back)?);
    let epoll = Epoll::new().map_err(Error::io("relay hub: epoll_create1"))?;
    let watch = |fd, token| epoll.add(fd, token).map_err(Error::io("relay hub: epoll_ctl"));
    watch(clients_listening.fd(), token(CLIENTS_LISTENING, 0))?;
    watch(workers_listening.fd(), token(WORKERS_LISTENING, 0))?;
    report("listening").map_err(Error::io("relay hub: reporting"))?;

    let (mut clients, mut workers): (Vec<Option<Seq>>, Vec<Option<Seq>>) = (Vec::new(), Vec::new());
    let mut routes = Routes::default();
    // Requests are received after the header's room, so tagging copies nothing.
    let mut buf = vec![0u8; HEADER + MAX_MESSAGE];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut ready = Vec::with_capacity(events.len());
    loop {
        epoll.wait(&mut events, &mut ready).map_err(Error::io("relay hub: epoll_wait"))?;
        for &t in &ready {
            let slot = (t & u64::from(u32::MAX)) as usize;
            match t >> 32 {
                CLIENTS_LISTENING => {
                    let c = clients_listening.accept().map_err(Error::io("relay hub: accepting a client"))?;
                    watch(c.fd(), token(CLIENT, clients.len()))?;
                    clients.push(Some(c));
                }
                WORKERS_LISTENING => {
                    let w = workers_listening.accept().map_err(Error::io("relay hub: accepting a worker"))?;
                    let slot = workers.len();
                    watch(w.fd(), token(WORKER, slot))?;
                    workers.push(Some(w));
                    let joined = workers.iter().flatten().count();
                    report(&format!("workers {joined}")).map_err(Error::io("relay hub: reporting"))?;
                    for _ in 0..ahead {
                        if let Some(job) = routes.free(slot) {
                            send_job(&workers, slot, &job)?;
                        }
                    }
                }
                CLIENT => {
                    // Already closed when an earlier event of this batch saw it go.
                    let Some(c) = &clients[slot] else { continue };
                    let n = match c.recv(&mut buf[HEADER..]) {
                        Ok(n) if n > 0 => n,
                        // Gone (or reset): its descriptor leaves the epoll set as it closes.
                        _ => {
                            clients[slot] = None;
                            continue;
                        }
                    };
                    tag(&mut buf, slot as u32);
                    if let Some(worker) = routes.request(&buf[..HEADER + n]) {
                        send_job(&workers, worker, &buf[..HEADER + n])?;
                    }
                }
                WORKER => {
                    let Some(w) = &workers[slot] else { continue };
                    let n = match w.recv(&mut buf) {
                        Ok(n) if n > 0 => n,
                        _ => {
                            workers[slot] = None;
                            routes.gone(slot);
                            continue;
                        }
                    };
                    let (client, answer) = untag(&buf[..n])
                        .ok_or_else(|| Error::Protocol("a relay worker's answer without its header".into()))?;
                    if let Some(Some(c)) = clients.get(client) {
                        // A client that left between request and answer misses it; others go on.
                        let _ = c.send(answer);
                    }
                    if let Some(job) = routes.free(slot) {
                        send_job(&workers, slot, &job)?;
                    }
                }
                _ => unreachable!("only the tokens above are registered"),
            }
        }
    }
}

/// What a relay worker does with each request: send it back as it came
/// (the floor's echo), or run a plugin's handler on it with these headers
/// and send back what it returns, as our workers do (the floor under a
/// real job; the plugin is loaded in the worker's process, as ours).
#[derive(Clone, Copy)]
pub(super) enum Work<'a> {
    Echo,
    Handler(&'a LoadedPlugin, &'a [(String, String)]),
}

/// The worker: connects to the hub's `back` socket and answers every
/// message, its header first (see [`Work`]); returns when the hub closes.
pub(super) fn worker(back: &Path, work: Work<'_>) -> Result<()> {
    let hub = Seq::connect(back)?;
    let mut buf = vec![0u8; HEADER + MAX_MESSAGE];
    let mut answer = Vec::with_capacity(HEADER + MAX_MESSAGE);
    loop {
        let n = match hub.recv(&mut buf).map_err(Error::io("relay worker: recv"))? {
            0 => return Ok(()),
            n => n,
        };
        let (head, request) = buf[..n]
            .split_at_checked(HEADER)
            .ok_or_else(|| Error::Protocol("a relay request without its header".into()))?;
        answer.clear();
        answer.extend_from_slice(head);
        super::relay_direct::answer(work, request, &mut answer)?;
        hub.send(&answer).map_err(Error::io("relay worker: send"))?;
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn tags_round_trip_and_short_messages_have_none() {
        let mut buf = [0u8; HEADER + 3];
        buf[HEADER..].copy_from_slice(b"abc");
        tag(&mut buf, 70_000);
        assert_eq!(untag(&buf), Some((70_000, &b"abc"[..])));
        assert_eq!(untag(&buf[..HEADER]), Some((70_000, &b""[..])));
        assert_eq!(untag(&buf[..HEADER - 1]), None);
    }

    #[test]
    fn requests_go_to_idle_workers_in_turn_and_wait_for_one_otherwise() {
        let mut r = Routes::default();
        assert_eq!(r.request(b"r1"), None, "no worker yet: queued");
        assert_eq!(r.free(7).as_deref(), Some(&b"r1"[..]), "the first worker takes the queued request");
        assert_eq!(r.free(3), None);
        assert_eq!(r.free(5), None);
        assert_eq!(r.free(7), None);
        assert_eq!(r.request(b"r2"), Some(3), "idle the longest goes first");
        r.gone(5);
        assert_eq!(r.request(b"r3"), Some(7), "a worker that left is skipped");
        assert_eq!(r.request(b"r4"), None);
        assert_eq!(r.request(b"r5"), None);
        assert_eq!(r.free(3).as_deref(), Some(&b"r4"[..]), "oldest request first");
        assert_eq!(r.free(7).as_deref(), Some(&b"r5"[..]));
        assert_eq!(r.free(7), None);
    }

    #[test]
    fn a_worker_given_room_for_two_takes_two_requests_before_the_next_waits() {
        let mut r = Routes::default();
        for _ in 0..2 {
            assert_eq!(r.free(4), None);
        }
        assert_eq!(r.request(b"a"), Some(4));
        assert_eq!(r.request(b"b"), Some(4), "the second request goes ahead to the same worker");
        assert_eq!(r.request(b"c"), None, "no room left: queued");
        assert_eq!(r.free(4).as_deref(), Some(&b"c"[..]), "an answer makes room for the queued one");
        r.gone(4);
        assert_eq!(r.request(b"d"), None, "a worker that left holds no room");
    }

    #[test]
    fn the_hub_sends_each_answer_to_its_own_client_when_requests_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (front, back) = (dir.path().join("front"), dir.path().join("back"));
        let (tx, rx) = mpsc::channel::<String>();
        // The hub and the workers serve until the test process ends.
        let (f, b) = (front.clone(), back.clone());
        std::thread::spawn(move || hub(&f, &b, 1, |line| tx.send(line.into()).map_err(io::Error::other)));
        let wait = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(wait).unwrap(), "listening");
        for n in 1..=2 {
            let b = back.clone();
            std::thread::spawn(move || worker(&b, Work::Echo));
            assert_eq!(rx.recv_timeout(wait).unwrap(), format!("workers {n}"));
        }
        // Three clients and two workers: one request waits in the queue.
        three_clients_are_served(&front);
    }

    /// Three clients of `front` each send a request a round, for 20 rounds,
    /// and each gets its own answers back (echoed); then one leaves with an
    /// answer due, and a newer client is served all the same.
    pub(in crate::bench) fn three_clients_are_served(front: &Path) {
        let wait = Duration::from_secs(10);
        let clients: Vec<Seq> = (0..3).map(|_| Seq::connect(front).unwrap()).collect();
        let mut buf = [0u8; 64];
        for round in 0..20 {
            for (i, c) in clients.iter().enumerate() {
                c.set_recv_timeout(wait).unwrap();
                c.send(format!("client {i} round {round}").as_bytes()).unwrap();
            }
            for (i, c) in clients.iter().enumerate() {
                let n = c.recv(&mut buf).unwrap();
                assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), format!("client {i} round {round}"));
            }
        }
        clients[0].send(b"left").unwrap();
        drop(clients);
        let other = Seq::connect(front).unwrap();
        other.set_recv_timeout(wait).unwrap();
        other.send(b"still served").unwrap();
        let n = other.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"still served");
    }
}
