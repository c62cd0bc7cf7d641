//! A raw peer for hostile-input tests: speaks to a broker's front or back at
//! the frame level, on either transport, so one test body can send the same
//! garbage over both. On the local transport it can also send bytes that are
//! not frames at all (a wrong greeting, a lying header, half a frame) and
//! tell whether the broker hung up on it.
//!
//! The local framing is written out again here rather than taken from
//! `powerhose::local`: the tests check the broker against the format as
//! documented, not against the broker's own codec.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{TestDir, Transport};

/// What each side of a local connection writes first.
pub const GREETING: &[u8; 8] = b"PHLOCAL\x01";
/// Set in a local frame header when another frame of the message follows.
pub const MORE: u32 = 1 << 31;

/// How long a send may wait for a broker that does not read.
const SEND_WAIT: Duration = Duration::from_secs(10);

/// The bytes of a local message: each frame behind its 4-byte header.
pub fn encode(frames: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let frame = frame.as_ref();
        let more = if i + 1 < frames.len() { MORE } else { 0 };
        out.extend_from_slice(&(frame.len() as u32 | more).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

/// One connection to a broker's front or back.
pub enum RawPeer {
    Local(LocalPeer),
    Zmq(ZmqPeer),
}

/// A Unix stream socket and what was read from it but not yet returned.
pub struct LocalPeer {
    stream: UnixStream,
    inbuf: Vec<u8>,
    /// Whether the broker's greeting was read off `inbuf`.
    greeted: bool,
    /// The broker closed the connection (seen by a read or a write).
    gone: bool,
}

/// A DEALER, with a monitor that reports its disconnections.
pub struct ZmqPeer {
    socket: zmq::Socket,
    events: zmq::Socket,
    // Dropped last: a socket must not outlive its context.
    _ctx: zmq::Context,
}

impl RawPeer {
    /// A client on the test's front, introduced (greeting and empty identity
    /// on the local transport).
    pub fn front(dir: &TestDir) -> RawPeer {
        RawPeer::introduced(dir, "front", b"", |_| {})
    }

    /// A worker-to-be on the test's back, named `identity`.
    pub fn back(dir: &TestDir, identity: &[u8]) -> RawPeer {
        RawPeer::introduced(dir, "back", identity, |s| s.set_identity(identity).unwrap())
    }

    /// A client on the front that will never read its replies: on ZeroMQ
    /// its pipe holds one message, so the broker's side fills at once; on
    /// the local transport the broker's own buffer is what fills.
    pub fn deaf_front(dir: &TestDir) -> RawPeer {
        RawPeer::introduced(dir, "front", b"", |s| s.set_rcvhwm(1).unwrap())
    }

    /// A local connection to endpoint `name` ("front", "back") on which
    /// nothing was sent yet, not even the greeting.
    pub fn unintroduced(dir: &TestDir, name: &str) -> RawPeer {
        assert_eq!(dir.transport, Transport::Local, "raw bytes are for the local transport");
        let stream = UnixStream::connect(dir.socket(name)).unwrap();
        stream.set_write_timeout(Some(SEND_WAIT)).unwrap();
        RawPeer::Local(LocalPeer { stream, inbuf: Vec::new(), greeted: false, gone: false })
    }

    fn introduced(dir: &TestDir, name: &str, identity: &[u8], options: impl FnOnce(&zmq::Socket)) -> RawPeer {
        if dir.transport == Transport::Local {
            let mut peer = RawPeer::unintroduced(dir, name);
            peer.send_bytes(GREETING);
            peer.send(&[identity]);
            return peer;
        }
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::DEALER).unwrap();
        socket.set_linger(0).unwrap();
        socket.set_sndtimeo(SEND_WAIT.as_millis() as i32).unwrap();
        options(&socket);
        // The monitor first, so no disconnection can come before it.
        socket.monitor("inproc://raw-peer", zmq::SocketEvent::DISCONNECTED as i32).unwrap();
        let events = ctx.socket(zmq::PAIR).unwrap();
        events.connect("inproc://raw-peer").unwrap();
        socket.connect(&dir.endpoint(name)).unwrap();
        RawPeer::Zmq(ZmqPeer { socket, events, _ctx: ctx })
    }

    /// Sends one message. On the local transport a broker that hung up is
    /// no error here: [`RawPeer::closed`] tells.
    pub fn send(&mut self, frames: &[impl AsRef<[u8]>]) {
        match self {
            RawPeer::Local(_) => self.send_bytes(&encode(frames)),
            RawPeer::Zmq(peer) => {
                for (i, frame) in frames.iter().enumerate() {
                    let flags = if i + 1 < frames.len() { zmq::SNDMORE } else { 0 };
                    peer.socket.send(frame.as_ref(), flags).expect("the broker takes the message");
                }
            }
        }
    }

    /// A second handle on the connection, for a thread that writes while
    /// this one reads (local transport only).
    pub fn writer(&self) -> UnixStream {
        let RawPeer::Local(peer) = self else { panic!("a writer is for the local transport") };
        peer.stream.try_clone().unwrap()
    }

    /// Writes `bytes` as they are (local transport only).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let RawPeer::Local(peer) = self else { panic!("raw bytes are for the local transport") };
        match peer.stream.write_all(bytes) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => peer.gone = true,
            Err(e) => panic!("writing to the broker: {e}"),
        }
    }

    /// Stops writing, as a peer that leaves does, while still reading
    /// (local transport only): the broker sees the end of the stream.
    pub fn shutdown_write(&mut self) {
        let RawPeer::Local(peer) = self else { panic!("shutdown is for the local transport") };
        let _ = peer.stream.shutdown(std::net::Shutdown::Write);
    }

    /// The next message within `timeout`; `None` if none came (or, on the
    /// local transport, the broker hung up).
    pub fn recv(&mut self, timeout: Duration) -> Option<Vec<Vec<u8>>> {
        match self {
            RawPeer::Local(peer) => peer.recv(timeout),
            RawPeer::Zmq(peer) => {
                peer.socket.set_rcvtimeo(timeout.as_millis().max(1) as i32).unwrap();
                match peer.socket.recv_multipart(0) {
                    Ok(frames) => Some(frames),
                    Err(zmq::Error::EAGAIN) => None,
                    Err(e) => panic!("receiving from the broker: {e}"),
                }
            }
        }
    }

    /// Whether the broker dropped this connection within `timeout`;
    /// messages that come meanwhile are read and thrown away.
    pub fn closed(&mut self, timeout: Duration) -> bool {
        match self {
            RawPeer::Local(peer) => {
                let deadline = Instant::now() + timeout;
                while !peer.gone && Instant::now() < deadline {
                    peer.read_some(deadline);
                    peer.inbuf.clear();
                    peer.greeted = true;
                }
                peer.gone
            }
            RawPeer::Zmq(peer) => {
                let mut items = [peer.events.as_poll_item(zmq::POLLIN)];
                zmq::poll(&mut items, timeout.as_millis() as i64).unwrap() == 1
            }
        }
    }
}

