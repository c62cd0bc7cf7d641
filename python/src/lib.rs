//! `powerhose._native`: the Python package's native module, PyO3 bindings of
//! powerhose's [`Client`](powerhose::Client) and embedded
//! [`Cluster`](powerhose::cluster::Cluster), and the worker program.
//!
//! The Python side (`powerhose/*.py`) subclasses these classes to add what
//! is easier written in Python (the `map` generator, asyncio glue) and
//! defines the exception classes, which [`errors`] raises.

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;

mod client;
mod cluster;
mod completions;
mod errors;
mod job;

/// Runs the `powerhose-worker` program with `argv` (program name first) and
/// returns its exit status; what the package's `powerhose-worker` script
/// calls. The interpreter is released meanwhile: it serves until SIGTERM or
/// SIGINT, handled by the worker itself.
#[pyfunction]
fn worker_main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(move || powerhose::cli::worker_main(argv))
}

/// The default front endpoint (`unix://<runtime dir>/front.sock`), where
/// `powerhose` and `powerhose-broker` listen unless told otherwise.
#[pyfunction]
fn default_frontend() -> PyResult<String> {
    powerhose::endpoint::default_frontend().map_err(errors::to_py)
}

/// The thread id (`threading.get_ident()`) of Python's main thread, the only
/// one Python runs signal handlers on; 0 until the module is loaded.
static MAIN_THREAD: AtomicU64 = AtomicU64::new(0);

/// Whether the calling thread is Python's main thread: there a wait must
/// look at signals now and then (Ctrl-C), elsewhere it need not.
pub(crate) fn on_main_thread() -> bool {
    // SAFETY: pthread_self takes nothing and cannot fail; it is what
    // threading.get_ident() returns on POSIX.
    let me = unsafe { libc::pthread_self() } as u64;
    MAIN_THREAD.load(Ordering::Relaxed) == me
}

/// Runs `f` with every asynchronous signal blocked on this thread, so that
/// threads `f` starts (the client's, the cluster's: they inherit the mask)
/// never take a signal meant for Python's main thread: there it would only
/// interrupt their system calls.
pub(crate) fn without_signals<T>(f: impl FnOnce() -> T) -> T {
    let _restore = SignalsBlocked::new();
    f()
}

/// The thread's signal mask as it was, restored on drop (also when `f` panics).
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data, initialised by sigfillset and by
        // pthread_sigmask (which writes the old mask) before it is read.
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: pointers to live sigset_t values. The synchronous signals
        // stay deliverable: they go to the thread that causes them.
        unsafe {
            libc::sigfillset(&mut all);
            for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP] {
                libc::sigdelset(&mut all, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        }
        SignalsBlocked(old)
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by new() on this same thread (the
        // guard never leaves the function that made it).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let main: u64 = py.import("threading")?.call_method0("main_thread")?.getattr("ident")?.extract()?;
    MAIN_THREAD.store(main, Ordering::Relaxed);
    m.add_class::<client::Client>()?;
    m.add_class::<client::Handle>()?;
    m.add_class::<client::Canceller>()?;
    m.add_class::<completions::Completions>()?;
    m.add_class::<cluster::Cluster>()?;
    m.add_function(wrap_pyfunction!(worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(default_frontend, m)?)?;
    Ok(())
}
