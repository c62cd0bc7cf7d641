//! A job as Python gives it (data as `bytes` or `str`, headers as a mapping
//! or pairs, a service, a retry allowance) turned into a
//! [`JobRequest`](powerhose::JobRequest), and timeouts in seconds turned
//! into durations.

use std::time::Duration;

use powerhose::JobRequest;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMapping, PyString};

/// The parts of a job other than its data, shared by a call's jobs.
pub struct JobArgs<'a, 'py> {
    pub headers: Option<&'a Bound<'py, PyAny>>,
    pub service: Option<&'a str>,
    pub retry: Option<&'a Bound<'py, PyAny>>,
}

/// The job's payload: `bytes`, `bytearray` or `str` (sent as UTF-8).
pub fn data(data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = data.cast::<PyString>() {
        return Ok(text.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(array) = data.cast::<PyByteArray>() {
        return Ok(array.to_vec());
    }
    Err(PyTypeError::new_err(format!("a job's data is bytes or str, not {}", data.get_type().name()?)))
}

/// A header value: a `str`, or an `int` written in decimal (`ms=2000`).
fn header_value(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(text.to_cow()?.into_owned());
    }
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err("a header's value is a str or an int, not a bool"));
    }
    if let Ok(n) = value.extract::<i128>() {
        return Ok(n.to_string());
    }
    Err(PyTypeError::new_err(format!("a header's value is a str or an int, not {}", value.get_type().name()?)))
}

/// Adds `headers` (a mapping, or an iterable of name–value pairs, names may
/// repeat) to `job`, in their order.
fn with_headers(mut job: JobRequest, headers: &Bound<'_, PyAny>) -> PyResult<JobRequest> {
    let pairs = match headers.cast::<PyMapping>() {
        Ok(mapping) => mapping.items()?.into_any(),
        Err(_) => headers.clone(),
    };
    for pair in pairs.try_iter()? {
        let (name, value): (String, Bound<'_, PyAny>) = pair?
            .extract()
            .map_err(|_| PyTypeError::new_err("headers are a mapping of str to str, or (name, value) pairs"))?;
        job = job.header(name, header_value(&value)?);
    }
    Ok(job)
}

/// How many times the broker may re-send the job if its worker dies:
/// `False`/`None` none, `True` once, an `int` that many.
fn retries(retry: &Bound<'_, PyAny>) -> PyResult<u32> {
    if retry.is_none() {
        return Ok(0);
    }
    if let Ok(flag) = retry.cast::<pyo3::types::PyBool>() {
        return Ok(u32::from(flag.is_true()));
    }
    retry.extract::<u32>().map_err(|_| PyValueError::new_err("retry is a bool or a non-negative int"))
}

impl JobArgs<'_, '_> {
    /// The job for `data` with these headers, service and retries.
    pub fn job(&self, data: Vec<u8>) -> PyResult<JobRequest> {
        let mut job = JobRequest::new(data);
        if let Some(headers) = self.headers.filter(|h| !h.is_none()) {
            job = with_headers(job, headers)?;
        }
        if let Some(service) = self.service {
            job = job.service(service);
        }
        match self.retry.map(retries).transpose()? {
            Some(n) if n > 0 => job = job.retry(n),
            _ => {}
        }
        Ok(job)
    }
}

/// A job of a batch (`map`, `execute_many`): `data`, or `(data, headers)`.
pub fn batch_job(item: &Bound<'_, PyAny>, args: &JobArgs<'_, '_>) -> PyResult<JobRequest> {
    if let Ok(tuple) = item.cast::<pyo3::types::PyTuple>() {
        if tuple.len() != 2 {
            return Err(PyTypeError::new_err("a job is data, or a (data, headers) pair"));
        }
        let headers = tuple.get_item(1)?;
        let own = JobArgs { headers: Some(&headers), service: args.service, retry: args.retry };
        return own.job(data(&tuple.get_item(0)?)?);
    }
    args.job(data(item)?)
}

/// A timeout in seconds as a duration: positive and finite.
pub fn seconds(timeout: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(timeout) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(PyValueError::new_err(format!("timeout must be a positive number of seconds, not {timeout}"))),
    }
}
