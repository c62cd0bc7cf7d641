//! A broker and its worker processes run as one unit: what the `powerhose`
//! command runs, and what an application embeds with [`Cluster::builder`].
//!
//! The broker runs on a thread of this process; a supervisor thread starts
//! the workers (the `powerhose-worker` executable, see [`find_worker_exe`]),
//! replaces those that die, reloads and scales them on request.

mod builder;
mod policy;
#[cfg(test)]
mod policy_tests;
mod scale;
mod supervisor;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::broker::{state::Config, Broker, BrokerOptions, ControlSink, Inbox};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::protocol::Control;
use crate::wakeup::Wakeup;
use crate::worker::WorkerOptions;
pub use builder::ClusterBuilder;
use supervisor::{Spawner, Supervisor};

/// Name of the worker executable looked up by [`find_worker_exe`].
pub const WORKER_EXE: &str = "powerhose-worker";

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
    /// CURVE on the broker's tcp endpoints (`--curve-secret` and the
    /// allow-lists). This cluster's own workers and [`Cluster::client`] use
    /// the broker's key pair: whoever holds its secret is its owner.
    pub curve: Option<crate::auth::CurveServer>,
    /// Allow a tcp endpoint the network can reach without CURVE.
    pub insecure: bool,
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
            backend: crate::endpoint::default_backend()?,
            broker: Config::default(),
            worker,
            worker_exe: None,
            start_timeout: Duration::from_secs(60),
            stop_grace: None,
            max_workers: 4 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            max_message_bytes: crate::protocol::MAX_MESSAGE_BYTES as i64,
            debug: false,
            curve: None,
            insecure: false,
        })
    }

    fn worker_args(&self, plugin: &Path) -> Vec<OsString> {
        let secs = |d: Option<Duration>| d.map_or("0".to_string(), |d| d.as_secs_f64().to_string());
        let w = &self.worker;
        let mut args: Vec<OsString> =
            vec!["--plugin".into(), plugin.into(), "--backend".into(), (&self.backend).into()];
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
        if self.debug {
            args.push("--debug".into());
        }
        // Over ipc the socket file is the credential; over tcp, the broker's own key.
        if let Some(curve) = self.curve.as_ref().filter(|_| !self.backend.starts_with("ipc://")) {
            args.extend(curve.owner_credentials().args().into_iter().map(OsString::from));
        }
        args
    }
}

/// The worker executable: `given`, else `powerhose-worker` found by [`find_executable`].
pub fn find_worker_exe(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => find_executable(WORKER_EXE),
    }
}

/// One of powerhose's executables: next to the current executable (or in its
/// parent directory, for test and example binaries in `target/*/deps` and
/// `target/*/examples`), else on `PATH`.
pub fn find_executable(name: &str) -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        searched.push(dir.join(name));
        if let Some(parent) = dir.parent() {
            searched.push(parent.join(name));
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        searched.push(dir.join(name));
    }
    match searched.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(Error::ExecutableNotFound { name: name.to_string(), searched }),
    }
}

/// A running cluster. Dropping it stops everything (like [`Cluster::stop`]).
pub struct Cluster {
    frontend: String,
    plugin_path: PathBuf,
    stop: Wakeup,
    control: ControlSink,
    /// Triggered when the supervisor ends on its own (it gave up).
    done: Wakeup,
    thread: Option<JoinHandle<Result<()>>>,
    /// The owner's credentials when the broker takes CURVE.
    curve: Option<crate::auth::CurveClient>,
}

