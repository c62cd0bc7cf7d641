//! `powerhose-broker`: binds the front (clients) and back (workers) endpoints and
//! routes jobs; `--check`, `--status [--watch]` and `--purge-ghosts` are for operators.

use std::time::Duration;

use clap::Parser;
use powerhose::{broker, cli, endpoint, ghosts, health, protocol, wakeup::Wakeup, Client, Error};

#[derive(Parser, Debug)]
#[command(version, about = "Route jobs from clients to powerhose workers")]
struct Args {
    /// Endpoint for clients; repeated, each is served (one ipc:// or tcp://
    /// at most, and unix:// ones) [default: unix://<runtime dir>/front.sock,
    /// and ipc://<runtime dir>/front.ipc for ZeroMQ clients]; with --check
    /// or --status, repeat it to look at every broker of a deployment
    #[arg(long)]
    frontend: Vec<String>,
    /// Endpoint for workers [default: unix://<runtime dir>/back.sock]
    #[arg(long)]
    backend: Option<String>,
    /// Timeout for Powerhose-format jobs (they carry none), in milliseconds.
    #[arg(long, default_value_t = protocol::LEGACY_TIMEOUT.as_millis() as u64)]
    legacy_timeout_ms: u64,
    #[command(flatten)]
    broker: cli::BrokerArgs,
    #[command(flatten)]
    curve: cli::CurveServerArgs,
    /// With --check or --status against a broker started with
    /// --curve-secret: its public certificate (--curve-secret is then this
    /// side's secret) [default: the --curve-secret file, for its owner]
    #[arg(long, value_name = "FILE", requires = "curve_secret")]
    curve_server: Option<std::path::PathBuf>,
    /// Check the broker on --frontend, Nagios style: one line; exit 0 OK,
    /// 1 WARNING (no worker), 2 CRITICAL (no answer), 3 UNKNOWN (bad input).
    #[arg(long, conflicts_with_all = ["status", "purge_ghosts"])]
    check: bool,
    /// Print the broker's status: services, workers, counters, latency.
    #[arg(long, conflicts_with = "purge_ghosts")]
    status: bool,
    /// With --status: JSON instead of a table.
    #[arg(long, requires = "status")]
    json: bool,
    /// With --status: ask again every --interval, redrawing the table in
    /// place on a terminal (q or Ctrl-C quits), else one report after
    /// another (JSON: one a line); a broker gone shows "no answer".
    #[arg(long, requires = "status")]
    watch: bool,
    /// With --watch: seconds between reports.
    #[arg(long, requires = "watch", default_value_t = 1.0)]
    interval: f64,
    /// Stop broker processes of this user on --frontend that are not the one
    /// answering PING, tried 3 times within --timeout (SIGTERM, then SIGKILL
    /// after --grace); stopped ones only with --force.
    #[arg(long)]
    purge_ghosts: bool,
    /// With --purge-ghosts: only report what would be done.
    #[arg(long, requires = "purge_ghosts")]
    dry_run: bool,
    /// With --purge-ghosts: also kill ghosts that are stopped (SIGSTOP, ^Z,
    /// a debugger), which are spared otherwise since they may be resumed.
    #[arg(long, requires = "purge_ghosts")]
    force: bool,
    /// Seconds to wait for the broker's answer (--check, --status, --purge-ghosts).
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Seconds a ghost gets to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Verbose logs.
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    log: cli::LogArgs,
}

fn seconds(s: f64, flag: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| Error::BadFlag(format!("{flag} must be a non-negative number of seconds")))
}

/// Credentials for --check and --status: this side's secret and the broker's public key.
fn credentials(args: &Args) -> Result<Option<powerhose::auth::CurveClient>, Error> {
    let Some(secret) = &args.curve.curve_secret else { return Ok(None) };
    let server = args.curve_server.as_ref().unwrap_or(secret);
    powerhose::auth::CurveClient::from_files(secret, server).map(Some)
}

