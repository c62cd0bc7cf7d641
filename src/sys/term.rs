//! The terminal, for `powerhose-broker --status --watch`: its size, and a
//! mode in which keys arrive one at a time and unechoed (so `q` quits at
//! once), restored when its guard drops. Ctrl-C still sends SIGINT.

use std::os::fd::RawFd;

/// The terminal's (rows, columns) on `fd`; `None` when `fd` is no terminal
/// or it does not know its size.
pub fn size(fd: RawFd) -> Option<(usize, usize)> {
    // SAFETY: an all-zero winsize is a valid value of the plain C struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call.
    unsafe { syscall!(ioctl(fd, libc::TIOCGWINSZ, &mut ws)) }.ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((usize::from(ws.ws_row), usize::from(ws.ws_col)))
}

/// Keys one at a time, unechoed, on a terminal's input, until dropped.
pub struct KeysMode {
    fd: RawFd,
    saved: libc::termios,
}

impl KeysMode {
    /// Switches the terminal on `fd` (canonical mode and echo off, signals
    /// kept); an error when `fd` is no terminal.
    pub fn enter(fd: RawFd) -> std::io::Result<KeysMode> {
        // SAFETY: an all-zero termios is a valid value of the plain C struct.
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr fills `mode`, which outlives the call.
        unsafe { syscall!(tcgetattr(fd, &mut mode)) }?;
        let saved = mode;
        mode.c_lflag &= !(libc::ICANON | libc::ECHO);
        mode.c_cc[libc::VMIN] = 1;
        mode.c_cc[libc::VTIME] = 0;
        // SAFETY: `mode` is the terminal's own settings, changed in two flags.
        unsafe { syscall!(tcsetattr(fd, libc::TCSANOW, &mode)) }?;
        Ok(KeysMode { fd, saved })
    }

    /// The terminal's input fd, to poll.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Reads the keys waiting (after a poll saw some); 0 at end of input.
    /// Unbuffered: bytes left in a buffer would not wake the next poll.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: reads at most buf.len() bytes into `buf`, which outlives the call.
        unsafe { syscall!(read(self.fd, buf.as_mut_ptr().cast(), buf.len())) }.map(|n| n as usize)
    }
}

impl Drop for KeysMode {
    fn drop(&mut self) {
        // SAFETY: puts back the settings read in `enter`. A failure (the
        // terminal is gone) leaves nothing to restore.
        let _ = unsafe { syscall!(tcsetattr(self.fd, libc::TCSANOW, &self.saved)) };
    }
}
