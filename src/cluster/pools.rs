//! Several pools under one broker: what `powerhose --config FILE` runs.
//! Each pool of the file has its own supervisor thread (its workers, their
//! restarts and reloads); the broker routes jobs to them by service. A new
//! file is applied as [`plan`] says, after every new or changed pool's
//! plugin passed its check: a file refused leaves the pools as they are.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::brokers::local_broker;
use super::plan::{plan, Change, PoolSpec};
use super::pool_file::{PoolDefaults, PoolFile};
use super::registry::Registry;
use super::supervise::SupervisorThread;
use super::supervisor::{Spawner, Supervisor};
use super::{find_worker_exe, ClusterOptions};
use crate::broker::{ControlSink, Notice};
use crate::error::{Error, Result};
use crate::protocol::Control;
use crate::wakeup::Wakeup;

/// One running pool.
struct Pool {
    spec: PoolSpec,
    control: Sender<Control>,
    wake: Wakeup,
    running: SupervisorThread,
}

impl Pool {
    fn request(&self, request: Control) {
        if self.control.send(request).is_ok() {
            self.wake.trigger();
        }
    }
}

/// A pool that passed its plugin check, ready to start.
struct Checked {
    spec: PoolSpec,
    spawner: Spawner,
    stop_grace: Duration,
}

/// The pools of a pool file and their one broker.
pub struct Pools {
    /// What every pool shares (endpoints, broker tunables, limits), and the
    /// defaults of what a pool leaves out.
    base: ClusterOptions,
    exe: PathBuf,
    registry: Registry,
    /// Reload and scale requests from clients, through the broker.
    control: Receiver<Control>,
    control_wake: Wakeup,
    broker: Option<JoinHandle<Result<()>>>,
    broker_stop: Wakeup,
    pools: Vec<Pool>,
}

impl Pools {
    /// Checks every pool's plugin, binds the broker and starts the pools;
    /// returns once all their workers have registered.
    pub fn start(base: ClusterOptions, file: &PoolFile) -> Result<Pools> {
        if !base.connect.is_empty() {
            return Err(Error::BadFlag("a pool file runs its own broker: --connect does not go with --config".into()));
        }
        let exe = find_worker_exe(base.worker_exe.as_deref())?;
        let checked = file.pools.iter().map(|spec| check(&base, &exe, file, spec)).collect::<Result<Vec<_>>>()?;
        let (tx, control) = mpsc::channel();
        let sink = ControlSink { tx, wake: Wakeup::new()?, max_workers: base.max_workers };
        let broker_stop = Wakeup::new()?;
        let (registry, broker) = local_broker(&base, &sink, &broker_stop)?;
        let mut pools = Pools {
            base,
            exe,
            registry,
            control,
            control_wake: sink.wake,
            broker: Some(broker),
            broker_stop,
            pools: Vec::new(),
        };
        for c in checked {
            let name = c.spec.name.clone();
            match pools.start_pool(c) {
                Ok(pool) => pools.pools.push(pool),
                Err(e) => {
                    let _ = pools.stop();
                    return Err(Error::PoolStart { pool: name, source: Box::new(e) });
                }
            }
        }
        Ok(pools)
    }

    /// The pools running now.
    pub fn specs(&self) -> Vec<PoolSpec> {
        self.pools.iter().map(|p| p.spec.clone()).collect()
    }

