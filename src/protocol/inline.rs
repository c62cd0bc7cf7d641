//! Inline frames as the broker forwards them, patched in place: the
//! client's inline `REQUEST` frame becomes the worker's `JOB`, the worker's
//! inline `RESULT` frame becomes the client's `REPLY` (see the module
//! documentation of [`crate::protocol`] for the layout). Pure byte work, so
//! the broker's I/O loop only moves frames.

use super::{decode_request_tail, patch, Command, CommandFrame, Status, COMMAND_LEN};
use crate::error::Result;

/// Turns an inline `REQUEST` frame into the `JOB` for a worker that reads
/// inline jobs: its tail (service, headers) and data stay where they are.
pub fn request_into_job(frame: &mut [u8], job_id: u64, arg: u32) {
    patch(frame, Command::Job, job_id, arg);
}

/// Turns an inline `RESULT` frame into the `REPLY` for the client: the
/// worker's pid goes over the first 4 bytes of its tail (flags and run
/// time, of no use to clients). False when the frame is not one to patch
/// (then build a fresh `REPLY` around [`inline_data`]).
pub fn result_into_reply(frame: &mut [u8], req_id: u64, status: Status, pid: u32) -> bool {
    if !CommandFrame::decode(frame).is_ok_and(|f| f.tail.len() >= 4) {
        return false;
    }
    frame[COMMAND_LEN..COMMAND_LEN + 4].copy_from_slice(&pid.to_le_bytes());
    patch(frame, Command::Reply, req_id, status as u32);
    true
}

/// The data at the end of an inline frame (empty if it has none).
pub fn inline_data(frame: &[u8]) -> &[u8] {
    CommandFrame::decode(frame).ok().and_then(|f| f.data).unwrap_or_default()
}

/// The headers and data of an inline `REQUEST` frame, for a worker that
/// reads only two-frame `JOB`s.
pub fn unpack_request(frame: &[u8]) -> Result<(&[u8], &[u8])> {
    let f = CommandFrame::decode(frame)?;
    let (_, headers) = decode_request_tail(f.tail)?;
    Ok((headers, f.data.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_headers, encode_request_tail, ResultTail};

    #[test]
    fn a_request_becomes_a_job_and_a_result_a_reply_in_place() {
        let headers = encode_headers([("op", "sign")]);
        let tail = encode_request_tail("echo", &headers);
        let mut frame = CommandFrame::new(Command::Request, 7, 900, &tail).with_data(b"data").encode();
        request_into_job(&mut frame, 42, 800);
        let job = CommandFrame::decode(&frame).unwrap();
        assert_eq!(
            (job.command, job.id, job.arg, job.tail, job.data),
            (Command::Job, 42, 800, &tail[..], Some(&b"data"[..]))
        );
        assert_eq!(unpack_request(&frame).unwrap(), (&headers[..], &b"data"[..]));

        let (rtail, n) = ResultTail { still_busy: false, run_us: Some(5) }.encode();
        let mut result = CommandFrame::new(Command::Result, 42, 0, &rtail[..n]).with_data(b"ANSWER").encode();
        assert!(result_into_reply(&mut result, 7, Status::Ok, 1234));
        let reply = CommandFrame::decode(&result).unwrap();
        assert_eq!((reply.command, reply.id, reply.arg), (Command::Reply, 7, Status::Ok as u32));
        assert_eq!(&reply.tail[..4], &1234u32.to_le_bytes());
        assert_eq!(inline_data(&result), b"ANSWER");
        // A tail too short to hold the pid: not patched.
        let mut short = CommandFrame::new(Command::Result, 1, 0, &[0]).with_data(b"x").encode();
        assert!(!result_into_reply(&mut short, 7, Status::Ok, 1));
        assert_eq!(inline_data(b"garbage"), b"");
    }
}
