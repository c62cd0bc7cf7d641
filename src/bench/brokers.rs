//! `powerhose-bench --brokers`: the same load against one broker and against
//! two (4 callers, and one pipelined client), and how long a client of both
//! goes without answers when one of them is killed. Report only: no target.
//!
//! Two brokers with no pool of their own, "a" and "b", on ipc endpoints in a
//! private directory, and N echo workers each serving both (as in
//! production: the "a only" figures are a client of "a" in that same
//! deployment); for reference, a broker whose own N workers serve it only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::brokers_report::{median_and_max, BrokersReport, FailoverRound, Side};
use super::procs::{self, Guarded};
use super::suite::ROUNDS;
use super::{drive, Limit, Mode};
use crate::client::{Client, JobRequest};
use crate::cluster::find_executable;
use crate::error::{Error, Result};

/// The two brokers and the workers serving both, killed on drop.
struct Pair {
    dir: PathBuf,
    broker_exe: PathBuf,
    brokers: Vec<Guarded>,
    workers: Vec<Guarded>,
}

const NAMES: [&str; 2] = ["a", "b"];

impl Pair {
    fn front(dir: &Path, name: &str) -> String {
        format!("ipc://{}/{name}-front.ipc", dir.display())
    }

    fn back(dir: &Path, name: &str) -> String {
        format!("ipc://{}/{name}-back.ipc", dir.display())
    }

