//! `powerhose-bench`: is offloading worth it for my job, and how close to the
//! raw ZeroMQ floor are we. Starts a real broker and real workers (separate
//! processes, so each one's CPU time can be read), measures the plugin
//! in-process as the ideal, and the floor on the same transport and payload.

mod brokers;
mod brokers_report;
mod chart;
mod cluster;
pub mod floor;
mod interleave;
pub mod measure;
pub mod procs;
pub mod relay;
mod relay_direct;
mod relay_hub;
mod seqpacket;
mod soak;
mod suite;
mod suite_callers;
mod suite_report;
mod sweep;
mod sweep_report;
mod turns;

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::CurveClient;
use crate::client::{Client, JobRequest};
use crate::error::{Error, Result};
pub use brokers::brokers;
pub use brokers_report::{format_brokers, BrokersReport};
pub use cluster::{BenchCluster, Wire};
pub use measure::Limit;
use measure::{Lat, Rate};
pub use soak::{soak, SoakReport};
pub use suite::run_suite;
pub use suite_report::{format_suite, SuiteReport};
pub use sweep::{sweep, Dimension, SweepPoint, SweepReport, SweepSpec};
pub use sweep_report::{format_sweep, write_sweep};
pub use turns::{format_turns, turns, TurnRound, TurnsReport};

/// How jobs are sent through the cluster.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// This many threads, each with one job at a time.
    Callers(usize),
    /// One thread keeping this many jobs in flight.
    Pipelined(usize),
}

/// One benchmark configuration.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The plugin library to measure.
    pub plugin: PathBuf,
    /// Parameters for its init (JSON, or `key:value|key2:value2`).
    pub params: Option<String>,
    /// The job sent again and again.
    pub job: JobRequest,
    /// Workers in the cluster, and threads for the in-process ideal.
    pub workers: usize,
    /// How jobs go through the cluster.
    pub mode: Mode,
    /// How long each measurement lasts.
    pub limit: Limit,
    /// Measure against these running brokers instead of starting a cluster
    /// (several: one client spreading the jobs over them, see
    /// [`Client::connect_many`]).
    pub frontend: Vec<String>,
    /// CURVE credentials for `frontend` (a broker started with `--curve-secret`).
    pub curve: Option<CurveClient>,
    /// Also measure the raw ZeroMQ floor on the same transport and payload,
    /// and the relay floor ([`relay`]); in [`Mode::Callers`], the relay
    /// running the job too.
    pub floor: bool,
    /// The started cluster's transport (not used with `frontend`).
    pub wire: Wire,
    /// Pin this process, the broker, the workers and the floor helpers to this CPU.
    pub pin: Option<usize>,
    /// Extra flags for the cluster's workers.
    pub worker_args: Vec<String>,
    /// `--io-cpu` for the cluster's broker and workers; the client (this
    /// process's driving thread and its I/O thread) runs there too.
    pub io_cpu: Option<usize>,
}

/// CPU time per job, in microseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuPerJob {
    /// This process (all its threads), per job.
    pub client_us: f64,
    /// The broker process, per job.
    pub broker_us: f64,
    /// All worker processes together, per job.
    pub workers_us: f64,
}

impl CpuPerJob {
    /// All processes together, per job.
    pub fn total_us(&self) -> f64 {
        self.client_us + self.broker_us + self.workers_us
    }
}

