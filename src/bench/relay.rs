//! The relay floor: client → epoll relay → worker → relay → client over Unix
//! `SOCK_SEQPACKET` (bench/relay_hub.rs), on the same payload and pinning as
//! the ZeroMQ floors. It is what a local broker costs at the least, so every
//! suite line reports its ratio to it: ZeroMQ's own floor is not the least.
//!
//! The hub and two echo workers (as the bench cluster's two) are this
//! executable run with `--helper relay-hub` and `--helper relay-worker`;
//! the callers are threads of the bench, one connection each, blocking.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::floor::Setup;
use super::measure::{latency_loop, Budget, Lat, Limit};
use super::procs::{self, Guarded};
use super::relay_hub::{self, MAX_MESSAGE};
use super::seqpacket::{readable_within, Seq};
use crate::error::{Error, Result};

/// The relay's figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RelayFloor {
    /// One caller, one request at a time: the round trip.
    pub sequential: Lat,
    /// CPU time per job of the hub, the workers and the caller together,
    /// sequential, in µs.
    pub cpu_us_per_job: f64,
    /// Several callers at once (see [`CALLERS`]).
    pub callers: Vec<RelayCallers>,
}

/// The relay with several callers, each with one request at a time.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RelayCallers {
    /// How many callers.
    pub callers: usize,
    /// Round trips per second, all callers together.
    pub jobs_per_s: f64,
    /// CPU time per job of the hub, the workers and the callers together, in µs.
    pub cpu_us_per_job: f64,
}

impl RelayFloor {
    /// The figures with `n` callers, if measured.
    pub fn with_callers(&self, n: usize) -> Option<&RelayCallers> {
        self.callers.iter().find(|c| c.callers == n)
    }
}

/// The caller counts the relay is measured with.
pub const CALLERS: [usize; 2] = [4, 16];
/// Relay workers: as many as the bench cluster's.
const WORKERS: usize = 2;
/// The longest wait for a helper's readiness or a round trip.
const WAIT: Duration = Duration::from_secs(10);

/// Runs a relay helper role if `args` name one (`None` otherwise); never
/// returns while the role serves.
pub fn helper(args: &[&str]) -> Option<Result<()>> {
    match *args {
        ["relay-hub", front, back] => Some(relay_hub::hub(Path::new(front), Path::new(back), |line| {
            use std::io::Write;
            // One write per line, flushed: the bench waits for each.
            writeln!(std::io::stdout().lock(), "{line}")
        })),
        ["relay-worker", back] => Some(relay_hub::worker(Path::new(back))),
        _ => None,
    }
}

/// The hub's readiness reports, read as they come.
struct Reports {
    out: ChildStdout,
    pending: Vec<u8>,
}