impl LocalPeer {
    fn recv(&mut self, timeout: Duration) -> Option<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frames) = self.take_message() {
                return Some(frames);
            }
            if self.gone || Instant::now() >= deadline {
                return None;
            }
            self.read_some(deadline);
        }
    }

    /// Reads what comes before `deadline` into `inbuf`; marks the
    /// connection gone at its end.
    fn read_some(&mut self, deadline: Instant) {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { return };
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = vec![0u8; 1 << 16];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.gone = true,
            Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
            // A broker that closed with our bytes unread resets the connection.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => self.gone = true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => panic!("reading from the broker: {e}"),
        }
    }

    /// A whole message off the front of `inbuf`, if one is there.
    fn take_message(&mut self) -> Option<Vec<Vec<u8>>> {
        if !self.greeted {
            let greeting = self.inbuf.get(..GREETING.len())?;
            assert_eq!(greeting, GREETING, "the broker's greeting");
            self.inbuf.drain(..GREETING.len());
            self.greeted = true;
        }
        let (mut frames, mut at) = (Vec::new(), 0);
        loop {
            let head = u32::from_le_bytes(self.inbuf.get(at..at + 4)?.try_into().unwrap());
            let len = (head & !MORE) as usize;
            frames.push(self.inbuf.get(at + 4..at + 4 + len)?.to_vec());
            at += 4 + len;
            if head & MORE == 0 {
                self.inbuf.drain(..at);
                return Some(frames);
            }
        }
    }
}