    /// Moves to the pools of `file`: checks the plugin of every new or
    /// changed pool first, and returns the first refusal with nothing
    /// changed. Then starts new pools, rolls changed ones (their new workers
    /// register before the old ones leave), scales and stops. A pool that
    /// fails to start is logged and left out (a roll that fails leaves the
    /// old pool serving); the next file applied tries it again. Returns
    /// how many pools did not start.
    pub fn apply(&mut self, file: &PoolFile) -> Result<usize> {
        let changes = plan(&self.specs(), &file.pools);
        let mut checked = Vec::new();
        for change in &changes {
            if let Change::Start(spec) | Change::Roll(spec) = change {
                checked.push(check(&self.base, &self.exe, file, spec)?);
            }
        }
        if changes.is_empty() {
            tracing::info!("{}: no pool changed", file.path.display());
        }
        let (mut checked, mut failed) = (checked.into_iter(), 0);
        for change in changes {
            match change {
                Change::Start(spec) | Change::Roll(spec) => {
                    let c = checked.next().expect("one checked pool per start and roll");
                    let rolled = self.pools.iter().position(|p| p.spec.name == spec.name);
                    let verb = if rolled.is_some() { "rolling" } else { "starting" };
                    tracing::info!(
                        "pool {}: {verb} {} workers for service {:?}",
                        spec.name,
                        spec.workers,
                        spec.service
                    );
                    match self.start_pool(c) {
                        Ok(pool) => {
                            if let Some(i) = rolled {
                                self.stop_pool(i);
                            }
                            self.pools.push(pool);
                            tracing::info!("pool {}: {} workers serving", spec.name, spec.workers);
                        }
                        Err(e) => {
                            tracing::error!("pool {}: not started ({e}); left as it was", spec.name);
                            failed += 1;
                        }
                    }
                }
                Change::Scale { name, workers } => {
                    if let Some(pool) = self.pools.iter_mut().find(|p| p.spec.name == name) {
                        pool.request(Control::Scale { workers: Some(workers), delta: None });
                        pool.spec.workers = workers;
                    }
                }
                Change::Stop(name) => {
                    if let Some(i) = self.pools.iter().position(|p| p.spec.name == name) {
                        tracing::info!("pool {name}: removed; its workers finish their jobs and leave");
                        self.stop_pool(i);
                    }
                }
            }
        }
        Ok(failed)
    }

    fn start_pool(&self, c: Checked) -> Result<Pool> {
        let registry = self.registry.share().expect("the pools' broker is in this process");
        let mut sup = Supervisor::new(c.spawner, c.spec.workers, registry);
        sup.start_timeout = self.base.start_timeout;
        sup.max_workers = self.base.max_workers;
        sup.stop_grace = c.stop_grace;
        let (control, rx) = mpsc::channel();
        let wake = Wakeup::new()?;
        let running = SupervisorThread::start(sup, rx, wake.clone(), &format!("pool {}", c.spec.name))?;
        Ok(Pool { spec: c.spec, control, wake, running })
    }

    /// Stops pool `i`: its workers unregister, finish their jobs and leave.
    fn stop_pool(&mut self, i: usize) {
        let mut pool = self.pools.remove(i);
        if let Err(e) = pool.running.stop() {
            tracing::warn!("pool {}: {e}", pool.spec.name);
        }
    }

    /// Hands the clients' reload and scale requests to the pools: a reload
    /// to every pool, a scale only when there is one pool (with several,
    /// which one is the file's to say).
    fn forward_control(&self) {
        self.control_wake.clear();
        while let Ok(request) = self.control.try_recv() {
            self.forward(request);
        }
    }

    fn forward(&self, request: Control) {
        match (&request, &self.pools[..]) {
            (Control::Reload, pools) => pools.iter().for_each(|p| p.request(Control::Reload)),
            (Control::Scale { .. }, [one]) => one.request(request),
            (Control::Scale { .. }, _) => {
                tracing::warn!("scale ignored: with several pools, set their workers in the pool file and send SIGHUP")
            }
        }
    }

    /// Stops intake, stops every pool (their workers finish their jobs),
    /// then the broker. Returns the first error of a pool that had given up.
    pub fn stop(&mut self) -> Result<()> {
        self.registry.tell(Notice::Drain);
        self.pools.iter().for_each(|p| p.running.stop.trigger());
        let mut result = Ok(());
        for mut pool in self.pools.drain(..) {
            if let Err(e) = pool.running.stop() {
                let e = Error::PoolStart { pool: pool.spec.name.clone(), source: Box::new(e) };
                result = result.and(Err(e));
            }
        }
        self.broker_stop.trigger();
        let broker = match self.broker.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::ThreadPanicked { thread: "broker" }),
            None => Ok(()),
        };
        result.and(broker)
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        if self.broker.is_some() {
            let _ = self.stop();
        }
    }
}

