//! The local transport's framing, pure: a connection opens with [`GREETING`],
//! then carries messages as frames, each a 4-byte little-endian header
//! (length in the low 31 bits, [`MORE`] set on all but a message's last
//! frame) and its bytes. The same frames as ZeroMQ's multipart messages, so
//! the broker handles a local message exactly as one from a ZeroMQ socket.

use std::ops::Range;

/// What each side writes first: the transport and its version.
pub const GREETING: &[u8; 8] = b"PHLOCAL\x01";
/// Set in a frame header when another frame of the message follows.
pub const MORE: u32 = 1 << 31;
/// The largest frame a header can describe.
pub const MAX_FRAME: usize = (MORE - 1) as usize;
/// The most frames in one message (the protocol's messages have at most 4).
pub const MAX_FRAMES: usize = 8;

/// Why a peer's bytes cannot be read: the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first bytes were not [`GREETING`] (a ZeroMQ peer, or not ours).
    #[error("the peer does not speak powerhose's local transport (bad greeting)")]
    BadGreeting,
    /// A message over the reader's limit.
    #[error("a message of at least {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// The size its headers announced so far.
        size: usize,
        /// The reader's limit.
        limit: usize,
    },
    /// A message of more than [`MAX_FRAMES`] frames.
    #[error("a message of more than {MAX_FRAMES} frames")]
    TooManyFrames,
}

/// The header of a frame of `len` bytes.
pub fn header(len: usize, more: bool) -> [u8; 4] {
    debug_assert!(len <= MAX_FRAME);
    (len as u32 | if more { MORE } else { 0 }).to_le_bytes()
}

/// Appends a whole message to `out`.
pub fn encode_into(out: &mut Vec<u8>, frames: &[&[u8]]) {
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        out.extend_from_slice(&header(frame.len(), i < last));
        out.extend_from_slice(frame);
    }
}

/// Appends one frame to `out`, its bytes appended by `write`: a message is
/// framed where it is built, with no buffer of its own.
pub fn append_frame(out: &mut Vec<u8>, more: bool, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let len = out.len() - at - 4;
    out[at..at + 4].copy_from_slice(&header(len, more));
}

/// One complete message found in a buffer: its frames' ranges, and where
/// the message ends (the bytes to consume).
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Each frame's bytes in the buffer.
    pub frames: Ranges,
    /// Where the message ends.
    pub end: usize,
}

/// The ranges of a message's frames, at most [`MAX_FRAMES`], held in place:
/// every message read on a local connection is found without allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranges {
    at: [Range<usize>; MAX_FRAMES],
    len: usize,
}

impl Ranges {
    fn new() -> Ranges {
        Ranges { at: std::array::from_fn(|_| 0..0), len: 0 }
    }

    /// Adds one; the caller checked there is room.
    fn push(&mut self, range: Range<usize>) {
        self.at[self.len] = range;
        self.len += 1;
    }
}

impl std::ops::Deref for Ranges {
    type Target = [Range<usize>];
    fn deref(&self) -> &[Range<usize>] {
        &self.at[..self.len]
    }
}

/// Looks for a complete message at the start of `buf`; `Ok(None)` when more
/// bytes are needed. `limit` bounds the message (all its frames' bytes):
/// a longer one is refused as soon as its headers say so, before it is read.
pub fn decode(buf: &[u8], limit: usize) -> Result<Option<Found>, FrameError> {
    let mut frames = Ranges::new();
    let (mut at, mut size) = (0usize, 0usize);
    loop {
        let Some(head) = buf.get(at..at + 4) else { return Ok(None) };
        let word = u32::from_le_bytes(head.try_into().expect("4 bytes"));
        let len = (word & !MORE) as usize;
        size = size.saturating_add(len);
        if size > limit {
            return Err(FrameError::TooLarge { size, limit });
        }
        if frames.len() == MAX_FRAMES {
            return Err(FrameError::TooManyFrames);
        }
        let start = at + 4;
        if buf.len() < start + len {
            return Ok(None);
        }
        frames.push(start..start + len);
        at = start + len;
        if word & MORE == 0 {
            return Ok(Some(Found { frames, end: at }));
        }
    }
}

/// The reading half of a connection, without the socket: bytes go in as
/// they arrive, whole messages come out. [`super::Conn`] reads into one and
/// the fuzz target feeds one chunks, so what is fuzzed is what the broker runs.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handled.
    start: usize,
    /// Whether the peer's greeting was read.
    greeted: bool,
    /// The largest message read (all frames).
    limit: usize,
}