    fn start(workers: usize) -> Result<Pair> {
        let dir = super::private_dir(&format!("bench-brokers-{}", std::process::id()))?;
        let mut pair =
            Pair { dir, broker_exe: find_executable("powerhose-broker")?, brokers: Vec::new(), workers: Vec::new() };
        for name in NAMES {
            let broker = pair.broker(name)?;
            pair.brokers.push(broker);
        }
        let echo = crate::plugin::locate("libecho.so", None)?;
        let echo = echo.to_str().ok_or_else(|| Error::PathNotUtf8 { path: echo.clone() })?.to_string();
        let mut args = vec!["--plugin".to_string(), echo];
        for name in NAMES {
            args.extend(["--backend".to_string(), Pair::back(&pair.dir, name)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let worker_exe = find_executable("powerhose-worker")?;
        for _ in 0..workers {
            let worker = procs::spawn(&worker_exe, &args, None, &[])?;
            pair.workers.push(worker);
        }
        for name in NAMES {
            pair.wait_for_workers(name)?;
        }
        Ok(pair)
    }

    /// Starts broker `name` and waits until it answers a ping.
    fn broker(&self, name: &str) -> Result<Guarded> {
        let (front, back) = (Pair::front(&self.dir, name), Pair::back(&self.dir, name));
        let broker = procs::spawn(&self.broker_exe, &["--frontend", &front, "--backend", &back], None, &[])?;
        Client::connect(&front)?.ping(Duration::from_secs(10))?;
        Ok(broker)
    }

    /// Waits up to 30 s until every worker has registered with broker `name`.
    fn wait_for_workers(&self, name: &str) -> Result<()> {
        let client = Client::connect(&Pair::front(&self.dir, name))?;
        let wait = Duration::from_secs(30);
        let deadline = Instant::now() + wait;
        while client.workers("", Duration::from_secs(5))? < self.workers.len() {
            if Instant::now() > deadline {
                return Err(Error::WorkersDidNotRegister { waited: wait });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn client_of_a(&self) -> Result<Client> {
        Client::connect(&Pair::front(&self.dir, "a"))
    }

    fn client_of_both(&self) -> Result<Client> {
        let fronts: Vec<String> = NAMES.iter().map(|n| Pair::front(&self.dir, n)).collect();
        Client::connect_many(&fronts, None)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.workers.clear();
        self.brokers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// From the kill, the end of the load and each answered request's (sent,
/// answered) times: the time from the kill to the first answer of a request
/// sent after it (`None` when none was answered), and the longest stretch
/// without any answer from the last answer before the kill (or the kill) to
/// the end.
pub(crate) fn failover_times(
    kill: Instant,
    end: Instant,
    answers: &[(Instant, Instant)],
) -> (Option<Duration>, Duration) {
    let first = answers.iter().filter(|(sent, _)| *sent >= kill).map(|(_, answered)| *answered - kill).min();
    let mut times: Vec<Instant> = answers.iter().map(|a| a.1).collect();
    times.sort();
    let mut last = times.iter().copied().filter(|t| *t <= kill).max().unwrap_or(kill);
    let mut gap = Duration::ZERO;
    for t in times.into_iter().filter(|t| *t > kill).chain([end]) {
        gap = gap.max(t.saturating_duration_since(last));
        last = last.max(t);
    }
    (first, gap)
}

/// What the callers of a failover round saw.
#[derive(Default)]
struct Seen {
    answers: Vec<(Instant, Instant)>,
    requests: u64,
    errors: BTreeMap<String, u64>,
    slowest: Duration,
}

/// One failover round: 4 callers over both brokers with `retry(1)`; broker
/// "a" is killed after `before`, the load goes on for `after`.
fn failover_round(pair: &mut Pair, job: &JobRequest, before: Duration, after: Duration) -> Result<FailoverRound> {
    let client = pair.client_of_both()?;
    let job = job.clone().retry(1);
    for _ in 0..50 {
        client.execute_ref(&job, Duration::from_secs(30))?;
    }
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Seen::default());
    let (kill, end) = std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut mine = Seen::default();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let result = client.execute_ref(&job, Duration::from_secs(10));
                    let answered = Instant::now();
                    mine.requests += 1;
                    mine.slowest = mine.slowest.max(answered - sent);
                    match result {
                        Ok(_) => mine.answers.push((sent, answered)),
                        Err(e) => {
                            let kind = format!("{e:?}").split(['(', ' ', '{']).next().unwrap_or("?").to_string();
                            *mine.errors.entry(kind).or_default() += 1;
                        }
                    }
                }
                let mut all = seen.lock().unwrap_or_else(|p| p.into_inner());
                all.answers.extend(mine.answers);
                all.requests += mine.requests;
                all.slowest = all.slowest.max(mine.slowest);
                for (k, n) in mine.errors {
                    *all.errors.entry(k).or_default() += n;
                }
            });
        }
        std::thread::sleep(before);
        let kill = Instant::now();
        // SIGKILL; the guard's drop (at the restart) reaps it.
        let killed = pair.brokers[0].child.kill();
        std::thread::sleep(after);
        let end = Instant::now();
        stop.store(true, Ordering::Relaxed);
        killed.map(|()| (kill, end)).map_err(Error::io("killing broker a"))
    })?;
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    let (first, gap) = failover_times(kill, end, &seen.answers);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(FailoverRound {
        requests: seen.requests,
        errors: seen.errors,
        first_answer_ms: ms(first.unwrap_or(end - kill)),
        longest_gap_ms: ms(gap),
        slowest_ms: ms(seen.slowest),
    })
}

/// Runs the comparison with `workers` echo workers, each measurement lasting `duration`.
pub fn brokers(workers: usize, duration: Duration, mut progress: impl FnMut(&str)) -> Result<BrokersReport> {
    let t0 = Instant::now();
    let job = JobRequest::new(vec![b'x'; 100]);
    let limit = Limit::Time(duration);
    progress(&format!("starting brokers a and b and {workers} echo workers serving both"));
    let mut pair = Pair::start(workers)?;
    let mut report = BrokersReport {
        machine: procs::machine(),
        workers,
        payload_bytes: job.data.len(),
        duration_s: duration.as_secs_f64(),
        ..Default::default()
    };
    {
        progress(&format!("starting a lone broker and {workers} echo workers serving it only (the reference)"));
        let echo = crate::plugin::locate("libecho.so", None)?;
        // On ipc like the pair: a client of several brokers reaches them over ZeroMQ only.
        let lone_cluster = super::BenchCluster::start(super::Wire::Ipc, &echo, None, workers, None, &[], &[])?;
        let (lone, a, both) = (lone_cluster.client()?, pair.client_of_a()?, pair.client_of_both()?);
        let (mut rate, mut p50, mut piped) = (Vec::new(), Vec::new(), Vec::new());
        let (mut lone_rate, mut lone_p50, mut lone_piped) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            progress(&format!("4 callers, lone broker, a only, both, round {}", round + 1));
            let (rl, ll, el) = drive(&lone, &job, Mode::Callers(4), limit)?;
            lone_rate.push(rl.jobs_per_s);
            lone_p50.push(ll.p50_us);
            let (ra, la, ea) = drive(&a, &job, Mode::Callers(4), limit)?;
            let (rb, lb, eb) = drive(&both, &job, Mode::Callers(4), limit)?;
            rate.push((rb.jobs_per_s, ra.jobs_per_s));
            p50.push((lb.p50_us, la.p50_us));
            progress(&format!("pipelined, 1,000 in flight, lone broker, a only, both, round {}", round + 1));
            let (pl, _, epl) = drive(&lone, &job, Mode::Pipelined(1000), limit)?;
            lone_piped.push(pl.jobs_per_s);
            let (pa, _, epa) = drive(&a, &job, Mode::Pipelined(1000), limit)?;
            let (pb, _, epb) = drive(&both, &job, Mode::Pipelined(1000), limit)?;
            piped.push((pb.jobs_per_s, pa.jobs_per_s));
            report.errors += el + ea + eb + epl + epa + epb;
        }
        report.callers_jobs_per_s = Side::of(&rate, &lone_rate);
        report.callers_p50_us = Side::of(&p50, &lone_p50);
        report.pipelined_jobs_per_s = Side::of(&piped, &lone_piped);
    }
    let (before, after) = (Duration::from_millis(500), duration.max(Duration::from_secs(1)));
    for round in 0..ROUNDS {
        if round > 0 {
            progress("restarting broker a, waiting for the workers to register again");
            pair.brokers[0] = pair.broker("a")?;
            pair.wait_for_workers("a")?;
        }
        progress(&format!("failover: 4 callers over both with retry(1), a killed, round {}", round + 1));
        let r = failover_round(&mut pair, &job, before, after)?;
        report.failover.requests += r.requests;
        report.failover.failed += r.errors.values().sum::<u64>();
        report.failover.rounds.push(r);
    }
    let f = &mut report.failover;
    (f.first_answer_ms_median, f.first_answer_ms_max) = median_and_max(f.rounds.iter().map(|r| r.first_answer_ms));
    (f.longest_gap_ms_median, f.longest_gap_ms_max) = median_and_max(f.rounds.iter().map(|r| r.longest_gap_ms));
    drop(pair);
    report.notes = vec![
        "the workers serve both brokers in both configurations: 'a only' is one client of broker a".into(),
        "'lone' is a broker whose own workers serve it only (the reference for workers shared by two brokers)".into(),
        "a pipeline streams to one broker at a time (the next when it is lost): expect little difference".into(),
        "failover: the first answer is of a request sent after the kill; the gap runs from the last answer before it"
            .into(),
    ];
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_times_from_timestamps() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let kill = at(100);
        let answers = [
            (at(90), at(95)),   // before the kill: the gap starts at 95
            (at(98), at(160)),  // sent before the kill, re-sent: not a "first answer"
            (at(101), at(130)), // the first request sent after the kill
            (at(105), at(120)), // answered sooner, sent later: first answer 20 ms
            (at(170), at(180)),
        ];
        let (first, gap) = failover_times(kill, at(200), &answers);
        assert_eq!(first, Some(Duration::from_millis(20)));
        // 95 → 120 is 25 ms; 130 → 160 is 30; 180 → end (200) is 20.
        assert_eq!(gap, Duration::from_millis(30));
    }

    #[test]
    fn failover_times_with_no_answer_after_the_kill() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (first, gap) = failover_times(at(100), at(300), &[(at(10), at(50))]);
        assert_eq!(first, None);
        assert_eq!(gap, Duration::from_millis(250), "from the last answer to the end");
        let (first, gap) = failover_times(at(100), at(300), &[]);
        assert_eq!((first, gap), (None, Duration::from_millis(200)), "from the kill when none came before");
    }

    #[test]
    fn median_and_max_of_rounds() {
        assert_eq!(median_and_max([3.0, 1.0, 2.0].into_iter()), (2.0, 3.0));
        assert_eq!(median_and_max(std::iter::empty()), (0.0, 0.0));
    }
}
