//! The operating system, checked: every libc call goes through `syscall!`,
//! which turns `-1` into the `errno` as an [`std::io::Error`], or through a
//! wrapper here for the calls that report errors otherwise (or cannot fail);
//! and which threads receive the process's signals.
//!
//! Why signals matter here: a signal handled by a thread while it is inside
//! a ZeroMQ call makes that call fail with `EINTR`, and a failed send has
//! already consumed its message. Threads that move messages therefore block
//! the asynchronous signals the programs handle ([`block_process_signals`]),
//! and the binaries leave them to one thread that does nothing else
//! ([`route_process_signals`]); the handlers only write to a
//! [`crate::wakeup::Wakeup`] pipe, which the busy threads poll.

/// Calls `libc::$fn(args)`, which must be inside an `unsafe` block at the
/// call site (with its `SAFETY:` note); `-1` becomes `Err(errno)`, anything
/// else `Ok(value)`.
#[macro_export]
#[doc(hidden)]
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod epoll;
pub mod notify;
pub mod term;
mod timer;
pub use timer::Timer;

/// Lets another task that is ready to run on this CPU run first
/// (`sched_yield`, which cannot fail on Linux).
pub fn yield_cpu() {
    // SAFETY: sched_yield takes no arguments and touches no memory.
    unsafe { libc::sched_yield() };
}

/// The signals a powerhose program handles or that a shell sends it: they
/// are delivered to whichever thread does not block them.
const PROCESS_SIGNALS: [libc::c_int; 10] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGCHLD,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGWINCH,
];

fn process_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only fails for an
    // invalid signal number, and these are libc's constants.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in PROCESS_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// The pthread functions return the error number instead of setting `errno`.
fn pthread_result(code: libc::c_int) -> std::io::Result<()> {
    match code {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

fn thread_mask(how: libc::c_int) -> std::io::Result<()> {
    let set = process_signal_set();
    // SAFETY: changes only the calling thread's mask; `set` is initialised.
    pthread_result(unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) })
}

/// Blocks the process signals in the calling thread (and in the threads it
/// starts from now on): they go to another thread, never interrupting this
/// one's ZeroMQ calls. For threads powerhose starts itself; an application's
/// thread that calls into the library keeps its mask.
pub fn block_process_signals() {
    if let Err(e) = thread_mask(libc::SIG_BLOCK) {
        tracing::warn!("could not block signals in this thread: {e}");
    }
}

/// For a program's `main`, before any other thread starts: every thread
/// blocks the process signals except one started here, which only waits
/// for them (their handlers run there). Child processes start with an
/// empty mask (the standard library resets it).
pub fn route_process_signals() -> std::io::Result<()> {
    thread_mask(libc::SIG_BLOCK)?;
    std::thread::Builder::new().name("signals".into()).spawn(|| {
        if let Err(e) = thread_mask(libc::SIG_UNBLOCK) {
            tracing::error!("the signal thread could not unblock signals: {e}");
            return;
        }
        loop {
            // SAFETY: pause only waits; a handled signal ends it with EINTR.
            unsafe { libc::pause() };
        }
    })?;
    Ok(())
}

/// The state letter in a `/proc/.../stat` file (`R` running, `S` sleeping,
/// `T` stopped, `Z` zombie, ...): the field after the command name, which
/// may itself hold spaces and parentheses. `None` when the file is gone
/// (no such process or thread).
pub fn proc_state(stat_path: &std::path::Path) -> Option<char> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The state letter of process `pid` (see [`proc_state`]).
pub fn process_state(pid: u32) -> Option<char> {
    proc_state(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// This machine's host name ("localhost" if it has none).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    if let Err(e) = unsafe { syscall!(gethostname(buf.as_mut_ptr().cast(), buf.len())) } {
        tracing::debug!("gethostname failed ({e}); \"localhost\" stands in");
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The soft and hard limits on this process's open file descriptors
/// (`RLIMIT_NOFILE`).
pub fn fd_limits() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `limit`, which is valid for it.
    unsafe { syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut limit)) }?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft limit on open file descriptors to the hard limit (which
/// needs no privilege); returns the soft limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let (soft, hard) = fd_limits()?;
    if soft >= hard {
        return Ok(soft);
    }
    let limit = libc::rlimit { rlim_cur: hard, rlim_max: hard };
    // SAFETY: setrlimit only reads `limit`; the hard limit is left as it is.
    unsafe { syscall!(setrlimit(libc::RLIMIT_NOFILE, &limit)) }?;
    Ok(hard)
}

