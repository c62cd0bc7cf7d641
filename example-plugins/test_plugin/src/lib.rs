//! `test_plugin`: misbehaves on demand so tests can check every fault's outcome.
//!
//! The `action` header picks what a job does (data is echoed unless said otherwise):
//! `echo` (default), `error` (returns an error with the data as message),
//! `panic`, `sleep` (`ms` header; a `file` header is written when it starts), `abort` (aborts the process), `segfault`,
//! `hang` (never returns), `large` (returns `bytes` bytes), `pid` (returns the
//! worker's process id), `mark` (appends a line to the file in the `file`
//! header, so tests can count runs; then echoes), `log` (logs the data through
//! `tracing` at the `level` header's level, default info), `log_crate` (the same
//! through the `log` crate), `print` (the data to stdout and to stderr; returns
//! the worker's process id), `spew` (`bytes` bytes of `x` to stderr, no newline).
//!
//! Params: `{"init_sleep_ms": N}` slows init down, `{"fail_init": "msg"}` makes it fail,
//! `{"panic_init": true}` makes it panic,
//! `{"version_tag": "x"}` is appended to `version` answers (`action: version`).

use std::io::Write;
use std::time::Duration;

use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};

pub struct Misbehave {
    version_tag: String,
}

impl Plugin for Misbehave {
    fn init(params: &Params) -> Result<Self, String> {
        if let Some(ms) = params.get("init_sleep_ms").and_then(|v| v.as_u64()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if params.get("panic_init").and_then(|v| v.as_bool()) == Some(true) {
            panic!("test plugin panics in init");
        }
        if let Some(msg) = params.get("fail_init").and_then(|v| v.as_str()) {
            return Err(msg.to_string());
        }
        let version_tag = params.get("version_tag").and_then(|v| v.as_str()).unwrap_or("").to_string();
        Ok(Misbehave { version_tag })
    }

    fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> {
        let number = |name: &str| -> Result<u64, String> {
            job.header(name)
                .ok_or_else(|| format!("missing header {name}"))?
                .parse()
                .map_err(|e| format!("header {name}: {e}"))
        };
        match job.header("action").unwrap_or("echo") {
            "echo" => Ok(job.data().to_vec()),
            "error" => Err(String::from_utf8_lossy(job.data()).into_owned()),
            "panic" => panic!("test plugin panics on request"),
            "sleep" => {
                // A `file` header is created when the job starts: tests wait on it.
                if let Some(path) = job.header("file") {
                    started(path)?;
                }
                nap(number("ms")?);
                Ok(job.data().to_vec())
            }
            "spin" => {
                // Runs until cancelled (or `ms` pass), then says which in the
                // file named by `outcome`: tests see that the handler saw it.
                if let Some(path) = job.header("file") {
                    started(path)?;
                }
                let deadline = std::time::Instant::now() + Duration::from_millis(number("ms")?);
                while !job.is_cancelled() && std::time::Instant::now() < deadline {
                    nap(2);
                }
                let seen = if job.is_cancelled() { "cancelled" } else { "finished" };
                if let Some(path) = job.header("outcome") {
                    std::fs::write(path, seen).map_err(|e| format!("{path}: {e}"))?;
                }
                Ok(seen.as_bytes().to_vec())
            }
            "gate" => {
                // Runs until the file named by `until` exists (at most a
                // minute): tests open the gate when they are ready.
                let path = std::path::Path::new(job.header("until").ok_or("missing header until")?);
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !path.exists() && std::time::Instant::now() < deadline {
                    nap(5);
                }
                Ok(job.data().to_vec())
            }
            "abort" => std::process::abort(),
            "segfault" => {
                // SAFETY: deliberately unsound; this action exists to crash the worker.
                unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
                unreachable!()
            }
            "hang" => loop {
                std::thread::park();
            },
            "large" => Ok(vec![b'x'; number("bytes")? as usize]),
            "pid" => Ok(std::process::id().to_string().into_bytes()),
            "version" => Ok(format!("{}{}", env!("CARGO_PKG_VERSION"), self.version_tag).into_bytes()),
            "mark" => {
                let path = job.header("file").ok_or("missing header file")?;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{path}: {e}"))?;
                file.write_all(job.data()).and_then(|_| file.write_all(b"\n")).map_err(|e| format!("{path}: {e}"))?;
                Ok(job.data().to_vec())
            }
            "log" => {
                let (text, bytes) = (String::from_utf8_lossy(job.data()), job.data().len());
                match job.header("level").unwrap_or("info") {
                    "error" => tracing::error!(bytes, "{text}"),
                    "warn" => tracing::warn!(bytes, "{text}"),
                    "info" => tracing::info!(bytes, "{text}"),
                    "debug" => tracing::debug!(bytes, "{text}"),
                    "trace" => tracing::trace!(bytes, "{text}"),
                    other => return Err(format!("unknown level {other:?}")),
                }
                Ok(job.data().to_vec())
            }
            "log_crate" => {
                let level = job.header("level").unwrap_or("info");
                let level: log::Level = level.parse().map_err(|_| format!("unknown level {level:?}"))?;
                log::log!(level, "{}", String::from_utf8_lossy(job.data()));
                Ok(job.data().to_vec())
            }
            "print" => {
                let text = String::from_utf8_lossy(job.data());
                println!("{text}");
                eprintln!("{text}");
                Ok(std::process::id().to_string().into_bytes())
            }
            "spew" => {
                let chunk = [b'x'; 64 * 1024];
                let mut left = number("bytes")? as usize;
                let mut stderr = std::io::stderr().lock();
                while left > 0 {
                    let n = left.min(chunk.len());
                    stderr.write_all(&chunk[..n]).map_err(|e| format!("stderr: {e}"))?;
                    left -= n;
                }
                Ok(job.data().to_vec())
            }
            other => Err(format!("unknown action {other:?}")),
        }
    }
}

/// Writes this worker's pid to `path` whole: written aside, then renamed,
/// so a test that sees the file never reads it half written.
fn started(path: &str) -> Result<(), String> {
    let aside = format!("{path}.{}", std::process::id());
    std::fs::write(&aside, std::process::id().to_string()).map_err(|e| format!("{aside}: {e}"))?;
    std::fs::rename(&aside, path).map_err(|e| format!("{path}: {e}"))
}

/// Sleeps; a named frame for stack dumps of a stuck handler to show.
#[inline(never)]
pub fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    // Work after the call: an optimised build would otherwise make it a tail
    // call, and this frame would leave the stack.
    std::hint::black_box(ms);
}

export_plugin!(Misbehave);
