//! Fuzzes what the broker does with a client message: the front parser and
//! every decoder behind it (command frame, request tail, headers, Powerhose format).
#![no_main]

use libfuzzer_sys::fuzz_target;
use powerhose::protocol::parse::{parse_front, Front};
use powerhose::protocol::{legacy, HeaderIter};

#[path = "split.rs"]
mod split;

fuzz_target!(|data: &[u8]| {
    let frames = split::frames(data);
    match parse_front(&frames) {
        Front::Request { headers, .. } => {
            let _ = HeaderIter::new(headers).count();
        }
        Front::LegacyJob { headers, data, .. } => {
            let body = legacy::encode_request(&headers, data);
            let _ = legacy::parse_request(&body);
        }
        _ => {}
    }
    let _ = legacy::parse_reply(data);
});