/// The figures of one configuration.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// The CPU count and model.
    pub machine: String,
    /// The plugin's name and version.
    pub plugin: String,
    /// The job's data size, in bytes.
    pub payload_bytes: usize,
    /// Workers in the cluster (threads for the in-process ideal).
    pub workers: usize,
    /// How jobs were sent ([`Mode`], as text).
    pub mode: String,
    /// The started cluster's transport; `None` against running brokers.
    pub wire: Option<Wire>,
    /// The CPU everything was pinned to (`--pin`).
    pub pinned_cpu: Option<usize>,
    /// Broker, workers' I/O threads and client on this CPU (`--io-cpu`).
    pub io_cpu: Option<usize>,
    /// The handler called in-process on one thread.
    pub in_process_1_thread: Rate,
    /// The handler called in-process on `workers` threads: the ideal.
    pub in_process_n_threads: Rate,
    /// Jobs through the broker and workers.
    pub cluster: Rate,
    /// Client-side latency of the jobs through the cluster.
    pub latency: Lat,
    /// Jobs through the cluster that failed (not counted in `cluster` or `latency`).
    pub errors: u64,
    /// CPU time per job through the cluster (only when the bench started the cluster).
    pub cpu_per_job: Option<CpuPerJob>,
    /// Cluster throughput / in-process N-thread throughput.
    pub verdict_ratio: f64,
    /// The raw ZeroMQ figures, when asked for (`--floor`).
    pub floor: Option<floor::Floor>,
    /// Our p50 / the proxy-hop floor's p50.
    pub latency_ratio_to_proxy_floor: Option<f64>,
    /// Our throughput / the pipelined proxy-hop floor's.
    pub throughput_ratio_to_pipelined_floor: Option<f64>,
    /// The relay floor running this job with as many callers and workers
    /// (`--floor` with `--callers`).
    pub relay_running_job: Option<relay::RelayCallers>,
    /// The same without the relay's hub: each caller connected straight to
    /// a worker (`--floor` with `--callers`).
    pub direct_running_job: Option<relay::RelayCallers>,
}

