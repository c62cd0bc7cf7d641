//! Helpers shared by the binaries: logging set-up (`logs`), `--params` parsing, the
//! one-line error report with its exit code, and the worker program itself
//! ([`worker_main`]).

use std::borrow::Cow;
use std::time::Duration;

pub use crate::EXIT_BAD_FLAG;

use crate::broker::state::Config;
use crate::error::Error;
use crate::protocol;

mod logs;
mod worker;
pub use logs::{init_tracing, log_format, note, warn, LogArgs, LogFormat};
pub use worker::{worker_main, WorkerArgs};

/// Routing and liveness flags shared by `powerhose` and `powerhose-broker`.
#[derive(clap::Args, Clone, Debug)]
pub struct BrokerArgs {
    /// Jobs that may wait per service before new ones are refused as busy
    /// (one client: half of them).
    #[arg(long, default_value_t = protocol::MAX_QUEUE)]
    pub max_queue: usize,
    /// Bytes (headers and data) that waiting jobs may hold in all before new
    /// ones are refused as busy (one client: half of them).
    #[arg(long, default_value_t = protocol::MAX_QUEUE_BYTES)]
    pub max_queue_bytes: usize,
    /// The longest timeout a job may ask for, in seconds (longer ones are cut).
    #[arg(long, default_value_t = protocol::MAX_TIMEOUT.as_secs_f64())]
    pub max_timeout: f64,
    /// Heartbeat interval between broker and workers, in milliseconds.
    #[arg(long, default_value_t = protocol::HEARTBEAT_INTERVAL.as_millis() as u64)]
    pub heartbeat_ms: u64,
    /// Missed heartbeats before a worker (or the broker) counts as dead.
    #[arg(long, default_value_t = protocol::LIVENESS)]
    pub liveness: u32,
    /// How long a job waits for a worker to appear before "no worker", in milliseconds.
    #[arg(long, default_value_t = protocol::NO_WORKER_GRACE.as_millis() as u64)]
    pub no_worker_grace_ms: u64,
    /// Busy workers whose jobs are short get jobs ahead, as long as no job
    /// waits behind more than this much expected work, in milliseconds
    /// (0: one job per worker at a time).
    #[arg(long, default_value_t = protocol::PREFETCH_BUDGET.as_secs_f64() * 1000.0)]
    pub prefetch_budget_ms: f64,
    /// Messages larger than this (all frames together) are refused: counted,
    /// and a client's answered with an error; past twice this, ZeroMQ
    /// disconnects the sender unread. Workers answer an error instead of a
    /// larger result.
    #[arg(long, default_value_t = protocol::MAX_MESSAGE_BYTES as i64)]
    pub max_message_bytes: i64,
    /// Run the broker (and under `powerhose`, the workers' I/O threads) on
    /// this CPU, leaving the job threads every CPU: fewer cross-CPU wake-ups
    /// on small machines [default: no pinning]
    #[arg(long)]
    pub io_cpu: Option<usize>,
    /// Where a job that names no service goes (Powerhose 0.7 clients never
    /// name one) [default: under `powerhose`, its workers' service; else the
    /// first service to register, kept for the broker's life]
    #[arg(long)]
    pub default_service: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics: an IP address and
    /// port, such as 127.0.0.1:9464 (loopback unless --metrics-allow-remote)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Let --metrics listen where other machines can reach it: it shows job
    /// counts, timings, service names and the broker's memory and CPU (no
    /// job data, no keys or identities), to anyone who can connect.
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
}

