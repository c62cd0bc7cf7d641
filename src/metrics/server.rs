//! The HTTP side of `--metrics`: `tiny_http` on threads of its own; each
//! `GET /metrics` asks the broker's loop for a snapshot and renders it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{render, ProcessUsage, CONTENT_TYPE};
use crate::broker::Probe;
use crate::error::{Error, Result};

/// How long a scrape waits for the broker's loop (busy past this, the
/// scrape gets 503 and Prometheus marks it failed).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// A bound metrics endpoint, not serving yet.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (port 0 is not refused here: a test asks for it).
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer> {
        let listener = TcpListener::bind(addr).map_err(Error::io(format!("binding --metrics {addr}")))?;
        Ok(MetricsServer { listener })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::io("reading the --metrics address"))
    }

    /// Serves scrapes of the broker behind `probe` until the result is dropped.
    pub fn serve(self, probe: Probe) -> Result<Serving> {
        let addr = self.local_addr()?;
        let server = tiny_http::Server::from_listener(self.listener, None)
            .map_err(|e| Error::io(format!("serving --metrics {addr}"))(std::io::Error::other(e)))?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let _ = answer(request, &probe);
                }
            })
            .map_err(Error::io("starting the metrics thread"))?;
        tracing::info!("metrics at http://{addr}/metrics");
        Ok(Serving { server, thread: Some(thread) })
    }
}

/// The endpoint at work; dropping it stops it.
pub struct Serving {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(request: tiny_http::Request, probe: &Probe) -> std::io::Result<()> {
    let path = request.url().split('?').next().unwrap_or_default();
    if path != "/metrics" {
        let text = "not found: the metrics are at /metrics\n";
        return request.respond(tiny_http::Response::from_string(text).with_status_code(404));
    }
    if !matches!(request.method(), tiny_http::Method::Get | tiny_http::Method::Head) {
        return request.respond(tiny_http::Response::empty(405));
    }
    match probe.snapshot(SNAPSHOT_WAIT) {
        Ok(snapshot) => {
            let text = render(snapshot, ProcessUsage::now());
            let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).expect("a valid header");
            request.respond(tiny_http::Response::from_string(text).with_header(header))
        }
        Err(e) => {
            let text = format!("the broker did not answer: {e}\n");
            request.respond(tiny_http::Response::from_string(text).with_status_code(503))
        }
    }
}
