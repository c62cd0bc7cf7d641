//! The suite's targets with callers (threads each with one job at a time):
//! sequential echo against the relay floor, pinned (latency and the CPU all
//! processes spend per job), echo with 4 callers against the relay with 4,
//! and crypto_job with 4 and 16 callers against the plugin in-process.
//! Each reports the CPU per job of the client, the broker and the workers,
//! for before/after comparisons of the transport; the echo lines are
//! measured over ZeroMQ ipc too, and reported.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use super::floor::{Floor, Setup};
use super::interleave::side_by_side;
use super::measure::{self, Lat, Rate};
use super::relay::{Relay, RelayJob};
use super::suite::{LOCAL, ROUNDS};
use super::suite_report::{over_ipc, target, Medians, Target};
use super::{procs, BenchCluster, CpuPerJob, Limit, Wire};
use crate::client::{Client, JobRequest};
use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;

/// CPU time spent and jobs done, over one run or several.
#[derive(Debug, Default)]
pub(super) struct CpuTotals {
    client: Duration,
    broker: Duration,
    workers: Duration,
    jobs: u64,
}

impl CpuTotals {
    /// Adds a run of `jobs` jobs that spent `per_job`.
    pub(super) fn add(&mut self, per_job: &CpuPerJob, jobs: u64) {
        let spent = |us: f64| Duration::from_secs_f64(us.max(0.0) * jobs as f64 / 1e6);
        self.client += spent(per_job.client_us);
        self.broker += spent(per_job.broker_us);
        self.workers += spent(per_job.workers_us);
        self.jobs += jobs;
    }

    pub(super) fn per_job(&self) -> CpuPerJob {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.jobs.max(1) as f64;
        CpuPerJob { client_us: per(self.client), broker_us: per(self.broker), workers_us: per(self.workers) }
    }

    /// All processes together, per job, in µs.
    fn total_us(&self) -> f64 {
        self.per_job().total_us()
    }
}

/// `callers` threads running `job` through `cluster` with `client`, after
/// a warm-up left out of the figures; the CPU every process spent in the
/// run is added to `cpu`. The client's is this whole process's (its I/O
/// thread included): nothing else runs in it meanwhile.
pub(super) fn callers_run(
    cluster: &BenchCluster,
    client: &Client,
    job: &JobRequest,
    callers: usize,
    limit: Limit,
    cpu: &mut CpuTotals,
) -> Result<(Rate, Lat)> {
    for _ in 0..50 {
        client.execute_ref(job, Duration::from_secs(30))?;
    }
    let (own, (broker, workers)) = (procs::own_cpu_time(), cluster.cpu());
    let (rate, lat, errors) = measure::concurrent(client, job, callers, limit);
    let (broker_after, workers_after) = cluster.cpu();
    cpu.client += procs::own_cpu_time().saturating_sub(own);
    cpu.broker += broker_after.saturating_sub(broker);
    cpu.workers += workers_after.saturating_sub(workers);
    cpu.jobs += rate.jobs;
    if errors > 0 {
        return Err(Error::JobsFailed { failed: errors, run: "jobs by callers" });
    }
    Ok((rate, lat))
}

/// Sequential echo (100 B, 2 workers) with everything on CPU 0 (the caller
/// pinned it): p50 against the proxy-hop floor and against the relay, and
/// the CPU of client, broker and workers per job against the relay's; the
/// first and the last again over ZeroMQ ipc, reported.
pub(super) fn sequential_pinned(
    echo: &Path,
    floor: &Floor,
    small: &JobRequest,
    duration: Duration,
) -> Result<Vec<Target>> {
    // One cluster at a time: on one CPU an idle one would still be noise.
    let run = |wire| -> Result<(Lat, CpuTotals)> {
        let cluster = BenchCluster::start(wire, echo, None, 2, Some(0), &[], &[])?;
        let mut cpu = CpuTotals::default();
        let (_, lat) = callers_run(&cluster, &cluster.client()?, small, 1, Limit::Time(duration), &mut cpu)?;
        Ok((lat, cpu))
    };
    let (lat, cpu) = run(LOCAL)?;
    let (ipc_lat, ipc_cpu) = run(Wire::Ipc)?;
    let (proxy, relay) = (floor.proxy.p50_us, &floor.relay);
    let relay_p50 = relay.sequential.p50_us;
    let ours_cpu = cpu.total_us();
    let p50 =
        target("sequential p50, pinned", lat.p50_us, proxy, "µs", "≤ 1.3 × proxy-hop floor", lat.p50_us <= 1.3 * proxy)
            .against_relay(Some(relay_p50));
    let p50_ipc = over_ipc(&p50, ipc_lat.p50_us, Some(relay_p50));
    // Echo's handler costs next to nothing: this is the transport's CPU.
    let cpu_line = target(
        "sequential CPU per job, pinned",
        ours_cpu,
        relay.cpu_us_per_job,
        "µs/job",
        "≤ 2 × relay's (client+broker+workers)",
        ours_cpu <= 2.0 * relay.cpu_us_per_job,
    )
    .against_relay(Some(relay.cpu_us_per_job))
    .with_cpu(cpu.per_job());
    let cpu_ipc = over_ipc(&cpu_line, ipc_cpu.total_us(), Some(relay.cpu_us_per_job)).with_cpu(ipc_cpu.per_job());
    Ok(vec![
        p50,
        p50_ipc,
        target(
            "sequential echo p50, pinned",
            lat.p50_us,
            relay_p50,
            "µs",
            "≤ 2 × relay round trip p50",
            lat.p50_us <= 2.0 * relay_p50,
        )
        .against_relay(Some(relay_p50))
        .with_cpu(cpu.per_job()),
        cpu_line,
        cpu_ipc,
    ])
}