/// Checks `spec`'s plugin in a child process (as [`super::Cluster::start`]
/// does); a failure is refused naming the field of the file at fault.
fn check(base: &ClusterOptions, exe: &Path, file: &PoolFile, spec: &PoolSpec) -> Result<Checked> {
    let mut options = base.clone();
    options.params.clone_from(&spec.params);
    options.worker.max_age = spec.max_age;
    options.worker.timeout = spec.timeout;
    options.worker.hard_timeout = spec.timeout.map(|t| t * 2);
    options.worker.service = Some(spec.service.clone());
    let refuse = |e: Error| {
        // A plugin that loads but whose init fails was most likely given bad params.
        let field = match &e {
            Error::PluginCheck { message, .. } if spec.params.is_some() && message.contains("init") => "params",
            _ => "plugin",
        };
        file.refuse(&spec.name, field, e.to_string())
    };
    let located = crate::plugin::locate(&spec.plugin, base.plugin_dir.as_deref()).map_err(refuse)?;
    let plugin = located.canonicalize().map_err(|e| file.refuse(&spec.name, "plugin", e.to_string()))?;
    let json_logs = base.json_logs;
    let spawner =
        Spawner { exe: exe.to_path_buf(), args: options.worker_args(&plugin), notify_socket: None, json_logs };
    crate::plugin::check_in_child(&spawner.exe, &spawner.args, base.start_timeout).map_err(refuse)?;
    let stop_grace = base.stop_grace.unwrap_or_else(|| {
        options.worker.hard_timeout.or(options.worker.timeout).unwrap_or(Duration::from_secs(30))
            + Duration::from_secs(2)
    });
    Ok(Checked { spec: spec.clone(), spawner, stop_grace })
}

/// `powerhose --config FILE`: starts the file's pools, prints a ready line
/// and serves until SIGTERM/SIGINT. SIGHUP reads the file again and applies
/// the difference (a bad file is logged in one line and changes nothing);
/// `powerhose-client reload` rolls every pool; scaling (command, SIGTTIN,
/// SIGTTOU) applies only to a file of one pool.
pub fn run_pools(options: ClusterOptions, path: &Path, shutdown: &Wakeup) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGTTIN, SIGTTOU};
    let defaults = PoolDefaults {
        workers: options.workers,
        max_workers: options.max_workers,
        max_age: options.worker.max_age,
        timeout: options.worker.timeout,
    };
    let file = PoolFile::read(path, &defaults)?;
    // Handlers first: a signal sent as soon as "ready" is printed must not
    // meet the default action (SIGHUP would end the process).
    let (hup, more, fewer) = (
        Wakeup::new()?.on_signals(&[SIGHUP])?,
        Wakeup::new()?.on_signals(&[SIGTTIN])?,
        Wakeup::new()?.on_signals(&[SIGTTOU])?,
    );
    let frontend = options.frontend.clone();
    let mut options = options;
    options.watchdog = crate::sys::notify::Watchdog::from_process_env();
    let mut pools = Pools::start(options, &file)?;
    let listed: Vec<String> =
        file.pools.iter().map(|p| format!("{} ({} workers, service {})", p.name, p.workers, p.service)).collect();
    println!("powerhose ready: {} pools on {frontend}: {}", listed.len(), listed.join(", "));
    crate::sys::notify::notify_or_log(&format!("READY=1\nSTATUS={} pools on {frontend}", listed.len()));
    loop {
        let mut items = vec![
            shutdown.poll_item(),
            hup.poll_item(),
            more.poll_item(),
            fewer.poll_item(),
            pools.control_wake.poll_item(),
        ];
        items.extend(pools.pools.iter().map(|p| p.running.done.poll_item()));
        crate::wakeup::poll(&mut items, -1)?;
        let gave_up = items[5..].iter().any(|i| i.is_readable());
        drop(items);
        if shutdown.requested() || gave_up {
            return pools.stop();
        }
        if hup.clear() > 0 {
            match PoolFile::read(path, &defaults).and_then(|file| pools.apply(&file)) {
                Ok(0) => tracing::info!("{}: applied", path.display()),
                Ok(n) => tracing::warn!("{}: applied, but for {n} pools that did not start", path.display()),
                Err(e) => tracing::error!("SIGHUP: {e}; the pools keep running as they are"),
            }
        }
        pools.forward_control();
        let delta = more.clear() as i64 - fewer.clear() as i64;
        if delta != 0 {
            pools.forward(Control::Scale { workers: None, delta: Some(delta) });
        }
    }
}
