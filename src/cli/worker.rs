//! `powerhose-worker`'s command line as a library call: the binary is a thin
//! `main` around [`worker_main`], and so is the Python package's
//! `powerhose-worker` script (a pool started from Python needs a worker
//! program wherever pip put the package, without a separate Rust build).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::{cli, endpoint, plugin, protocol, wakeup::Wakeup, worker};

/// The worker's flags.
#[derive(Parser, Debug)]
#[command(name = "powerhose-worker", version, about = "Serve powerhose jobs with a plugin")]
pub struct WorkerArgs {
    /// The plugin: a path, or a file name looked up in the current directory,
    /// then --plugin-dir (or $POWERHOSE_PLUGIN_DIR), then next to this program.
    #[arg(long)]
    plugin: String,
    /// Directory searched for a bare plugin name.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Parameters for the plugin's init: JSON, or key:value|key2:value2.
    #[arg(long)]
    params: Option<String>,
    /// A broker's worker endpoint; repeat it to serve several brokers (one
    /// job at a time, answering each job's broker)
    /// [default: unix://<runtime dir>/back.sock]
    #[arg(long)]
    backend: Vec<String>,
    /// Service to register [default: the plugin's name]
    #[arg(long)]
    service: Option<String>,
    /// Heartbeat interval, in milliseconds (match the broker's).
    #[arg(long, default_value_t = protocol::HEARTBEAT_INTERVAL.as_millis() as u64)]
    heartbeat_ms: u64,
    /// Missed broker heartbeats before the broker counts as lost.
    #[arg(long, default_value_t = protocol::LIVENESS)]
    liveness: u32,
    /// Exit when the broker is lost instead of reconnecting.
    #[arg(long)]
    exit_on_broker_loss: bool,
    /// Larger results (with their frame's head) are answered with an error;
    /// no more than the broker's setting.
    #[arg(long, default_value_t = protocol::MAX_MESSAGE_BYTES as i64)]
    max_message_bytes: i64,
    /// Run this worker's I/O threads (libzmq's and the heartbeat thread) on
    /// this CPU; the job thread keeps every CPU [default: no pinning]
    #[arg(long)]
    io_cpu: Option<usize>,
    #[command(flatten)]
    lifecycle: cli::WorkerLifecycleArgs,
    #[command(flatten)]
    curve: cli::CurveClientArgs,
    /// Refuse a plugin built against a powerhose-plugin-api older than this
    /// (0.1.1: plugins that see cancels and log through the worker)
    /// [default: any 0.1.x]
    #[arg(long, value_name = "VERSION")]
    require_plugin_api: Option<String>,
    /// Load and initialise the plugin, then exit: 0 and nothing printed, or
    /// its one-line error and 3 (what `powerhose` runs before starting).
    #[arg(long, hide = true)]
    check_plugin: bool,
    /// Verbose logs, and full plugin load reports.
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    log: cli::LogArgs,
}

/// Runs the worker program with this command line (`args` includes the
/// program name, as `std::env::args_os` gives it) and returns its exit
/// status: 0 after a SIGTERM or SIGINT, 2 for a bad flag, 3 when the plugin
/// cannot be loaded, 1 for anything else. Never exits the process itself.
///
/// It takes over the process's signals (call it before starting any other
/// thread): SIGTERM and SIGINT stop it, and every thread but one of its own
/// has them blocked, so they never interrupt a ZeroMQ call.
pub fn worker_main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match WorkerArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            // --help and --version land here too, and print to stdout.
            let _ = e.print();
            return e.exit_code();
        }
    };
    if let Err(e) = args.log.init(args.debug) {
        return cli::report("powerhose-worker", &e, args.debug);
    }
    // Before any other thread: signals must not interrupt ZeroMQ calls.
    if let Err(e) = crate::sys::route_process_signals() {
        return cli::report("powerhose-worker", &e, args.debug);
    }
    match run(&args) {
        Ok(()) => 0,
        Err(e) => cli::report("powerhose-worker", e.as_ref(), args.debug),
    }
}

fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    // Flags first: a bad --params is exit 2 whether or not the plugin is found.
    let params = cli::parse_params(args.params.as_deref().unwrap_or(""))?;
    let curve = args.curve.credentials()?;
    let path = plugin::locate(&args.plugin, args.plugin_dir.as_deref())?;
    if let Some(required) = &args.require_plugin_api {
        match plugin::parse_version(required) {
            Some(v) if plugin::parse_version(plugin::HOST_API).is_some_and(|host| v <= host) => {}
            Some(_) => anyhow::bail!(crate::Error::BadFlag(format!(
                "--require-plugin-api {required}: this worker knows plugin-api {} at most",
                plugin::HOST_API
            ))),
            None => anyhow::bail!(crate::Error::BadFlag(format!(
                "--require-plugin-api {required}: not a version (major.minor.patch)"
            ))),
        }
    }
    let loaded = plugin::LoadedPlugin::load_requiring(&path, &params, args.require_plugin_api.as_deref())?;
    if args.check_plugin {
        return Ok(());
    }
    tracing::info!(
        "loaded plugin {} {} (plugin-api {}) from {}",
        loaded.name,
        loaded.version,
        loaded.api_version,
        path.display()
    );
    let mut options = worker::WorkerOptions::new(String::new());
    options.backends = match args.backend.as_slice() {
        [] => vec![endpoint::default_backend()?],
        given => given.to_vec(),
    };
    options.service = args.service.clone();
    options.heartbeat_interval = Duration::from_millis(args.heartbeat_ms.max(1));
    options.liveness = args.liveness.max(1);
    options.exit_on_broker_loss = args.exit_on_broker_loss;
    args.lifecycle.apply(&mut options)?;
    options.max_message_bytes = args.max_message_bytes.max(0) as usize;
    options.io_cpu = args.io_cpu;
    options.curve = curve;
    worker::serve(loaded, &options, &Wakeup::new()?.on_terminate()?)?;
    Ok(())
}
