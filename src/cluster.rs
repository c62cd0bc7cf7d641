//! A broker and its worker processes run as one unit: what the `powerhose`
//! command runs, and what an application can embed with [`Cluster::start`].

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::broker::{state::Config, Broker, BrokerOptions};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// Name of the worker executable looked up by [`find_worker_exe`].
pub const WORKER_EXE: &str = "powerhose-worker";

/// Everything needed to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `--plugin` as given (path or bare name, see [`crate::plugin::locate`]).
    pub plugin: String,
    pub plugin_dir: Option<PathBuf>,
    /// JSON (or `key:value|key2:value2`) handed to the plugin's init.
    pub params: Option<String>,
    pub workers: usize,
    pub frontend: String,
    pub backend: String,
    pub broker: Config,
    /// The worker executable; found next to this one or on PATH when `None`.
    pub worker_exe: Option<PathBuf>,
    /// How long a starting cluster waits for all workers to register.
    pub start_timeout: Duration,
    /// How long stopping workers may take to finish their jobs before SIGKILL.
    pub stop_grace: Duration,
    pub debug: bool,
}

impl ClusterOptions {
    /// Defaults: one worker per CPU, endpoints in the private runtime directory.
    pub fn new(plugin: impl Into<String>) -> Result<Self> {
        Ok(ClusterOptions {
            plugin: plugin.into(),
            plugin_dir: None,
            params: None,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            frontend: crate::endpoint::default_frontend()?,
            backend: crate::endpoint::default_backend()?,
            broker: Config::default(),
            worker_exe: None,
            start_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            debug: false,
        })
    }
}

/// The worker executable: `given`, else `powerhose-worker` next to the current
/// executable (and its parent directory, for test and example binaries under
/// `target/*/deps` or `target/*/examples`), else on `PATH`.
pub fn find_worker_exe(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        searched.push(dir.join(WORKER_EXE));
        if let Some(parent) = dir.parent() {
            searched.push(parent.join(WORKER_EXE));
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        searched.push(dir.join(WORKER_EXE));
    }
    searched
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::Config(format!("cannot find {WORKER_EXE} next to this program or on PATH")))
}

/// A running cluster. Dropping it stops everything (like [`Cluster::stop`]).
pub struct Cluster {
    options: ClusterOptions,
    plugin_path: PathBuf,
    worker_exe: PathBuf,
    workers: Vec<Child>,
    broker_stop: Shutdown,
    broker: Option<JoinHandle<Result<()>>>,
}

impl Cluster {
    /// Binds the broker, starts the workers and returns once every worker has
    /// registered. A worker that fails to start (bad plugin, bad params) makes
    /// this return its error; the worker has printed the reason on stderr.
    pub fn start(options: ClusterOptions) -> Result<Cluster> {
        if options.workers == 0 {
            return Err(Error::Config("a cluster needs at least one worker".into()));
        }
        let plugin_path = crate::plugin::locate(&options.plugin, options.plugin_dir.as_deref())?;
        let plugin_path =
            plugin_path.canonicalize().map_err(Error::io(format!("resolving {}", plugin_path.display())))?;
        let worker_exe = find_worker_exe(options.worker_exe.as_deref())?;
        let mut broker_options = BrokerOptions::new(&options.frontend, &options.backend);
        broker_options.config = options.broker.clone();
        let broker = Broker::bind(broker_options)?;
        let broker_stop = Shutdown::new()?;
        let stop = broker_stop.clone();
        let handle = std::thread::Builder::new()
            .name("broker".into())
            .spawn(move || broker.run(&stop))
            .map_err(Error::io("starting the broker thread"))?;
        let mut cluster =
            Cluster { options, plugin_path, worker_exe, workers: Vec::new(), broker_stop, broker: Some(handle) };
        for _ in 0..cluster.options.workers {
            let child = cluster.spawn_worker()?;
            cluster.workers.push(child);
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn spawn_worker(&self) -> Result<Child> {
        let o = &self.options;
        let mut cmd = Command::new(&self.worker_exe);
        cmd.arg("--plugin").arg(&self.plugin_path).arg("--backend").arg(&o.backend);
        cmd.arg("--heartbeat-ms").arg(o.broker.heartbeat_interval.as_millis().to_string());
        cmd.arg("--liveness").arg(o.broker.liveness.to_string());
        if let Some(params) = &o.params {
            cmd.arg("--params").arg(params);
        }
        if o.debug {
            cmd.arg("--debug");
        }
        // SAFETY: prctl is async-signal-safe. Workers must not outlive a
        // supervisor that was SIGKILLed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd.spawn().map_err(Error::io(format!("starting {}", self.worker_exe.display())))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let client = self.client()?;
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if let Some((pid, status)) = self.exited_worker()? {
                return Err(worker_failed(pid, status));
            }
            if client.workers("", Duration::from_secs(1)).is_ok_and(|n| n >= self.options.workers) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Config(format!(
                    "workers did not all register within {:?}",
                    self.options.start_timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first worker that has exited, if any.
    fn exited_worker(&mut self) -> Result<Option<(u32, ExitStatus)>> {
        for child in &mut self.workers {
            if let Some(status) = child.try_wait().map_err(Error::io("checking a worker"))? {
                return Ok(Some((child.id(), status)));
            }
        }
        Ok(None)
    }

    /// A client connected to this cluster's front.
    pub fn client(&self) -> Result<Client> {
        Client::connect(&self.options.frontend)
    }

    pub fn frontend(&self) -> &str {
        &self.options.frontend
    }

    pub fn plugin_path(&self) -> &Path {
        &self.plugin_path
    }

    /// Process ids of the workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(Child::id).collect()
    }

    /// Serves until `shutdown`; a worker that dies is reported and the
    /// cluster keeps serving with the others.
    pub fn serve(&mut self, shutdown: &Shutdown) -> Result<()> {
        let children = Shutdown::new()?.on_signals(&[signal_hook::consts::SIGCHLD])?;
        loop {
            let mut items = [shutdown.poll_item(), children.poll_item()];
            crate::shutdown::poll(&mut items, -1)?;
            if items[0].is_readable() {
                return Ok(());
            }
            children.clear();
            while let Some((pid, status)) = self.exited_worker()? {
                tracing::error!("worker {pid} exited ({status}); {} left", self.workers.len() - 1);
                self.workers.retain(|c| c.id() != pid);
            }
            if self.workers.is_empty() {
                return Err(Error::Config("every worker has exited".into()));
            }
        }
    }

    /// Stops the workers (SIGTERM: they unregister and finish their job, then
    /// SIGKILL after the grace period), then the broker, which removes its
    /// socket files.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        for child in &self.workers {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + self.options.stop_grace;
        for child in &mut self.workers {
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    tracing::warn!("worker {} did not stop in {:?}: killed", child.id(), self.options.stop_grace);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.workers.clear();
        self.broker_stop.trigger();
        match self.broker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Config("the broker thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.broker.is_some() {
            let _ = self.stop_inner();
        }
    }
}

fn worker_failed(pid: u32, status: ExitStatus) -> Error {
    Error::WorkerStart { pid, code: status.code() }
}

/// Starts a cluster, prints a ready line, serves until SIGTERM/SIGINT, stops.
pub fn run_cluster(options: ClusterOptions, shutdown: &Shutdown) -> Result<()> {
    let mut cluster = Cluster::start(options)?;
    let o = &cluster.options;
    println!("powerhose ready: {} workers running {} on {}", o.workers, cluster.plugin_path.display(), o.frontend);
    let served = cluster.serve(shutdown);
    let stopped = cluster.stop();
    served.and(stopped)
}
