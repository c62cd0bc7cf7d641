//! `powerhose-bench`: measures a plugin in-process and through a powerhose
//! cluster (and the raw ZeroMQ floor), to tell whether a job is worth offloading.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use powerhose::bench::{self, BenchOptions, Limit, Mode, Wire};
use powerhose::{cli, JobRequest};

#[derive(Parser, Debug)]
#[command(version, about = "Is offloading worth it for my job, and how close to the wire is powerhose?")]
struct Args {
    /// The plugin to measure (path or bare name, as for powerhose-worker).
    #[arg(long, required_unless_present_any = ["suite", "soak", "brokers"])]
    plugin: Option<String>,
    /// Parameters for the plugin's init: JSON, or key:value|key2:value2.
    #[arg(long)]
    params: Option<String>,
    /// Payload size in bytes (filled with 'x').
    #[arg(long, default_value_t = 100, conflicts_with = "payload_file")]
    size: usize,
    /// Use this file's content as the payload.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// A job header, NAME:VALUE (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Workers in the cluster, and threads for the in-process ideal [default: one per CPU]
    #[arg(long)]
    workers: Option<usize>,
    /// Concurrent callers, each with one job at a time.
    #[arg(long, default_value_t = 1, conflicts_with = "pipeline")]
    callers: usize,
    /// Instead of callers: one pipelined client keeping this many jobs in flight.
    #[arg(long)]
    pipeline: Option<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0, conflicts_with = "jobs")]
    duration: f64,
    /// Jobs per measurement, instead of a duration.
    #[arg(long)]
    jobs: Option<u64>,
    /// Measure against this running broker instead of starting a cluster;
    /// repeated, one client spreads the jobs over the brokers (a pipeline
    /// streams to one at a time).
    #[arg(long)]
    frontend: Vec<String>,
    // With --frontend, a broker started with --curve-secret: this client's keys.
    #[command(flatten)]
    curve: cli::CurveClientArgs,
    /// The transport of the cluster this program starts (and of --soak's):
    /// the local one, or ZeroMQ's ipc, tcp or CURVE tcp to compare with.
    #[arg(long, value_enum, default_value_t = Wire::Unix, conflicts_with_all = ["frontend", "suite", "brokers"])]
    wire: Wire,
    /// Also measure the raw ZeroMQ floor on the same transport and payload,
    /// and a relay over Unix SOCK_SEQPACKET (an epoll hub, no ZeroMQ); with
    /// --callers, that relay running this job too, in its own workers.
    #[arg(long)]
    floor: bool,
    /// Pin this process, the broker, the workers and the floor helpers to one CPU.
    #[arg(long)]
    pin: Option<usize>,
    /// The workers' --coalesce-ms (how long a result may wait under backlog to
    /// be sent with others) [default: the worker's]
    #[arg(long)]
    coalesce_ms: Option<f64>,
    /// The workers open no lanes (`--no-lanes`): every job goes through the
    /// broker (with --wire unix, the default, local callers send them
    /// straight to the workers' lanes)
    #[arg(long)]
    no_lanes: bool,
    /// The cluster's --io-cpu: its broker, its workers' I/O threads and this
    /// program's client run on this CPU, the job threads on every CPU.
    #[arg(long, conflicts_with = "pin")]
    io_cpu: Option<usize>,
    /// Run every project target (echo and crypto_job, floors, memory) and say
    /// PASS or MISS; also reports tcp plaintext against CURVE.
    #[arg(long)]
    suite: bool,
    /// Soak for this many seconds: steady load of mixed priorities on a
    /// cluster, and jobs cancelled at random points, while workers are killed
    /// at random; prints requests, cancels, errors by kind and memory.
    #[arg(long)]
    soak: Option<f64>,
    /// Start two brokers and --workers echo workers [default: 2] serving both;
    /// compare one client of broker a with one of both (4 callers, and
    /// pipelined), then kill a under load and time the failover. Report only.
    #[arg(long, conflicts_with_all = ["suite", "soak", "frontend", "plugin"])]
    brokers: bool,
    /// Measure at each value of one dimension, callers=1,2,4,8,16 or
    /// pipeline=1,8,64,512: powerhose, the plugin in-process (the ideal)
    /// and the floor, side by side, each for --duration, in 3 rounds (medians).
    #[arg(long, value_name = "DIMENSION=N,N,…", conflicts_with_all = ["suite", "soak", "brokers", "frontend", "jobs", "callers", "pipeline", "floor"])]
    sweep: Option<String>,
    /// Measure --callers against the no-broker floor (the same workers, each
    /// caller connected straight to one) in this many rounds of --duration,
    /// the two taking turns in each: every round's ratio, the median, and
    /// each side's CPU per job. For comparing two builds of the caller path.
    #[arg(long, value_name = "ROUNDS", conflicts_with_all = ["suite", "soak", "brokers", "frontend", "jobs", "pipeline", "floor", "sweep"])]
    turns: Option<usize>,
    /// With --sweep: also write sweep-<dimension>.svg (the chart) and .json
    /// (every point and the environment) into this directory.
    #[arg(long, value_name = "DIR", requires = "sweep")]
    report: Option<PathBuf>,
    /// JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    log: cli::LogArgs,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let progress = |phase: &str| cli::note("powerhose-bench", &format!("{phase}…"));
    // Before anything runs: a typo in the spec is an error at once.
    let sweep = args.sweep.as_deref().map(bench::SweepSpec::parse).transpose()?;
    if let Some(seconds) = args.soak {
        let report =
            bench::soak(args.wire, Duration::try_from_secs_f64(seconds)?, |line| cli::note("powerhose-bench", line))?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if args.brokers {
        let duration = Duration::try_from_secs_f64(args.duration.min(2.0))?;
        let report = bench::brokers(args.workers.unwrap_or(2).max(1), duration, progress)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::format_brokers(&report));
        }
        return Ok(());
    }
    if args.suite {
        let report = bench::run_suite(Duration::try_from_secs_f64(args.duration.min(2.0))?, progress)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::format_suite(&report));
        }
        return Ok(());
    }
    let plugin = powerhose::plugin::locate(args.plugin.as_deref().expect("required"), None)?;
    let data = match &args.payload_file {
        Some(path) => std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => vec![b'x'; args.size],
    };
    let mut job = JobRequest::new(data);
    for h in &args.headers {
        let (n, v) = h.split_once(':').ok_or_else(|| anyhow::anyhow!("header {h:?} is not NAME:VALUE"))?;
        job = job.header(n, v);
    }
    let options = BenchOptions {
        plugin,
        params: args.params.as_deref().map(cli::parse_params).transpose()?,
        job,
        workers: args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        mode: args.pipeline.map_or(Mode::Callers(args.callers.max(1)), |k| Mode::Pipelined(k.max(1))),
        limit: args.jobs.map_or(Limit::Time(Duration::try_from_secs_f64(args.duration)?), Limit::Jobs),
        frontend: args.frontend.clone(),
        curve: args.curve.credentials()?,
        floor: args.floor,
        wire: args.wire,
        pin: args.pin,
        worker_args: (args.coalesce_ms.map(|ms| vec!["--coalesce-ms".into(), ms.to_string()]).into_iter().flatten())
            .chain(args.no_lanes.then(|| "--no-lanes".to_string()))
            .collect(),
        io_cpu: args.io_cpu,
    };
    if let Some(rounds) = args.turns {
        let report = bench::turns(&options, rounds, progress)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::format_turns(&report));
        }
        return Ok(());
    }
    if let Some(spec) = &sweep {
        let report = bench::sweep(&options, spec, Duration::try_from_secs_f64(args.duration)?, progress)?;
        if let Some(dir) = &args.report {
            let (json, svg) = bench::write_sweep(dir, &report)?;
            eprintln!("powerhose-bench: wrote {} and {}", svg.display(), json.display());
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::format_sweep(&report));
        }
        return Ok(());
    }
    let report = bench::run(&options, progress)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::format_report(&report));
    }
    Ok(())
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    // The floor's helper processes are this program in a hidden role.
    if argv.get(1).map(String::as_str) == Some("--helper") {
        if let Err(e) = bench::floor::helper(&argv[2..]) {
            eprintln!("powerhose-bench helper: error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    if let Err(e) = args.log.init(false) {
        std::process::exit(cli::report("powerhose-bench", &e, false));
    }
    if let Err(e) = run(&args) {
        std::process::exit(cli::report("powerhose-bench", e.as_ref(), false));
    }
}
