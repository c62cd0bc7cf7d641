//! Properties of the local transport's framing over generated inputs: what
//! is encoded comes back whatever the chunking, arbitrary bytes never make
//! the decoder panic or read past its buffer, and a message over the limit is
//! refused from its headers, before its bytes are buffered.

use proptest::prelude::*;

use super::frame::{decode, encode_into, Decoder, FrameError, GREETING, MAX_FRAMES};

/// A message: 0..=8 frames of 0..=300 bytes.
fn message() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..=300), 0..=MAX_FRAMES)
}

/// Where to cut a stream into reads: sizes used in turn, 1 byte and up.
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..64, 1..8)
}

/// Bytes likely to make small headers, with and without the more bit: random
/// ones alone mostly announce gigabytes and are refused at once.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![Just(0u8), Just(1), Just(3), Just(0x80), any::<u8>()];
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..400), proptest::collection::vec(byte, 0..400)]
}

fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
    let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let mut out = Vec::new();
    encode_into(&mut out, &views);
    out
}

/// Feeds `stream` to `decoder` in chunks of `sizes` (cycled), taking every
/// message after each chunk as the broker does; stops at the first error.
fn feed(decoder: &mut Decoder, stream: &[u8], sizes: &[usize]) -> (Vec<Vec<Vec<u8>>>, Option<FrameError>) {
    let mut messages = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at == stream.len() {
            break;
        }
        let end = (at + size).min(stream.len());
        decoder.push(&stream[at..end]);
        at = end;
        loop {
            let has = decoder.has_message();
            match decoder.next_message() {
                Ok(Some(parts)) => {
                    assert!(has, "has_message missed a message");
                    messages.push(parts.map(<[u8]>::to_vec).collect());
                }
                Ok(None) => {
                    assert!(!has, "has_message saw a message that is not there");
                    break;
                }
                Err(e) => {
                    assert!(has, "has_message missed an error");
                    return (messages, Some(e));
                }
            }
        }
    }
    (messages, None)
}

/// Where the header that takes `frames` over `limit` ends, if one does.
fn refused_at(frames: &[Vec<u8>], limit: usize) -> Option<usize> {
    let (mut at, mut size) = (0, 0);
    for frame in frames {
        size += frame.len();
        if size > limit {
            return Some(at + 4);
        }
        at += 4 + frame.len();
    }
    None
}

proptest! {
    #[test]
    fn messages_come_back_whatever_the_chunking(messages in proptest::collection::vec(message(), 1..4),
                                                sizes in chunking()) {
        let mut stream = GREETING.to_vec();
        for frames in &messages {
            stream.extend(encode(frames));
        }
        // The tightest limit that takes them all: a message at the limit is read.
        let limit = messages.iter().map(|m| m.iter().map(Vec::len).sum::<usize>()).max().unwrap_or(0);
        let (got, err) = feed(&mut Decoder::new(limit), &stream, &sizes);
        prop_assert_eq!(err, None);
        // A message of no frames writes nothing (ZeroMQ has none either).
        let sent: Vec<Vec<Vec<u8>>> = messages.into_iter().filter(|m| !m.is_empty()).collect();
        prop_assert_eq!(got, sent);
    }

    #[test]
    fn any_bytes_decode_without_panic_and_within_the_buffer(bytes in stream_bytes(),
                                                           limit in 0usize..600) {
        // An error is an answer too: only a message found has more to check.
        if let Ok(Some(found)) = decode(&bytes, limit) {
            prop_assert!(found.end <= bytes.len());
            prop_assert!((1..=MAX_FRAMES).contains(&found.frames.len()));
            // The frames follow one another, each after its 4-byte header.
            let mut at = 0;
            for range in found.frames.iter() {
                prop_assert_eq!(range.start, at + 4);
                at = range.end;
            }
            prop_assert_eq!(at, found.end);
            prop_assert!(found.frames.iter().map(|r| r.len()).sum::<usize>() <= limit);
        }
    }

    #[test]
    fn any_stream_leaves_at_most_one_message_buffered(bytes in stream_bytes(),
                                                      limit in 0usize..600, sizes in chunking(), greet in any::<bool>()) {
        let mut stream = if greet { GREETING.to_vec() } else { Vec::new() };
        stream.extend(bytes);
        let mut decoder = Decoder::new(limit);
        let (_, err) = feed(&mut decoder, &stream, &sizes);
        if err.is_none() {
            // What waits is an unfinished message the limit allows, every
            // header included (the last one possibly short of a byte).
            prop_assert!(decoder.pending() <= limit + 4 * (MAX_FRAMES + 1), "{} pending", decoder.pending());
        }
    }

    #[test]
    fn oversized_messages_are_refused_once_their_headers_say_so(frames in message(), limit in 0usize..1200) {
        let bytes = encode(&frames);
        let refused = refused_at(&frames, limit);
        for cut in 0..=bytes.len() {
            let got = decode(&bytes[..cut], limit);
            match refused {
                Some(at) if cut >= at => {
                    prop_assert!(matches!(got, Err(FrameError::TooLarge { size, limit: l }) if size > limit && l == limit),
                                 "cut {}: {:?}", cut, got);
                }
                // Before the header that says too much: wait for more.
                Some(_) => prop_assert_eq!(got, Ok(None)),
                None if cut < bytes.len() => prop_assert_eq!(got, Ok(None)),
                None => prop_assert!(frames.is_empty() || got.unwrap().is_some()),
            }
        }
    }

    #[test]
    fn too_many_frames_are_refused_at_the_first_extra_header(n in MAX_FRAMES + 1..20usize, len in 0usize..8) {
        let frames = vec![vec![7u8; len]; n];
        let bytes = encode(&frames);
        let extra = MAX_FRAMES * (4 + len) + 4;
        prop_assert_eq!(decode(&bytes[..extra - 1], 1 << 20), Ok(None));
        prop_assert_eq!(decode(&bytes[..extra], 1 << 20), Err(FrameError::TooManyFrames));
    }
}