/// Job time limits and worker age, shared by `powerhose` and `powerhose-worker`
/// (seconds; 0 turns a limit off).
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerLifecycleArgs {
    /// A job running longer is answered "timeout" and its handler's stack is logged.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// A handler still running this long makes its worker exit (to be replaced)
    /// [default: twice --timeout]
    #[arg(long)]
    pub hard_timeout: Option<f64>,
    /// A worker leaves after this many seconds (between jobs) and is replaced.
    #[arg(long, default_value_t = 0.0)]
    pub max_age: f64,
    /// Up to this many seconds are added at random to --max-age, so workers
    /// do not all leave at once.
    #[arg(long, default_value_t = 0.0)]
    pub max_age_delta: f64,
    /// When jobs queue at the broker, a worker may hold a finished result up
    /// to this many milliseconds to send it with the next ones (fewer
    /// wake-ups per job under load; 0: send each at once).
    #[arg(long, default_value_t = protocol::DEFAULT_COALESCE.as_secs_f64() * 1000.0)]
    pub coalesce_ms: f64,
    /// Let a worker's I/O threads preempt its job thread on every wake-up
    /// (the kernel's default). Without it they run under SCHED_BATCH: on a
    /// busy machine a message waits up to a time slice and messages leave
    /// in batches, which gives CPU-bound jobs several % more throughput.
    #[arg(long)]
    pub preemptive_io: bool,
    /// No lane: by default a worker of a unix:// broker also opens a lane
    /// beside it, where local clients send its service's jobs straight to
    /// it with no broker hop (jobs with a priority still go through the
    /// broker); with this flag every job goes through the broker.
    #[arg(long)]
    pub no_lanes: bool,
}

impl WorkerLifecycleArgs {
    /// Sets these flags' values in `options`; a negative or unrepresentable
    /// number is an [`Error::BadFlag`].
    pub fn apply(&self, options: &mut crate::worker::WorkerOptions) -> Result<(), Error> {
        let secs = |v: f64, flag: &str| -> Result<Option<Duration>, Error> {
            let d = Duration::try_from_secs_f64(v)
                .map_err(|_| Error::BadFlag(format!("{flag} must be a non-negative number of seconds")))?;
            Ok((!d.is_zero()).then_some(d))
        };
        options.timeout = secs(self.timeout, "--timeout")?;
        options.hard_timeout = match self.hard_timeout {
            Some(v) => secs(v, "--hard-timeout")?,
            None => options.timeout.map(|t| t * 2),
        };
        options.max_age = secs(self.max_age, "--max-age")?;
        options.max_age_delta = secs(self.max_age_delta, "--max-age-delta")?.unwrap_or_default();
        options.coalesce = Duration::try_from_secs_f64(self.coalesce_ms / 1000.0)
            .map_err(|_| Error::BadFlag("--coalesce-ms must be a non-negative number of milliseconds".into()))?;
        options.preemptive_io = self.preemptive_io;
        options.lanes = !self.no_lanes;
        Ok(())
    }
}

impl BrokerArgs {
    /// `--metrics`, checked (a bad or non-loopback address is an [`Error::BadFlag`]).
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, Error> {
        self.metrics.as_deref().map(|text| crate::metrics::parse_addr(text, self.metrics_allow_remote)).transpose()
    }

