//! `powerhose-bench --sweep callers=1,2,4,8,16` (or `pipeline=1,8,64,512`):
//! one cluster measured at each point of one dimension, in rounds of its
//! two references (the plugin in-process, and the floor) then powerhose, so
//! a noisy machine shifts all three alike; each figure is the rounds' median. Pure data: sweep_report.rs prints
//! and writes it, chart.rs draws it.

use std::path::PathBuf;
use std::time::Duration;

use super::floor::{self, Setup};
use super::measure::{self, Lat, Limit};
use super::relay::Relay;
use super::{drive, procs, start_cluster, BenchOptions, Mode, Wire};
use crate::error::{Error, Result};
use crate::plugin::LoadedPlugin;

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Concurrent callers, each with one job at a time.
    Callers,
    /// One pipelined client's jobs in flight.
    Pipeline,
}

impl Dimension {
    /// The name in `--sweep NAME=…`, in the file names and on the chart.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Callers => "callers",
            Dimension::Pipeline => "pipeline",
        }
    }

    fn mode(self, value: usize) -> Mode {
        match self {
            Dimension::Callers => Mode::Callers(value),
            Dimension::Pipeline => Mode::Pipelined(value),
        }
    }

    /// What the floor line is for this dimension.
    pub fn floor_name(self) -> &'static str {
        match self {
            // The relay's callers block like ours, and its workers run the
            // job: the like-for-like floor.
            Dimension::Callers => {
                "relay over Unix SOCK_SEQPACKET (epoll hub, as many workers running the job, no ZeroMQ), as many callers"
            }
            // The relay has no pipelined client; ZeroMQ's proxy hop has one.
            Dimension::Pipeline => "ZeroMQ DEALER → proxy → 2 echo processes over ipc, as many in flight",
        }
    }
}

/// A parsed `--sweep`: one dimension and its values, ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepSpec {
    /// What varies.
    pub dimension: Dimension,
    /// The values it takes, ascending, without repeats.
    pub values: Vec<usize>,
}

/// More threads or jobs in flight than this is a typo, not a benchmark.
const MAX_VALUE: usize = 100_000;
/// Callers are threads of the bench: keep them to a number a machine runs.
const MAX_CALLERS: usize = 1024;

impl SweepSpec {
    /// `callers=1,2,4` or `pipeline=1,8,64`; a one-line [`Error::BadFlag`] otherwise.
    pub fn parse(spec: &str) -> Result<SweepSpec> {
        let bad = |why: String| Error::BadFlag(format!("--sweep {spec:?}: {why}"));
        let (name, list) =
            spec.split_once('=').ok_or_else(|| bad("expected callers=N,N,… or pipeline=N,N,…".into()))?;
        let dimension = match name.trim() {
            "callers" => Dimension::Callers,
            "pipeline" => Dimension::Pipeline,
            other => return Err(bad(format!("unknown dimension {other:?} (callers or pipeline)"))),
        };
        let most = if dimension == Dimension::Callers { MAX_CALLERS } else { MAX_VALUE };
        let mut values = Vec::new();
        for item in list.split(',') {
            let v: usize = item.trim().parse().map_err(|_| bad(format!("{item:?} is not a whole number")))?;
            if !(1..=most).contains(&v) {
                return Err(bad(format!("{v} is outside 1..={most}")));
            }
            values.push(v);
        }
        values.sort_unstable();
        values.dedup();
        Ok(SweepSpec { dimension, values })
    }
}

/// One point of the sweep.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SweepPoint {
    /// The dimension's value (callers, or jobs in flight).
    pub value: usize,
    /// Jobs per second through powerhose.
    pub jobs_per_s: f64,
    /// Their client-side latency (µs).
    pub latency: Lat,
    /// Jobs through powerhose that failed (not in the figures above).
    pub errors: u64,
    /// Threads calling the plugin in-process for the ideal: the value,
    /// capped at the cluster's workers (no more jobs can run at once).
    pub in_process_threads: usize,
    /// Jobs per second in-process on those threads: the ideal.
    pub in_process_jobs_per_s: f64,
    /// The floor's jobs per second (see [`Dimension::floor_name`]).
    pub floor_jobs_per_s: f64,
    /// Each round's figures; those above are their medians (errors: the sum).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<SweepPoint>,
}

