//! The library's one error type, with the context each failure needs to be
//! reported on a single line.

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- talking to peers
    #[error("malformed message: {0}")]
    Protocol(String),
    #[error("{context}: {source}")]
    Zmq { context: String, source: zmq::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A command-line flag's value is unusable (exit code 2, like clap's own errors).
    #[error("{0}")]
    BadFlag(String),

    // --- setting up
    #[error("--io-cpu {cpu}: not a CPU this process may use ({allowed})")]
    BadCpu { cpu: usize, allowed: String },
    #[error("ipc path longer than 107 bytes: {}", path.display())]
    IpcPathTooLong { path: PathBuf },
    #[error("the {role} endpoint {endpoint} is in use by another program")]
    EndpointInUse { endpoint: String, role: &'static str },
    #[error("{} is not valid UTF-8", path.display())]
    PathNotUtf8 { path: PathBuf },
    #[error("cannot find {name} next to this program or on PATH (looked in {})", paths(searched))]
    ExecutableNotFound { name: String, searched: Vec<PathBuf> },
    #[error("a cluster needs at least one worker")]
    NoWorkers,
    #[error("workers did not all register within {waited:?}")]
    WorkersDidNotRegister { waited: Duration },
    #[error("the {thread} thread panicked")]
    ThreadPanicked { thread: &'static str },
    /// It ended before saying whether it started (a panic, most likely).
    #[error("the {thread} thread died during start-up")]
    ThreadDiedAtStart { thread: &'static str },

    // --- endpoints
    #[error("a broker is already running on {endpoint}{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    BrokerAlreadyRunning { endpoint: String, pid: Option<u32> },
    #[error("runtime directory {path} is not private: {reason}")]
    InsecureDir { path: PathBuf, reason: String },

    // --- plugins
    /// `advice` ends the line: a near name, where else to look (or nothing).
    #[error("plugin {name}: not found (looked in {}){advice}", paths(searched))]
    PluginNotFound { name: String, searched: Vec<PathBuf>, advice: String },
    /// `details` holds abi_stable's full report, shown only with `--debug`.
    #[error("plugin {}: {reason}", path.display())]
    PluginLoad { path: PathBuf, reason: String, details: String },
    #[error("plugin {} ({name} {version}) failed to initialise: {message}", path.display())]
    PluginInit { path: PathBuf, name: String, version: String, message: String },

    /// The plugin check a cluster runs before starting (see
    /// [`crate::plugin::check_in_child`]): the checker's one line, and its
    /// other output (shown only with `--debug`).
    #[error("{message}")]
    PluginCheck { message: String, details: String },

    #[error("worker {pid} {}", if *code == Some(crate::EXIT_PLUGIN) { "could not load its plugin (see its message above)".to_string() } else { format!("exited during start-up ({})", code.map_or("killed by a signal".to_string(), |c| format!("exit code {c}"))) })]
    WorkerStart { pid: u32, code: Option<i32> },

    #[error("workers keep failing at start ({attempts} in a row, last: {last}); stopped respawning")]
    RespawnGaveUp { attempts: u32, last: String },

    // --- job outcomes, as a client sees them
    #[error("job failed in worker {pid}: {message}")]
    Handler { pid: u32, message: String },
    /// The client's own wait ran out.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The broker or the worker reported the job's time as up (expired in
    /// the queue, or the handler ran past the worker's `--timeout`).
    #[error("{message} (reported by pid {pid})")]
    JobTimedOut { pid: u32, message: String },
    #[error("no worker available: {0}")]
    NoWorker(String),
    #[error("the worker running the job was lost: {0}")]
    WorkerLost(String),
    #[error("broker busy: {0}")]
    Busy(String),
    #[error("unknown service: {0}")]
    UnknownService(String),
    #[error("request rejected by the broker: {0}")]
    BadRequest(String),
    #[error("broker unreachable on {endpoint} (no connection within {waited:?})")]
    BrokerUnreachable { endpoint: String, waited: Duration },

    // --- benchmarks
    /// A handler called in-process (no worker around it) returned an error.
    #[error("the handler failed: {0}")]
    InProcessHandler(String),
    #[error("{failed} {run} jobs failed")]
    JobsFailed { failed: u64, run: &'static str },
    #[error("{jobs} jobs did not all reach the broker's queue within {waited:?}")]
    JobsNotQueued { jobs: usize, waited: Duration },
    #[error("unknown helper role {0}")]
    UnknownHelperRole(String),
}

/// `a, b, c`, for the places a search looked.
fn paths(searched: &[PathBuf]) -> String {
    searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// Either kind of timeout: the client's own, or one reported for the job.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::JobTimedOut { .. })
    }

    pub(crate) fn zmq(context: impl Into<String>) -> impl FnOnce(zmq::Error) -> Error {
        let context = context.into();
        move |source| Error::Zmq { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
