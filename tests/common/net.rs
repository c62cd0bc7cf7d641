//! Several hosts on one machine: a network namespace per host, joined by veth
//! pairs to a bridge in a private "switch" namespace, with links that can be
//! cut, hosts that can be killed, and a TCP proxy that adds latency (the
//! kernel here has no `tc netem`).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The /24 every test's hosts live on; each test has its own switch, so the
/// same addresses in two tests never meet.
const SUBNET: &str = "10.77.0";

/// One host: a network namespace with `eth0` on the switch and `lo` up.
pub struct Host {
    pub name: String,
    /// The namespace's name, as `ip netns` knows it.
    pub ns: String,
    addr: String,
}

impl Host {
    /// The host's address on the switch.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `program` to be run inside the host (`ip netns exec` execs it, so the
    /// child's pid is the program's and a `Proc` guard kills the program).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Runs `f` on a new thread that first joins the host's network
    /// namespace. The namespace is per thread and inherited by the threads
    /// it starts (libzmq's I/O thread is started with the first socket of a
    /// context), and a socket keeps the namespace it was made in: a
    /// `Client` or `TcpListener` made in `f` lives on this host, wherever it
    /// is used afterwards.
    pub fn enter<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.ns);
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::thread::spawn(move || {
            // SAFETY: setns only changes this thread's network namespace; the
            // fd is a namespace file we hold open until it returns.
            unsafe { powerhose::syscall!(setns(ns.as_raw_fd(), libc::CLONE_NEWNET)) }
                .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
            drop(ns);
            f()
        })
    }

    /// Pids of the processes in the host (whose main thread is in it: a
    /// thread of ours that `enter`ed does not count).
    pub fn pids(&self) -> Vec<u32> {
        pids(&self.ns)
    }
}

/// The hosts of one test, torn down (every process killed) on drop.
pub struct Net {
    switch: String,
    hosts: Vec<Host>,
}

impl Net {
    /// A switch and `hosts`, with addresses 10.77.0.1, .2, ... in order.
    pub fn new(hosts: &[&str]) -> Net {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        assert!(hosts.len() < 250, "one /24");
        // Unique per process and per test; a namespace left by a killed run
        // whose pid came back is removed first.
        let prefix = format!("ph{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let switch = format!("{prefix}-sw");
        fresh(&switch);
        let mut net = Net { switch, hosts: Vec::new() };
        // The switch's side is all made inside the switch: the root
        // namespace never sees an interface of ours, even for a moment.
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0"]);
        ip(&["-n", &net.switch, "link", "set", "br0", "up"]);
        for (i, name) in hosts.iter().enumerate() {
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "host name {name:?}");
            let ns = format!("{prefix}-{name}");
            fresh(&ns);
            let host = Host { name: name.to_string(), ns, addr: format!("{SUBNET}.{}", i + 1) };
            net.hosts.push(host);
            let (host, port) = (&net.hosts[i], format!("h{i}"));
            ip(&["-n", &net.switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.ns]);
            ip(&["-n", &net.switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &host.ns, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]);
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name:?}"))
    }

    pub fn addr(&self, host: &str) -> String {
        self.host(host).addr.clone()
    }

    /// Unplugs the host: its own end of the veth goes down. Its kernel then
    /// drops the route to the subnet, so its sends fail at once
    /// (ENETUNREACH) instead of vanishing into a dead link, and the
    /// switch's end loses carrier, so the bridge stops forwarding to it and
    /// the others' packets are dropped (their connects time out; nothing
    /// answers them, as with a real cut cable). Its connections are not
    /// told: they find out by their own timeouts, as over a real network.
    pub fn cut(&self, host: &str) {
        ip(&["-n", &self.host(host).ns, "link", "set", "eth0", "down"]);
    }

    /// Plugs the host back in (the bridge forwards again at once: no STP).
    pub fn restore(&self, host: &str) {
        ip(&["-n", &self.host(host).ns, "link", "set", "eth0", "up"]);
    }

