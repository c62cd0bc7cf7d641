//! How far an endpoint reaches, and the refusal to bind one the network can
//! reach without CURVE: secure by default, plaintext only on request.

use crate::error::{Error, Result};

/// Who can connect to a bound endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// `ipc://` (a 0600 file in a 0700 directory) or `inproc://`: the owner.
    Owner,
    /// tcp on a loopback address: every user of this machine.
    Local,
    /// tcp on any other address (or `*`), or another transport: the network.
    Network,
}

/// The reach of `endpoint` once bound.
pub fn reach(endpoint: &str) -> Reach {
    if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") || crate::local::is_local(endpoint) {
        return Reach::Owner;
    }
    let Some(address) = endpoint.strip_prefix("tcp://") else { return Reach::Network };
    // The host is all before the last colon (the port), brackets removed.
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host {
        "localhost" | "lo" | "::1" => true,
        _ => host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()),
    };
    if loopback {
        Reach::Local
    } else {
        Reach::Network
    }
}

/// Refuses to bind `endpoint` (given as `flag`) for the network in
/// plaintext unless `insecure`; `Ok(true)` when it is bound so anyway
/// (the caller warns and flags it in STATUS).
pub fn check_bind(flag: &str, endpoint: &str, curve: bool, insecure: bool) -> Result<bool> {
    if curve || reach(endpoint) != Reach::Network {
        return Ok(false);
    }
    if insecure {
        return Ok(true);
    }
    Err(Error::BadFlag(format!(
        "{flag} {endpoint}: refusing to serve the network without authentication; \
         give --curve-secret FILE (and --allow-* directories), or --insecure to allow anyone"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_classified_by_who_can_reach_them() {
        for owner in ["ipc:///run/user/1/powerhose/front.ipc", "inproc://x"] {
            assert_eq!(reach(owner), Reach::Owner, "{owner}");
        }
        for local in ["tcp://127.0.0.1:5555", "tcp://127.3.2.1:1", "tcp://localhost:80", "tcp://[::1]:5", "tcp://lo:9"]
        {
            assert_eq!(reach(local), Reach::Local, "{local}");
        }
        for network in [
            "tcp://*:5555",
            "tcp://0.0.0.0:5555",
            "tcp://[::]:5555",
            "tcp://10.0.0.2:5555",
            "tcp://eth0:5555",
            "tcp://example.org:1",
            "ws://127.0.0.1:5",
            "pgm://eth0;239.192.1.1:5555",
        ] {
            assert_eq!(reach(network), Reach::Network, "{network}");
        }
    }

    #[test]
    fn only_the_network_in_plaintext_needs_insecure() {
        assert!(!check_bind("--frontend", "tcp://127.0.0.1:1", false, false).unwrap());
        assert!(!check_bind("--frontend", "ipc:///tmp/x", false, false).unwrap());
        assert!(!check_bind("--frontend", "tcp://*:1", true, false).unwrap());
        assert!(check_bind("--frontend", "tcp://*:1", false, true).unwrap());
        let e = check_bind("--backend", "tcp://0.0.0.0:7", false, false).unwrap_err();
        assert!(matches!(e, Error::BadFlag(_)));
        let line = e.to_string();
        assert!(line.contains("--backend tcp://0.0.0.0:7") && line.contains("--curve-secret"), "{line}");
        assert!(line.contains("--insecure") && !line.contains('\n'), "{line}");
    }
}
