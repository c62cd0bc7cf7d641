//! `powerhose-bench --soak SECONDS`: a steady load of mixed priorities on a
//! `powerhose` cluster, with jobs cancelled at random points, while workers
//! are killed at random, reporting requests, cancels, errors by kind and
//! memory at start and end, on the local transport unless asked for a
//! ZeroMQ one. For long runs by hand, not for CI.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::procs::{self, Guarded};
use super::Wire;
use crate::client::{Client, JobRequest};
use crate::cluster::find_executable;
use crate::error::{Error, Result};
use crate::syscall;

/// What a soak saw: load, cancels, failures and memory (a cluster of 4
/// workers; 4 callers of jobs, half of random priorities and half without,
/// which go to the lanes over `unix://`; and a fifth that cancels).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SoakReport {
    /// The cluster's transport.
    pub wire: Wire,
    /// How long the load ran, in seconds.
    pub seconds: f64,
    /// Jobs the 4 callers sent.
    pub requests: u64,
    /// Jobs of theirs that succeeded.
    pub ok: u64,
    /// Failed jobs by [`Error`] variant name (`WorkerLost`, `Timeout`, ...);
    /// ` (no retry)` marks the jobs of the two callers that send without
    /// retries, which lose a job whose worker is killed: the retried ones
    /// should not fail at all. ` (cancelling)` marks the fifth caller's
    /// (no retry either), whose answer came before its cancel.
    pub errors: BTreeMap<String, u64>,
    /// The fifth caller's jobs (`sleep` 1 ms or `spin` 30 ms, cancelled after
    /// 0-20 ms) whose `cancel()` came first: their result was `Cancelled`.
    pub cancels: u64,
    /// Its jobs whose answer came before the cancel.
    pub cancelled_late: u64,
    /// The broker's `cancelled` counter at the end: cancels that reached it
    /// before the job's answer (the others were not sent yet, or answered).
    pub broker_cancelled: u64,
    /// Of those, the jobs that were running (their worker was told).
    pub broker_cancelled_running: u64,
    /// Jobs a busy worker was asked to give back for higher-priority ones.
    pub broker_recalled: u64,
    /// Jobs the workers answered on their lanes, as the broker counted them.
    pub lane_jobs: u64,
    /// Workers killed with SIGKILL (one every 1 to 3 s).
    pub workers_killed: u64,
    /// The cluster process's resident memory once its workers registered, in KiB.
    pub broker_rss_start_kib: u64,
    /// The cluster process's resident memory at the end, in KiB.
    pub broker_rss_end_kib: u64,
    /// Each worker's resident memory at the start, in KiB.
    pub worker_rss_start_kib: Vec<u64>,
    /// Each worker's resident memory at the end (replacements included), in KiB.
    pub worker_rss_end_kib: Vec<u64>,
    /// The longest a job took, failures included, in ms.
    pub slowest_ms: f64,
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    // Zeros on failure: the soak then picks the first worker, still one to kill.
    if let Err(e) = crate::sys::random_bytes(&mut b) {
        tracing::warn!("getrandom failed: {e}");
    }
    u64::from_le_bytes(b) % n.max(1)
}

/// What the callers have seen so far.
#[derive(Clone, Default)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    slowest: Duration,
    cancels: u64,
    cancelled_late: u64,
}

impl Tally {
    fn error(&mut self, e: &Error, caller: &str) {
        let kind = format!("{e:?}").split(['(', ' ', '{']).next().unwrap_or("?").to_string();
        *self.errors.entry(kind + caller).or_default() += 1;
    }
}

/// The fifth caller: a job of random priority, half `sleep` 1 ms and half
/// `spin` 30 ms, cancelled after a random 0-20 ms, so cancels land before
/// sending, while queued, while running and after the answer.
fn cancel_at_random(client: &Client, stop: &AtomicBool, tally: &Mutex<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let job = JobRequest::new(vec![b'c'; 512]).priority(random_below(10) as u8);
        let job = match random_below(2) {
            0 => job.header("action", "sleep").header("ms", "1"),
            _ => job.header("action", "spin").header("ms", "30"),
        };
        let start = Instant::now();
        let handle = client.submit(job, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(random_below(20)));
        let cancelled = handle.cancel();
        let result = handle.wait();
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        t.slowest = t.slowest.max(start.elapsed());
        match (cancelled, result) {
            (true, Err(Error::Cancelled)) => t.cancels += 1,
            // A cancel that came first gives Cancelled, always: anything
            // else is a bug, shown among the errors.
            (true, Ok(_)) => *t.errors.entry("Ok after cancel() was true".into()).or_default() += 1,
            (true, Err(e)) => t.error(&e, " (after cancel() was true)"),
            (false, result) => {
                t.cancelled_late += 1;
                if let Err(e) = result {
                    t.error(&e, " (cancelling)");
                }
            }
        }
    }
}