    /// SIGKILLs every process in the host, until none is left (10 s at most).
    pub fn kill_host(&self, host: &str) {
        if let Err(left) = kill_all(&self.host(host).ns) {
            panic!("processes left in host {host}: {left:?}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = kill_all(&host.ns);
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.switch]).output();
    }
}

/// Creates namespace `ns`, removing one of that name (and what runs in it) first.
fn fresh(ns: &str) {
    if std::path::Path::new("/var/run/netns").join(ns).exists() {
        let _ = kill_all(ns);
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    ip(&["netns", "add", ns]);
}

fn pids(ns: &str) -> Vec<u32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output().unwrap();
    let me = std::process::id();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != me)
        .collect()
}

/// SIGKILLs the processes in `ns` until none is left (a process may fork
/// between listing and killing, hence the rounds); Err(pids) after 10 s.
/// A killed child of ours is a zombie until reaped, but out of the list:
/// its namespaces go when it dies.
fn kill_all(ns: &str) -> Result<(), Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pids(ns);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        for pid in left {
            super::kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the ip command (iproute2) is required");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (network namespaces need root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP proxy in a host that delays every chunk by `delay` in each
/// direction without holding up the next: a chunk read at t is written at
/// t + delay while reading goes on, so a window of data still flows per
/// round trip, as over a long link. Stops (and cuts its connections) on drop.
pub struct DelayProxy {
    port: u16,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listens on `listen_port` (0: any) on every address of `host`; each
    /// connection is forwarded to `target`, reached from `host`.
    pub fn start(host: &Host, listen_port: u16, target: SocketAddr, delay: Duration) -> DelayProxy {
        let (stop, conns) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = host.enter(move || {
            let listener = TcpListener::bind(("0.0.0.0", listen_port)).unwrap();
            ready_tx.send(listener.try_clone().unwrap()).unwrap();
            // Connection threads start from here, so they are in the host too.
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else { continue };
                let mut conns = conns2.lock().unwrap();
                conns.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), delay);
                pump(server, client, delay);
            }
        });
        let listener = ready_rx.recv_timeout(Duration::from_secs(10)).expect("the proxy's listener");
        let port = listener.local_addr().unwrap().port();
        DelayProxy { port, listener, stop, conns, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes a blocked accept (Linux):
        // no polling for the stop flag.
        // SAFETY: shutdown only acts on the socket; the fd is our own copy.
        let _ = unsafe { powerhose::syscall!(shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR)) };
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Chunks read but not yet due, with the time each is due; `None` for the
/// end of the stream (passed on, after the data, as a half-close).
type Queue = Arc<(Mutex<VecDeque<(Instant, Option<Vec<u8>>)>>, Condvar)>;

/// Moves `from` to `to`, each chunk `delay` after it was read: a reader
/// thread stamps and queues, a writer thread waits for each stamp.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    // Small chunks go out at once: Nagle would add its own delay.
    let _ = to.set_nodelay(true);
    let queue: Queue = Arc::default();
    let (q, source) = (queue.clone(), from.try_clone().ok());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let chunk = match from.read(&mut buf) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            q.0.lock().unwrap().push_back((Instant::now() + delay, chunk));
            q.1.notify_one();
            if end {
                break;
            }
        }
    });
    std::thread::spawn(move || loop {
        let (lock, ready) = &*queue;
        let mut q = ready.wait_while(lock.lock().unwrap(), |q| q.is_empty()).unwrap();
        let (due, chunk) = q.pop_front().unwrap();
        drop(q);
        // The delay itself: the one thing this thread waits for by the clock.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        match chunk {
            Some(data) if to.write_all(&data).is_ok() => {}
            Some(_) => {
                // The far end is gone: end both ways (which also ends the
                // reader above), as the near end would see over a real link.
                let _ = to.shutdown(Shutdown::Both);
                source.map(|s| s.shutdown(Shutdown::Both));
                break;
            }
            None => {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
        }
    });
}
