//! What a cluster is started with: its options, their defaults, and the
//! command line its worker processes get from them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::state::Config;
use crate::error::Result;
use crate::worker::WorkerOptions;

/// Everything needed to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `--plugin` as given (path or bare name, see [`crate::plugin::locate`]).
    pub plugin: String,
    /// Another directory to search for a bare plugin name (`--plugin-dir`).
    pub plugin_dir: Option<PathBuf>,
    /// JSON (or `key:value|key2:value2`) handed to the plugin's init.
    pub params: Option<String>,
    /// How many workers to keep running.
    pub workers: usize,
    /// The endpoint clients connect to.
    pub frontend: String,
    /// More endpoints for clients (see [`BrokerOptions::more_frontends`]):
    /// by default the ZeroMQ `ipc://` one beside the local `frontend`.
    ///
    /// [`BrokerOptions::more_frontends`]: crate::broker::BrokerOptions::more_frontends
    pub more_frontends: Vec<String>,
    /// The endpoint the workers connect to.
    pub backend: String,
    /// The broker's routing tunables (its heartbeat and liveness also go to the workers).
    pub broker: Config,
    /// Job timeouts and max age of the workers (their backend, heartbeat and
    /// liveness come from this cluster's endpoints and broker settings).
    pub worker: WorkerOptions,
    /// The worker executable; found next to this one or on PATH when `None`.
    pub worker_exe: Option<PathBuf>,
    /// How long a starting cluster waits for all workers to register.
    pub start_timeout: Duration,
    /// Messages larger than this are refused (broker and workers).
    pub max_message_bytes: i64,
    /// How long stopping workers may take to finish their job before SIGKILL
    /// [default: the workers' hard timeout plus 2 s, else 32 s].
    pub stop_grace: Option<Duration>,
    /// No scale request (command or signal) goes beyond this many workers
    /// [default: four per CPU].
    pub max_workers: usize,
    /// Pass `--debug` to the workers: debug logging and plugin errors in full.
    pub debug: bool,
    /// Start the workers with `--log-format json`; their JSON lines are
    /// relayed with a `worker_pid` added (see the supervisor's output relay).
    pub json_logs: bool,
    /// CURVE on the broker's tcp endpoints (`--curve-secret` and the
    /// allow-lists). This cluster's own workers and [`Cluster::client`] use
    /// the broker's key pair: whoever holds its secret is its owner.
    pub curve: Option<crate::auth::CurveServer>,
    /// Allow a tcp endpoint the network can reach without CURVE.
    pub insecure: bool,
    /// Remote brokers' back endpoints (`--connect`): when set, the pool runs
    /// no broker of its own and its workers serve these (`frontend`,
    /// `backend`, `broker` and `curve` are unused; the workers' keys are
    /// `worker.curve`).
    pub connect: Vec<String>,
    /// systemd's watchdog to feed ([`Watchdog::from_process_env`] in
    /// `powerhose`; `None` by default): from the broker's loop, or with
    /// `connect`, from the supervisor's.
    ///
    /// [`Watchdog::from_process_env`]: crate::sys::notify::Watchdog::from_process_env
    pub watchdog: Option<crate::sys::notify::Watchdog>,
    /// Serve the broker's Prometheus metrics here (`--metrics`); none
    /// with `connect` (the brokers elsewhere serve their own).
    #[cfg(feature = "tools")]
    pub metrics: Option<std::net::SocketAddr>,
}

impl ClusterOptions {
    /// Defaults: one worker per CPU, endpoints in the private runtime directory.
    pub fn new(plugin: impl Into<String>) -> Result<Self> {
        let mut worker = WorkerOptions::new("");
        worker.timeout = Some(Duration::from_secs(30));
        worker.hard_timeout = Some(Duration::from_secs(60));
        Ok(ClusterOptions {
            plugin: plugin.into(),
            plugin_dir: None,
            params: None,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            frontend: crate::endpoint::default_frontend()?,
            more_frontends: vec![crate::endpoint::default_zmq_frontend()?],
            backend: crate::endpoint::default_backend()?,
            broker: Config::default(),
            worker,
            worker_exe: None,
            start_timeout: Duration::from_secs(60),
            stop_grace: None,
            max_workers: 4 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_message_bytes: crate::protocol::MAX_MESSAGE_BYTES as i64,
            debug: false,
            json_logs: false,
            curve: None,
            insecure: false,
            connect: Vec::new(),
            watchdog: None,
            #[cfg(feature = "tools")]
            metrics: None,
        })
    }

    /// The brokers this pool's workers serve: `connect`, else its own.
    pub fn worker_backends(&self) -> Vec<String> {
        if self.connect.is_empty() {
            vec![self.backend.clone()]
        } else {
            self.connect.clone()
        }
    }

    pub(super) fn worker_args(&self, plugin: &Path) -> Vec<OsString> {
        let secs = |d: Option<Duration>| d.map_or("0".to_string(), |d| d.as_secs_f64().to_string());
        let w = &self.worker;
        let mut args: Vec<OsString> = vec!["--plugin".into(), plugin.into()];
        for backend in self.worker_backends() {
            args.extend(["--backend".into(), backend.into()]);
        }
        for (flag, value) in [
            ("--heartbeat-ms", self.broker.heartbeat_interval.as_millis().to_string()),
            ("--liveness", self.broker.liveness.to_string()),
            ("--timeout", secs(w.timeout)),
            ("--hard-timeout", secs(w.hard_timeout)),
            ("--max-age", secs(w.max_age)),
            ("--max-age-delta", secs(Some(w.max_age_delta))),
            ("--coalesce-ms", (w.coalesce.as_secs_f64() * 1000.0).to_string()),
            ("--max-message-bytes", self.max_message_bytes.to_string()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        if let Some(params) = &self.params {
            args.extend(["--params".into(), params.into()]);
        }
        if let Some(service) = &w.service {
            args.extend(["--service".into(), service.into()]);
        }
        if let Some(cpu) = w.io_cpu {
            args.extend(["--io-cpu".into(), cpu.to_string().into()]);
        }
        if w.preemptive_io {
            args.push("--preemptive-io".into());
        }
        if !w.lanes {
            args.push("--no-lanes".into());
        }
        if self.debug {
            args.push("--debug".into());
        }
        // Over ipc the socket file is the credential; over tcp, the broker's
        // own key, or with remote brokers the workers' own.
        let owner_only = crate::auth::exposure::reach(&self.backend) == crate::auth::exposure::Reach::Owner;
        let own = self.curve.as_ref().filter(|_| self.connect.is_empty() && !owner_only);
        if let Some(curve) = own.map(crate::auth::CurveServer::owner_credentials).or_else(|| w.curve.clone()) {
            args.extend(curve.args().into_iter().map(OsString::from));
        }
        args
    }
}
