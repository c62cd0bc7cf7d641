//! The multi-host harness itself (`common::net`): a pool spread over host
//! namespaces serves a job, a client made in a host lives in that host, a cut
//! link fails connects within 2 s and a restored one carries them again,
//! killing a host leaves nothing running in it, and the delaying proxy adds
//! its two delays to a round trip without serialising a stream.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::net::{DelayProxy, Host, Net};
use common::pki::free_tcp;
use common::*;
use powerhose::Client;

const T: Duration = Duration::from_secs(10);

/// A plaintext broker on `host`'s address (ports 5555 front, 5556 back):
/// `--insecure`, since it is not loopback; the test's switch is private.
fn broker_on(host: &Host, dir: &TestDir) -> (Proc, String, String) {
    let (front, back) = (format!("tcp://{}:5555", host.addr()), format!("tcp://{}:5556", host.addr()));
    let mut cmd = host.command(BROKER);
    cmd.args(["--frontend", &front, "--backend", &back, "--insecure"]).env("POWERHOSE_RUNTIME_DIR", dir.path());
    (Proc::spawn_cmd(cmd, dir, &format!("broker-{}", host.name)), front, back)
}

fn worker_on(host: &Host, dir: &TestDir, back: &str) -> Proc {
    let mut cmd = host.command(WORKER);
    cmd.args(["--plugin", plugin("echo").to_str().unwrap(), "--backend", back]);
    cmd.env("POWERHOSE_RUNTIME_DIR", dir.path());
    Proc::spawn_cmd(cmd, dir, &format!("worker-{}", host.name))
}

#[test]
fn a_job_crosses_hosts_and_a_client_made_in_a_host_lives_there() {
    let dir = TestDir::new();
    let net = Net::new(&["a", "w1", "c"]);
    let (broker, front, back) = broker_on(net.host("a"), &dir);
    let _worker = worker_on(net.host("w1"), &dir, &back);
    let served = net
        .host("c")
        .enter(move || {
            let client = Client::connect(&front)?;
            client.ping(Duration::from_secs(30))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while client.workers("", T)? == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            client.execute("over the wire", T)
        })
        .join()
        .unwrap();
    assert_eq!(served.unwrap_or_else(|e| panic!("{e}\n{}", broker.stderr())), b"over the wire");

    // A broker on the root namespace's loopback: up (the root answers) but
    // out of reach from c, whose loopback is its own.
    let root_front = free_tcp();
    let _root = Proc::spawn(BROKER, &["--frontend", &root_front, "--backend", &dir.back()], &dir, "root-broker");
    Client::connect(&root_front).unwrap().ping(Duration::from_secs(30)).unwrap();
    let from_c = net.host("c").enter(move || Client::connect(&root_front).unwrap().ping(Duration::from_secs(1)));
    assert!(from_c.join().unwrap().is_err(), "c reached the root namespace's loopback");
}

/// Connects from `host` to `to`, giving up after 2 s.
fn connect_from(host: &Host, to: SocketAddr) -> (std::io::Result<TcpStream>, Duration) {
    host.enter(move || {
        let start = Instant::now();
        (TcpStream::connect_timeout(&to, Duration::from_secs(2)), start.elapsed())
    })
    .join()
    .unwrap()
}

/// A listener made in `host` (it stays there), on its address.
fn listen_in(host: &Host) -> (TcpListener, SocketAddr) {
    let addr = host.addr().to_string();
    let listener = host.enter(move || TcpListener::bind((addr.as_str(), 0)).unwrap()).join().unwrap();
    let local = listener.local_addr().unwrap();
    (listener, local)
}

