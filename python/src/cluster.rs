//! `powerhose._native.Cluster`: a pool started from Python (a broker on a
//! thread of this process, worker processes under a supervisor thread),
//! stopped by `stop()` or when it is dropped. `powerhose.Cluster` subclasses
//! it (finding the worker program, making it a context manager).

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use crate::errors::to_py;
use crate::job::seconds;

/// A running pool.
#[pyclass(subclass, frozen, module = "powerhose._native")]
pub struct Cluster {
    /// `None` once stopped.
    pool: Mutex<Option<powerhose::cluster::Cluster>>,
    frontend: String,
    plugin_path: PathBuf,
}

impl Cluster {
    /// Runs `f` on the pool if it still runs.
    fn with_pool(&self, f: impl FnOnce(&powerhose::cluster::Cluster)) {
        if let Some(pool) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            f(pool);
        }
    }
}

#[pymethods]
impl Cluster {
    /// Starts the pool; returns once every worker has registered (or raises
    /// the plugin's error when it cannot be loaded).
    #[new]
    #[pyo3(signature = (plugin, *, workers=None, params=None, worker_exe=None, plugin_dir=None, job_timeout=None))]
    fn new(
        py: Python<'_>,
        plugin: String,
        workers: Option<usize>,
        params: Option<String>,
        worker_exe: Option<PathBuf>,
        plugin_dir: Option<PathBuf>,
        job_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let mut builder = powerhose::cluster::Cluster::builder(plugin);
        if let Some(n) = workers {
            builder = builder.workers(n);
        }
        if let Some(json) = params {
            builder = builder.params(json);
        }
        if let Some(exe) = worker_exe {
            builder = builder.worker_exe(exe);
        }
        if let Some(dir) = plugin_dir {
            builder = builder.plugin_dir(dir);
        }
        if let Some(secs) = job_timeout {
            builder = builder.job_timeout(Some(seconds(secs)?));
        }
        // Signals blocked: the broker's and the supervisor's threads (and
        // libzmq's) inherit the mask; Python's main thread keeps its own.
        let pool = py.detach(|| crate::without_signals(|| builder.start())).map_err(to_py)?;
        let (frontend, plugin_path) = (pool.frontend().to_string(), pool.plugin_path().to_path_buf());
        Ok(Cluster { pool: Mutex::new(Some(pool)), frontend, plugin_path })
    }

    /// The endpoint this pool's clients connect to.
    #[getter]
    fn frontend(&self) -> &str {
        &self.frontend
    }

    /// The plugin file the workers load, as an absolute path.
    #[getter]
    fn plugin_path(&self) -> PathBuf {
        self.plugin_path.clone()
    }

    /// Replaces every worker, one at a time (in the background).
    fn reload(&self) {
        self.with_pool(|pool| pool.reload());
    }

    /// Runs `workers` workers from now on (in the background).
    fn scale(&self, workers: usize) {
        self.with_pool(|pool| pool.scale(workers));
    }

    /// Whether the pool still runs (`stop` not called yet).
    #[getter]
    fn running(&self) -> bool {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Stops intake, lets jobs in flight finish, stops the workers and the
    /// broker. Calling it again does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner()).take();
        match pool {
            Some(pool) => py.detach(move || pool.stop()).map_err(to_py),
            None => Ok(()),
        }
    }
}
