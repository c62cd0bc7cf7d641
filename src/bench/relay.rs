//! The relay floor: client → epoll relay → worker → relay → client over Unix
//! `SOCK_SEQPACKET` (bench/relay_hub.rs), on the same payload and pinning as
//! the ZeroMQ floors. It is what a local broker costs at the least, so every
//! suite line reports its ratio to it: ZeroMQ's own floor is not the least.
//!
//! The hub and two workers (as the bench cluster's two) are this executable
//! run with `--helper relay-hub` and `--helper relay-worker`; the callers
//! are threads of the bench, one connection each, blocking. The workers
//! echo, or run a plugin's handler ([`RelayJob`]): the floor under the
//! suite's crypto_job lines is then measured, not worked out. Without the
//! hub ([`Relay::start_direct`], `--helper relay-direct`), each worker
//! serves the callers connected to it (bench/relay_direct.rs): the floor of
//! any design that runs the job in another process.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::floor::Setup;
use super::measure::{latency_loop, Budget, Lat, Limit, Rate};
use super::procs::{self, Guarded};
use super::relay_direct;
use super::relay_hub::{self, Work, MAX_MESSAGE};
use super::seqpacket::{readable_within, Seq};
use super::CpuPerJob;
use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;

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

/// The caller counts the relay is measured with.
pub const CALLERS: [usize; 2] = [4, 16];
/// Relay workers: as many as the bench cluster's.
const WORKERS: usize = 2;
/// Requests a relay running a job gives each worker ahead: measured with
/// the suite's crypto_job lines, 2 and 4 gave the same (README, Figures).
const JOB_AHEAD: usize = 2;
/// The longest wait for a helper's readiness or a round trip.
const WAIT: Duration = Duration::from_secs(10);

/// Runs a relay helper role if `args` name one (`None` otherwise); never
/// returns while the role serves.
pub fn helper(args: &[&str]) -> Option<Result<()>> {
    match *args {
        ["relay-hub", front, back, ahead] => Some(hub(front, back, ahead)),
        ["relay-worker", back] => Some(relay_hub::worker(Path::new(back), Work::Echo)),
        ["relay-worker", back, plugin, params, ref headers @ ..] => {
            Some(with_handler(plugin, params, headers, |work| relay_hub::worker(Path::new(back), work)))
        }
        ["relay-direct", listen] => Some(relay_direct::direct_worker(Path::new(listen), Work::Echo, report_line)),
        ["relay-direct", listen, plugin, params, ref headers @ ..] => {
            Some(with_handler(plugin, params, headers, |work| {
                relay_direct::direct_worker(Path::new(listen), work, report_line)
            }))
        }
        _ => None,
    }
}

/// Writes a helper's readiness report: one write per line, flushed, as
/// the bench waits for each.
fn report_line(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")
}

/// The hub role, its workers holding up to `ahead` requests each.
fn hub(front: &str, back: &str, ahead: &str) -> Result<()> {
    let bad = || Error::BadFlag(format!("relay hub: requests ahead must be 1 or more, not {ahead:?}"));
    let ahead = ahead.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
    relay_hub::hub(Path::new(front), Path::new(back), ahead, report_line)
}

