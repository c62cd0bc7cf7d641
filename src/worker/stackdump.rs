//! Stack dumps of the job thread, for a handler that outlives its timeout
//! (the seed post's `dump_stacks`, for native code): a signal makes the job
//! thread record its own return addresses, then the pulse thread symbolises
//! them, plugin frames included (abi_stable never unloads the library).

use std::ffi::c_void;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::syscall;

const MAX_FRAMES: usize = 96;
const SIGNAL: libc::c_int = libc::SIGUSR2;

static IPS: [AtomicUsize; MAX_FRAMES] = [const { AtomicUsize::new(0) }; MAX_FRAMES];
static LEN: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicBool = AtomicBool::new(false);

extern "C" fn record(_: libc::c_int) {
    // Only atomics and the unwinder here: no allocation, no locks of ours.
    let mut n = 0;
    // SAFETY: one capture at a time (the pulse thread asks and waits), so the
    // unsynchronised walk does not race another one.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            IPS[n].store(frame.ip() as usize, Ordering::Relaxed);
            n += 1;
            n < MAX_FRAMES
        });
    }
    LEN.store(n, Ordering::Relaxed);
    DONE.store(true, Ordering::Release);
}

/// Installs the handler; call once per process.
pub fn install() -> std::io::Result<()> {
    // SAFETY: a plain sigaction with a handler that only touches atomics; an
    // all-zero sigaction is valid, and sigemptyset fills the mask in.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = record as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        syscall!(sigemptyset(&mut action.sa_mask))?;
        syscall!(sigaction(SIGNAL, &action, std::ptr::null_mut()))?;
    }
    Ok(())
}

/// The calling thread's handle, to pass to [`capture`] later.
pub fn current_thread() -> libc::pthread_t {
    crate::sys::current_thread()
}

/// The return addresses of `thread`'s stack, or `None` if it did not answer.
pub fn capture(thread: libc::pthread_t) -> Option<Vec<usize>> {
    DONE.store(false, Ordering::Release);
    // SAFETY: `thread` is the job thread, which lives as long as the process.
    if let Err(e) = unsafe { crate::sys::signal_thread(thread, SIGNAL) } {
        tracing::warn!("could not signal the job thread for its stack: {e}");
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !DONE.load(Ordering::Acquire) {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let n = LEN.load(Ordering::Relaxed);
    Some(IPS[..n].iter().map(|ip| ip.load(Ordering::Relaxed)).collect())
}

/// One line per frame: `#N name (file:line)`, skipping the signal machinery.
pub fn symbolize(ips: &[usize]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for &ip in ips {
        let mut names = Vec::new();
        backtrace::resolve(ip as *mut c_void, |symbol| {
            let name = symbol.name().map(|n| n.to_string()).unwrap_or_else(|| "??".into());
            let place = match (symbol.filename(), symbol.lineno()) {
                (Some(file), Some(line)) => format!(" ({}:{line})", file.display()),
                _ => String::new(),
            };
            names.push(format!("{name}{place}"));
        });
        if names.is_empty() {
            names.push(format!("0x{ip:x}"));
        }
        for name in names {
            if shown == 0 && (name.contains("stackdump") || name.contains("backtrace")) {
                continue;
            }
            let _ = writeln!(out, "  #{shown} {name}");
            shown += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    static ENTERED: AtomicBool = AtomicBool::new(false);

    #[inline(never)]
    fn spin_here(stop: &AtomicBool) {
        ENTERED.store(true, Ordering::Release);
        while !stop.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn another_threads_stack_names_its_functions() {
        install().unwrap();
        static STOP: AtomicBool = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(current_thread() as usize).unwrap();
            spin_here(&STOP);
        });
        let thread = rx.recv().unwrap() as libc::pthread_t;
        while !ENTERED.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let ips = capture(thread).expect("the thread answers");
        STOP.store(true, Ordering::Relaxed);
        t.join().unwrap();
        let text = symbolize(&ips);
        assert!(text.contains("spin_here"), "{text}");
    }
}