/// A directory of this user's runtime directory, 0700, for a run's
/// endpoints and keys (the bench's cluster and its --brokers pair).
fn private_dir(name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = crate::endpoint::runtime_dir()?.join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// The cluster `options` describe: its wire, plugin, workers, pinning and
/// the workers' extra flags.
fn start_cluster(options: &BenchOptions) -> Result<BenchCluster> {
    let io_cpu = options.io_cpu.map(|c| c.to_string());
    let io_args: Vec<&str> = io_cpu.as_deref().map(|c| vec!["--io-cpu", c]).unwrap_or_default();
    let mut extra: Vec<&str> = options.worker_args.iter().map(String::as_str).collect();
    extra.extend(&io_args);
    BenchCluster::start(
        options.wire,
        &options.plugin,
        options.params.as_deref(),
        options.workers,
        options.pin,
        &io_args,
        &extra,
    )
}

/// Sends jobs through `client` in `mode` for `duration`: (rate, latency, errors).
pub fn drive(client: &Client, job: &JobRequest, mode: Mode, limit: Limit) -> Result<(Rate, Lat, u64)> {
    // Warm-up: connections, caches, the workers' first jobs.
    for _ in 0..50 {
        client.execute_ref(job, Duration::from_secs(30))?;
    }
    match mode {
        Mode::Callers(n) => Ok(measure::concurrent(client, job, n, limit)),
        Mode::Pipelined(window) => measure::pipelined(client, job, window, limit),
    }
}

/// Runs one configuration; `progress` gets a line per phase.
pub fn run(options: &BenchOptions, mut progress: impl FnMut(&str)) -> Result<Report> {
    if options.curve.is_some() && options.frontend.is_empty() {
        return Err(Error::BadFlag(
            "--curve-secret and --curve-server are for a running broker: give its --frontend too".into(),
        ));
    }
    if let Some(cpu) = options.pin {
        procs::pin_self(cpu)?;
    }
    let plugin = crate::plugin::LoadedPlugin::load(&options.plugin, options.params.as_deref().unwrap_or(""))?;
    let mut report = Report {
        machine: procs::machine(),
        plugin: format!("{} {}", plugin.name, plugin.version),
        payload_bytes: options.job.data.len(),
        workers: options.workers,
        mode: format!("{:?}", options.mode),
        wire: options.frontend.is_empty().then_some(options.wire),
        pinned_cpu: options.pin,
        io_cpu: options.io_cpu,
        ..Default::default()
    };
    progress("in-process, 1 thread");
    report.in_process_1_thread = measure::in_process(&plugin, &options.job, 1, options.limit)?;
    progress(&format!("in-process, {} threads", options.workers));
    report.in_process_n_threads = measure::in_process(&plugin, &options.job, options.workers, options.limit)?;

    let cluster = match options.frontend.is_empty() {
        false => None,
        true => {
            progress(&format!("starting a broker and {} workers", options.workers));
            Some(start_cluster(options)?)
        }
    };
    // After the cluster started (its processes must not inherit the pin).
    let pin = crate::affinity::PinGuard::new(options.io_cpu)?;
    let client = match &cluster {
        Some(c) => c.client()?,
        None => Client::connect_many(&options.frontend, options.curve.as_ref())?,
    };
    progress(&format!("through the broker, {:?}", options.mode));
    let before = (procs::own_cpu_time(), cluster.as_ref().map(BenchCluster::cpu));
    let (rate, latency, errors) = drive(&client, &options.job, options.mode, options.limit)?;
    if let (Some(c), Some((broker0, workers0))) = (&cluster, before.1) {
        let (broker1, workers1) = c.cpu();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / rate.jobs.max(1) as f64;
        report.cpu_per_job = Some(CpuPerJob {
            client_us: per(procs::own_cpu_time().saturating_sub(before.0)),
            broker_us: per(broker1.saturating_sub(broker0)),
            workers_us: per(workers1.saturating_sub(workers0)),
        });
    }
    drop((client, pin));
    report.verdict_ratio = rate.jobs_per_s / report.in_process_n_threads.jobs_per_s.max(1e-9);
    report.cluster = rate;
    report.latency = latency;
    report.errors = errors;
    drop(cluster);
    if options.floor {
        progress("raw ZeroMQ floor and relay floor");
        let dir = crate::endpoint::runtime_dir()?.join(format!("floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(Error::io("creating the floor directory"))?;
        let window = match options.mode {
            Mode::Pipelined(w) => w,
            Mode::Callers(_) => 1000,
        };
        let exe = std::env::current_exe().map_err(Error::io("finding this executable"))?;
        // The floor runs as long as our measurement took, for like-for-like noise.
        let duration = Duration::from_secs_f64(report.cluster.secs.clamp(0.5, 10.0));
        let setup =
            floor::Setup { exe: &exe, dir: &dir, payload: &options.job.data, window, duration, pin: options.pin };
        let f = floor::measure(&setup);
        let running = match (&f, options.mode) {
            (Ok(_), Mode::Callers(n)) => {
                progress(&format!("the relay floor running the job, {n} callers, then without its hub"));
                let job = relay_job(options, &plugin);
                Some(relay::running_job(&setup, &job, n, &options.job.data, duration))
            }
            _ => None,
        };
        let _ = std::fs::remove_dir_all(&dir);
        let f = f?;
        (report.relay_running_job, report.direct_running_job) = running.transpose()?.unzip();
        report.latency_ratio_to_proxy_floor = Some(report.latency.p50_us / f.proxy.p50_us.max(1.0));
        report.throughput_ratio_to_pipelined_floor = Some(report.cluster.jobs_per_s / f.pipelined_msgs_per_s.max(1.0));
        report.floor = Some(f);
    }
    Ok(report)
}

/// `options`' job as the relay floor's workers run it: `plugin` (loaded
/// from `options`), its params and headers, on as many workers.
fn relay_job<'a>(options: &'a BenchOptions, plugin: &'a crate::plugin::LoadedPlugin) -> relay::RelayJob<'a> {
    let (params, headers) = (options.params.as_deref().unwrap_or(""), &options.job.headers);
    relay::RelayJob { plugin: &plugin.path, params, headers, workers: options.workers }
}

/// The relay floor's line (for `--floor` and `--suite`).
fn format_relay(f: &relay::RelayFloor) -> String {
    let callers: Vec<String> = f
        .callers
        .iter()
        .map(|c| format!("{} callers {:.0} jobs/s ({:.1} µs CPU/job)", c.callers, c.jobs_per_s, c.cpu_us_per_job))
        .collect();
    format!(
        "relay floor (SOCK_SEQPACKET, epoll hub, 2 workers): p50 {:.0} µs, {:.1} µs CPU/job; {}\n",
        f.sequential.p50_us,
        f.cpu_us_per_job,
        callers.join(", ")
    )
}

/// The human report.
pub fn format_report(r: &Report) -> String {
    let mut s = String::new();
    let l = &r.latency;
    s += &format!(
        "machine: {}{}\n",
        r.machine,
        match (r.pinned_cpu, r.io_cpu) {
            (Some(c), _) => format!(", pinned to CPU {c}"),
            (None, Some(c)) => format!(", broker, workers' I/O threads and client on CPU {c} (--io-cpu)"),
            (None, None) => ", unpinned".into(),
        }
    );
    s += &format!("plugin {}, payload {} B, {} workers, {}", r.plugin, r.payload_bytes, r.workers, r.mode);
    s += &match r.wire {
        Some(w) => format!(", over {}\n\n", w.name()),
        None => "\n\n".into(),
    };
    s += &format!("in-process, 1 thread     {:>12.0} jobs/s\n", r.in_process_1_thread.jobs_per_s);
    s += &format!(
        "in-process, {} threads    {:>12.0} jobs/s   (the ideal)\n",
        r.workers, r.in_process_n_threads.jobs_per_s
    );
    s += &format!(
        "through powerhose        {:>12.0} jobs/s   ({} jobs, {} errors)\n",
        r.cluster.jobs_per_s, r.cluster.jobs, r.errors
    );
    s += &format!(
        "latency (µs)             p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}\n",
        l.p50_us, l.p90_us, l.p99_us, l.max_us
    );
    if let Some(c) = &r.cpu_per_job {
        s += &format!(
            "CPU per job (µs)         client {:.1}  broker {:.1}  workers {:.1}\n",
            c.client_us, c.broker_us, c.workers_us
        );
    }
    s += &format!(
        "verdict: powerhose gives {:.0}% of the in-process {}-thread throughput\n",
        r.verdict_ratio * 100.0,
        r.workers
    );
    if let Some(f) = &r.floor {
        s += &format!(
            "\nZeroMQ floor: REQ/REP p50 {:.0} µs, REQ→proxy→REP p50 {:.0} µs, pipelined via proxy {:.0} msg/s\n",
            f.reqrep.p50_us, f.proxy.p50_us, f.pipelined_msgs_per_s
        );
        s += &format!(
            "ours vs floor: p50 latency {:.2}×, throughput {:.0}% of pipelined\n",
            r.latency_ratio_to_proxy_floor.unwrap_or(0.0),
            r.throughput_ratio_to_pipelined_floor.unwrap_or(0.0) * 100.0
        );
        s += &format_relay(&f.relay);
        s += &format!("ours vs relay: p50 latency {:.2}×\n", r.latency.p50_us / f.relay.sequential.p50_us.max(1.0));
    }
    let running = [
        ("relay floor running this job", &r.relay_running_job),
        ("no broker, callers straight to the workers", &r.direct_running_job),
    ];
    for (what, j) in running {
        let Some(j) = j else { continue };
        let ideal = r.in_process_n_threads.jobs_per_s.max(1e-9);
        s += &format!(
            "{what}, {} callers: {:.0} jobs/s ({:.0}% of in-process), {:.1} µs CPU/job; \
             powerhose gives {:.0}% of it\n",
            j.callers,
            j.jobs_per_s,
            j.jobs_per_s / ideal * 100.0,
            j.cpu_us_per_job,
            r.cluster.jobs_per_s / j.jobs_per_s.max(1e-9) * 100.0
        );
    }
    s
}