/// The frames of a message taken from a [`Decoder`], borrowed from its buffer.
#[derive(Debug)]
pub struct Parts<'a> {
    buf: &'a [u8],
    ranges: Ranges,
    next: usize,
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let range = self.ranges.get(self.next)?.clone();
        self.next += 1;
        Some(&self.buf[range])
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ranges.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Parts<'_> {}

impl Decoder {
    /// A decoder for a new connection, refusing messages over `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder { buf: Vec::new(), start: 0, greeted: false, limit }
    }

    /// Whether the peer's greeting was read: a lane greets a connection
    /// as it accepts it, before it reads a request (see `client::lanes`).
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// Bytes received and not yet taken (as the greeting or a message).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input().extend_from_slice(bytes);
    }

    /// The buffer to append received bytes to. Handled bytes are dropped
    /// first once they are half of it, so the move is paid for by them.
    pub(super) fn input(&mut self) -> &mut Vec<u8> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// The bytes after the greeting; `None` while it is incomplete.
    fn body(&self) -> Result<Option<&[u8]>, FrameError> {
        let have = &self.buf[self.start..];
        if self.greeted {
            return Ok(Some(have));
        }
        let n = have.len().min(GREETING.len());
        if have[..n] != GREETING[..n] {
            return Err(FrameError::BadGreeting);
        }
        Ok(have.get(GREETING.len()..))
    }

    /// Whether [`Decoder::next_message`] has a message or an error to give:
    /// a poll of the socket would not show bytes already read.
    pub fn has_message(&self) -> bool {
        match self.body() {
            Ok(Some(body)) => !matches!(decode(body, self.limit), Ok(None)),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The next complete message, `Ok(None)` until its last byte is in. An
    /// error is for good: the caller closes the connection.
    pub fn next_message(&mut self) -> Result<Option<Parts<'_>>, FrameError> {
        if !self.greeted {
            if self.body()?.is_none() {
                return Ok(None);
            }
            self.start += GREETING.len();
            self.greeted = true;
        }
        let buf = &self.buf[self.start..];
        let Some(found) = decode(buf, self.limit)? else { return Ok(None) };
        self.start += found.end;
        Ok(Some(Parts { buf, ranges: found.frames, next: 0 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, frames);
        out
    }

    #[test]
    fn messages_round_trip_and_partial_ones_wait() {
        for frames in [&[&b"one"[..]][..], &[b"", b"two", b"frames\0"], &[b""]] {
            let bytes = encode(frames);
            let found = decode(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(found.end, bytes.len());
            let got: Vec<&[u8]> = found.frames.iter().map(|r| &bytes[r.clone()]).collect();
            assert_eq!(got, frames);
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut], 1 << 20), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_frame_appended_in_place_is_the_frame_encoded() {
        let mut out = b"x".to_vec();
        append_frame(&mut out, true, |o| o.extend_from_slice(b"head"));
        append_frame(&mut out, false, |o| o.extend_from_slice(b"body!"));
        assert_eq!(out[1..], encode(&[b"head", b"body!"])[..]);
    }

    #[test]
    fn two_messages_in_a_row_are_read_one_at_a_time() {
        let mut bytes = encode(&[b"a", b"b"]);
        let first = bytes.len();
        bytes.extend(encode(&[b"c"]));
        let found = decode(&bytes, 100).unwrap().unwrap();
        assert_eq!(found.end, first);
        let next = decode(&bytes[first..], 100).unwrap().unwrap();
        assert_eq!(&bytes[first..][next.frames[0].clone()], b"c");
    }

    #[test]
    fn oversized_messages_are_refused_from_their_headers_alone() {
        let bytes = encode(&[&[0u8; 60], &[0u8; 50]]);
        assert_eq!(decode(&bytes[..4], 100), Ok(None));
        assert_eq!(decode(&bytes[..68], 100), Err(FrameError::TooLarge { size: 110, limit: 100 }));
        // A header claiming 2 GiB is refused before anything is buffered.
        let huge = (MAX_FRAME as u32).to_le_bytes();
        assert!(matches!(decode(&huge, 1 << 24), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn too_many_frames_is_refused() {
        let frames: Vec<&[u8]> = vec![b"x"; MAX_FRAMES + 1];
        assert_eq!(decode(&encode(&frames), 100), Err(FrameError::TooManyFrames));
        let frames: Vec<&[u8]> = vec![b"x"; MAX_FRAMES];
        assert!(decode(&encode(&frames), 100).unwrap().is_some());
    }

    #[test]
    fn a_zeromq_greeting_is_not_ours() {
        // ZMTP 3 opens with 0xFF, 8 bytes, 0x7F: never our greeting.
        assert_ne!(&[0xFFu8, 0, 0, 0, 0, 0, 0, 1, 0x7F][..8], &GREETING[..]);
    }
}