    /// The broker's routing tunables from these flags.
    pub fn config(&self) -> Config {
        Config {
            max_queue: self.max_queue,
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms.max(1)),
            liveness: self.liveness.max(1),
            no_worker_grace: Duration::from_millis(self.no_worker_grace_ms),
            prefetch_budget: Duration::try_from_secs_f64(self.prefetch_budget_ms / 1000.0).unwrap_or_default(),
            max_queue_bytes: self.max_queue_bytes,
            max_timeout: Duration::try_from_secs_f64(self.max_timeout).unwrap_or(protocol::MAX_TIMEOUT),
            default_service: self.default_service.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// The broker's CURVE flags, shared by `powerhose` and `powerhose-broker`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CurveServerArgs {
    /// The broker's secret certificate (`NAME.key_secret` from
    /// powerhose-keygen): every tcp endpoint takes CURVE keys only.
    #[arg(long, value_name = "FILE")]
    pub curve_secret: Option<std::path::PathBuf>,
    /// Public certificates (`*.key`) of the clients: they submit jobs and ping.
    #[arg(long, value_name = "DIR", requires = "curve_secret")]
    pub allow_clients: Option<std::path::PathBuf>,
    /// Public certificates of the workers.
    #[arg(long, value_name = "DIR", requires = "curve_secret")]
    pub allow_workers: Option<std::path::PathBuf>,
    /// Public certificates of the operators: clients that may also reload,
    /// scale and see each worker in --status.
    #[arg(long, value_name = "DIR", requires = "curve_secret")]
    pub allow_operators: Option<std::path::PathBuf>,
    /// Allow a tcp endpoint other machines can reach without --curve-secret:
    /// anyone who connects may submit jobs or register as a worker.
    #[arg(long, conflicts_with = "curve_secret")]
    pub insecure: bool,
}

impl CurveServerArgs {
    /// The broker's CURVE set-up, if `--curve-secret` was given.
    pub fn server(&self) -> Result<Option<crate::auth::CurveServer>, Error> {
        let Some(secret) = &self.curve_secret else { return Ok(None) };
        let mut server = crate::auth::CurveServer::from_file(secret)?;
        server.allow_clients.clone_from(&self.allow_clients);
        server.allow_workers.clone_from(&self.allow_workers);
        server.allow_operators.clone_from(&self.allow_operators);
        Ok(Some(server))
    }
}

/// A client's or worker's CURVE flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CurveClientArgs {
    /// This side's secret certificate (`NAME.key_secret`), for a broker
    /// started with --curve-secret.
    #[arg(long, value_name = "FILE", requires = "curve_server")]
    pub curve_secret: Option<std::path::PathBuf>,
    /// The broker's public certificate (its `NAME.key`).
    #[arg(long, value_name = "FILE", requires = "curve_secret")]
    pub curve_server: Option<std::path::PathBuf>,
}

impl CurveClientArgs {
    /// The credentials, if the flags were given.
    pub fn credentials(&self) -> Result<Option<crate::auth::CurveClient>, Error> {
        match (&self.curve_secret, &self.curve_server) {
            (Some(secret), Some(server)) => Ok(Some(crate::auth::CurveClient::from_files(secret, server)?)),
            _ => Ok(None),
        }
    }
}

/// `--params`: JSON as is, or Powerhose's `key:value|key2:value2` form turned
/// into a JSON object of strings.
pub fn parse_params(text: &str) -> Result<String, Error> {
    let trimmed = text.trim();
    if trimmed.is_empty() || serde_json::from_str::<serde_json::Value>(trimmed).is_ok() {
        return Ok(trimmed.to_string());
    }
    if trimmed.starts_with(['{', '[', '"']) {
        let err = serde_json::from_str::<serde_json::Value>(trimmed).unwrap_err();
        return Err(Error::BadFlag(format!("--params is not valid JSON: {err}")));
    }
    let mut map = serde_json::Map::new();
    for pair in trimmed.split('|') {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| Error::BadFlag(format!("--params: {pair:?} is neither JSON nor key:value")))?;
        map.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    Ok(serde_json::Value::Object(map).to_string())
}

/// What `powerhose-client run` writes for a job's `result`: the bytes for
/// stdout and, instead of them, a warning for stderr. Hex is one line. A
/// terminal gets text ended by a newline (the shell prompt stays on its own
/// line) and no binary bytes (they garble it); a pipe or file gets the
/// result exactly.
pub fn render_result(result: &[u8], print_hex: bool, stdout_is_terminal: bool) -> (Cow<'_, [u8]>, Option<String>) {
    if print_hex {
        let mut text: String = result.iter().map(|b| format!("{b:02x}")).collect();
        text.push('\n');
        return (Cow::Owned(text.into_bytes()), None);
    }
    if !stdout_is_terminal {
        return (Cow::Borrowed(result), None);
    }
    if std::str::from_utf8(result).is_err() {
        let n = result.len();
        return (
            Cow::Borrowed(&[]),
            Some(format!("the result is {n} bytes of binary data; use --print-hex or redirect stdout")),
        );
    }
    if result.is_empty() || !result.ends_with(b"\n") {
        let mut line = result.to_vec();
        line.push(b'\n');
        return (Cow::Owned(line), None);
    }
    (Cow::Borrowed(result), None)
}