impl Reports {
    /// Waits up to `within` for the hub to report `want`.
    fn until(&mut self, want: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let failed = |kind: std::io::ErrorKind| Error::io(format!("waiting for the relay hub's {want:?}"))(kind.into());
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line[..end] == *want.as_bytes() {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let readable = readable_within(self.out.as_raw_fd(), left).map_err(|e| failed(e.kind()))?;
            if !readable {
                return Err(failed(std::io::ErrorKind::TimedOut));
            }
            let mut chunk = [0u8; 256];
            match self.out.read(&mut chunk).map_err(|e| failed(e.kind()))? {
                // The hub exited (its error went to its discarded stderr).
                0 => return Err(failed(std::io::ErrorKind::UnexpectedEof)),
                n => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A running hub and its workers, killed on drop.
pub struct Relay {
    hub: Guarded,
    workers: Vec<Guarded>,
    front: PathBuf,
    back: PathBuf,
    // Kept open: a hub writing to a closed pipe would fail.
    _reports: Reports,
}

fn text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::PathNotUtf8 { path: path.to_path_buf() })
}

impl Relay {
    /// Starts the hub and its workers (pinned as `setup` says), and waits
    /// until every worker is connected.
    pub fn start(setup: &Setup<'_>) -> Result<Relay> {
        // Fresh socket paths for each relay: a killed hub leaves its own behind.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (front, back) = (setup.dir.join(format!("relay-{n}-front")), setup.dir.join(format!("relay-{n}-back")));
        let hub_args = ["--helper", "relay-hub", text(&front)?, text(&back)?];
        let (hub, out) = procs::spawn_reporting(setup.exe, &hub_args, setup.pin)?;
        let mut reports = Reports { out, pending: Vec::new() };
        reports.until("listening", WAIT)?;
        let worker_args = ["--helper", "relay-worker", text(&back)?];
        let workers =
            (0..WORKERS).map(|_| procs::spawn(setup.exe, &worker_args, setup.pin, &[])).collect::<Result<Vec<_>>>()?;
        reports.until(&format!("workers {WORKERS}"), WAIT)?;
        Ok(Relay { hub, workers, front, back, _reports: reports })
    }

    /// CPU time so far of the hub, the workers and this process (the callers).
    fn cpu(&self) -> Duration {
        let helpers: Duration = self.workers.iter().map(|w| procs::cpu_time(w.pid())).sum();
        helpers + procs::cpu_time(self.hub.pid()) + procs::own_cpu_time()
    }

    fn caller(&self) -> Result<Seq> {
        let s = Seq::connect(&self.front)?;
        s.set_recv_timeout(WAIT).map_err(Error::io("setting a relay caller's receive timeout"))?;
        Ok(s)
    }

    /// One caller's round trips for `duration`: latency, and CPU per job in µs.
    pub fn sequential(&self, payload: &[u8], duration: Duration) -> Result<(Lat, f64)> {
        let (s, mut buf) = (self.caller()?, vec![0u8; MAX_MESSAGE]);
        for _ in 0..200 {
            round_trip(&s, payload, &mut buf)?;
        }
        let before = self.cpu();
        let (lat, _) = latency_loop(duration, || round_trip(&s, payload, &mut buf))?;
        let cpu = self.cpu().saturating_sub(before);
        Ok((lat.clone(), per_job(cpu, lat.count)))
    }

    /// `n` callers' round trips for `duration`: throughput and CPU per job.
    pub fn callers(&self, n: usize, payload: &[u8], duration: Duration) -> Result<RelayCallers> {
        let sockets = (0..n).map(|_| self.caller()).collect::<Result<Vec<_>>>()?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        for s in &sockets {
            for _ in 0..20 {
                round_trip(s, payload, &mut buf)?;
            }
        }
        let (before, start) = (self.cpu(), Instant::now());
        let budget = &Budget::new(Limit::Time(duration));
        let jobs = std::thread::scope(|scope| {
            let threads: Vec<_> = sockets
                .iter()
                .map(|s| {
                    scope.spawn(move || {
                        let (mut buf, mut jobs) = (vec![0u8; MAX_MESSAGE], 0u64);
                        while budget.take() {
                            round_trip(s, payload, &mut buf)?;
                            jobs += 1;
                        }
                        Ok(jobs)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().map_err(|_| Error::ThreadPanicked { thread: "relay caller" }).and_then(|r| r))
                .sum::<Result<u64>>()
        })?;
        let (secs, cpu) = (start.elapsed().as_secs_f64(), self.cpu().saturating_sub(before));
        Ok(RelayCallers { callers: n, jobs_per_s: jobs as f64 / secs.max(1e-9), cpu_us_per_job: per_job(cpu, jobs) })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The processes go as the fields drop, after this.
        let _ = std::fs::remove_file(&self.front);
        let _ = std::fs::remove_file(&self.back);
    }
}

fn per_job(cpu: Duration, jobs: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / jobs.max(1) as f64
}

fn round_trip(s: &Seq, payload: &[u8], buf: &mut [u8]) -> Result<()> {
    let failed = |e: std::io::Error| Error::io("relay round trip (hub or worker not answering)")(e);
    s.send(payload).map_err(failed)?;
    match s.recv(buf).map_err(failed)? {
        n if n == payload.len() => Ok(()),
        0 => Err(failed(std::io::ErrorKind::UnexpectedEof.into())),
        n => Err(Error::Protocol(format!("a {n}-byte relay answer to a {}-byte request", payload.len()))),
    }
}

/// Measures the relay: sequential, then with each of [`CALLERS`].
pub fn measure(setup: &Setup<'_>) -> Result<RelayFloor> {
    let relay = Relay::start(setup)?;
    let (sequential, cpu_us_per_job) = relay.sequential(setup.payload, setup.duration)?;
    let callers = CALLERS.iter().map(|&n| relay.callers(n, setup.payload, setup.duration)).collect::<Result<_>>()?;
    Ok(RelayFloor { sequential, cpu_us_per_job, callers })
}
