//! A broker and its worker processes run as one unit: what the `powerhose`
//! command runs, and what an application embeds with [`Cluster::builder`].
//!
//! The broker runs on a thread of this process; a supervisor thread starts
//! the workers (the `powerhose-worker` executable, see [`find_worker_exe`]),
//! replaces those that die, reloads and scales them on request.

mod brokers;
mod builder;
mod options;
mod output;
mod plan;
#[cfg(test)]
mod plan_tests;
mod policy;
#[cfg(test)]
mod policy_tests;
#[cfg(feature = "tools")]
mod pool_file;
#[cfg(all(test, feature = "tools"))]
mod pool_file_tests;
#[cfg(feature = "tools")]
mod pools;
mod registry;
mod scale;
mod supervise;
mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::broker::ControlSink;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::protocol::Control;
use crate::wakeup::Wakeup;
use brokers::{local_broker, remote_brokers};
pub use builder::ClusterBuilder;
pub use options::ClusterOptions;
pub use plan::{plan, Change, PoolSpec};
#[cfg(feature = "tools")]
pub use pool_file::{PoolDefaults, PoolFile};
#[cfg(feature = "tools")]
pub use pools::{run_pools, Pools};
use supervise::SupervisorThread;
use supervisor::{Spawner, Supervisor};

/// Name of the worker executable looked up by [`find_worker_exe`].
pub const WORKER_EXE: &str = "powerhose-worker";

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
    control: ControlSink,
    running: SupervisorThread,
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
            // An embedded pool's clients are this process's: the local transport only.
            o.frontend = format!("{}{}", crate::local::SCHEME, dir.join(format!("{tag}-front.sock")).display());
            o.more_frontends.clear();
            o.backend = format!("{}{}", crate::local::SCHEME, dir.join(format!("{tag}-back.sock")).display());
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
        let exe = find_worker_exe(options.worker_exe.as_deref())?;
        let spawner =
            Spawner { exe, args: options.worker_args(&plugin_path), notify_socket: None, json_logs: options.json_logs };
        crate::plugin::check_in_child(&spawner.exe, &spawner.args, options.start_timeout)?;
        let (tx, rx) = mpsc::channel();
        let control = ControlSink { tx, wake: Wakeup::new()?, max_workers: options.max_workers };
        let broker_stop = Wakeup::new()?;
        let (registry, broker) = if options.connect.is_empty() {
            let (registry, broker) = local_broker(&options, &control, &broker_stop)?;
            (registry, Some(broker))
        } else {
            (remote_brokers()?, None)
        };
        let mut sup = Supervisor::new(spawner, options.workers, registry);
        // No broker here: the supervisor's loop is the pool's life.
        if broker.is_none() {
            sup.watchdog = options.watchdog.clone();
        }
        sup.broker_stop = broker_stop;
        sup.broker = broker;
        sup.start_timeout = options.start_timeout;
        sup.max_workers = options.max_workers;
        sup.stop_grace = options.stop_grace.unwrap_or_else(|| {
            options.worker.hard_timeout.or(options.worker.timeout).unwrap_or(Duration::from_secs(30))
                + Duration::from_secs(2)
        });
        let running = SupervisorThread::start(sup, rx, control.wake.clone(), "supervisor")?;
        let curve = options.curve.as_ref().map(crate::auth::CurveServer::owner_credentials);
        let frontend = if options.connect.is_empty() { options.frontend } else { String::new() };
        Ok(Cluster { frontend, plugin_path, control, running, curve })
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
        self.running.stop()
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
    let connect = options.connect.join(" ");
    let mut options = options;
    options.watchdog = crate::sys::notify::Watchdog::from_process_env();
    let cluster = Cluster::start(options)?;
    let place = if connect.is_empty() { format!("on {frontend}") } else { format!("for the brokers at {connect}") };
    println!("powerhose ready: {workers} workers running {} {place}", cluster.plugin_path.display());
    crate::sys::notify::notify_or_log(&format!("READY=1\nSTATUS={workers} workers {place}"));
    loop {
        let mut items = [
            shutdown.poll_item(),
            cluster.running.done.poll_item(),
            hup.poll_item(),
            more.poll_item(),
            fewer.poll_item(),
        ];
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