#[test]
fn a_cut_link_fails_connects_both_ways_within_2s_and_a_restored_one_carries_them() {
    let net = Net::new(&["w1", "c"]);
    let (_w1_listener, w1) = listen_in(net.host("w1"));
    let (_c_listener, c) = listen_in(net.host("c"));
    assert!(connect_from(net.host("c"), w1).0.is_ok(), "before the cut");

    net.cut("w1");
    for (from, to) in [("c", w1), ("w1", c)] {
        let (result, took) = connect_from(net.host(from), to);
        eprintln!("{from} -> {to} over the cut: {result:?} after {took:?}");
        assert!(result.is_err(), "{from} reached {to} over a cut link");
        assert!(took < Duration::from_millis(2500), "{from} -> {to} took {took:?}");
    }

    net.restore("w1");
    // The link is up again at once, but give ARP its moment: bounded.
    wait_until("c to reach w1 again", T, || connect_from(net.host("c"), w1).0.is_ok());
    assert!(connect_from(net.host("w1"), c).0.is_ok(), "w1 -> c after the restore");
}

#[test]
fn killing_a_host_kills_everything_in_it() {
    let dir = TestDir::new();
    let net = Net::new(&["a", "c"]);
    let a = net.host("a");
    let (mut broker, front, back) = broker_on(a, &dir);
    let mut worker = worker_on(a, &dir, &back);
    // A process that is not our child: killed all the same.
    let mut cmd = a.command("sh");
    cmd.args(["-c", "sleep 300 & wait"]);
    let mut shell = Proc::spawn_cmd(cmd, &dir, "shell");
    let up = net.host("c").enter(move || {
        let client = Client::connect(&front).unwrap();
        client.ping(Duration::from_secs(30)).unwrap();
        wait_until("the worker to register", Duration::from_secs(30), || client.workers("", T).unwrap() == 1);
    });
    up.join().unwrap();
    wait_until("the shell's sleep", T, || a.pids().len() == 4);

    net.kill_host("a");
    assert_eq!(a.pids(), Vec::<u32>::new());
    for proc in [&mut broker, &mut worker, &mut shell] {
        let status = proc.wait_exit(T).expect("dead");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    }
}

/// An echo server made in `host`: one thread per connection.
fn echo_server(host: &Host) -> SocketAddr {
    let (listener, addr) = listen_in(host);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            conn.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut out);
            });
        }
    });
    addr
}

#[test]
fn the_delay_proxy_adds_two_delays_to_a_round_trip_but_keeps_a_stream_flowing() {
    const DELAY: Duration = Duration::from_millis(20);
    let net = Net::new(&["s", "p", "c"]);
    let server = echo_server(net.host("s"));
    let proxy = DelayProxy::start(net.host("p"), 0, server, DELAY);
    let via: SocketAddr = format!("{}:{}", net.addr("p"), proxy.port()).parse().unwrap();
    let (rtts, stream) = net
        .host("c")
        .enter(move || {
            let mut conn = TcpStream::connect_timeout(&via, T).unwrap();
            conn.set_nodelay(true).unwrap();
            conn.set_read_timeout(Some(T)).unwrap();
            let mut byte = [0u8; 1];
            let rtts: Vec<Duration> = (0..5u8)
                .map(|i| {
                    let start = Instant::now();
                    conn.write_all(&[i]).unwrap();
                    conn.read_exact(&mut byte).unwrap();
                    assert_eq!(byte[0], i);
                    start.elapsed()
                })
                .collect();
            // 200 messages without waiting, then their 200 echoes.
            let start = Instant::now();
            for i in 0..200u32 {
                conn.write_all(&i.to_be_bytes()).unwrap();
            }
            let mut echoes = vec![0u8; 800];
            conn.read_exact(&mut echoes).unwrap();
            let sent: Vec<u8> = (0..200u32).flat_map(u32::to_be_bytes).collect();
            assert_eq!(echoes, sent);
            (rtts, start.elapsed())
        })
        .join()
        .unwrap();
    let rtt = *rtts.iter().min().unwrap();
    eprintln!("proxy delay {DELAY:?}: round trips {rtts:?}; 200 pipelined messages in {stream:?}");
    assert!(rtt >= 2 * DELAY && rtt < Duration::from_millis(200), "round trip {rtt:?}");
    assert!(stream < 20 * rtt.max(2 * DELAY), "200 pipelined messages took {stream:?} (round trip {rtt:?})");
    drop(proxy);
}
