//! The Powerhose 0.7 client format, spoken on the front socket so existing
//! Powerhose clients keep working.
//!
//! | message | frames after the REQ envelope | body                                   |
//! |---------|-------------------------------|----------------------------------------|
//! | job     | 1                             | `HEADERS:::DATA`, HEADERS = `NONE` or `name:value` pairs joined by `::` |
//! | ping    | 1                             | `PING`                                 |
//! | reply   | 1                             | `PID:OK:RESULT` or `PID:ERROR:MESSAGE` |
//! | pong    | 1                             | the broker's pid in decimal ASCII      |
//!
//! The job body is split at the first `:::`; DATA is raw bytes. A reply is
//! split at its first two colons. The format (kept as Powerhose defined it)
//! cannot carry a header value that is empty, ends with `:` or contains `::`.

use crate::error::{Error, Result};

const SEPARATOR: &[u8] = b":::";

/// A decoded Powerhose request.
#[derive(Debug, PartialEq, Eq)]
pub enum LegacyRequest<'a> {
    /// The body `PING`: answered with the broker's pid.
    Ping,
    /// A job.
    Job {
        /// Its headers in order (none for `NONE`).
        headers: Vec<(&'a str, &'a str)>,
        /// Its data: everything after the first `:::`.
        data: &'a [u8],
    },
}

/// Parses one request body.
pub fn parse_request(body: &[u8]) -> Result<LegacyRequest<'_>> {
    if body == b"PING" {
        return Ok(LegacyRequest::Ping);
    }
    let split = body
        .windows(SEPARATOR.len())
        .position(|w| w == SEPARATOR)
        .ok_or_else(|| Error::Protocol("Powerhose request without ':::' between headers and data".into()))?;
    let head = std::str::from_utf8(&body[..split])
        .map_err(|_| Error::Protocol("Powerhose request headers are not valid UTF-8".into()))?;
    let data = &body[split + SEPARATOR.len()..];
    let mut headers = Vec::new();
    if head != "NONE" && !head.is_empty() {
        for pair in head.split("::") {
            let (name, value) = pair.split_once(':').ok_or_else(|| {
                Error::Protocol(format!("Powerhose header {pair:?} has no ':' between name and value"))
            })?;
            headers.push((name, value));
        }
    }
    Ok(LegacyRequest::Job { headers, data })
}

/// Builds a request body (what a Powerhose client sends).
pub fn encode_request(headers: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 64);
    if headers.is_empty() {
        body.extend_from_slice(b"NONE");
    }
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b"::");
        }
        body.extend_from_slice(name.as_bytes());
        body.push(b':');
        body.extend_from_slice(value.as_bytes());
    }
    body.extend_from_slice(SEPARATOR);
    body.extend_from_slice(data);
    body
}

/// Builds `PID:OK:RESULT` or `PID:ERROR:MESSAGE`.
pub fn encode_reply(pid: u32, ok: bool, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(pid.to_string().as_bytes());
    out.extend_from_slice(if ok { b":OK:" } else { b":ERROR:" });
    out.extend_from_slice(body);
    out
}

/// A decoded reply: worker pid, success, result or message.
#[derive(Debug, PartialEq, Eq)]
pub struct LegacyReply<'a> {
    /// The pid of the worker that ran the job (the broker's, for its own errors).
    pub pid: u32,
    /// `OK` (true) or `ERROR` (false).
    pub ok: bool,
    /// The result, or the error message.
    pub body: &'a [u8],
}

/// Parses a reply body (what a Powerhose client receives).
pub fn parse_reply(reply: &[u8]) -> Result<LegacyReply<'_>> {
    let bad = || Error::Protocol(format!("malformed Powerhose reply {:?}", String::from_utf8_lossy(reply)));
    let first = reply.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let pid = std::str::from_utf8(&reply[..first]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let rest = &reply[first + 1..];
    let second = rest.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let ok = match &rest[..second] {
        b"OK" => true,
        b"ERROR" => false,
        _ => return Err(bad()),
    };
    Ok(LegacyReply { pid, ok, body: &rest[second + 1..] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8]);
        let cases: [Case; 4] = [
            (&[], b"payload"),
            (&[("alg", "ed25519"), ("prio", "1")], b"pay:::load"),
            (&[("url", "http://x:80/")], b""),
            (&[], b"\x00\xff:::"),
        ];
        for (headers, data) in cases {
            let body = encode_request(headers, data);
            match parse_request(&body).unwrap() {
                LegacyRequest::Job { headers: h, data: d } => {
                    assert_eq!(h, headers);
                    assert_eq!(d, data);
                }
                LegacyRequest::Ping => panic!("not a ping"),
            }
        }
    }

    #[test]
    fn reference_examples_parse() {
        assert_eq!(parse_request(b"PING").unwrap(), LegacyRequest::Ping);
        let LegacyRequest::Job { headers, data } = parse_request(b"alg:ed25519::prio:1:::payload").unwrap() else {
            panic!()
        };
        assert_eq!(headers, [("alg", "ed25519"), ("prio", "1")]);
        assert_eq!(data, b"payload");
        assert_eq!(parse_request(b"NONE:::x").unwrap(), LegacyRequest::Job { headers: vec![], data: b"x" });
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(parse_request(b"no separator").is_err());
        assert!(parse_request(b"novalue:::x").is_err());
        assert!(parse_request(b"\xff:x:::x").is_err());
    }

    #[test]
    fn replies_round_trip() {
        for (pid, ok, body) in [(11668, true, &b"res:ult"[..]), (1, false, b"No worker"), (7, true, b"")] {
            let r = encode_reply(pid, ok, body);
            assert_eq!(parse_reply(&r).unwrap(), LegacyReply { pid, ok, body });
        }
        assert_eq!(encode_reply(12, true, b"x"), b"12:OK:x");
        assert!(parse_reply(b"12:MAYBE:x").is_err());
        assert!(parse_reply(b"abc:OK:x").is_err());
        assert!(parse_reply(b"12").is_err());
    }
}
