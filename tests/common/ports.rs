//! Loopback tcp ports for tests, chosen outside the kernel's ephemeral range.
//!
//! A port found free by binding port 0 comes from the ephemeral range, the
//! same range the kernel draws from for the source port of every outgoing
//! connection. Between the test dropping its probe and the broker binding,
//! another test's client may connect out from that very port, and the broker
//! then fails with "in use" (seen in CI). Ports below the ephemeral range are
//! never handed out that way; each one is still probed before it is given.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out: above the well-known and most registered services.
const LOW: u32 = 20_000;

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A loopback port free now and never used as an outgoing source port.
/// Test binaries spread out by pid, so parallel processes rarely probe the
/// same ports; within one process a counter keeps them apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_start().max(LOW + 1_000);
    let span = high - LOW;
    let base = std::process::id().wrapping_mul(7_919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + base.wrapping_add(n.wrapping_mul(13)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port in {LOW}..{high}");
}

/// `tcp://127.0.0.1:PORT` on a port from [`free_port`].
pub fn free_tcp() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}
