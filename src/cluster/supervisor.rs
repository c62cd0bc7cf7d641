//! The supervisor thread of a cluster: keeps N workers running (respawn with
//! backoff, giving up on a crash loop), replaces them one at a time on reload,
//! scales on request, and stops everything in order. It does the process
//! calls; the decisions are [`RestartPolicy`]'s and [`super::scale`]'s.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::broker::Notice;
use crate::error::{Error, Result};
use crate::protocol::Control;
use crate::sys::notify::{Watchdog, WATCHDOG_PID, WATCHDOG_USEC};
use crate::syscall;
use crate::wakeup::Wakeup;

use super::output;
use super::policy::{ExitFacts, RestartPolicy, Verdict};
use super::registry::Registry;
use super::scale;

/// How to start one worker process.
pub(super) struct Spawner {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// The workers' `$NOTIFY_SOCKET` (removed when `None`).
    pub notify_socket: Option<PathBuf>,
    /// `--log-format json` for the workers, added here rather than in
    /// `args`: the plugin check runs on `args` and reads its error as text.
    pub json_logs: bool,
}

impl Spawner {
    fn spawn(&self) -> Result<Managed> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args);
        if self.json_logs {
            cmd.args(["--log-format", "json"]);
        }
        match &self.notify_socket {
            Some(path) => cmd.env(crate::sys::notify::NOTIFY_SOCKET, path),
            None => cmd.env_remove(crate::sys::notify::NOTIFY_SOCKET),
        };
        // systemd's watchdog is the pool's, never a worker's.
        cmd.env_remove(WATCHDOG_USEC).env_remove(WATCHDOG_PID);
        // Relayed with the worker's pid on each line (see `output`).
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe (and so is reading errno). Workers
        // must not outlive the supervisor thread (it is the one that forks
        // them), so a refusal fails the spawn. SIGKILL, not SIGTERM: the broker
        // died with the supervisor, so a graceful stop has nobody to finish
        // jobs for, and nothing can keep a worker alive.
        unsafe {
            cmd.pre_exec(|| syscall!(prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL)).map(drop));
        }
        let mut child = cmd.spawn().map_err(Error::io(format!("starting {}", self.exe.display())))?;
        let relays = output::relay_child(&mut child, self.json_logs);
        Ok(Managed { child, started: Instant::now(), retiring: false, relays })
    }
}

struct Managed {
    child: Child,
    started: Instant,
    /// Asked to leave (reload, scale down, stop): its exit is expected.
    retiring: bool,
    /// The threads relaying its stdout and stderr; they end with its pipes.
    relays: Vec<JoinHandle<()>>,
}

impl Managed {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn retire(&mut self) {
        self.retiring = true;
        // SAFETY: signalling our own child; SIGTERM makes it unregister and finish its job.
        // It cannot be gone (a child that exited stays a zombie until waited
        // for), so a failure means something else is wrong: its exit, or the
        // stop's grace period, still ends it.
        if let Err(e) = unsafe { syscall!(kill(self.pid() as i32, libc::SIGTERM)) } {
            tracing::warn!("could not ask worker {} to leave: {e}", self.pid());
        }
    }
}

pub(super) struct Supervisor {
    pub spawner: Spawner,
    pub target: usize,
    pub start_timeout: Duration,
    /// No scale request goes beyond this many workers (`--max-workers`).
    pub max_workers: usize,
    pub stop_grace: Duration,
    pub broker_stop: Wakeup,
    registry: Registry,
    pub broker: Option<JoinHandle<Result<()>>>,
    /// systemd's watchdog, fed from this thread's loops when the pool has
    /// no broker of its own (else the broker's loop feeds it).
    pub watchdog: Option<Watchdog>,
    workers: Vec<Managed>,
    policy: RestartPolicy,
}

/// Sends `WATCHDOG=1` if due: from each turn of a supervisor loop,
/// including the bounded waits of a start, a reload or a stop.
fn pet(watchdog: &mut Option<Watchdog>) {
    if let Some(watchdog) = watchdog.as_mut() {
        watchdog.feed(Instant::now());
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(crate::EXIT_PLUGIN) => "could not load its plugin".into(),
        Some(code) => format!("exit code {code}"),
        None => format!("killed by signal {}", std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)),
    }
}