/// The calling thread's handle, for [`signal_thread`].
pub fn current_thread() -> libc::pthread_t {
    // SAFETY: pthread_self takes nothing and cannot fail.
    unsafe { libc::pthread_self() }
}

/// Sends `sig` to `thread`, a thread of this process.
///
/// # Safety
///
/// `thread` must still run (or not be joined yet): the handle of a thread
/// that is gone may name nothing, which pthread_kill does not detect.
pub unsafe fn signal_thread(thread: libc::pthread_t, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the caller vouches for `thread`.
    pthread_result(unsafe { libc::pthread_kill(thread, sig) })
}

/// The real user id of this process.
pub fn uid() -> u32 {
    // SAFETY: getuid takes nothing and cannot fail.
    unsafe { libc::getuid() }
}

/// Fills `buf` from the kernel's random pool.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: getrandom writes at most buf.len() bytes into `buf`.
    let n = unsafe { syscall!(getrandom(buf.as_mut_ptr().cast(), buf.len(), 0)) }?;
    // Only a signal can cut a read short, and only one of over 256 bytes.
    if n as usize != buf.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "getrandom returned fewer bytes"));
    }
    Ok(())
}

/// A CPU set that holds `cpu` alone; `None` beyond `CPU_SETSIZE`.
pub fn cpu_set_of(cpu: usize) -> Option<libc::cpu_set_t> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return None;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only sets a bit of `set` (unsafe as a C macro's stand-in); cpu < CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    Some(set)
}

/// Whether `set` holds `cpu` (never beyond `CPU_SETSIZE`).
pub fn cpu_isset(cpu: usize, set: &libc::cpu_set_t) -> bool {
    // SAFETY: CPU_ISSET only reads a bit of `set` (unsafe as a C macro's stand-in); cpu < CPU_SETSIZE.
    cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, set) }
}

/// `socket.recv`, again when a signal interrupts it (the message is not
/// consumed then).
pub(crate) fn zmq_recv(socket: &zmq::Socket, msg: &mut zmq::Message, flags: i32) -> Result<(), zmq::Error> {
    loop {
        match socket.recv(msg, flags) {
            Err(zmq::Error::EINTR) => continue,
            other => return other,
        }
    }
}

/// Sends a copy of `bytes`, again when a signal interrupts the send (which
/// consumes the message it fails on: only a copy can be sent again).
pub(crate) fn zmq_send_copy(socket: &zmq::Socket, bytes: &[u8], flags: i32) -> Result<(), zmq::Error> {
    loop {
        match socket.send(bytes, flags) {
            Err(zmq::Error::EINTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_turns_minus_one_into_errno() {
        // SAFETY: kill with signal 0 only checks; pid -2^31+1 names no process group.
        let err = unsafe { syscall!(kill(i32::MIN + 1, 0)) }.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        // SAFETY: getpid cannot fail.
        assert_eq!(unsafe { syscall!(getpid()) }.unwrap() as u32, std::process::id());
    }

    #[test]
    fn blocked_signals_stay_pending_in_this_thread() {
        std::thread::spawn(|| {
            block_process_signals();
            // SAFETY: an all-zero sigset_t is valid (and overwritten below).
            let mut current: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: reads the calling thread's mask into a local set.
            assert_eq!(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current) }, 0);
            for sig in PROCESS_SIGNALS {
                // SAFETY: `current` was filled in above.
                assert_eq!(unsafe { libc::sigismember(&current, sig) }, 1, "signal {sig}");
            }
        })
        .join()
        .unwrap();
    }
}
