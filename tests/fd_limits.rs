//! Running out of file descriptors, with a real broker under a low
//! `RLIMIT_NOFILE` and a flood of plain TCP connections: before, the
//! broker's I/O thread spun at 100% CPU retrying the accept, logged nothing
//! and took no one new; now it stops listening for a while, says so, counts
//! it, and serves again once descriptors are free.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use powerhose::Client;

const T: Duration = Duration::from_secs(20);
/// The broker's descriptor limit, soft and hard (it may not raise it).
const FD_LIMIT: libc::rlim_t = 128;
const CONNECTIONS: usize = 300;

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Opens up to `n` connections to `addr` at once, from several threads,
/// each attempt bounded; returns those that connected.
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = (0..30)
        .map(|_| {
            std::thread::spawn(move || {
                (0..n / 30)
                    .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

#[test]
fn running_out_of_descriptors_is_logged_backed_off_and_recovered_from() {
    let dir = TestDir::new();
    let port = common::ports::free_port();
    let front = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(BROKER);
    cmd.args(["--frontend", &front, "--backend", &dir.back()]).env("POWERHOSE_RUNTIME_DIR", dir.path());
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setrlimit is one.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: FD_LIMIT, rlim_max: FD_LIMIT };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let broker = Proc::spawn_cmd(cmd, &dir, "broker");
    // Connected before the flood (ZeroMQ reconnects it when the endpoint
    // listens again: unbinding closed it).
    let early = Client::connect(&front).unwrap();
    early.ping(T).unwrap_or_else(|e| panic!("broker not up: {e}\n{}", broker.stderr()));
    let plugin = plugin("echo");
    let worker = Proc::spawn(WORKER, &["--plugin", plugin.to_str().unwrap(), "--backend", &dir.back()], &dir, "worker");
    wait_until("the worker to register", T, || early.workers("", T).unwrap() > 0);

    let streams = flood(format!("127.0.0.1:{port}").parse().unwrap(), CONNECTIONS);
    let (before, sampled) = (cpu_time(broker.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(2)); // the measurement's span, not a wait for an event
    let share = (cpu_time(broker.pid()) - before).as_secs_f64() / sampled.elapsed().as_secs_f64();
    eprintln!("{} connections made; broker CPU over 2 s: {:.0}% of one CPU", streams.len(), share * 100.0);
    assert!(share < 0.3, "the broker spins: {:.0}% of a CPU\n{}", share * 100.0, broker.stderr());

    // A client connected before is served again.
    assert_eq!(early.execute("during the flood", T).unwrap(), b"during the flood");
    let status = early.status(T).unwrap();
    assert!(status.counters.accept_failures > 0, "{:?}", status.counters);
    let log = broker.stderr();
    let warned = log.lines().filter(|l| l.contains("a connection could not be accepted")).count();
    assert!(warned >= 1, "no warning about the failed accepts:\n{log}");
    assert!(log.contains(&format!("open file limit {FD_LIMIT}")), "{log}");
    assert!(log.lines().count() < 100, "the warnings are rate-limited:\n{log}");

    // Once the flood's connections close, a new client is served.
    drop(streams);
    let started = Instant::now();
    let late = Client::connect(&front).unwrap();
    assert_eq!(late.execute("after the flood", T).unwrap(), b"after the flood", "{}", broker.stderr());
    eprintln!("a new client served {:?} after the flood ended", started.elapsed());
    drop(worker);
}
