//! Where asyncio's answers land: a queue the client's own thread fills (from
//! [`Client::submit_with`](powerhose::Client::submit_with)'s callback) and
//! an eventfd it makes readable, which the event loop watches
//! (`loop.add_reader`). No thread of Python's waits for any job; the loop is
//! woken once for whatever arrived since it last looked.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Answers not yet taken by the loop, and the descriptor that says there are some.
pub struct Shared {
    done: Mutex<Vec<(u64, powerhose::Result<Vec<u8>>)>>,
    fd: OwnedFd,
}

impl Shared {
    /// Hands over job `key`'s result (on the client's thread: quick, no
    /// Python). Only the first answer since the loop last took them writes
    /// to the eventfd: the loop drains them all at once anyway.
    pub fn push(&self, key: u64, result: powerhose::Result<Vec<u8>>) {
        let first = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.push((key, result));
            done.len() == 1
        };
        if first {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our eventfd. It
            // cannot fail but by overflowing the counter (2^64 - 2 wake-ups
            // unread), when the loop is due to read anyway.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// A completion queue for one event loop's jobs of one client.
#[pyclass(frozen, module = "powerhose._native")]
pub struct Completions {
    pub shared: Arc<Shared>,
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just opened above and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Completions { shared: Arc::new(Shared { done: Mutex::default(), fd }) })
    }

    /// The descriptor the loop watches: readable once answers are waiting.
    fn fileno(&self) -> i32 {
        self.shared.fd.as_raw_fd()
    }

    /// Every answer that arrived, as `(key, result)` pairs; a result is the
    /// job's `bytes` or the exception it failed with. Makes the descriptor
    /// unreadable again first, so an answer arriving meanwhile wakes the
    /// loop once more rather than being missed.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live 8-byte buffer; EAGAIN
        // (nothing written since the last read) is expected and harmless.
        let _ = unsafe { libc::read(self.shared.fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        let done = std::mem::take(&mut *self.shared.done.lock().unwrap_or_else(|p| p.into_inner()));
        let list = PyList::empty(py);
        for (key, result) in done {
            list.append((key, crate::errors::outcome(py, result)?))?;
        }
        Ok(list)
    }
}