/// Runs a worker role (`serve`) on `plugin`'s handler, each request with
/// `headers` (each `NAME:VALUE`, as [`RelayJob::args`] writes them).
fn with_handler(
    plugin: &str,
    params: &str,
    headers: &[&str],
    serve: impl FnOnce(Work<'_>) -> Result<()>,
) -> Result<()> {
    let plugin = LoadedPlugin::load(Path::new(plugin), params)?;
    let headers = headers
        .iter()
        .map(|h| h.split_once(':').map(|(n, v)| (n.to_string(), v.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::BadFlag(format!("relay worker: headers must be NAME:VALUE, not {headers:?}")))?;
    serve(Work::Handler(&plugin, &headers))
}

/// The job a relay's workers run instead of echoing: a plugin, its params
/// (JSON, as for `LoadedPlugin::load`) and the job's headers.
pub struct RelayJob<'a> {
    /// The plugin's path.
    pub plugin: &'a Path,
    /// Its params, JSON (empty: none).
    pub params: &'a str,
    /// The job's headers, as each request would carry them.
    pub headers: &'a [(String, String)],
    /// How many workers run it.
    pub workers: usize,
}

impl RelayJob<'_> {
    /// The worker role's arguments after `back`.
    fn args(&self) -> Result<Vec<String>> {
        let mut args = vec![text(self.plugin)?.to_string(), self.params.to_string()];
        args.extend(self.headers.iter().map(|(n, v)| format!("{n}:{v}")));
        Ok(args)
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

/// A running hub and its workers (or workers alone, [`Relay::start_direct`]),
/// killed on drop.
pub struct Relay {
    hub: Option<Guarded>,
    workers: Vec<Guarded>,
    /// Where callers connect: the hub's front, or each worker's socket
    /// (caller `i` to the `i % n`th).
    fronts: Vec<PathBuf>,
    /// The hub's socket for its workers.
    back: Option<PathBuf>,
    /// The workers echo: an answer is as long as its request.
    echo: bool,
    // Kept open: a helper writing to a closed pipe would fail.
    _reports: Vec<Reports>,
}

fn text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::PathNotUtf8 { path: path.to_path_buf() })
}

impl Relay {
    /// Starts the hub and its workers (pinned as `setup` says), and waits
    /// until every worker is connected.
    pub fn start(setup: &Setup<'_>) -> Result<Relay> {
        Relay::start_running(setup, None)
    }

    /// As [`Relay::start`], its workers running `job` (echo when `None`).
    pub fn start_running(setup: &Setup<'_>, job: Option<&RelayJob<'_>>) -> Result<Relay> {
        // Fresh socket paths for each relay: a killed hub leaves its own behind.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (front, back) = (setup.dir.join(format!("relay-{n}-front")), setup.dir.join(format!("relay-{n}-back")));
        // Echo: one request at a time, the least round trip. A job: requests
        // go ahead, as our broker's do, so no worker waits for its next.
        let (ahead, workers) = job.map_or((1, WORKERS), |j| (JOB_AHEAD, j.workers));
        let ahead = ahead.to_string();
        let hub_args = ["--helper", "relay-hub", text(&front)?, text(&back)?, &ahead];
        let (hub, out) = procs::spawn_reporting(setup.exe, &hub_args, setup.pin)?;
        let mut reports = Reports { out, pending: Vec::new() };
        reports.until("listening", WAIT)?;
        let mut worker_args = vec!["--helper".to_string(), "relay-worker".into(), text(&back)?.into()];
        if let Some(job) = job {
            worker_args.extend(job.args()?);
        }
        let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
        let spawn = |_| procs::spawn(setup.exe, &worker_args, setup.pin, &[]);
        let workers = (0..workers).map(spawn).collect::<Result<Vec<_>>>()?;
        reports.until(&format!("workers {}", workers.len()), WAIT)?;
        let (hub, fronts, back) = (Some(hub), vec![front], Some(back));
        Ok(Relay { hub, workers, fronts, back, echo: job.is_none(), _reports: vec![reports] })
    }

    /// No hub: `job.workers` workers, each listening for callers of its own
    /// and running `job` (bench/relay_direct.rs); waits until each listens.
    pub fn start_direct(setup: &Setup<'_>, job: &RelayJob<'_>) -> Result<Relay> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (mut workers, mut fronts, mut reports) = (Vec::new(), Vec::new(), Vec::new());
        for w in 0..job.workers {
            let listen = setup.dir.join(format!("direct-{n}-{w}"));
            let mut args = vec!["--helper".to_string(), "relay-direct".into(), text(&listen)?.into()];
            args.extend(job.args()?);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (worker, out) = procs::spawn_reporting(setup.exe, &args, setup.pin)?;
            let mut report = Reports { out, pending: Vec::new() };
            report.until("listening", WAIT)?;
            workers.push(worker);
            fronts.push(listen);
            reports.push(report);
        }
        Ok(Relay { hub: None, workers, fronts, back: None, echo: false, _reports: reports })
    }

    /// CPU time so far of this process (the callers), the hub and the workers.
    fn cpu(&self) -> Spent {
        let workers: Duration = self.workers.iter().map(|w| procs::cpu_time(w.pid())).sum();
        let hub = self.hub.as_ref().map_or(Duration::ZERO, |h| procs::cpu_time(h.pid()));
        Spent { callers: procs::own_cpu_time(), hub, workers }
    }

    /// Caller `i`'s connection.
    fn caller(&self, i: usize) -> Result<Seq> {
        let s = Seq::connect(&self.fronts[i % self.fronts.len()])?;
        s.set_recv_timeout(WAIT).map_err(Error::io("setting a relay caller's receive timeout"))?;
        Ok(s)
    }

    /// One caller's round trips for `duration`: latency, and CPU per job in µs.
    pub fn sequential(&self, payload: &[u8], duration: Duration) -> Result<(Lat, f64)> {
        let (s, mut buf) = (self.caller(0)?, vec![0u8; MAX_MESSAGE]);
        for _ in 0..200 {
            self.round_trip(&s, payload, &mut buf)?;
        }
        let before = self.cpu();
        let (lat, _) = latency_loop(duration, || self.round_trip(&s, payload, &mut buf))?;
        let cpu = self.cpu().since(&before).total();
        Ok((lat.clone(), per_job(cpu, lat.count)))
    }

    /// `n` callers' round trips for `duration`: throughput and CPU per job.
    pub fn callers(&self, n: usize, payload: &[u8], duration: Duration) -> Result<RelayCallers> {
        let (rate, cpu) = self.callers_within(n, payload, Limit::Time(duration))?;
        Ok(RelayCallers { callers: n, jobs_per_s: rate.jobs_per_s, cpu_us_per_job: cpu.total_us() })
    }

    /// `n` callers' round trips until `limit`: their rate, and the CPU per
    /// job in µs of each side: the callers (as a client), the hub (as a
    /// broker, none without one) and the workers.
    pub fn callers_within(&self, n: usize, payload: &[u8], limit: Limit) -> Result<(Rate, CpuPerJob)> {
        let sockets = (0..n).map(|i| self.caller(i)).collect::<Result<Vec<_>>>()?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        for s in &sockets {
            for _ in 0..20 {
                self.round_trip(s, payload, &mut buf)?;
            }
        }
        let (before, start) = (self.cpu(), Instant::now());
        let budget = &Budget::new(limit);
        let jobs = std::thread::scope(|scope| {
            let threads: Vec<_> = sockets
                .iter()
                .map(|s| {
                    scope.spawn(move || {
                        let (mut buf, mut jobs) = (vec![0u8; MAX_MESSAGE], 0u64);
                        while budget.take() {
                            self.round_trip(s, payload, &mut buf)?;
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
        let (elapsed, cpu) = (start.elapsed(), self.cpu().since(&before));
        let per = |d| per_job(d, jobs);
        let cpu = CpuPerJob { client_us: per(cpu.callers), broker_us: per(cpu.hub), workers_us: per(cpu.workers) };
        Ok((Rate::new(jobs, elapsed), cpu))
    }

    /// One request and its answer: as long as the request from echo
    /// workers, not empty from a handler's.
    fn round_trip(&self, s: &Seq, payload: &[u8], buf: &mut [u8]) -> Result<()> {
        let failed = |e: std::io::Error| Error::io("relay round trip (hub or worker not answering)")(e);
        s.send(payload).map_err(failed)?;
        match s.recv(buf).map_err(failed)? {
            0 => Err(failed(std::io::ErrorKind::UnexpectedEof.into())),
            n if n == payload.len() || !self.echo => Ok(()),
            n => Err(Error::Protocol(format!("a {n}-byte relay answer to a {}-byte request", payload.len()))),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The processes go as the fields drop, after this.
        for path in self.fronts.iter().chain(&self.back) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// CPU time spent by each side of a floor.
struct Spent {
    callers: Duration,
    hub: Duration,
    workers: Duration,
}

impl Spent {
    fn since(&self, before: &Spent) -> Spent {
        Spent {
            callers: self.callers.saturating_sub(before.callers),
            hub: self.hub.saturating_sub(before.hub),
            workers: self.workers.saturating_sub(before.workers),
        }
    }

    fn total(&self) -> Duration {
        self.callers + self.hub + self.workers
    }
}

fn per_job(cpu: Duration, jobs: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / jobs.max(1) as f64
}

/// Measures the relay running `job` on `payload` with `callers` for
/// `duration`, then the same without the hub (for `--floor` with `--callers`).
pub fn running_job(
    setup: &Setup<'_>,
    job: &RelayJob<'_>,
    callers: usize,
    payload: &[u8],
    duration: Duration,
) -> Result<(RelayCallers, RelayCallers)> {
    let relay = Relay::start_running(setup, Some(job))?.callers(callers, payload, duration)?;
    Ok((relay, Relay::start_direct(setup, job)?.callers(callers, payload, duration)?))
}

/// Measures the relay: sequential, then with each of [`CALLERS`].
pub fn measure(setup: &Setup<'_>) -> Result<RelayFloor> {
    let relay = Relay::start(setup)?;
    let (sequential, cpu_us_per_job) = relay.sequential(setup.payload, setup.duration)?;
    let callers = CALLERS.iter().map(|&n| relay.callers(n, setup.payload, setup.duration)).collect::<Result<_>>()?;
    Ok(RelayFloor { sequential, cpu_us_per_job, callers })
}