/// Each point is measured this many times, each round its references
/// then powerhose: on a shared VM one measurement in a few lands on a
/// burst of other work, and the median leaves it out.
pub const ROUNDS: usize = 3;

impl SweepPoint {
    /// The median of each figure over `rounds` (of one value), which it keeps.
    fn median(rounds: Vec<SweepPoint>) -> SweepPoint {
        let median = |f: &dyn Fn(&SweepPoint) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        let latency = Lat {
            count: rounds.iter().map(|r| r.latency.count).sum(),
            p50_us: median(&|r| r.latency.p50_us),
            p90_us: median(&|r| r.latency.p90_us),
            p99_us: median(&|r| r.latency.p99_us),
            max_us: rounds.iter().map(|r| r.latency.max_us).fold(0.0, f64::max),
        };
        SweepPoint {
            value: rounds.first().map_or(0, |r| r.value),
            jobs_per_s: median(&|r| r.jobs_per_s),
            latency,
            errors: rounds.iter().map(|r| r.errors).sum(),
            in_process_threads: rounds.first().map_or(0, |r| r.in_process_threads),
            in_process_jobs_per_s: median(&|r| r.in_process_jobs_per_s),
            floor_jobs_per_s: median(&|r| r.floor_jobs_per_s),
            rounds,
        }
    }
}

/// How and where a sweep ran.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Environment {
    /// CPUs this process may use.
    pub cpus: usize,
    /// The CPU count and model.
    pub machine: String,
    /// The plugin's name and version.
    pub plugin: String,
    /// The plugin's library.
    pub plugin_path: PathBuf,
    /// Its init parameters, as given.
    pub params: Option<String>,
    /// The job's headers.
    pub headers: Vec<(String, String)>,
    /// The job's data size, in bytes.
    pub payload_bytes: usize,
    /// Workers in the cluster.
    pub workers: usize,
    /// The cluster's transport.
    pub wire: Wire,
    /// Seconds of each measurement (three per round, [`ROUNDS`] rounds per point).
    pub seconds_per_measurement: f64,
    /// When the sweep started (UTC, RFC 3339).
    pub date: String,
    /// What the floor line is.
    pub floor: String,
}

/// A whole sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepReport {
    /// What varied.
    pub dimension: Dimension,
    /// Each value's figures, ascending.
    pub points: Vec<SweepPoint>,
    /// How and where it ran.
    pub environment: Environment,
}

/// The floor for a dimension: the relay running the job, started once for
/// a callers sweep; ZeroMQ helpers started per point for a pipeline sweep
/// (their window is set at start).
enum FloorRun<'a> {
    Relay(Relay, Setup<'a>),
    Pipelined(Setup<'a>),
}

impl FloorRun<'_> {
    fn measure(&self, value: usize) -> Result<f64> {
        match self {
            FloorRun::Relay(relay, setup) => Ok(relay.callers(value, setup.payload, setup.duration)?.jobs_per_s),
            FloorRun::Pipelined(setup) => floor::pipelined(&Setup { window: value, ..*setup }),
        }
    }
}

