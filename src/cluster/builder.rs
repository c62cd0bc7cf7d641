//! The builder an application starts an embedded cluster with.

use std::path::PathBuf;
use std::time::Duration;

use super::{Cluster, ClusterOptions};
use crate::error::Result;

/// Builds a cluster for embedding: `Cluster::builder("libcrypto_job.so").workers(4).start()`.
/// Its endpoints are unique to it (in the private runtime directory), so
/// several applications, or several clusters, never collide.
pub struct ClusterBuilder {
    pub(super) options: Result<ClusterOptions>,
}

impl ClusterBuilder {
    fn with(mut self, f: impl FnOnce(&mut ClusterOptions)) -> Self {
        if let Ok(o) = &mut self.options {
            f(o);
        }
        self
    }

    /// How many workers to run (default: one per CPU).
    pub fn workers(self, n: usize) -> Self {
        self.with(|o| o.workers = n)
    }
    /// JSON handed to the plugin's init.
    pub fn params(self, json: impl Into<String>) -> Self {
        let json = json.into();
        self.with(|o| o.params = Some(json))
    }
    /// Another directory to search for a bare plugin name.
    pub fn plugin_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.with(|o| o.plugin_dir = Some(dir))
    }
    /// The worker executable to run, instead of looking for `powerhose-worker`.
    pub fn worker_exe(self, exe: impl Into<PathBuf>) -> Self {
        let exe = exe.into();
        self.with(|o| o.worker_exe = Some(exe))
    }
    /// Binds these endpoints instead of the cluster's own private ones.
    pub fn endpoints(self, frontend: impl Into<String>, backend: impl Into<String>) -> Self {
        let (f, b) = (frontend.into(), backend.into());
        self.with(|o| {
            o.frontend = f;
            o.more_frontends.clear();
            o.backend = b;
        })
    }
    /// Runs no broker here: the workers serve the brokers at these back
    /// endpoints (see [`ClusterOptions::connect`]).
    pub fn connect(self, backends: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let backends: Vec<String> = backends.into_iter().map(Into::into).collect();
        self.with(|o| o.connect = backends)
    }
    /// Per-job time limit on the workers (`None`: no limit).
    pub fn job_timeout(self, timeout: Option<Duration>) -> Self {
        self.with(|o| {
            o.worker.timeout = timeout;
            o.worker.hard_timeout = timeout.map(|t| t * 2);
        })
    }
    /// Full control over the options before starting.
    pub fn configure(self, f: impl FnOnce(&mut ClusterOptions)) -> Self {
        self.with(f)
    }
    /// Starts the cluster ([`Cluster::start`]); an error in building the options surfaces here.
    pub fn start(self) -> Result<Cluster> {
        Cluster::start(self.options?)
    }
}
