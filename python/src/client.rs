//! `powerhose._native.Client`: the Rust client shared by every Python
//! thread. Every wait releases the interpreter; on Python's main thread a
//! wait is cut into slices with a look at signals between them, so Ctrl-C
//! (KeyboardInterrupt) ends it at once. `powerhose.Client` subclasses it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use powerhose::auth::CurveClient;
use powerhose::client::JobHandle;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::completions::Completions;
use crate::errors::{outcome, to_py};
use crate::job::{batch_job, seconds, JobArgs};

/// How long a wait on the main thread goes without looking at signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

/// A connection to one broker, or to several.
#[pyclass(subclass, frozen, module = "powerhose._native")]
pub struct Client {
    /// `None` once closed; calls in progress keep their own reference.
    inner: RwLock<Option<Arc<powerhose::Client>>>,
    /// Whether the client's submitting thread has been started (it is
    /// started with signals blocked, see [`crate::without_signals`]).
    submitting: AtomicBool,
}

impl Client {
    fn get(&self) -> PyResult<Arc<powerhose::Client>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.clone().ok_or_else(|| to_py(powerhose::Error::BadFlag("the client is closed".into())))
    }

    /// Runs `submit` on the client; the first time with signals blocked,
    /// since it starts the client's submitting thread.
    fn submitting<T>(&self, submit: impl FnOnce(&powerhose::Client) -> T) -> PyResult<T> {
        let client = self.get()?;
        if self.submitting.load(Ordering::Acquire) {
            return Ok(submit(&client));
        }
        let submitted = crate::without_signals(|| submit(&client));
        self.submitting.store(true, Ordering::Release);
        Ok(submitted)
    }

    fn submit_handle(&self, job: powerhose::JobRequest, timeout: Duration) -> PyResult<JobHandle> {
        self.submitting(|client| client.submit(job, timeout))
    }
}

/// Waits for a submitted job, releasing the interpreter; on the main thread
/// in slices, raising KeyboardInterrupt (or what a signal handler raises)
/// between them.
fn wait(py: Python<'_>, handle: JobHandle) -> PyResult<Vec<u8>> {
    if crate::on_main_thread() {
        while !py.detach(|| handle.wait_for(SIGNAL_SLICE)) {
            py.check_signals()?;
        }
    }
    py.detach(move || handle.wait()).map_err(to_py)
}

