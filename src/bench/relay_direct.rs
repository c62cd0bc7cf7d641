//! The floor without a broker: each worker listens on a Unix
//! `SOCK_SEQPACKET` socket of its own and serves the callers connected to
//! it, running the job inline and answering on the caller's connection.
//! Per job that is one send and one receive on each side and the one
//! wake-up of the caller its answer needs: what any design with the job in
//! another process costs at the least. Beside the relay (a hub between
//! them, bench/relay_hub.rs) it says how much of a caller line's gap to
//! in-process is the broker's hop and how much is the process boundary.
//!
//! A caller is tied to the worker it connected to: with equal jobs and as
//! many callers on each worker that balances itself, which is all the
//! bench needs of it; the broker's dispatch to whichever worker is free is
//! what this floor leaves out.

use std::io;
use std::path::Path;

use super::relay_hub::{Work, MAX_MESSAGE};
use super::seqpacket::{Epoll, Seq};
use crate::error::{Error, Result};

/// Epoll tokens: the listener, and a caller's slot plus one.
const LISTENING: u64 = 0;

/// The answer `work` gives to `request`, appended to `answer` (after the
/// header the hub's worker puts first).
pub(super) fn answer(work: Work<'_>, request: &[u8], answer: &mut Vec<u8>) -> Result<()> {
    match work {
        Work::Echo => answer.extend_from_slice(request),
        Work::Handler(plugin, headers) => {
            let headers = headers.iter().map(|(name, value)| (name.as_str(), value.as_str()));
            // A job that fails spoils the run: the worker stops, the bench's wait runs out.
            answer.extend_from_slice(&plugin.handle(headers, request).map_err(Error::InProcessHandler)?);
        }
    }
    Ok(())
}

/// The worker: listens on `listen`, reports "listening" (the bench's
/// readiness signal), and answers each caller's requests on its own
/// connection until killed. A caller that leaves is forgotten.
pub(super) fn direct_worker(
    listen: &Path,
    work: Work<'_>,
    mut report: impl FnMut(&str) -> io::Result<()>,
) -> Result<()> {
    let listening = Seq::listen(listen)?;
    let epoll = Epoll::new().map_err(Error::io("direct worker: epoll_create1"))?;
    let watch = |fd, token| epoll.add(fd, token).map_err(Error::io("direct worker: epoll_ctl"));
    watch(listening.fd(), LISTENING)?;
    report("listening").map_err(Error::io("direct worker: reporting"))?;

    let mut callers: Vec<Option<Seq>> = Vec::new();
    let (mut buf, mut out) = (vec![0u8; MAX_MESSAGE], Vec::with_capacity(MAX_MESSAGE));
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut ready = Vec::with_capacity(events.len());
    loop {
        epoll.wait(&mut events, &mut ready).map_err(Error::io("direct worker: epoll_wait"))?;
        for &t in &ready {
            if t == LISTENING {
                let c = listening.accept().map_err(Error::io("direct worker: accepting a caller"))?;
                watch(c.fd(), callers.len() as u64 + 1)?;
                callers.push(Some(c));
                continue;
            }
            let slot = (t - 1) as usize;
            let Some(c) = &callers[slot] else { continue };
            let n = match c.recv(&mut buf) {
                Ok(n) if n > 0 => n,
                // Gone (or reset): its descriptor leaves the epoll set as it closes.
                _ => {
                    callers[slot] = None;
                    continue;
                }
            };
            out.clear();
            answer(work, &buf[..n], &mut out)?;
            // A caller that left before its answer misses it; the others go on.
            let _ = c.send(&out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_caller_gets_its_own_answers_and_one_that_leaves_disturbs_none() {
        let dir = tempfile::tempdir().unwrap();
        let listen = dir.path().join("worker");
        let (tx, rx) = mpsc::channel::<String>();
        let l = listen.clone();
        // The worker serves until the test process ends.
        std::thread::spawn(move || {
            direct_worker(&l, Work::Echo, |line| tx.send(line.into()).map_err(io::Error::other))
        });
        let wait = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(wait).unwrap(), "listening");
        crate::bench::relay_hub::tests::three_clients_are_served(&listen);
    }
}