fn run(args: &Args) -> anyhow::Result<i32> {
    let timeout = seconds(args.timeout, "--timeout")?;
    if args.watch {
        return watch(args, timeout);
    }
    if args.status && args.frontend.len() > 1 {
        return status_of_each(args, timeout);
    }
    // Served: every --frontend; asked (--status, --purge-ghosts): the first.
    let (frontend, more_frontends) = match args.frontend.split_first() {
        None => (endpoint::default_frontend()?, vec![endpoint::default_zmq_frontend()?]),
        Some((first, more)) => (first.clone(), more.to_vec()),
    };
    if args.status {
        let status = Client::connect_with(&frontend, credentials(args)?.as_ref())?.status(timeout)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", health::format_status(&status));
        }
        return Ok(0);
    }
    if args.purge_ghosts {
        let grace = seconds(args.grace, "--grace")?;
        ghosts::purge(&frontend, timeout, grace, args.dry_run, args.force, &mut std::io::stdout().lock())?;
        return Ok(0);
    }
    let backend = args.backend.clone().map_or_else(endpoint::default_backend, Ok)?;
    let mut options = broker::BrokerOptions::new(frontend, backend);
    options.more_frontends = more_frontends;
    options.config = args.broker.config();
    options.max_message_bytes = args.broker.max_message_bytes;
    options.io_cpu = args.broker.io_cpu;
    options.legacy_timeout = Duration::from_millis(args.legacy_timeout_ms);
    options.curve = args.curve.server()?;
    options.insecure = args.curve.insecure;
    options.metrics = args.broker.metrics_addr()?;
    broker::run_broker(options, &Wakeup::new()?.on_terminate()?)?;
    Ok(0)
}

/// `--status --watch`, until Ctrl-C (or `q` on a terminal).
fn watch(args: &Args, timeout: Duration) -> anyhow::Result<i32> {
    let interval = seconds(args.interval, "--interval")?;
    if interval.is_zero() {
        return Err(Error::BadFlag("--interval must be more than 0 seconds".into()).into());
    }
    let frontend = match args.frontend.as_slice() {
        [] => endpoint::default_frontend()?,
        [one] => one.clone(),
        _ => return Err(Error::BadFlag("--watch watches one broker: give one --frontend".into()).into()),
    };
    let options =
        powerhose::watch::WatchOptions { frontend, curve: credentials(args)?, interval, timeout, json: args.json };
    powerhose::watch::watch(&options, &Wakeup::new()?.on_terminate()?)?;
    Ok(0)
}

/// `--status` with several `--frontend`s: each broker's, headed by its
/// endpoint (JSON: an array of `{"frontend", "status"}` or `{"frontend",
/// "error"}`); exit 1 if any did not answer.
fn status_of_each(args: &Args, timeout: Duration) -> anyhow::Result<i32> {
    let curve = credentials(args)?;
    let mut all = Vec::new();
    let mut failed = false;
    for frontend in &args.frontend {
        let status = Client::connect_with(frontend, curve.as_ref()).and_then(|c| c.status(timeout));
        failed |= status.is_err();
        if args.json {
            all.push(match status {
                Ok(s) => serde_json::json!({ "frontend": frontend, "status": s }),
                Err(e) => serde_json::json!({ "frontend": frontend, "error": e.to_string() }),
            });
        } else {
            println!("== {frontend}");
            match status {
                Ok(s) => println!("{}", health::format_status(&s)),
                Err(e) => println!("no answer: {e}\n"),
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(i32::from(failed))
}

/// `--check` answers in Nagios terms whatever goes wrong, bad flags included.
/// It creates nothing, not even the runtime directory of the default endpoint.
fn check(args: &Args) -> i32 {
    let frontends = match args.frontend.as_slice() {
        [] => vec![endpoint::default_frontend_path()],
        given => given.to_vec(),
    };
    let (state, line) = match (seconds(args.timeout, "--timeout"), credentials(args)) {
        (Ok(timeout), Ok(curve)) => health::check_many(&frontends, curve.as_ref(), timeout),
        (Err(e), _) | (_, Err(e)) => (health::Nagios::Unknown, format!("UNKNOWN - {e}")),
    };
    println!("{line}");
    state as i32
}

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if std::env::args().any(|a| a == "--check") && e.use_stderr() => {
            let first =
                e.to_string().lines().next().unwrap_or("bad arguments").trim_start_matches("error: ").to_string();
            println!("UNKNOWN - {first}");
            std::process::exit(health::Nagios::Unknown as i32);
        }
        Err(e) => e.exit(),
    };
    if args.check {
        std::process::exit(check(&args));
    }
    if let Err(e) = args.log.init(args.debug) {
        std::process::exit(cli::report("powerhose-broker", &e, args.debug));
    }
    if let Err(e) = powerhose::sys::route_process_signals() {
        std::process::exit(cli::report("powerhose-broker", &e, args.debug));
    }
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => std::process::exit(cli::report("powerhose-broker", e.as_ref(), args.debug)),
    }
}
