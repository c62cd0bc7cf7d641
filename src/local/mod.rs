//! The local transport (`unix://PATH` endpoints): the same messages as the
//! ZeroMQ sockets, over Unix stream sockets that the broker polls itself.
//!
//! Why: a ZeroMQ message crosses libzmq's I/O thread on both sides, three
//! wake-ups per hop where one would do. For clients and workers on the
//! broker's host this path wakes only the thread that reads: the broker's
//! loop for a request, the waiting caller for its answer. ZeroMQ stays for
//! tcp, CURVE and the Powerhose 0.7 front. Only processes of the broker's
//! user may connect: the socket is 0600 in a 0700 directory, and the broker
//! checks each peer's uid (`SO_PEERCRED`).

pub mod conn;
pub mod frame;
mod listener;
pub mod load;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use conn::{Conn, Frames};
pub use frame::{FrameError, Parts};
pub use listener::Listener;

/// The scheme of local endpoints.
pub const SCHEME: &str = "unix://";

/// The socket path of a `unix://` endpoint, `None` for other transports.
pub fn path_of(endpoint: &str) -> Option<PathBuf> {
    endpoint.strip_prefix(SCHEME).filter(|p| !p.is_empty()).map(PathBuf::from)
}

/// Whether `endpoint` uses the local transport.
pub fn is_local(endpoint: &str) -> bool {
    endpoint.starts_with(SCHEME)
}

/// The directory of the lanes of the broker listening at `socket` (see
/// `worker::lane`): beside its socket, so it shares its 0700 directory.
pub fn lanes_dir(socket: &Path) -> PathBuf {
    let mut dir = socket.as_os_str().to_owned();
    dir.push(".lanes");
    PathBuf::from(dir)
}

/// The file name of the lane of `service` served by process `pid`; `None`
/// for a name that cannot be a file name (empty, hidden, with `/` or NUL,
/// or too long): such a service is served through the broker only.
pub fn lane_name(service: &str, pid: u32) -> Option<String> {
    let fits = !service.is_empty() && service.len() <= 200 && !service.starts_with('.');
    (fits && !service.contains(['/', '\0'])).then(|| format!("{service}@{pid}"))
}

/// The service and pid a lane's file name says (the inverse of [`lane_name`]).
pub fn parse_lane_name(name: &str) -> Option<(&str, u32)> {
    let (service, pid) = name.rsplit_once('@')?;
    let pid = pid.parse().ok().filter(|p| *p > 0)?;
    lane_name(service, pid).is_some().then_some((service, pid))
}

/// Whether a peer of this uid may use a local endpoint: the broker's user,
/// or root (who could read its sockets anyway).
pub fn uid_allowed(uid: u32) -> bool {
    uid == crate::sys::uid() || uid == 0
}

impl Conn {
    /// Sends a whole message, waiting for room until `deadline`; a message
    /// cut by the deadline leaves the connection unusable (`TimedOut`).
    pub fn send_by(&mut self, frames: &[&[u8]], deadline: Option<Instant>) -> io::Result<()> {
        self.send(frames)?;
        self.flush_by(deadline)
    }

    /// [`Conn::send_by`] for bytes already framed (whole messages).
    pub fn send_encoded_by(&mut self, bytes: &[u8], deadline: Option<Instant>) -> io::Result<()> {
        self.send_encoded(bytes)?;
        self.flush_by(deadline)
    }

    /// Writes every queued byte, waiting for room until `deadline`.
    pub fn flush_by(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        while !self.flush()? {
            if !self.wait(true, deadline)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the broker is not reading"));
            }
        }
        Ok(())
    }

    /// The next message, waiting until `deadline` (`Ok(None)` then); the
    /// end of the stream is `UnexpectedEof`, bad bytes `InvalidData`. It
    /// waits before it reads: the answer a caller waits for is rarely there
    /// yet, and a read that finds nothing is a system call for nothing.
    pub fn recv_by(&mut self, deadline: Option<Instant>) -> io::Result<Option<Frames>> {
        self.recv_map_by(deadline, |parts| parts.map(zmq::Message::from).collect())
    }

    /// As [`Conn::recv_by`], handing the message's frames to `map` where
    /// they were read: nothing is copied but what `map` copies.
    pub fn recv_map_by<T>(
        &mut self,
        deadline: Option<Instant>,
        mut map: impl FnMut(Parts<'_>) -> T,
    ) -> io::Result<Option<T>> {
        loop {
            let bad = |e| io::Error::new(io::ErrorKind::InvalidData, e);
            if let Some(parts) = self.next_parts().map_err(bad)? {
                return Ok(Some(map(parts)));
            }
            if !self.wait(false, deadline)? {
                return Ok(None);
            }
            self.read_some()?;
        }
    }

    /// The next message if one is already there or readable now.
    pub fn try_recv(&mut self) -> io::Result<Option<Frames>> {
        if let Some(frames) = self.take()? {
            return Ok(Some(frames));
        }
        self.read_some()?;
        self.take()
    }

    fn take(&mut self) -> io::Result<Option<Frames>> {
        self.next_message().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// One read; nothing there is not an error, the end of the stream is.
    fn read_some(&mut self) -> io::Result<()> {
        match self.fill() {
            // A peer that closed with our bytes unread resets: gone all the same.
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Connects to a local endpoint's path.
pub fn connect(path: &Path, identity: &[u8]) -> io::Result<Conn> {
    Conn::connect(path, identity, crate::protocol::MAX_MESSAGE_BYTES * crate::protocol::MAX_MESSAGE_HARD_FACTOR)
}

#[cfg(test)]
mod frame_props;
#[cfg(test)]
mod tests;
