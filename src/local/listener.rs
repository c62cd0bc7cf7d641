//! The broker's listening socket for a `unix://` endpoint: bound under the
//! endpoint's lock (see [`crate::endpoint::EndpointLock`]), 0600, accepting
//! without blocking.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::conn::address;
use crate::syscall;

/// Connections waiting to be accepted before the kernel refuses more.
const BACKLOG: i32 = 1024;

/// A bound, listening Unix stream socket.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    /// Binds `path` (which must not exist: the lock's holder removes a stale
    /// one) and listens; the socket file is made 0600.
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { syscall!(socket(libc::AF_UNIX, flags, 0)) }?;
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let (addr, len) = address(path)?;
        // SAFETY: addr is a valid sockaddr_un of length len.
        unsafe { syscall!(bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len)) }?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: fd is a bound socket.
        unsafe { syscall!(listen(fd.as_raw_fd(), BACKLOG)) }?;
        Ok(Listener { fd, path: path.to_path_buf() })
    }

    /// The same socket, whose file was renamed to `path`.
    pub fn moved_to(self, path: PathBuf) -> Listener {
        Listener { path, ..self }
    }

    /// The listening descriptor, to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next waiting connection, non-blocking; `Ok(None)` when none waits.
    /// Running out of descriptors is an error the caller backs off from.
    pub fn accept(&self) -> io::Result<Option<OwnedFd>> {
        loop {
            let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
            // SAFETY: null address pointers: the peer's address is not wanted.
            match unsafe { syscall!(accept4(self.fd(), std::ptr::null_mut(), std::ptr::null_mut(), flags)) } {
                // SAFETY: accept4 returned a new descriptor that nobody owns.
                Ok(fd) => return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // The peer gave up before it was accepted: look for the next.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR)) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