impl Cluster {
    /// A builder for a cluster running `plugin` (a path, or a bare name to search for).
    pub fn builder(plugin: impl Into<String>) -> ClusterBuilder {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let options = ClusterOptions::new(plugin).and_then(|mut o| {
            let dir = crate::endpoint::runtime_dir()?;
            let tag = format!("cluster-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            o.frontend = format!("ipc://{}", dir.join(format!("{tag}-front.ipc")).display());
            o.backend = format!("ipc://{}", dir.join(format!("{tag}-back.ipc")).display());
            Ok(o)
        });
        ClusterBuilder { options }
    }

    /// Checks the plugin once (in a child process), binds the broker, starts
    /// the workers and returns once every worker has registered. A plugin
    /// that cannot be loaded or initialised makes this return its one-line
    /// error before anything starts.
    pub fn start(options: ClusterOptions) -> Result<Cluster> {
        if options.workers == 0 {
            return Err(Error::NoWorkers);
        }
        if options.workers > options.max_workers {
            return Err(Error::BadFlag(format!(
                "--workers {} is over --max-workers {}",
                options.workers, options.max_workers
            )));
        }
        let located = crate::plugin::locate(&options.plugin, options.plugin_dir.as_deref())?;
        let plugin_path = located.canonicalize().map_err(Error::io(format!("resolving {}", located.display())))?;
        let spawner =
            Spawner { exe: find_worker_exe(options.worker_exe.as_deref())?, args: options.worker_args(&plugin_path) };
        crate::plugin::check_in_child(&spawner.exe, &spawner.args, options.start_timeout)?;
        let (tx, rx) = mpsc::channel();
        let control = ControlSink { tx, wake: Wakeup::new()?, max_workers: options.max_workers };
        let mut broker_options = BrokerOptions::new(&options.frontend, &options.backend);
        broker_options.config = options.broker.clone();
        // Unnamed jobs go to this pool's service (else to the first to
        // register, which is this pool's own workers anyway).
        if broker_options.config.default_service.is_none() {
            broker_options.config.default_service = options.worker.service.clone();
        }
        broker_options.control = Some(control.clone());
        broker_options.max_message_bytes = options.max_message_bytes;
        broker_options.io_cpu = options.worker.io_cpu;
        broker_options.curve = options.curve.clone();
        broker_options.insecure = options.insecure;
        let broker = Broker::bind(broker_options)?;

        let (notices, notices_rx) = mpsc::channel();
        let inbox = Inbox { rx: notices_rx, wake: Wakeup::new()? };
        let mut sup = Supervisor::new(spawner, options.workers, notices, inbox.wake.clone());
        sup.start_timeout = options.start_timeout;
        sup.max_workers = options.max_workers;
        sup.stop_grace = options.stop_grace.unwrap_or_else(|| {
            options.worker.hard_timeout.or(options.worker.timeout).unwrap_or(Duration::from_secs(30))
                + Duration::from_secs(2)
        });
        let stop = sup.broker_stop.clone();
        sup.broker = Some(
            std::thread::Builder::new()
                .name("broker".into())
                .spawn(move || {
                    crate::sys::block_process_signals();
                    broker.run(&stop, Some(&inbox))
                })
                .map_err(Error::io("starting the broker thread"))?,
        );

        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, done, wake) = (Wakeup::new()?, Wakeup::new()?, control.wake.clone());
        let thread = {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::Builder::new()
                .name("supervisor".into())
                .spawn(move || {
                    crate::sys::block_process_signals();
                    // Workers are forked from this thread: PDEATHSIG follows it.
                    // SIGCHLD is watched before the first fork: a worker that
                    // dies as soon as it is started must not go unnoticed.
                    let started = Wakeup::new()
                        .and_then(|w| w.on_signals(&[signal_hook::consts::SIGCHLD]))
                        .and_then(|children| sup.start_workers().map(|()| children));
                    let children = match started {
                        Ok(children) => children,
                        Err(e) => {
                            let _ = sup.shutdown();
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let served = sup.serve(&children, &stop, &rx, &wake);
                    let stopped = sup.shutdown();
                    done.trigger();
                    served.and(stopped)
                })
                .map_err(Error::io("starting the supervisor thread"))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => return Err(Error::ThreadDiedAtStart { thread: "supervisor" }),
        }
        let curve = options.curve.as_ref().map(crate::auth::CurveServer::owner_credentials);
        Ok(Cluster { frontend: options.frontend, plugin_path, stop, control, done, thread: Some(thread), curve })
    }

    /// A client connected to this cluster's front (with the broker's own
    /// key when it takes CURVE: the owner's rights).
    pub fn client(&self) -> Result<Client> {
        Client::connect_with(&self.frontend, self.curve.as_ref())
    }

    /// The endpoint clients connect to.
    pub fn frontend(&self) -> &str {
        &self.frontend
    }

    /// The plugin file the workers load, resolved to an absolute path.
    pub fn plugin_path(&self) -> &Path {
        &self.plugin_path
    }

    /// Replaces every worker, one at a time, loading the plugin file afresh
    /// (in the background; `--status` shows the versions).
    pub fn reload(&self) {
        self.request(Control::Reload);
    }

    /// Runs `workers` workers from now on.
    pub fn scale(&self, workers: usize) {
        self.request(Control::Scale { workers: Some(workers), delta: None });
    }

    /// Adds (or, negative, removes) workers.
    pub fn scale_by(&self, delta: i64) {
        self.request(Control::Scale { workers: None, delta: Some(delta) });
    }

    fn request(&self, request: Control) {
        if self.control.tx.send(request).is_ok() {
            self.control.wake.trigger();
        }
    }

    /// Stops intake, lets in-flight jobs finish, stops the workers and the
    /// broker (which removes its socket files). Returns the supervisor's error
    /// if it had given up on its own.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        self.stop.trigger();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::ThreadPanicked { thread: "supervisor" }),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Starts a cluster, prints a ready line, serves until SIGTERM/SIGINT; SIGHUP
/// reloads, SIGTTIN adds a worker, SIGTTOU removes one.
pub fn run_cluster(options: ClusterOptions, shutdown: &Wakeup) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGTTIN, SIGTTOU};
    let (workers, frontend) = (options.workers, options.frontend.clone());
    // Handlers first: a signal sent as soon as "ready" is printed must not
    // meet the default action (SIGTTIN and SIGTTOU would stop the process).
    let (hup, more, fewer) = (
        Wakeup::new()?.on_signals(&[SIGHUP])?,
        Wakeup::new()?.on_signals(&[SIGTTIN])?,
        Wakeup::new()?.on_signals(&[SIGTTOU])?,
    );
    let cluster = Cluster::start(options)?;
    println!("powerhose ready: {workers} workers running {} on {frontend}", cluster.plugin_path.display());
    loop {
        let mut items =
            [shutdown.poll_item(), cluster.done.poll_item(), hup.poll_item(), more.poll_item(), fewer.poll_item()];
        crate::wakeup::poll(&mut items, -1)?;
        if items[0].is_readable() || items[1].is_readable() {
            return cluster.stop();
        }
        if hup.clear() > 0 {
            cluster.reload();
        }
        let delta = more.clear() as i64 - fewer.clear() as i64;
        if delta != 0 {
            cluster.scale_by(delta);
        }
    }
}
