//! Workers' stdout and stderr, relayed line by line to the supervisor's own,
//! each line prefixed with `[worker PID] `: with several workers, a line
//! says whose it is, and lines from different workers never mix mid-line.
//!
//! One thread per stream reads until the pipe closes (the worker exited),
//! so a worker never blocks on a full pipe that nobody reads. A line longer
//! than [`MAX_LINE`] is cut there, with a marker, and its rest dropped: a
//! worker that writes without newlines costs at most one line's buffer.
//!
//! Workers started with `--log-format json` write JSON objects, which a
//! prefix would break: each gets `"worker_pid":PID` as its first member
//! instead (a worker's own records carry no pid). A line of theirs that is
//! not a JSON object (a panic message, a plugin's `println!`) becomes a
//! record of the supervisor's log with a `worker_pid` field, so that its
//! stderr holds JSON only.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Child;
use std::thread::JoinHandle;
use std::time::Instant;

/// The longest line relayed whole; the rest of a longer one is dropped.
pub(super) const MAX_LINE: usize = 64 * 1024;
const _: () = assert!(MAX_LINE == 65536, "CUT_MARKER names the limit");

/// What ends a line that was cut at [`MAX_LINE`].
const CUT_MARKER: &[u8] = b" [line cut at 65536 bytes]";

/// Which of the supervisor's streams a worker's stream goes to.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// Starts the relays of a freshly spawned worker's piped stdout and stderr.
/// `json`: the worker logs JSON (see the module's documentation).
pub(super) fn relay_child(child: &mut Child, json: bool) -> Vec<JoinHandle<()>> {
    let pid = child.id();
    let out = child.stdout.take().map(|pipe| spawn(pid, pipe, Stream::Out, json));
    let err = child.stderr.take().map(|pipe| spawn(pid, pipe, Stream::Err, json));
    // A relay that cannot start leaves its pipe closed: the worker's writes
    // fail (EPIPE) instead of blocking.
    out.into_iter().chain(err).flatten().collect()
}

fn spawn(pid: u32, pipe: impl Read + Send + 'static, stream: Stream, json: bool) -> Option<JoinHandle<()>> {
    let name = format!("worker-{pid}-{}", if matches!(stream, Stream::Out) { "out" } else { "err" });
    // One write per line, under the stream's lock: whole lines only.
    // A failed write (our stream closed) drops the line; reading goes on.
    let write = move |line: &[u8]| {
        let _ = match stream {
            Stream::Out => std::io::stdout().lock().write_all(line),
            Stream::Err => std::io::stderr().lock().write_all(line),
        };
    };
    let started = std::thread::Builder::new().name(name).spawn(move || {
        if !json {
            return relay(format!("[worker {pid}] ").as_bytes(), pipe, write);
        }
        relay(b"", pipe, |line| match with_worker_pid(pid, line) {
            Some(object) => write(&object),
            None => {
                let text = String::from_utf8_lossy(line);
                let text = text.trim_end_matches('\n');
                match stream {
                    Stream::Out => tracing::info!(worker_pid = pid, "{text}"),
                    Stream::Err => tracing::warn!(worker_pid = pid, "{text}"),
                }
            }
        })
    });
    match started {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!("worker {pid}: cannot relay its output: {e}");
            None
        }
    }
}

/// Reads `from` until it ends (or fails), handing each line to `write` as
/// `PREFIXtext\n`, cut at [`MAX_LINE`] bytes of text.
fn relay(prefix: &[u8], from: impl Read, mut write: impl FnMut(&[u8])) {
    let mut reader = BufReader::with_capacity(MAX_LINE, from);
    let mut line = Vec::with_capacity(prefix.len() + MAX_LINE + CUT_MARKER.len() + 1);
    // Inside a line already cut: its bytes are dropped up to its newline.
    let mut dropping = false;
    loop {
        line.clear();
        line.extend_from_slice(prefix);
        // One byte more than a line may hold: a line of exactly MAX_LINE
        // bytes reads with its newline, a longer one is seen to be longer.
        let read = match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let ended = line.last() == Some(&b'\n');
        if dropping {
            dropping = !ended;
            continue;
        }
        if !ended {
            if read > MAX_LINE {
                line.truncate(prefix.len() + MAX_LINE);
                line.extend_from_slice(CUT_MARKER);
                dropping = true;
            }
            // Else the stream ended mid-line: that last line goes out whole.
            line.push(b'\n');
        }
        write(&line);
    }
}