/// Callers in the echo line, and in the relay figure it is held to.
const ECHO_CALLERS: usize = 4;

/// Echo (100 B, 2 workers, unpinned) with 4 callers against the relay with
/// 4 (`relay_setup`'s helpers): rounds of (relay, ours, ours over ZeroMQ
/// ipc) back to back; the ipc figure is reported.
pub(super) fn echo_callers(
    echo: &Path,
    relay_setup: &Setup<'_>,
    small: &JobRequest,
    duration: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Target>> {
    let relay = Relay::start(relay_setup)?;
    let clusters = [
        BenchCluster::start(LOCAL, echo, None, 2, None, &[], &[])?,
        BenchCluster::start(Wire::Ipc, echo, None, 2, None, &[], &[])?,
    ];
    let clients = [clusters[0].client()?, clusters[1].client()?];
    let (mut rounds, mut ipc_rounds) = (Vec::new(), Vec::new());
    let mut cpu = [CpuTotals::default(), CpuTotals::default()];
    for round in 0..ROUNDS {
        progress(&format!("echo, {ECHO_CALLERS} callers, relay then ours then over ipc, round {}", round + 1));
        let theirs = relay.callers(ECHO_CALLERS, &small.data, duration)?;
        let mut ours = [0.0; 2];
        for i in 0..2 {
            let limit = Limit::Time(duration);
            ours[i] = callers_run(&clusters[i], &clients[i], small, ECHO_CALLERS, limit, &mut cpu[i])?.0.jobs_per_s;
        }
        rounds.push((ours[0], theirs.jobs_per_s));
        ipc_rounds.push((ours[1], theirs.jobs_per_s));
    }
    let m = Medians::of(&rounds);
    let local = target(
        &format!("echo, {ECHO_CALLERS} callers jobs/s"),
        m.ours,
        m.reference,
        "jobs/s",
        &format!("≥ 50% of relay, {ECHO_CALLERS} callers [{}]", m.spread()),
        m.ratio >= 0.5,
    )
    .against_relay(Some(m.reference))
    .with_cpu(cpu[0].per_job());
    let ipc = over_ipc(&local, Medians::of(&ipc_rounds).ours, Some(m.reference)).with_cpu(cpu[1].per_job());
    Ok(vec![local, ipc])
}

/// The crypto_job lines with callers: (job size, callers, share of the
/// in-process 2-thread throughput to reach).
const CRYPTO_CALLERS: [(&str, usize, f64); 3] = [("~1 ms", 4, 0.90), ("~1 ms", 16, 0.95), ("~100 µs", 16, 0.80)];

/// crypto_job with callers through 2 workers (default flags: no --io-cpu)
/// against `plugin` in-process on 2 threads, in rounds where the two take
/// turns ([`side_by_side`]); `sized` holds each job size's calibrated job.
/// Each round then measures the relay floor running the same job in its
/// workers (`relay_setup`'s helpers) against in-process the same way: what
/// the least a broker must do leaves of the target, reported beside it;
/// and the same workers without the relay's hub, each caller connected to
/// one: what the least any process boundary leaves of it.
pub(super) fn crypto_callers(
    crypto: &Path,
    plugin: &LoadedPlugin,
    sized: &[(&str, JobRequest)],
    relay_setup: &Setup<'_>,
    duration: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for (size, job) in sized {
        let cases: Vec<_> = CRYPTO_CALLERS.iter().filter(|(s, ..)| s == size).collect();
        if cases.is_empty() {
            continue;
        }
        let cluster = BenchCluster::start(LOCAL, crypto, None, 2, None, &[], &[])?;
        let client = cluster.client()?;
        // The same workers with every job through the broker: before lanes.
        let brokered = BenchCluster::start(LOCAL, crypto, None, 2, None, &[], &["--no-lanes"])?;
        let brokered_client = brokered.client()?;
        let relay_job = RelayJob { plugin: crypto, params: "", headers: &job.headers, workers: 2 };
        let relay = Relay::start_running(relay_setup, Some(&relay_job))?;
        let direct = Relay::start_direct(relay_setup, &relay_job)?;
        // The CPU the in-process runs spend per job: the handler's own.
        let handler_cpu = Cell::new((Duration::ZERO, 0u64));
        let in_process = |limit| {
            let before = procs::own_cpu_time();
            let rate = measure::in_process(plugin, job, 2, limit)?;
            let (cpu, jobs) = handler_cpu.get();
            handler_cpu.set((cpu + procs::own_cpu_time().saturating_sub(before), jobs + rate.jobs));
            Ok(rate)
        };
        for &&(_, callers, share) in &cases {
            handler_cpu.set((Duration::ZERO, 0));
            let (mut rounds, mut cpu) = (Vec::new(), CpuTotals::default());
            let (mut brokered_rounds, mut brokered_cpu) = (Vec::new(), CpuTotals::default());
            // Per floor (the relay, then no hub): each round's (its rate, in-process's), and (µs CPU per job, jobs) per run.
            let (mut floor_rounds, mut floor_cpu) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
            for round in 0..ROUNDS {
                progress(&format!(
                    "crypto_job {size}, {callers} callers, ours, through the broker, the relay, no hub, round {}",
                    round + 1
                ));
                let (ours, ideal) = side_by_side(duration, in_process, |limit| {
                    Ok(callers_run(&cluster, &client, job, callers, limit, &mut cpu)?.0)
                })?;
                rounds.push((ours.jobs_per_s, ideal.jobs_per_s));
                let (theirs, ideal) = side_by_side(duration, in_process, |limit| {
                    Ok(callers_run(&brokered, &brokered_client, job, callers, limit, &mut brokered_cpu)?.0)
                })?;
                brokered_rounds.push((theirs.jobs_per_s, ideal.jobs_per_s));
                for (i, floor) in [&relay, &direct].into_iter().enumerate() {
                    let (theirs, ideal) = side_by_side(duration, in_process, |limit| {
                        let (rate, cpu) = floor.callers_within(callers, &job.data, limit)?;
                        floor_cpu[i].push((cpu, rate.jobs));
                        Ok(rate)
                    })?;
                    floor_rounds[i].push((theirs.jobs_per_s, ideal.jobs_per_s));
                }
            }
            let (m, floor) = (Medians::of(&rounds), Medians::of(&floor_rounds[0]));
            targets.push(
                target(
                    &format!("crypto_job {size}, {callers} callers"),
                    m.ours,
                    m.reference,
                    "jobs/s",
                    &format!("≥ {:.0}% of in-process 2 threads [{}]", share * 100.0, m.spread()),
                    m.ratio >= share,
                )
                .against_relay(Some(floor.ours))
                .with_cpu(cpu.per_job()),
            );
            targets.push(brokered_line(size, callers, &Medians::of(&brokered_rounds), &brokered_cpu, share));
            let (cpu, jobs) = handler_cpu.get();
            let handler_us = cpu.as_secs_f64() * 1e6 / jobs.max(1) as f64;
            let lines = [(RELAY_LINE, &floor), (DIRECT_LINE, &Medians::of(&floor_rounds[1]))];
            for ((what, medians), cpu) in lines.into_iter().zip(&floor_cpu) {
                targets.push(floor_line(what, size, callers, medians, cpu, handler_us, share));
            }
        }
    }
    Ok(targets)
}

/// The same job with every one through the broker (`--no-lanes`), as
/// before lanes (report only): its share of in-process against the
/// target's, and each process's CPU per job.
fn brokered_line(size: &str, callers: usize, brokered: &Medians, cpu: &CpuTotals, share: f64) -> Target {
    Target {
        name: format!("  ↳ through the broker (--no-lanes), {size}, {callers} callers"),
        ours: brokered.ratio * 100.0,
        reference: share * 100.0,
        unit: "%".into(),
        rule: format!("report: through the broker ÷ in-process vs the target [{}]", brokered.spread()),
        pass: None,
        relay: None,
        cpu: Some(cpu.per_job()),
    }
}

/// The report lines' names for the relay running the job, and for its workers without the hub.
const RELAY_LINE: (&str, &str) = ("the relay floor running the job", "relay");
const DIRECT_LINE: (&str, &str) = ("no broker: callers straight to the workers", "no hub");

/// A floor running the job with as many callers (report only; `what`: its
/// line's name and its short name): its share of in-process against the
/// target's, and its CPU per job outside the handler: all of its
/// processes (`cpu`: µs per job and jobs, per run), less the CPU a job
/// takes in-process (`handler_us`). Each side's CPU per job goes in the
/// line too, beside ours: which side a gap to the floor is on.
fn floor_line(
    what: (&str, &str),
    size: &str,
    callers: usize,
    floor: &Medians,
    cpu: &[(CpuPerJob, u64)],
    handler_us: f64,
    share: f64,
) -> Target {
    let jobs: u64 = cpu.iter().map(|&(_, n)| n).sum();
    let mean =
        |side: fn(&CpuPerJob) -> f64| cpu.iter().map(|(c, n)| side(c) * *n as f64).sum::<f64>() / jobs.max(1) as f64;
    let sides = CpuPerJob {
        client_us: mean(|c| c.client_us),
        broker_us: mean(|c| c.broker_us),
        workers_us: mean(|c| c.workers_us),
    };
    let cpu_us = sides.total_us();
    Target {
        name: format!("  ↳ {}, {size}, {callers} callers", what.0),
        ours: floor.ratio * 100.0,
        reference: share * 100.0,
        unit: "%".into(),
        rule: format!(
            "report: {} ÷ in-process vs the target [{}]; {:.1} µs CPU per job beyond the handler's {handler_us:.0}",
            what.1,
            floor.spread(),
            cpu_us - handler_us
        ),
        pass: None,
        relay: None,
        cpu: Some(sides),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_line_is_its_median_share_and_its_cpu_beyond_the_handler() {
        let floor = Medians::of(&[(70.0, 100.0), (80.0, 100.0), (75.0, 100.0)]);
        let sides = |client_us, broker_us, workers_us| CpuPerJob { client_us, broker_us, workers_us };
        // 1,000 jobs at 150 µs and 3,000 at 130: 135 µs a job, 100 of them the handler's.
        let runs = [(sides(20.0, 10.0, 120.0), 1_000), (sides(12.0, 6.0, 112.0), 3_000)];
        let t = floor_line(RELAY_LINE, "~100 µs", 16, &floor, &runs, 100.0, 0.8);
        let c = t.cpu.expect("each side's CPU per job is in the line");
        let near = |got: f64, want: f64| (got - want).abs() < 1e-9;
        assert!(near(c.client_us, 14.0) && near(c.broker_us, 7.0) && near(c.workers_us, 114.0), "{c:?}");
        assert!((t.ours - 75.0).abs() < 1e-9, "{}", t.ours);
        assert_eq!((t.reference, t.pass), (80.0, None));
        assert!(t.rule.contains("35.0 µs CPU per job beyond the handler's 100"), "{}", t.rule);
        assert!(t.rule.contains("70.0 / 80.0 / 75.0"), "every round's share is shown: {}", t.rule);
        assert!(t.name.contains("the relay floor running the job, ~100 µs, 16 callers"), "{}", t.name);
        let t = floor_line(DIRECT_LINE, "~1 ms", 4, &floor, &[(sides(4.0, 0.0, 1006.0), 10)], 1000.0, 0.9);
        assert!(t.name.starts_with("  ↳ no broker: callers straight to the workers, ~1 ms, 4 callers"), "{}", t.name);
        assert!(t.rule.starts_with("report: no hub ÷ in-process"), "{}", t.rule);
        assert!(t.rule.contains("10.0 µs CPU per job beyond the handler's 1000"), "{}", t.rule);
    }

    #[test]
    fn the_brokered_line_reports_its_share_and_each_process_cpu() {
        let medians = Medians::of(&[(60.0, 100.0), (70.0, 100.0), (65.0, 100.0)]);
        let ms = Duration::from_millis;
        let cpu = CpuTotals { client: ms(10), broker: ms(20), workers: ms(30), jobs: 100 };
        let t = brokered_line("~100 µs", 16, &medians, &cpu, 0.8);
        assert!(t.name.contains("through the broker (--no-lanes), ~100 µs, 16 callers"), "{}", t.name);
        assert!((t.ours - 65.0).abs() < 1e-9 && t.reference == 80.0 && t.pass.is_none(), "{t:?}");
        let c = t.cpu.expect("CPU per process");
        assert_eq!((c.client_us, c.broker_us, c.workers_us), (100.0, 200.0, 300.0));
    }

    #[test]
    fn cpu_totals_are_per_job_over_all_runs() {
        let ms = Duration::from_millis;
        let mut t = CpuTotals { client: ms(1), broker: ms(2), workers: ms(3), jobs: 10 };
        t.client += ms(1);
        t.jobs += 10;
        let c = t.per_job();
        assert_eq!((c.client_us, c.broker_us, c.workers_us), (100.0, 100.0, 150.0));
        assert_eq!(t.total_us(), 350.0);
        assert_eq!(CpuTotals::default().total_us(), 0.0, "no jobs: no division by zero");
    }
}
