//! `powerhose`: runs a broker and N worker processes on one plugin (or the
//! pools of a pool file, `--config`) until Ctrl-C or SIGTERM; SIGHUP reloads
//! the workers (or applies the pool file again), SIGTTIN/SIGTTOU add or
//! remove one.

use std::path::PathBuf;

use clap::Parser;
use powerhose::{cli, cluster, wakeup::Wakeup};

#[derive(Parser, Debug)]
#[command(version, about = "Run a powerhose cluster: a broker and N workers on one plugin")]
struct Args {
    /// The plugin: a path, or a file name such as libcrypto_job.so (see powerhose-worker --help).
    #[arg(long, required_unless_present = "config")]
    plugin: Option<String>,
    /// A pool file: several pools (plugin, workers, params, ...) under one
    /// broker, instead of --plugin. SIGHUP then reads it again and applies
    /// the difference. --workers, --max-age and --timeout are the defaults
    /// of a pool that leaves them out.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["plugin", "params", "connect"])]
    config: Option<PathBuf>,
    /// Directory searched for a bare plugin name.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Number of worker processes [default: one per CPU]
    #[arg(long, visible_alias = "numprocesses")]
    workers: Option<usize>,
    /// Parameters for the plugin's init: JSON, or key:value|key2:value2.
    #[arg(long)]
    params: Option<String>,
    /// No scale request (powerhose-client scale, SIGTTIN) goes beyond this
    /// many workers [default: four per CPU]
    #[arg(long)]
    max_workers: Option<usize>,
    /// Endpoint for clients; repeated, each is served (one ipc:// or tcp://
    /// at most, and unix:// ones) [default: unix://<runtime dir>/front.sock,
    /// and ipc://<runtime dir>/front.ipc for ZeroMQ clients]
    #[arg(long)]
    frontend: Vec<String>,
    /// Endpoint for workers [default: unix://<runtime dir>/back.sock]
    #[arg(long)]
    backend: Option<String>,
    /// The worker executable [default: powerhose-worker next to this program, or on PATH]
    #[arg(long)]
    worker_exe: Option<PathBuf>,
    #[command(flatten)]
    broker: cli::BrokerArgs,
    #[command(flatten)]
    curve: cli::CurveServerArgs,
    /// Run no broker here: the workers serve the brokers at these back
    /// endpoints (repeatable; reload and scale by signal). --curve-secret is
    /// then the workers' own key and --curve-server the brokers' public one.
    #[arg(long, value_name = "ENDPOINT", conflicts_with_all = ["frontend", "backend", "allow_clients", "allow_workers", "allow_operators", "insecure", "metrics"])]
    connect: Vec<String>,
    /// With --connect: the brokers' public certificate.
    #[arg(long, value_name = "FILE", requires_all = ["connect", "curve_secret"])]
    curve_server: Option<PathBuf>,
    #[command(flatten)]
    lifecycle: cli::WorkerLifecycleArgs,
    /// Verbose logs.
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    log: cli::LogArgs,
}

fn run(args: &Args, log_format: cli::LogFormat) -> anyhow::Result<()> {
    let mut options = cluster::ClusterOptions::new(args.plugin.as_deref().unwrap_or_default())?;
    options.plugin_dir = args.plugin_dir.clone();
    if let Some(params) = &args.params {
        options.params = Some(cli::parse_params(params)?);
    }
    options.workers = args.workers.unwrap_or(options.workers);
    options.max_workers = args.max_workers.unwrap_or(options.max_workers);
    if let Some((first, more)) = args.frontend.split_first() {
        (options.frontend, options.more_frontends) = (first.clone(), more.to_vec());
    }
    options.backend = args.backend.clone().unwrap_or(options.backend);
    options.worker_exe = args.worker_exe.clone();
    options.broker = args.broker.config();
    args.lifecycle.apply(&mut options.worker)?;
    options.max_message_bytes = args.broker.max_message_bytes;
    options.worker.io_cpu = args.broker.io_cpu;
    options.debug = args.debug;
    options.metrics = args.broker.metrics_addr()?;
    options.json_logs = log_format == cli::LogFormat::Json;
    if args.connect.is_empty() {
        options.curve = args.curve.server()?;
        options.insecure = args.curve.insecure;
    } else {
        options.connect = args.connect.clone();
        let keys = cli::CurveClientArgs {
            curve_secret: args.curve.curve_secret.clone(),
            curve_server: args.curve_server.clone(),
        };
        if keys.curve_secret.is_some() && keys.curve_server.is_none() {
            return Err(powerhose::Error::BadFlag(
                "--connect with --curve-secret needs --curve-server (the brokers' public certificate)".into(),
            )
            .into());
        }
        options.worker.curve = keys.credentials()?;
    }
    let shutdown = Wakeup::new()?.on_terminate()?;
    match &args.config {
        Some(path) => cluster::run_pools(options, path, &shutdown)?,
        None => cluster::run_cluster(options, &shutdown)?,
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let format = match args.log.init(args.debug) {
        Ok(format) => format,
        Err(e) => std::process::exit(cli::report("powerhose", &e, args.debug)),
    };
    // Before any other thread: signals must not interrupt ZeroMQ calls.
    if let Err(e) = powerhose::sys::route_process_signals() {
        std::process::exit(cli::report("powerhose", &e, args.debug));
    }
    if let Err(e) = run(&args, format) {
        std::process::exit(cli::report("powerhose", e.as_ref(), args.debug));
    }
}
