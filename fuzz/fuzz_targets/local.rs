//! Fuzzes the local transport as the broker reads it: a peer's stream, cut
//! into reads where the input says, through the `Decoder` that `Conn` uses
//! (greeting, then messages under a limit), every message then through the
//! front and back parsers. Nothing may panic, `has_message` must agree with
//! `next_message`, and what stays buffered is at most one message the limit
//! allows, so a peer cannot make the broker hold more.
//!
//! Input: a limit byte, a count byte, that many read sizes (cycled), then
//! the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use powerhose::local::frame::{Decoder, GREETING, MAX_FRAMES};
use powerhose::protocol::parse::{parse_back, parse_front};
use powerhose::protocol::{MAX_MESSAGE_BYTES, MAX_MESSAGE_HARD_FACTOR};

fuzz_target!(|data: &[u8]| {
    let [limit, count, rest @ ..] = data else { return };
    // Small limits reach the refusals with small inputs; 0xff is the broker's own.
    let limit = match limit {
        0xff => MAX_MESSAGE_BYTES * MAX_MESSAGE_HARD_FACTOR,
        n => usize::from(*n) * 16,
    };
    let (sizes, stream) = rest.split_at(usize::from(count % 16).min(rest.len()));
    let mut decoder = Decoder::new(limit);
    let mut at = 0;
    for turn in 0.. {
        if at == stream.len() {
            break;
        }
        // Reads of 1 to 256 bytes (a read is never empty: that is the end).
        let size = sizes.get(turn % sizes.len().max(1)).map_or(stream.len(), |&s| usize::from(s) + 1);
        let end = (at + size).min(stream.len());
        decoder.push(&stream[at..end]);
        at = end;
        // As the broker does after each read: take every whole message.
        loop {
            let has = decoder.has_message();
            match decoder.next_message() {
                Ok(Some(parts)) => {
                    assert!(has, "has_message missed a message");
                    let frames: Vec<&[u8]> = parts.collect();
                    assert!((1..=MAX_FRAMES).contains(&frames.len()));
                    assert!(frames.iter().map(|f| f.len()).sum::<usize>() <= limit);
                    let _ = parse_front(&frames);
                    let _ = parse_back(&frames);
                }
                Ok(None) => {
                    assert!(!has, "has_message saw a message that is not there");
                    break;
                }
                // The broker closes the connection: nothing more is read.
                Err(_) => {
                    assert!(has, "has_message missed bad bytes");
                    return;
                }
            }
        }
        // Left: part of the greeting, or of one message the limit allows
        // with all its headers (the last possibly short of a byte).
        let most = (limit + 4 * (MAX_FRAMES + 1)).max(GREETING.len());
        assert!(decoder.pending() <= most, "{} bytes buffered, limit {limit}", decoder.pending());
    }
});
