//! Fuzzes the broker's routing state with worker messages it did not expect:
//! each input is a sequence of events (a message from one of three workers,
//! a client job, time passing) run through the back parser into a
//! `BrokerState`, which must never panic whatever the order.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use powerhose::broker::state::{Answer, BrokerState, ClientRoute, Config, Job, Output};
use powerhose::protocol::parse::{parse_back, Back};
use powerhose::protocol::Registration;

#[path = "split.rs"]
mod split;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let config = Config { max_queue: 8, ..Config::default() };
    let mut state = BrokerState::<Vec<u8>>::new(config, 1, t0);
    let mut out: Vec<Output<Vec<u8>>> = Vec::new();
    let mut req = 0u64;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let len = (*tail.first().unwrap_or(&0) as usize).min(tail.len().saturating_sub(1));
        let chunk = &tail[1.min(tail.len())..1.min(tail.len()) + len];
        rest = &tail[(1 + len).min(tail.len())..];
        let identity: &[u8] = [b"w0".as_slice(), b"w1", b"w2"][(op % 3) as usize];
        match op % 8 {
            0..=3 => match parse_back(&split::frames(chunk)) {
                Back::Ready(reg) => state.worker_ready(now, identity, reg, &mut out),
                Back::Result { job_id, status, tail, inline } => {
                    let (still_busy, run_us, inline) = (tail.still_busy, tail.run_us, inline.is_some());
                    let answer = Answer { job_id, status, still_busy, run_us, body: chunk.to_vec(), inline };
                    state.worker_result(now, identity, answer, &mut out)
                }
                Back::Return { job_id, headers, elsewhere } => {
                    state.worker_return(now, identity, job_id, headers.to_vec(), chunk.to_vec(), elsewhere, &mut out)
                }
                Back::Heartbeat => state.worker_heartbeat(now, identity, &mut out),
                Back::Disconnect => state.worker_disconnect(now, identity, &mut out),
                Back::Bad(_) => {}
            },
            4 => {
                // A well-formed registration, so the other events have workers to act on.
                let service = ["a", "b"][(chunk.first().copied().unwrap_or(0) % 2) as usize].to_string();
                let coalesce_us = u64::from(chunk.get(1).copied().unwrap_or(0)) * 100;
                let inline = chunk.get(2).is_some_and(|b| b & 1 == 1);
                let reg = Registration { service, pid: op as u32, host: "h".into(), plugin: "p".into(), plugin_version: "1".into(), coalesce_us, inline };
                state.worker_ready(now, identity, reg, &mut out);
            }
            5 => {
                req += 1;
                let retries = u32::from(chunk.first().copied().unwrap_or(0) % 3);
                let route = ClientRoute { identity: vec![1], req_id: req, legacy: false };
                let deadline = now + Duration::from_millis(u64::from(chunk.get(1).copied().unwrap_or(50)) * 10);
                let inline = chunk.get(2).is_some_and(|b| b & 1 == 1);
                let priority = chunk.get(3).copied().unwrap_or(5) % 12;
                let data = chunk.to_vec();
                let job = Job { route, headers: vec![], data, deadline, retries, priority, received: now, inline };
                let service = ["", "a", "b", "zz"][(op as usize / 8) % 4];
                state.submit(now, service, job, &mut out);
            }
            6 => {
                now += Duration::from_millis(u64::from(chunk.first().copied().unwrap_or(1)) * 20);
                state.tick(now, |_| powerhose::broker::state::Vitality::Gone, &mut out);
            }
            _ => match chunk.first().copied().unwrap_or(0) {
                0xff => state.drain(&mut out),
                // A client cancels one of its requests (sent, answered or not).
                b if b & 0x80 != 0 => {
                    let back = u64::from(chunk.get(1).copied().unwrap_or(0) % 8);
                    let client: &[u8] = if b & 1 == 0 { &[1] } else { &[2] };
                    state.cancel(client, req.saturating_sub(back), &mut out);
                }
                _ => state.worker_died(now, u32::from(op), "h", &mut out),
            },
        }
        // Every message the state asks to send a worker must name a live one.
        for o in out.drain(..) {
            if let Output::Job { worker, .. } | Output::Heartbeat { worker } | Output::Cancel { worker, .. } = o {
                assert!(state.worker_identity(worker).is_some(), "an output names a freed worker slot");
            }
        }
    }
    let _ = state.next_deadline(now);
    let _ = state.workers(now);
});
