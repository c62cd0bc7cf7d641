//! How the broker tells a dead or hung local worker from a starved one: the
//! kernel names the process behind each ipc connection to the back socket
//! (`SO_PEERCRED` on the connection's descriptor, which libzmq's monitor
//! reports as it accepts and closes connections), and `/proc` says what
//! that process is doing. The verdicts feed the pure state machine
//! ([`Vitality`]); this is its I/O side.

use std::collections::HashMap;

use super::state::Vitality;

/// The processes connected to the back socket over ipc, by descriptor.
#[derive(Default)]
pub(super) struct Peers {
    pid_by_fd: HashMap<i32, u32>,
}

impl Peers {
    /// Applies one monitor event.
    pub fn on_event(&mut self, event: u16, fd: i32) {
        if event == zmq::SocketEvent::ACCEPTED as u16 {
            // Nothing for tcp (no credentials) or a descriptor already gone.
            if let Some(pid) = peer_pid(fd) {
                self.pid_by_fd.insert(fd, pid);
            }
        } else if event == zmq::SocketEvent::DISCONNECTED as u16 {
            self.pid_by_fd.remove(&fd);
        }
    }

    /// A local (`unix://`) connection accepted from process `pid`.
    pub fn insert_local(&mut self, fd: i32, pid: u32) {
        self.pid_by_fd.insert(fd, pid);
    }

    /// A local connection closed.
    pub fn remove_local(&mut self, fd: i32) {
        self.pid_by_fd.remove(&fd);
    }

    /// Whether a process with this pid is connected over ipc.
    pub fn connected(&self, pid: u32) -> bool {
        self.pid_by_fd.values().any(|&p| p == pid)
    }
}

/// The pid of the process at the other end of a Unix socket.
fn peer_pid(fd: i32) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes and len is cred's size; a
    // descriptor that is not a Unix socket (or is closed) only fails.
    let got = unsafe {
        crate::syscall!(getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len
        ))
    };
    got.ok().filter(|_| cred.pid > 0).map(|_| cred.pid as u32)
}

/// A monitor event: (event, value) from its first frame (u16 event, u32
/// value, both LE); the second frame (the endpoint) is read and dropped.
pub(super) fn read_event(events: &zmq::Socket) -> Option<(u16, i32)> {
    let mut head = zmq::Message::new();
    crate::sys::zmq_recv(events, &mut head, zmq::DONTWAIT).ok()?;
    let mut rest = zmq::Message::new();
    while head.get_more() && crate::sys::zmq_recv(events, &mut rest, 0).is_ok() && rest.get_more() {}
    let event = u16::from_le_bytes(head.get(..2)?.try_into().ok()?);
    let value = i32::from_le_bytes(head.get(2..6)?.try_into().ok()?);
    Some((event, value))
}

/// Looks at local workers' processes; remembers how much each has run or
/// waited to run, to tell a starved process (that wants the CPU) from a
/// hung one (that does not) between two looks.
#[derive(Default)]
pub(super) struct Vitals {
    scheduled_ns: HashMap<u32, u64>,
}

impl Vitals {
    pub fn probe(&mut self, pid: u32) -> Vitality {
        let Some(state) = crate::sys::process_state(pid) else {
            self.scheduled_ns.remove(&pid);
            return Vitality::Gone;
        };
        match state {
            'Z' | 'X' => {
                self.scheduled_ns.remove(&pid);
                return Vitality::Gone;
            }
            // Stopped (SIGSTOP, a debugger): it will not answer.
            'T' | 't' => return Vitality::Hung,
            _ => {}
        }
        let (runnable, scheduled) = threads(pid);
        let before = self.scheduled_ns.insert(pid, scheduled);
        // First look, or time on or waiting for a CPU since the last one.
        if runnable || before.is_none_or(|b| scheduled > b) {
            Vitality::Running
        } else {
            Vitality::Hung
        }
    }
}

/// Whether any thread is running or runnable, and the time all threads
/// spent on a CPU plus waiting for one (`schedstat`, ns).
fn threads(pid: u32) -> (bool, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return (false, 0) };
    let mut runnable = false;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        runnable |= crate::sys::proc_state(&path.join("stat")) == Some('R');
        if let Ok(sched) = std::fs::read_to_string(path.join("schedstat")) {
            let mut fields = sched.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
            total += fields.next().unwrap_or(0) + fields.next().unwrap_or(0);
        }
    }
    (runnable, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_process_is_running_then_hung_when_stopped_then_gone() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let asleep = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::sys::process_state(pid) != Some('S') {
            assert!(std::time::Instant::now() < asleep, "the child never slept");
            std::thread::yield_now();
        }
        let mut vitals = Vitals::default();
        assert_eq!(vitals.probe(pid), Vitality::Running, "first look");
        // Sleeping, it neither runs nor waits to run: a second look calls it hung.
        assert_eq!(vitals.probe(pid), Vitality::Hung);
        // SAFETY: signalling our own child.
        unsafe { crate::syscall!(kill(pid as i32, libc::SIGSTOP)) }.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::sys::process_state(pid) != Some('T') {
            assert!(std::time::Instant::now() < deadline, "the child never stopped");
            std::thread::yield_now();
        }
        assert_eq!(vitals.probe(pid), Vitality::Hung, "stopped");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(vitals.probe(pid), Vitality::Gone);
    }

    #[test]
    fn a_busy_process_is_running() {
        let mut child = Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let mut vitals = Vitals::default();
        vitals.probe(child.id());
        std::thread::sleep(std::time::Duration::from_millis(50)); // let it use some CPU
        assert_eq!(vitals.probe(child.id()), Vitality::Running);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn connections_name_their_process_only_over_ipc() {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        let events = ctx.socket(zmq::PAIR).unwrap();
        let watched = (zmq::SocketEvent::ACCEPTED as i32) | (zmq::SocketEvent::DISCONNECTED as i32);
        router.monitor("inproc://vitals-test", watched).unwrap();
        events.connect("inproc://vitals-test").unwrap();
        router.bind(&format!("ipc://{}/v.ipc", dir.path().display())).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let tcp = router.get_last_endpoint().unwrap().unwrap();
        let mut peers = Peers::default();
        let next = |peers: &mut Peers| {
            let mut items = [events.as_poll_item(zmq::POLLIN)];
            assert_eq!(zmq::poll(&mut items, 5_000).unwrap(), 1, "a monitor event");
            let (event, fd) = read_event(&events).unwrap();
            peers.on_event(event, fd);
        };
        let ipc = ctx.socket(zmq::DEALER).unwrap();
        ipc.connect(&format!("ipc://{}/v.ipc", dir.path().display())).unwrap();
        next(&mut peers);
        let over_tcp = ctx.socket(zmq::DEALER).unwrap();
        over_tcp.connect(&tcp).unwrap();
        next(&mut peers);
        assert_eq!(peers.pid_by_fd.len(), 1, "only the ipc connection names its process");
        assert!(peers.connected(std::process::id()));
        drop(ipc);
        next(&mut peers);
        assert!(!peers.connected(std::process::id()));
    }
}