/// Runs `spec`'s points on one cluster of `options` (its plugin, job,
/// workers, wire and pinning; its mode, limit and floor are the sweep's),
/// each measurement lasting `duration`; `progress` gets a line per step.
pub fn sweep(
    options: &BenchOptions,
    spec: &SweepSpec,
    duration: Duration,
    mut progress: impl FnMut(&str),
) -> Result<SweepReport> {
    if !options.frontend.is_empty() {
        return Err(Error::BadFlag("--sweep starts its own cluster: it takes no --frontend".into()));
    }
    if let Some(cpu) = options.pin {
        procs::pin_self(cpu)?;
    }
    let date = super::sweep_report::utc_now();
    let plugin = LoadedPlugin::load(&options.plugin, options.params.as_deref().unwrap_or(""))?;
    let exe = std::env::current_exe().map_err(Error::io("finding this executable"))?;
    let dir = crate::endpoint::runtime_dir()?.join(format!("sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("creating the sweep directory"))?;
    let result = (|| {
        progress(&format!("starting a broker and {} workers", options.workers));
        let cluster = start_cluster(options)?;
        let setup = Setup { exe: &exe, dir: &dir, payload: &options.job.data, window: 1, duration, pin: options.pin };
        let job = super::relay_job(options, &plugin);
        let floor = match spec.dimension {
            Dimension::Callers => FloorRun::Relay(Relay::start_running(&setup, Some(&job))?, setup),
            Dimension::Pipeline => FloorRun::Pipelined(setup),
        };
        let client = cluster.client()?;
        let mut points = Vec::new();
        for &value in &spec.values {
            let threads = value.min(options.workers.max(1));
            let mut rounds = Vec::new();
            for round in 1..=ROUNDS {
                let what = format!("{} {value}, round {round}", spec.dimension.name());
                progress(&format!("{what}: in-process on {threads} thread{}", if threads == 1 { "" } else { "s" }));
                let ideal = measure::in_process(&plugin, &options.job, threads, Limit::Time(duration))?;
                progress(&format!("{what}: the floor"));
                let floor_jobs_per_s = floor.measure(value)?;
                progress(&format!("{what}: through powerhose"));
                // Only while our client drives: helpers started later must not inherit it.
                let pin = crate::affinity::PinGuard::new(options.io_cpu)?;
                let (rate, latency, errors) =
                    drive(&client, &options.job, spec.dimension.mode(value), Limit::Time(duration))?;
                drop(pin);
                rounds.push(SweepPoint {
                    value,
                    jobs_per_s: rate.jobs_per_s,
                    latency,
                    errors,
                    in_process_threads: threads,
                    in_process_jobs_per_s: ideal.jobs_per_s,
                    floor_jobs_per_s,
                    rounds: Vec::new(),
                });
            }
            points.push(SweepPoint::median(rounds));
        }
        Ok(points)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let environment = Environment {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        machine: procs::machine(),
        plugin: format!("{} {}", plugin.name, plugin.version),
        plugin_path: options.plugin.clone(),
        params: options.params.clone(),
        headers: options.job.headers.clone(),
        payload_bytes: options.job.data.len(),
        workers: options.workers,
        wire: options.wire,
        seconds_per_measurement: duration.as_secs_f64(),
        date,
        floor: spec.dimension.floor_name().into(),
    };
    Ok(SweepReport { dimension: spec.dimension, points: result?, environment })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_one_dimension_and_its_values_ascending() {
        let s = SweepSpec::parse("callers=8,1, 2,4,2").unwrap();
        assert_eq!(s, SweepSpec { dimension: Dimension::Callers, values: vec![1, 2, 4, 8] });
        let s = SweepSpec::parse("pipeline=1,8,64,512").unwrap();
        assert_eq!((s.dimension, s.values.len()), (Dimension::Pipeline, 4));
        assert_eq!(SweepSpec::parse("callers=16").unwrap().values, [16]);
    }

    #[test]
    fn a_bad_spec_is_a_one_line_bad_flag() {
        for (spec, says) in [
            ("callers", "expected callers=N"),
            ("threads=1,2", "unknown dimension \"threads\""),
            ("callers=1,x", "\"x\" is not a whole number"),
            ("callers=", "\"\" is not a whole number"),
            ("callers=1,,2", "\"\" is not a whole number"),
            ("callers=0,1", "0 is outside 1..=1024"),
            ("callers=2000", "outside 1..=1024"),
            ("pipeline=-1", "not a whole number"),
        ] {
            match SweepSpec::parse(spec) {
                Err(Error::BadFlag(m)) => {
                    assert!(m.contains(says) && !m.contains('\n'), "{spec}: {m}");
                    assert!(m.starts_with(&format!("--sweep {spec:?}")), "{m}");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
        assert!(SweepSpec::parse("pipeline=2000").is_ok(), "only callers are capped at 1024");
    }

    #[test]
    fn a_point_is_the_median_of_its_rounds() {
        let round = |jobs_per_s, p99_us, errors| SweepPoint {
            value: 4,
            jobs_per_s,
            latency: Lat { count: 10, p99_us, max_us: p99_us * 2.0, ..Default::default() },
            errors,
            in_process_threads: 2,
            in_process_jobs_per_s: 1000.0,
            ..Default::default()
        };
        let p = SweepPoint::median(vec![round(900.0, 50.0, 0), round(100.0, 9000.0, 1), round(950.0, 60.0, 0)]);
        assert_eq!((p.value, p.in_process_threads, p.jobs_per_s, p.latency.p99_us), (4, 2, 900.0, 60.0));
        assert_eq!((p.latency.count, p.latency.max_us, p.errors, p.rounds.len()), (30, 18_000.0, 1, 3));
    }
}
