//! The library's one error type, with the context each failure needs to be
//! reported on a single line.

use std::path::PathBuf;
use std::time::Duration;

/// A result whose error is this library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in powerhose; its `Display` is one line for a
/// log or a terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- talking to peers
    /// A peer sent something the protocol does not allow (a truncated or
    /// non-UTF-8 frame, an unparsable answer); the text says what.
    #[error("malformed message: {0}")]
    Protocol(String),
    /// A ZeroMQ call failed.
    #[error("{context}: {source}")]
    Zmq {
        /// What was being done (`binding the front endpoint ...`, `recv`).
        context: String,
        /// ZeroMQ's own error.
        source: zmq::Error,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file or the child involved.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A command-line flag's value is unusable (exit code 2, like clap's own errors).
    #[error("{0}")]
    BadFlag(String),
    /// A pool file (`powerhose --config`) that cannot be used (exit code 2):
    /// its file, line and field, and why.
    #[error("{}:{line}: {field}: {message}", path.display())]
    PoolFile {
        /// The pool file.
        path: PathBuf,
        /// The line at fault, from 1.
        line: usize,
        /// The field at fault (`pool.NAME.workers`), or what was being read.
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A pool of a pool file could not start, or gave up.
    #[error("pool {pool}: {source}")]
    PoolStart {
        /// The pool's name.
        pool: String,
        /// What stopped it.
        source: Box<Error>,
    },

    // --- setting up
    /// The CPU asked for with `--io-cpu` is outside this process's affinity mask.
    #[error("--io-cpu {cpu}: not a CPU this process may use ({allowed})")]
    BadCpu {
        /// The CPU number asked for.
        cpu: usize,
        /// The CPUs the process may use, as a list for the message.
        allowed: String,
    },
    /// An `ipc://` endpoint's socket path does not fit in a Unix socket
    /// address (107 bytes at most).
    #[error("ipc path longer than 107 bytes: {}", path.display())]
    IpcPathTooLong {
        /// The socket path that is too long.
        path: PathBuf,
    },
    /// Binding an endpoint failed because something that is not a broker
    /// (no answer to `ping`) holds it.
    #[error("the {role} endpoint {endpoint} is in use by another program")]
    EndpointInUse {
        /// The endpoint that could not be bound.
        endpoint: String,
        /// Which of the broker's sockets it was for (`front` or `back`).
        role: &'static str,
    },
    /// A path that must be passed on as text (a plugin's, to a child
    /// process) is not UTF-8.
    #[error("{} is not valid UTF-8", path.display())]
    PathNotUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// A program a cluster or bench starts (the worker, usually) is neither
    /// next to the running executable (or one directory up) nor on `PATH`.
    #[error("cannot find {name} next to this program or on PATH (looked in {})", paths(searched))]
    ExecutableNotFound {
        /// The program's file name.
        name: String,
        /// Every file looked for, in order.
        searched: Vec<PathBuf>,
    },
    /// A cluster was configured with zero workers.
    #[error("a cluster needs at least one worker")]
    NoWorkers,
    /// Start-up gave up: fewer workers than asked for had registered with
    /// the broker when the start timeout ran out (none had exited).
    #[error("workers did not all register within {waited:?}")]
    WorkersDidNotRegister {
        /// How long start-up waited.
        waited: Duration,
    },
    /// A thread the library runs (the broker's, the supervisor's) panicked.
    #[error("the {thread} thread panicked")]
    ThreadPanicked {
        /// Which thread: `broker`, `supervisor`, ...
        thread: &'static str,
    },
    /// It ended before saying whether it started (a panic, most likely).
    #[error("the {thread} thread died during start-up")]
    ThreadDiedAtStart {
        /// Which thread: `broker`, `supervisor`, ...
        thread: &'static str,
    },

    // --- endpoints
    /// Another broker holds this endpoint (its ipc lock file, or it answered
    /// `ping` on the tcp port).
    #[error("a broker is already running on {endpoint}{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    BrokerAlreadyRunning {
        /// The endpoint asked for.
        endpoint: String,
        /// The running broker's pid, when it could be learnt.
        pid: Option<u32>,
    },
    /// The runtime directory for the default ipc endpoints is not a
    /// directory, belongs to another user, or is open to others and could
    /// not be made private.
    #[error("runtime directory {path} is not private: {reason}")]
    InsecureDir {
        /// The runtime directory.
        path: PathBuf,
        /// What is wrong with it (owner, mode, type).
        reason: String,
    },
    /// An ipc endpoint's lock file is a symlink, not a regular file, has
    /// other links or belongs to another user: someone planted it, and
    /// writing our pid through it could overwrite another file.
    #[error("lock file {} {reason}: refusing to use it", path.display())]
    UnsafeLockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it (`is a symlink`, `is owned by uid 65534`, ...).
        reason: String,
    },

    // --- CURVE certificates (crate::keys)
    /// A certificate name would not make a file in the directory asked for
    /// (empty, `.`, `..`, or holding a `/` or a NUL).
    #[error("bad certificate name {name:?}: {reason}")]
    BadKeyName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A certificate file already exists where a new one would go.
    #[error("{} already exists; not overwriting it", path.display())]
    CertificateExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// A certificate file is not in the czmq/pyzmq format, or holds no
    /// usable key; `line` (1-based) names the offending line when one is.
    #[error("certificate {}{}: {reason}", path.display(), line.map(|n| format!(" line {n}")).unwrap_or_default())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The offending line, when the fault is on one.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A certificate holding a secret key is open to group or others;
    /// refused, as ssh refuses such a private key.
    #[error("{} holds a secret key but its mode is {mode:04o} (group or others have access); chmod 600 it", path.display())]
    SecretKeyExposed {
        /// The certificate file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    // --- plugins
    /// `advice` ends the line: a near name, where else to look (or nothing).
    #[error("plugin {name}: not found (looked in {}){advice}", paths(searched))]
    PluginNotFound {
        /// The plugin as given (`--plugin`): a name or a path.
        name: String,
        /// Every file looked for, in order.
        searched: Vec<PathBuf>,
        /// Hint for the end of the message, or empty.
        advice: String,
    },
    /// `details` holds abi_stable's full report, shown only with `--debug`.
    #[error("plugin {}: {reason}", path.display())]
    PluginLoad {
        /// The library file that was found.
        path: PathBuf,
        /// Why loading failed, in one line (not a plugin, incompatible version, ...).
        reason: String,
        /// The loader's full report.
        details: String,
    },
    /// The plugin loaded but its `init` returned an error (or panicked),
    /// usually over its `--params`.
    #[error("plugin {} ({name} {version}) failed to initialise: {message}", path.display())]
    PluginInit {
        /// The library file.
        path: PathBuf,
        /// The plugin's name, as it exports it.
        name: String,
        /// The plugin's version, as it exports it.
        version: String,
        /// The plugin's own error message.
        message: String,
    },

    /// The plugin check a cluster runs before starting (see
    /// [`crate::plugin::check_in_child`]): the checker's one line, and its
    /// other output (shown only with `--debug`).
    #[error("{message}")]
    PluginCheck {
        /// The checker's one-line verdict.
        message: String,
        /// The checker's other output.
        details: String,
    },

    /// A worker exited while the cluster was starting, before all had
    /// registered (exit code 3 means its plugin could not be loaded).
    #[error("worker {pid} {}", if *code == Some(crate::EXIT_PLUGIN) { "could not load its plugin (see its message above)".to_string() } else { format!("exited during start-up ({})", code.map_or("killed by a signal".to_string(), |c| format!("exit code {c}"))) })]
    WorkerStart {
        /// The worker's process id.
        pid: u32,
        /// Its exit code, or `None` if a signal killed it.
        code: Option<i32>,
    },

    /// The supervisor stopped replacing workers that die soon after they
    /// start, since more respawns would fail the same way.
    #[error("workers keep failing at start ({attempts} in a row, last: {last}); stopped respawning")]
    RespawnGaveUp {
        /// Failed starts in a row.
        attempts: u32,
        /// How the last one ended (`exit code 3`, `killed by signal 9`, ...).
        last: String,
    },

    // --- job outcomes, as a client sees them
    /// The plugin's handler returned an error (or panicked) for this job.
    #[error("job failed in worker {pid}: {message}")]
    Handler {
        /// The process id of the worker that ran the job.
        pid: u32,
        /// The handler's error message.
        message: String,
    },
    /// The client's own wait ran out.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The broker or the worker reported the job's time as up (expired in
    /// the queue, or the handler ran past the worker's `--timeout`).
    #[error("{message} (reported by pid {pid})")]
    JobTimedOut {
        /// The pid of the process that reported it (the broker's own, if
        /// the job expired in its queue).
        pid: u32,
        /// The reporter's message.
        message: String,
    },
    /// No worker serves the job's service, and none came within the
    /// broker's short grace period; the text is the broker's.
    #[error("no worker available: {0}")]
    NoWorker(String),
    /// The worker holding the job died or went silent, and the job's
    /// `retry` header did not allow another try; the text is the broker's.
    #[error("the worker running the job was lost: {0}")]
    WorkerLost(String),
    /// The service's queue is full; the job was not taken. Try later.
    #[error("broker busy: {0}")]
    Busy(String),
    /// The job was cancelled ([`crate::client::JobHandle::cancel`]).
    #[error("the job was cancelled")]
    Cancelled,
    /// No worker has ever served the service named, while others exist.
    #[error("unknown service: {0}")]
    UnknownService(String),
    /// The broker (or worker) could not accept the request as sent: a
    /// malformed message, no service named while several are served, or a
    /// control request the cluster refused; the text says why.
    #[error("request rejected by the broker: {0}")]
    BadRequest(String),
    /// Nothing answered on the endpoint: no connection to a broker within
    /// the wait.
    #[error("broker unreachable on {endpoint} (no connection within {waited:?})")]
    BrokerUnreachable {
        /// The endpoint the client connects to.
        endpoint: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The connection to a broker dropped while the request was on it (a
    /// client of several brokers sees it at once), and the job allowed no
    /// retry, or no more: the job may or may not have run.
    #[error("the connection to broker {endpoint} dropped with the request in flight (it may have run; allow a retry to have it sent elsewhere)")]
    BrokerLost {
        /// The endpoint of the broker whose connection dropped.
        endpoint: String,
    },
    /// A local (`unix://`) broker closed the connection as soon as it was
    /// made: it takes local connections from its own user only.
    #[error("broker {endpoint} closed the connection at once: it takes local connections from its own user only")]
    LocalRefused {
        /// The endpoint.
        endpoint: String,
    },

    // --- benchmarks
    /// A handler called in-process (no worker around it) returned an error.
    #[error("the handler failed: {0}")]
    InProcessHandler(String),
    /// A benchmark run got error answers where it needs every job to succeed.
    #[error("{failed} {run} jobs failed")]
    JobsFailed {
        /// How many jobs failed.
        failed: u64,
        /// Which run (`pipelined echo`, ...).
        run: &'static str,
    },
    /// A benchmark that measures a full queue could not fill it in time.
    #[error("{jobs} jobs did not all reach the broker's queue within {waited:?}")]
    JobsNotQueued {
        /// The jobs it sent.
        jobs: usize,
        /// How long it waited for the broker's status to count them as waiting.
        waited: Duration,
    },
    /// The bench program was re-executed as a helper process with
    /// arguments it does not know (a bench bug, not a user error).
    #[error("unknown helper role {0}")]
    UnknownHelperRole(String),
    /// Drawing a bench chart failed (the plotting library's message).
    #[error("drawing the chart: {0}")]
    Chart(String),
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