impl Supervisor {
    pub fn new(mut spawner: Spawner, target: usize, registry: Registry) -> Self {
        spawner.notify_socket = registry.notify_socket().map(Into::into);
        Supervisor {
            registry,
            spawner,
            target,
            start_timeout: Duration::from_secs(60),
            max_workers: target,
            stop_grace: Duration::from_secs(10),
            broker_stop: Wakeup::new().expect("pipe"),
            broker: None,
            watchdog: None,
            workers: Vec::new(),
            policy: RestartPolicy::new(),
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter(|w| !w.retiring).map(Managed::pid).collect()
    }

    /// Starts the first workers and waits until all have registered; a
    /// worker that fails here fails the start (no retry: the cause is
    /// usually the plugin or its parameters).
    pub fn start_workers(&mut self) -> Result<()> {
        for _ in 0..self.target {
            let worker = self.spawner.spawn()?;
            self.workers.push(worker);
        }
        let deadline = Instant::now() + self.start_timeout;
        loop {
            for w in &mut self.workers {
                if let Some(status) = w.child.try_wait().map_err(Error::io("checking a worker"))? {
                    return Err(Error::WorkerStart { pid: w.pid(), code: status.code() });
                }
            }
            // Only ours: the broker may serve other pools' workers too.
            let registered = self.registered()?;
            if self.workers.iter().filter(|w| registered.contains(&w.pid())).count() >= self.target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::WorkersDidNotRegister { waited: self.start_timeout });
            }
            pet(&mut self.watchdog);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pids of the workers registered with a broker.
    fn registered(&mut self) -> Result<Vec<u32>> {
        self.registry.registered()
    }

    /// Supervises until `stop`; returns `Err` if workers keep failing to start.
    /// `children` must have been set up on SIGCHLD before the first worker
    /// was started: a worker that dies before this is called is then still
    /// seen, as is one that died before the first wait (reaped first).
    pub fn serve(
        &mut self,
        children: &Wakeup,
        stop: &Wakeup,
        control: &Receiver<Control>,
        wake: &Wakeup,
    ) -> Result<()> {
        loop {
            children.clear();
            self.reap()?;
            wake.clear();
            while let Ok(request) = control.try_recv() {
                match request {
                    Control::Reload => self.reload(stop)?,
                    Control::Scale { workers, delta } => self.scale(workers, delta),
                }
            }
            self.top_up()?;
            pet(&mut self.watchdog);
            let due = match (self.policy.next_respawn(), self.watchdog.as_ref().map(Watchdog::deadline)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = due.map_or(-1, |at| at.saturating_duration_since(Instant::now()).as_millis() as i64 + 1);
            let mut items = [stop.poll_item(), children.poll_item(), wake.poll_item()];
            crate::wakeup::poll(&mut items, timeout)?;
            if items[0].is_readable() {
                return Ok(());
            }
        }
    }

    /// Handles workers that exited: expected ones are forgotten, others replaced.
    fn reap(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.workers.len() {
            let Some(status) = self.workers[i].child.try_wait().map_err(Error::io("checking a worker"))? else {
                i += 1;
                continue;
            };
            let w = self.workers.remove(i);
            // Asked before the broker hears of the death: was it ever
            // registered? (A retiring worker's exit is expected: no need.)
            let was_registered = !w.retiring && self.registered().is_ok_and(|pids| pids.contains(&w.pid()));
            self.registry.forget(w.pid());
            let lived = w.started.elapsed();
            let exit = ExitFacts {
                retiring: w.retiring,
                success: status.success(),
                plugin_failure: status.code() == Some(crate::EXIT_PLUGIN),
                lived,
                was_registered,
            };
            match self.policy.on_exit(now, exit) {
                Verdict::Forget => {}
                Verdict::ReplaceNow { crashed: false } => {
                    tracing::info!("worker {} left after {lived:.1?} (max age); replacing it", w.pid());
                }
                Verdict::ReplaceNow { crashed: true } => {
                    tracing::warn!("worker {} died ({}); replacing it", w.pid(), describe(status));
                }
                Verdict::RetryAt { backoff, .. } => {
                    tracing::warn!(
                        "worker {} failed after {lived:.1?} ({}); retrying in {backoff:?}",
                        w.pid(),
                        describe(status)
                    );
                }
                Verdict::GiveUp { attempts } => {
                    return Err(Error::RespawnGaveUp { attempts, last: describe(status) });
                }
            }
        }
        Ok(())
    }

    /// Starts workers until `target` are running (unless backing off).
    fn top_up(&mut self) -> Result<()> {
        if !self.policy.may_spawn(Instant::now()) {
            return Ok(());
        }
        while self.pids().len() < self.target {
            let worker = self.spawner.spawn()?;
            tracing::info!("started worker {}", worker.pid());
            self.workers.push(worker);
        }
        Ok(())
    }

    fn scale(&mut self, workers: Option<usize>, delta: Option<i64>) {
        let wanted = scale::wanted(self.target, workers, delta, self.max_workers);
        tracing::info!("scaling from {} to {wanted} workers", self.target);
        let retiring: Vec<bool> = self.workers.iter().map(|w| w.retiring).collect();
        for i in scale::to_retire(&retiring, wanted) {
            self.workers[i].retire();
        }
        self.target = wanted;
    }

    /// Replaces each worker: start a new one, wait until it is registered,
    /// then let an old one finish its job and leave. A new worker that cannot
    /// start aborts the reload; the old workers keep serving.
    fn reload(&mut self, stop: &Wakeup) -> Result<()> {
        let old = self.pids();
        tracing::info!("reload: replacing {} workers one at a time", old.len());
        for pid in old {
            if stop.requested() {
                return Ok(());
            }
            let mut fresh = self.spawner.spawn()?;
            let deadline = Instant::now() + self.start_timeout;
            let failed = loop {
                if let Some(status) = fresh.child.try_wait().map_err(Error::io("checking a worker"))? {
                    break Some(describe(status));
                }
                if self.registered()?.contains(&fresh.pid()) {
                    break None;
                }
                if Instant::now() >= deadline || stop.requested() {
                    let _ = fresh.child.kill();
                    let _ = fresh.child.wait();
                    break Some("did not register in time".into());
                }
                pet(&mut self.watchdog);
                std::thread::sleep(Duration::from_millis(10));
            };
            if let Some(why) = failed {
                tracing::error!("reload aborted: a new worker {why}; the old workers keep serving");
                return Ok(());
            }
            self.workers.push(fresh);
            if let Some(i) = self.workers.iter().position(|w| w.pid() == pid) {
                self.workers[i].retire();
                self.wait_retired(pid);
            }
        }
        tracing::info!("reload done");
        Ok(())
    }

    /// Waits for a retiring worker to exit, SIGKILL after the grace period.
    fn wait_retired(&mut self, pid: u32) {
        let deadline = Instant::now() + self.stop_grace;
        let Some(i) = self.workers.iter().position(|w| w.pid() == pid) else { return };
        let w = &mut self.workers[i];
        while w.child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                tracing::warn!("worker {pid} did not stop in {:?}: killed", self.stop_grace);
                let _ = w.child.kill();
                let _ = w.child.wait();
                break;
            }
            pet(&mut self.watchdog);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.workers.remove(i);
        // Normally it unregistered first and this changes nothing; if it
        // died holding a job, the broker must not wait for its heartbeats.
        self.registry.forget(pid);
    }

    /// Stops intake, lets workers finish their jobs and leave, then stops the broker.
    pub fn shutdown(&mut self) -> Result<()> {
        // A pool that shares its broker leaves it serving the others.
        if self.broker.is_some() {
            self.registry.tell(Notice::Drain);
        }
        for w in &mut self.workers {
            w.retire();
        }
        let deadline = Instant::now() + self.stop_grace;
        for w in &mut self.workers {
            while w.child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    tracing::warn!("worker {} did not stop in {:?}: killed", w.pid(), self.stop_grace);
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    break;
                }
                pet(&mut self.watchdog);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The workers' last lines, before the process may exit.
        let relays = self.workers.drain(..).flat_map(|w| w.relays).collect();
        output::finish(relays, Instant::now() + Duration::from_secs(1));
        self.broker_stop.trigger();
        match self.broker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::ThreadPanicked { thread: "broker" }),
            None => Ok(()),
        }
    }
}
