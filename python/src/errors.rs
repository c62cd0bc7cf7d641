//! Rust errors as Python exceptions: the classes are `powerhose._errors`'
//! (plain Python, so they type-check and pickle like any other); this maps
//! each client error to its class and builds the instance.

use powerhose::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// `powerhose._errors`, imported once.
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The name of `e`'s exception class in `powerhose._errors`.
fn class_of(e: &Error) -> &'static str {
    match e {
        Error::Timeout(_) | Error::JobTimedOut { .. } => "Timeout",
        Error::Handler { .. } => "HandlerError",
        Error::NoWorker(_) => "NoWorker",
        Error::WorkerLost(_) => "WorkerLost",
        Error::Busy(_) => "Busy",
        Error::UnknownService(_) => "UnknownService",
        Error::BadRequest(_) => "BadRequest",
        Error::BrokerUnreachable { .. } | Error::LocalRefused { .. } => "BrokerUnreachable",
        Error::BrokerLost { .. } => "BrokerLost",
        Error::Cancelled => "Cancelled",
        _ => "Error",
    }
}

/// An instance of the exception class for `e`, its message `e`'s one line.
pub fn exception<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || py.import("powerhose._errors").map(Bound::unbind))?.bind(py);
    let class = module.getattr(class_of(e))?;
    match e {
        Error::Handler { pid, message } => class.call1((e.to_string(), *pid, message.as_str())),
        Error::JobTimedOut { pid, .. } => class.call1((e.to_string(), *pid)),
        _ => class.call1((e.to_string(),)),
    }
}

/// `e` as the exception to raise (what every binding's `map_err` uses).
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| match exception(py, &e) {
        Ok(instance) => PyErr::from_value(instance),
        // The package is broken (no _errors module): say so, with the error.
        Err(import) => import,
    })
}

/// A job's result as Python sees it: the bytes, or the exception instance.
pub fn outcome(py: Python<'_>, result: powerhose::Result<Vec<u8>>) -> PyResult<Py<PyAny>> {
    Ok(match result {
        Ok(bytes) => pyo3::types::PyBytes::new(py, &bytes).into_any().unbind(),
        Err(e) => exception(py, &e)?.unbind(),
    })
}