/// Prints `PROGRAM: error: MESSAGE` (plus details under `--debug`; a JSON
/// record under `--log-format json`) and returns
/// the exit code for it: [`crate::EXIT_PLUGIN`] for plugin trouble,
/// [`EXIT_BAD_FLAG`] for an unusable flag value, 1 otherwise.
pub fn report(program: &str, err: &(dyn std::error::Error + 'static), debug: bool) -> i32 {
    let line = err.to_string();
    // Under --debug the details follow: no need to point at them.
    let line = if debug { line.replace(crate::plugin::DEBUG_HINT, "") } else { line };
    let details = match err.downcast_ref::<Error>() {
        Some(Error::PluginLoad { details, .. } | Error::PluginCheck { details, .. }) if debug => {
            Some(details.trim_end()).filter(|d| !d.is_empty())
        }
        _ => None,
    };
    logs::error_line(program, &line, details);
    match err.downcast_ref::<Error>() {
        Some(Error::PluginLoad { .. } | Error::PluginCheck { .. }) => crate::EXIT_PLUGIN,
        Some(Error::BadFlag(_) | Error::PoolFile { .. }) => EXIT_BAD_FLAG,
        Some(Error::PluginNotFound { .. } | Error::PluginInit { .. }) => crate::EXIT_PLUGIN,
        Some(Error::WorkerStart { code: Some(code), .. }) if *code == crate::EXIT_PLUGIN => crate::EXIT_PLUGIN,
        Some(Error::RespawnGaveUp { last, .. }) if last.contains("plugin") => crate::EXIT_PLUGIN,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_accept_json_and_powerhose_pairs() {
        assert_eq!(parse_params(r#"{"a": 1}"#).unwrap(), r#"{"a": 1}"#);
        assert_eq!(parse_params("").unwrap(), "");
        let v: serde_json::Value = serde_json::from_str(&parse_params("key:value|k2:v:2").unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"key": "value", "k2": "v:2"}));
        assert!(parse_params("{broken").unwrap_err().to_string().contains("not valid JSON"));
        assert!(parse_params("novalue").is_err());
    }

    #[test]
    fn results_are_shown_for_where_stdout_goes() {
        let shown = |r: &'static [u8], hex, tty| {
            let (bytes, warning) = render_result(r, hex, tty);
            (bytes.into_owned(), warning)
        };
        // A pipe or a file gets the bytes exactly, binary or not.
        assert_eq!(shown(b"hi", false, false), (b"hi".to_vec(), None));
        assert_eq!(shown(b"\xff\x00", false, false), (b"\xff\x00".to_vec(), None));
        // A terminal gets text as a line, and a warning instead of binary.
        assert_eq!(shown(b"hi", false, true), (b"hi\n".to_vec(), None));
        assert_eq!(shown(b"hi\n", false, true), (b"hi\n".to_vec(), None));
        let (bytes, warning) = shown(b"\xff\x00\x01", false, true);
        assert!(bytes.is_empty());
        assert_eq!(
            warning.as_deref(),
            Some("the result is 3 bytes of binary data; use --print-hex or redirect stdout")
        );
        // Hex is one line wherever it goes.
        assert_eq!(shown(b"\xff\x00", true, true), (b"ff00\n".to_vec(), None));
        assert_eq!(shown(b"\xff\x00", true, false), (b"ff00\n".to_vec(), None));
    }

    #[test]
    fn bad_flag_values_exit_2() {
        let err = parse_params("{bad json").unwrap_err();
        assert!(matches!(err, Error::BadFlag(_)), "{err:?}");
        assert_eq!(report("t", &err, false), EXIT_BAD_FLAG);
        let args = WorkerLifecycleArgs {
            timeout: -1.0,
            hard_timeout: None,
            max_age: 0.0,
            max_age_delta: 0.0,
            coalesce_ms: 0.0,
            preemptive_io: false,
            no_lanes: false,
        };
        let err = args.apply(&mut crate::worker::WorkerOptions::new("")).unwrap_err();
        assert!(matches!(err, Error::BadFlag(_)), "{err:?}");
    }
}
