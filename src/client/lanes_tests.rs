//! Unit tests of the choice of a lane by clients that share its load word:
//! each choice is counted as it is made, so that clients choosing at once
//! spread over idle lanes as a broker would.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::Lanes;
use crate::local::load::{load_path, LoadWord};

/// A broker socket path whose lanes directory holds one lane of `svc` per
/// pid, each with its load word (the worker's side, returned).
fn lanes_of(dir: &Path, pids: &[u32]) -> (PathBuf, Vec<LoadWord>) {
    let socket = dir.join("broker.sock");
    let lanes = crate::local::lanes_dir(&socket);
    std::fs::create_dir(&lanes).unwrap();
    let words = pids
        .iter()
        .map(|pid| {
            let lane = lanes.join(format!("svc@{pid}"));
            std::fs::write(&lane, b"").unwrap();
            LoadWord::create(&load_path(&lane)).unwrap()
        })
        .collect();
    (socket, words)
}

#[test]
fn two_clients_that_choose_before_either_sends_take_two_idle_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, words) = lanes_of(dir.path(), &[11, 12]);
    let (a, b) = (Lanes::new(&socket), Lanes::new(&socket));
    let now = Instant::now();
    let first = a.pick("svc", now).unwrap();
    let second = b.pick("svc", now).unwrap();
    assert_ne!(first.pid, second.pid, "the second client saw the first one's choice");
    assert_eq!(words.iter().map(LoadWord::get).collect::<Vec<_>>(), [1, 1], "each choice counted once");
    let third = a.pick("", now).unwrap();
    assert!([11, 12].contains(&third.pid));
    assert_eq!(words.iter().map(LoadWord::get).sum::<u64>(), 3);
    assert!(a.pick("other", now).is_none(), "no lane of another service");
}

#[test]
fn clients_choosing_at_once_each_take_an_idle_lane_of_their_own() {
    const LANES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let pids: Vec<u32> = (1..=LANES as u32).collect();
    let (socket, words) = lanes_of(dir.path(), &pids);
    for round in 0..200 {
        let start = Arc::new(Barrier::new(LANES));
        let chosen: Vec<u32> = (0..LANES)
            .map(|_| {
                let (socket, start) = (socket.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    // A client each, as in as many processes.
                    let client = Lanes::new(&socket);
                    start.wait();
                    client.pick("svc", Instant::now()).unwrap().pid
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let mut sorted = chosen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, pids, "round {round}: {chosen:?}");
        // Every job answered: the workers take their counts off.
        words.iter().for_each(LoadWord::sub);
    }
}