/// Connects to `frontend`: one endpoint, a list of them, or the default one.
fn connect(frontend: Option<&Bound<'_, PyAny>>, curve: Option<&CurveClient>) -> PyResult<powerhose::Client> {
    let endpoints: Vec<String> = match frontend {
        None => vec![powerhose::endpoint::default_frontend().map_err(to_py)?],
        Some(one) if one.is_instance_of::<PyString>() => vec![one.extract()?],
        Some(several) => several
            .extract()
            .map_err(|_| PyTypeError::new_err("frontend is an endpoint (str), a list of them, or None"))?,
    };
    crate::without_signals(|| powerhose::Client::connect_many(&endpoints, curve)).map_err(to_py)
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (frontend=None, *, curve_secret=None, curve_server=None))]
    fn new(
        frontend: Option<&Bound<'_, PyAny>>,
        curve_secret: Option<PathBuf>,
        curve_server: Option<PathBuf>,
    ) -> PyResult<Self> {
        let curve = match (curve_secret, curve_server) {
            (Some(secret), Some(server)) => Some(CurveClient::from_files(&secret, &server).map_err(to_py)?),
            (None, None) => None,
            _ => return Err(PyValueError::new_err("curve_secret and curve_server go together")),
        };
        let client = connect(frontend, curve.as_ref())?;
        Ok(Client { inner: RwLock::new(Some(Arc::new(client))), submitting: AtomicBool::new(false) })
    }

    /// The broker endpoints this client uses.
    #[getter]
    fn endpoints(&self) -> PyResult<Vec<String>> {
        Ok(self.get()?.endpoints().into_iter().map(String::from).collect())
    }

    /// Runs one job and returns its result (`bytes`), or raises how it
    /// failed: a `powerhose.Error` subclass.
    ///
    /// `data` is `bytes` or `str` (sent as UTF-8); `headers` a mapping, or
    /// (name, value) pairs, of `str` to `str` or `int`; `service` the service
    /// to run it (`None`: the only one there is); `timeout` the seconds to
    /// wait; `retry` how many times the broker may re-send the job to
    /// another worker if its worker dies (`True`: once; only for idempotent
    /// jobs, as a worker may die after doing the work).
    ///
    /// The interpreter is released while it waits. On the main thread the
    /// wait looks at signals every 50 ms, so Ctrl-C raises KeyboardInterrupt
    /// at once (the job itself, already sent, runs on).
    #[pyo3(signature = (data, headers=None, *, service=None, timeout=5.0, retry=None))]
    #[pyo3(text_signature = "(self, data, headers=None, *, service=None, timeout=5.0, retry=False)")]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        headers: Option<&Bound<'py, PyAny>>,
        service: Option<&str>,
        timeout: f64,
        retry: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let job = JobArgs { headers, service, retry }.job(crate::job::data(data)?)?;
        let timeout = seconds(timeout)?;
        let result = if crate::on_main_thread() {
            let handle = self.submit_handle(job, timeout)?;
            wait(py, handle)?
        } else {
            let client = self.get()?;
            py.detach(move || client.execute(job, timeout)).map_err(to_py)?
        };
        Ok(PyBytes::new(py, &result))
    }

    /// Runs every job at once (all in flight together) and returns a list
    /// of their results in order, each `bytes` or the exception its job
    /// failed with; `timeout` bounds them all together. A job is `data` or
    /// `(data, headers)`. The interpreter is released meanwhile; a signal
    /// is seen once it returns. `powerhose.Client.execute_many` raises the
    /// first exception instead, unless told otherwise.
    #[pyo3(signature = (jobs, *, service=None, timeout=5.0))]
    fn execute_many<'py>(
        &self,
        py: Python<'py>,
        jobs: &Bound<'py, PyAny>,
        service: Option<&str>,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let args = JobArgs { headers: None, service, retry: None };
        let jobs = jobs.try_iter()?.map(|job| batch_job(&job?, &args)).collect::<PyResult<Vec<_>>>()?;
        let (timeout, client) = (seconds(timeout)?, self.get()?);
        let results = py.detach(move || client.execute_many(jobs, timeout));
        let list = PyList::empty(py);
        for result in results {
            list.append(outcome(py, result)?)?;
        }
        Ok(list)
    }

    /// Sends a job and returns at once: a `Handle` whose `wait()` returns
    /// its result. The arguments are `execute`'s; `timeout` runs from now.
    #[pyo3(signature = (data, headers=None, *, service=None, timeout=5.0, retry=None))]
    #[pyo3(text_signature = "(self, data, headers=None, *, service=None, timeout=5.0, retry=False)")]
    fn submit(
        &self,
        data: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
        service: Option<&str>,
        timeout: f64,
        retry: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        let job = JobArgs { headers, service, retry }.job(crate::job::data(data)?)?;
        Ok(Handle { job: Mutex::new(Some(self.submit_handle(job, seconds(timeout)?)?)) })
    }

    /// Sends a batch job (`data` or `(data, headers)`) without waiting.
    #[pyo3(signature = (job, *, service=None, timeout=5.0))]
    fn submit_job(&self, job: &Bound<'_, PyAny>, service: Option<&str>, timeout: f64) -> PyResult<Handle> {
        let job = batch_job(job, &JobArgs { headers: None, service, retry: None })?;
        Ok(Handle { job: Mutex::new(Some(self.submit_handle(job, seconds(timeout)?)?)) })
    }

    /// Sends a job whose result goes to `completions` under `key`, for
    /// `aexecute` (the other arguments are `execute`'s).
    #[pyo3(signature = (completions, key, data, headers=None, *, service=None, timeout=5.0, retry=None))]
    #[pyo3(text_signature = "(self, completions, key, data, headers=None, *, service=None, timeout=5.0, retry=False)")]
    #[allow(clippy::too_many_arguments)]
    fn submit_to(
        &self,
        completions: &Completions,
        key: u64,
        data: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
        service: Option<&str>,
        timeout: f64,
        retry: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Canceller> {
        let job = JobArgs { headers, service, retry }.job(crate::job::data(data)?)?;
        let shared = Arc::clone(&completions.shared);
        let timeout = seconds(timeout)?;
        let cancel =
            self.submitting(|client| client.submit_with(job, timeout, move |result| shared.push(key, result)))?;
        Ok(Canceller { cancel })
    }

    /// The broker's process id, answered by the broker itself (whatever its
    /// workers do): a liveness check.
    #[pyo3(signature = (*, timeout=5.0))]
    fn ping(&self, py: Python<'_>, timeout: f64) -> PyResult<u32> {
        let (timeout, client) = (seconds(timeout)?, self.get()?);
        py.detach(move || client.ping(timeout)).map_err(to_py)
    }

    /// How many workers are registered for `service` (with every service
    /// when `None`).
    #[pyo3(signature = (service=None, *, timeout=5.0))]
    fn workers(&self, py: Python<'_>, service: Option<String>, timeout: f64) -> PyResult<usize> {
        let (timeout, client) = (seconds(timeout)?, self.get()?);
        py.detach(move || client.workers(service.as_deref().unwrap_or(""), timeout)).map_err(to_py)
    }

    /// The broker's status as JSON text, as `powerhose-broker --status
    /// --json` prints it (`powerhose.Client.status` parses it).
    #[pyo3(signature = (*, timeout=5.0))]
    fn status_json(&self, py: Python<'_>, timeout: f64) -> PyResult<String> {
        let (timeout, client) = (seconds(timeout)?, self.get()?);
        let status = py.detach(move || client.status(timeout)).map_err(to_py)?;
        serde_json::to_string(&status).map_err(|e| PyRuntimeError::new_err(format!("status: {e}")))
    }

    /// Closes the connection; calls in progress on other threads finish.
    fn close(&self) {
        let client = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(client);
    }

    /// Whether [`Client::close`] was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}

/// A submitted job's result, waited for once.
#[pyclass(frozen, module = "powerhose._native")]
pub struct Handle {
    job: Mutex<Option<JobHandle>>,
}

#[pymethods]
impl Handle {
    /// Whether the result is there (`wait` returns at once).
    fn done(&self) -> bool {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(JobHandle::is_ready)
    }

    /// Cancels the job: `wait` then raises `Cancelled` at once; the broker
    /// and the worker's handler are told. False if its result came first.
    fn cancel(&self) -> bool {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(JobHandle::cancel)
    }

    /// Waits for the result (within the job's timeout) and returns it or
    /// raises the job's exception; once only.
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let handle = self.job.lock().unwrap_or_else(|p| p.into_inner()).take();
        let handle = handle.ok_or_else(|| PyRuntimeError::new_err("this job's result was already taken"))?;
        Ok(PyBytes::new(py, &wait(py, handle)?))
    }
}

/// Cancels a job sent with `submit_to` (its result then lands as `Cancelled`).
#[pyclass(frozen, module = "powerhose._native")]
pub struct Canceller {
    cancel: powerhose::client::Cancel,
}

#[pymethods]
impl Canceller {
    /// Cancels the job; false if its result came first.
    fn cancel(&self) -> bool {
        self.cancel.cancel()
    }
}