/// A worker's line (newline included) that is a JSON object, with
/// `"worker_pid":PID` as its first member and a newline; `None` for
/// anything else. Its own members stay as written; one that names a
/// `worker_pid` already is left alone.
fn with_worker_pid(pid: u32, line: &[u8]) -> Option<Vec<u8>> {
    let text = line.trim_ascii();
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(text).ok()?;
    let mut out = Vec::with_capacity(text.len() + 24);
    if object.contains_key("worker_pid") {
        out.extend_from_slice(text);
    } else {
        out.extend_from_slice(format!("{{\"worker_pid\":{pid}").as_bytes());
        // The rest after the object's `{`: `}` alone, or members after a comma.
        if !object.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(&text[1..]);
    }
    out.push(b'\n');
    Some(out)
}

/// Waits until the relays have written what the workers wrote last (their
/// pipes close as they exit), until `deadline` at most: a worker's
/// descendant may hold a pipe open.
pub(super) fn finish(relays: Vec<JoinHandle<()>>, deadline: Instant) {
    for relay in relays {
        while !relay.is_finished() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if relay.is_finished() {
            let _ = relay.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(input: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        relay(b"[worker 42] ", input, |line| lines.push(line.to_vec()));
        lines
    }

    #[test]
    fn each_line_gets_the_pid_and_a_last_partial_line_is_kept() {
        assert_eq!(
            relayed(b"one\n\ntwo\nlast"),
            [
                b"[worker 42] one\n".to_vec(),
                b"[worker 42] \n".to_vec(),
                b"[worker 42] two\n".to_vec(),
                b"[worker 42] last\n".to_vec(),
            ]
        );
        assert!(relayed(b"").is_empty());
    }

    #[test]
    fn a_long_line_is_cut_with_a_marker_and_its_rest_dropped() {
        let mut input = vec![b'x'; 3 * MAX_LINE + 10];
        input.extend_from_slice(b"\nnext\n");
        let lines = relayed(&input);
        assert_eq!(lines.len(), 2);
        let cut = format!("[worker 42] {}{}\n", "x".repeat(MAX_LINE), std::str::from_utf8(CUT_MARKER).unwrap());
        assert_eq!(lines[0], cut.as_bytes());
        assert_eq!(lines[1], b"[worker 42] next\n");
        // A line of exactly the limit is whole.
        let exact = [vec![b'y'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(relayed(&exact), [[b"[worker 42] ".to_vec(), exact].concat()]);
    }

    #[test]
    fn json_lines_get_the_worker_pid_and_others_are_left_to_the_log() {
        let line = br#"{"timestamp":"t","level":"INFO","fields":{"message":"hi"}}"#;
        let out = with_worker_pid(42, &[line.as_slice(), b"\n"].concat()).unwrap();
        assert_eq!(out, br#"{"worker_pid":42,"timestamp":"t","level":"INFO","fields":{"message":"hi"}}"#.to_vec().into_iter().chain([b'\n']).collect::<Vec<_>>());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["worker_pid"].as_u64(), v["fields"]["message"].as_str()), (Some(42), Some("hi")));
        assert_eq!(with_worker_pid(7, b"{}\n").unwrap(), b"{\"worker_pid\":7}\n");
        assert_eq!(with_worker_pid(7, b"{\"worker_pid\":1}\n").unwrap(), b"{\"worker_pid\":1}\n");
        for other in [&b"thread 'main' panicked at src/lib.rs:1:1:\n"[..], b"[1, 2]\n", b"{broken\n", b"\n", b"\"s\"\n"]
        {
            assert_eq!(with_worker_pid(7, other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
