//! One local connection: a non-blocking Unix stream socket with the bytes
//! read but not yet handled and the bytes not yet written. The broker polls
//! it beside its ZeroMQ sockets; clients and workers wait on it with
//! [`Conn::wait`], so the thread that reads an answer is the one woken.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Instant;

use super::frame::{self, Decoder, FrameError, GREETING, MAX_FRAMES};
use crate::syscall;

/// Bytes asked of the kernel per read: a burst of pipelined messages.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// A message read off a connection: its frames, copied out of the buffer.
pub type Frames = Vec<zmq::Message>;

/// A connection and its buffers.
#[derive(Debug)]
pub struct Conn {
    fd: OwnedFd,
    /// The bytes read, up to the next message.
    input: Decoder,
    /// Bytes to write, from `written` on: the front is let go in bulk, not
    /// per write, as a backlog of megabytes would be moved at every one.
    out: Vec<u8>,
    written: usize,
}

fn stream_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd =
        unsafe { syscall!(socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)) }?;
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `sockaddr_un` for `path`, and its length; paths over 107 bytes fail.
pub(crate) fn address(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        let why = format!("socket path {} is over {} bytes", path.display(), addr.sun_path.len() - 1);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

impl Conn {
    /// Connects to the listener at `path` and introduces itself as
    /// `identity` (a worker's; empty for a client). Never blocks: a broker
    /// that is not there fails at once (`ENOENT`, `ECONNREFUSED`).
    pub fn connect(path: &Path, identity: &[u8], limit: usize) -> io::Result<Conn> {
        let fd = stream_socket()?;
        let (addr, len) = address(path)?;
        // SAFETY: addr is a valid sockaddr_un of length len.
        unsafe { syscall!(connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len)) }?;
        let mut conn = Conn::new(fd, limit);
        conn.out.extend_from_slice(GREETING);
        frame::encode_into(&mut conn.out, &[identity]);
        conn.flush()?;
        Ok(conn)
    }

    /// A connection the broker accepted; its greeting goes out first.
    pub fn accepted(fd: OwnedFd, limit: usize) -> Conn {
        let mut conn = Conn::new(fd, limit);
        conn.out.extend_from_slice(GREETING);
        conn
    }

    fn new(fd: OwnedFd, limit: usize) -> Conn {
        Conn { fd, input: Decoder::new(limit), out: Vec::new(), written: 0 }
    }

    /// The descriptor, to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes waiting to be written (the peer does not read fast enough).
    pub fn unwritten(&self) -> usize {
        self.out.len() - self.written
    }

    /// Sends a message, or as much as the socket takes now: the rest waits
    /// in the connection's buffer for [`Conn::flush`] (in order).
    pub fn send(&mut self, frames: &[&[u8]]) -> io::Result<()> {
        if self.unwritten() > 0 || frames.len() > MAX_FRAMES {
            frame::encode_into(&mut self.out, frames);
            return self.flush().map(drop);
        }
        // On the stack: a message sent allocates nothing.
        let last = frames.len().saturating_sub(1);
        let mut heads = [[0u8; 4]; MAX_FRAMES];
        for (i, f) in frames.iter().enumerate() {
            heads[i] = frame::header(f.len(), i < last);
        }
        let heads = &heads[..frames.len()];
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut iov = [empty; 2 * MAX_FRAMES];
        for (i, (head, frame)) in heads.iter().zip(frames).enumerate() {
            iov[2 * i] = libc::iovec { iov_base: head.as_ptr() as *mut _, iov_len: 4 };
            iov[2 * i + 1] = libc::iovec { iov_base: frame.as_ptr() as *mut _, iov_len: frame.len() };
        }
        let iov = &mut iov[..2 * frames.len()];
        // SAFETY: msghdr is plain data; all zeroes is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        let total: usize = frames.iter().map(|f| f.len() + 4).sum();
        // SAFETY: every iovec points into `heads` or `frames`, alive for the
        // call; MSG_NOSIGNAL: a departed peer is an error, not a SIGPIPE.
        let sent = loop {
            match unsafe { syscall!(sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL)) } {
                Ok(n) => break n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(e) => return Err(e),
            }
        };
        if sent < total {
            // Keep what did not go, from where the socket stopped.
            let mut skip = sent;
            for (head, frame) in heads.iter().zip(frames) {
                for part in [&head[..], frame] {
                    let from = skip.min(part.len());
                    self.out.extend_from_slice(&part[from..]);
                    skip -= from;
                }
            }
        }
        Ok(())
    }

    /// Sends bytes already framed (whole messages, or the rest of one begun
    /// elsewhere on this socket), or as much as the socket takes now: the
    /// rest waits for [`Conn::flush`], in order.
    pub fn send_encoded(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.unwritten() > 0 {
            self.out.extend_from_slice(bytes);
            return self.flush().map(drop);
        }
        let sent = self.send_now(bytes)?;
        self.out.extend_from_slice(&bytes[sent..]);
        Ok(())
    }

    /// Queues a message for the next [`Conn::flush`]: many messages then go
    /// in one system call.
    pub fn queue(&mut self, frames: &[&[u8]]) {
        frame::encode_into(&mut self.out, frames);
    }

    /// Writes buffered bytes; true when none are left.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.unwritten() > 0 {
            match self.send_now(&self.out[self.written..])? {
                0 => {
                    // Moved once the written part is the larger: each byte
                    // is moved at most once on average.
                    if self.written > self.out.len() / 2 {
                        self.out.drain(..self.written);
                        self.written = 0;
                    }
                    return Ok(false);
                }
                n => self.written += n,
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(true)
    }

    /// One `send` of (non-empty) `bytes`: how many the socket took, 0 when
    /// it takes none now.
    fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the pointer and length describe `bytes`, alive for the
            // call; MSG_NOSIGNAL: a departed peer is an error, not a SIGPIPE.
            match unsafe { syscall!(send(self.fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)) } {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what the socket holds; `Ok(0)` at the end of the stream,
    /// `WouldBlock` when nothing is there.
    pub fn fill(&mut self) -> io::Result<usize> {
        let inbuf = self.input.input();
        inbuf.reserve(READ_CHUNK);
        let spare = inbuf.spare_capacity_mut();
        loop {
            // SAFETY: reads into the vector's spare capacity, at most its length.
            match unsafe { syscall!(recv(self.fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), 0)) } {
                Ok(n) => {
                    let n = n as usize;
                    // SAFETY: recv initialised these n bytes.
                    unsafe { inbuf.set_len(inbuf.len() + n) };
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a complete message (or bad bytes) was read and not yet
    /// taken: polling the descriptor would not show it.
    pub fn has_message(&self) -> bool {
        self.input.has_message()
    }

    /// Whether the peer's greeting was read.
    pub fn greeted(&self) -> bool {
        self.input.greeted()
    }

    /// The next complete message already read, if any.
    pub fn next_message(&mut self) -> Result<Option<Frames>, FrameError> {
        Ok(self.next_parts()?.map(|parts| parts.map(zmq::Message::from).collect()))
    }

    /// The next complete message already read, if any, its frames borrowed
    /// from the buffer they were read into.
    pub fn next_parts(&mut self) -> Result<Option<frame::Parts<'_>>, FrameError> {
        self.input.next_message()
    }

    /// Waits until the socket is readable (or, with `write`, writable) or
    /// `deadline` passes (false); `None` waits for ever.
    pub fn wait(&self, write: bool, deadline: Option<Instant>) -> io::Result<bool> {
        let events = if write { libc::POLLOUT } else { libc::POLLIN };
        self.poll(events, deadline).map(|revents| revents != 0)
    }

    /// Waits for `events` (`POLLIN`, `POLLOUT`) until `deadline`; the
    /// events that came (0 when the deadline passed).
    pub fn poll(&self, events: libc::c_short, deadline: Option<Instant>) -> io::Result<libc::c_short> {
        let mut pfd = libc::pollfd { fd: self.fd(), events, revents: 0 };
        loop {
            let timeout = match deadline {
                None => -1,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    None => return Ok(0),
                    // Rounded up: waking a little early would spin.
                    Some(left) => left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
                },
            };
            // SAFETY: one valid pollfd.
            match unsafe { syscall!(poll(&mut pfd, 1, timeout)) } {
                Ok(0) => {}
                Ok(_) => return Ok(pfd.revents),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The credentials of the process at the other end.
    pub fn peer(&self) -> io::Result<libc::ucred> {
        let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: cred and len are valid for writes and len is cred's size.
        unsafe {
            syscall!(getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len
            ))
        }?;
        Ok(cred)
    }
}