/// Runs the soak on `wire` for `duration`; `progress` gets a line every 30 s.
pub fn soak(wire: Wire, duration: Duration, mut progress: impl FnMut(&str)) -> Result<SoakReport> {
    if wire == Wire::Curve {
        // Its keys are made by BenchCluster, which the soak does not use.
        return Err(Error::BadFlag("--soak runs on --wire unix, ipc or tcp".into()));
    }
    let dir = crate::endpoint::runtime_dir()?.join(format!("soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating the soak directory"))?;
    let (front, back) = wire.endpoints(&dir)?;
    let plugin = crate::plugin::locate("libtest_plugin.so", None)?;
    let mut cmd = Command::new(find_executable("powerhose")?);
    cmd.args(["--workers", "4", "--frontend", &front, "--backend", &back, "--timeout", "5", "--plugin"])
        .arg(&plugin)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let cluster = Guarded { child: cmd.spawn().map_err(Error::io("starting powerhose"))? };
    let client = Arc::new(Client::connect(&front)?);
    let wait = Duration::from_secs(60);
    let deadline = Instant::now() + wait;
    while client.workers("", Duration::from_secs(5)).unwrap_or(0) < 4 {
        if Instant::now() > deadline {
            return Err(Error::WorkersDidNotRegister { waited: wait });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_of = |pids: &[u32]| pids.iter().map(|p| procs::rss(*p) >> 10).collect::<Vec<_>>();
    let mut report = SoakReport {
        wire,
        broker_rss_start_kib: procs::rss(cluster.pid()) >> 10,
        worker_rss_start_kib: rss_of(&procs::children(cluster.pid())),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut load: Vec<_> = (0..4)
        .map(|t| {
            let (client, stop, tally) = (client.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut job = JobRequest::new(vec![b's'; 512]).header("action", "sleep").header("ms", "1");
                    // Half through the broker (a priority), half, over
                    // unix://, on the workers' lanes.
                    if random_below(2) == 0 {
                        job = job.priority(random_below(10) as u8);
                    }
                    let retried = t % 2 == 0;
                    if retried {
                        job = job.retry(5);
                    }
                    let start = Instant::now();
                    let result = client.execute(job, Duration::from_secs(10));
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    t.requests += 1;
                    t.slowest = t.slowest.max(start.elapsed());
                    match result {
                        Ok(_) => t.ok += 1,
                        Err(e) => t.error(&e, if retried { "" } else { " (no retry)" }),
                    }
                }
            })
        })
        .collect();
    load.push({
        let (client, stop, tally) = (client.clone(), stop.clone(), tally.clone());
        std::thread::spawn(move || cancel_at_random(&client, &stop, &tally))
    });
    let start = Instant::now();
    let mut next_kill = start + Duration::from_millis(1000 + random_below(2000));
    let mut next_report = start + Duration::from_secs(30);
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() >= next_kill {
            let workers = procs::children(cluster.pid());
            if let Some(&victim) = workers.get(random_below(workers.len() as u64) as usize) {
                // SAFETY: a worker of the cluster this soak started.
                match unsafe { syscall!(kill(victim as i32, libc::SIGKILL)) } {
                    Ok(_) => report.workers_killed += 1,
                    // It exited by itself since `children` listed it.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => tracing::warn!("could not kill worker {victim}: {e}"),
                }
            }
            next_kill = Instant::now() + Duration::from_millis(1000 + random_below(2000));
        }
        if Instant::now() >= next_report {
            let t = tally.lock().unwrap_or_else(|p| p.into_inner());
            progress(&format!(
                "{:>5.0} s: {} requests, {} ok, errors {:?}, {} cancels ({} late), {} kills, broker RSS {} KiB",
                start.elapsed().as_secs_f64(),
                t.requests,
                t.ok,
                t.errors,
                t.cancels,
                t.cancelled_late,
                report.workers_killed,
                procs::rss(cluster.pid()) >> 10
            ));
            next_report += Duration::from_secs(30);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in load {
        let _ = h.join();
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.seconds = start.elapsed().as_secs_f64();
    (report.requests, report.ok, report.errors, report.slowest_ms) =
        (t.requests, t.ok, t.errors, t.slowest.as_secs_f64() * 1000.0);
    (report.cancels, report.cancelled_late) = (t.cancels, t.cancelled_late);
    // Read while the cluster still runs: its counters go with it.
    match client.status(Duration::from_secs(10)) {
        Ok(status) => {
            let c = status.counters;
            (report.broker_cancelled, report.broker_cancelled_running, report.broker_recalled) =
                (c.cancelled, c.cancelled_running, c.recalled);
            report.lane_jobs = c.lane_jobs;
        }
        Err(e) => progress(&format!("the broker's counters could not be read (left at 0): {e}")),
    }
    report.broker_rss_end_kib = procs::rss(cluster.pid()) >> 10;
    report.worker_rss_end_kib = rss_of(&procs::children(cluster.pid()));
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}
