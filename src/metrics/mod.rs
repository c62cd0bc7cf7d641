//! `--metrics ADDR`: the broker's figures in the Prometheus text format at
//! `http://ADDR/metrics`, for `powerhose-broker` and `powerhose`.
//!
//! The broker's loop keeps plain counters; each scrape asks it for a copy
//! ([`crate::broker::Probe`]) and renders that here with the Prometheus
//! project's own client (`prometheus-client`), so nothing is shared with the
//! loop and nothing is locked per job. The endpoint shows counts, durations,
//! service names and the broker's memory and CPU: no job data, no key, no
//! client or worker identity. It still says how busy the pool is and what it
//! runs, so it listens on loopback unless `--metrics-allow-remote` is given.

mod process;
mod render;
mod server;

pub use process::ProcessUsage;
pub use render::{render, CONTENT_TYPE};
pub use server::{MetricsServer, Serving};

use std::net::SocketAddr;

use crate::error::{Error, Result};

/// Parses `--metrics`: an IP address and port (`127.0.0.1:9464`,
/// `[::1]:9464`); one that other machines can reach only when `allow_remote`.
pub fn parse_addr(text: &str, allow_remote: bool) -> Result<SocketAddr> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::BadFlag(format!("--metrics {text:?} is not an IP address and port, such as 127.0.0.1:9464"))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(Error::BadFlag(format!(
            "--metrics {addr} can be reached from other machines; use a loopback address, or add --metrics-allow-remote"
        )));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_unless_allowed() {
        assert_eq!(parse_addr("127.0.0.1:9464", false).unwrap().port(), 9464);
        assert!(parse_addr("[::1]:9464", false).is_ok());
        for bad in ["localhost:9464", "9464", "127.0.0.1", "127.0.0.1:99999"] {
            let err = parse_addr(bad, false).unwrap_err();
            assert!(matches!(err, Error::BadFlag(_)), "{bad}: {err:?}");
        }
        let err = parse_addr("0.0.0.0:9464", false).unwrap_err().to_string();
        assert!(err.contains("--metrics-allow-remote"), "{err}");
        assert!(parse_addr("0.0.0.0:9464", true).is_ok());
    }
}
