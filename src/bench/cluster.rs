//! The cluster a benchmark measures: a broker and its workers as separate
//! processes of this build, on the local transport (unix://), ZeroMQ ipc,
//! plaintext tcp or CURVE tcp (keys made for the run), killed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::procs::{self, Guarded};
use crate::auth::CurveClient;
use crate::client::Client;
use crate::cluster::find_executable;
use crate::error::{Error, Result};

/// How a bench cluster's broker listens, and how its peers reach it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Wire {
    /// The local transport: unix:// sockets in a private directory (the
    /// default for local endpoints).
    #[default]
    Unix,
    /// ZeroMQ ipc sockets in a private directory (the local transport
    /// before unix://, kept to measure both side by side).
    Ipc,
    /// Loopback tcp in plaintext.
    Tcp,
    /// Loopback tcp under CURVE: keys made for the run in the cluster's
    /// private directory, the client's and the workers' in the broker's
    /// allow-lists.
    Curve,
}

/// A broker and workers as separate processes, killed on drop.
pub struct BenchCluster {
    /// The `powerhose-broker` process.
    pub broker: Guarded,
    /// The `powerhose-worker` processes.
    pub workers: Vec<Guarded>,
    /// The broker's front endpoint.
    pub frontend: String,
    /// The directory of its unix:// or ipc endpoints (and keys), removed on drop.
    pub dir: PathBuf,
    /// A client's credentials, for [`Wire::Curve`].
    pub curve: Option<CurveClient>,
}

/// A loopback tcp endpoint on a port that was free a moment ago.
fn free_tcp() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("finding a free tcp port"))?;
    let port = listener.local_addr().map_err(Error::io("finding a free tcp port"))?.port();
    Ok(format!("tcp://127.0.0.1:{port}"))
}

impl Wire {
    /// The wire as reports name it (which ones go through ZeroMQ).
    pub fn name(self) -> &'static str {
        match self {
            Wire::Unix => "unix://",
            Wire::Ipc => "ipc (ZeroMQ)",
            Wire::Tcp => "tcp (ZeroMQ)",
            Wire::Curve => "CURVE tcp (ZeroMQ)",
        }
    }

    /// The front and back endpoints of a broker on this wire: sockets in
    /// `dir` for the local ones, free loopback ports for tcp.
    pub fn endpoints(self, dir: &Path) -> Result<(String, String)> {
        let d = dir.display();
        Ok(match self {
            Wire::Unix => (format!("unix://{d}/front.sock"), format!("unix://{d}/back.sock")),
            Wire::Ipc => (format!("ipc://{d}/front.ipc"), format!("ipc://{d}/back.ipc")),
            Wire::Tcp | Wire::Curve => (free_tcp()?, free_tcp()?),
        })
    }
}

/// Makes the broker's, a client's and a worker's key pairs in `dir/keys`
/// (0700) and allows the client's and the worker's: the broker's flags, the
/// workers' flags and the client's credentials.
fn curve_keys(dir: &Path) -> Result<(Vec<String>, Vec<String>, CurveClient)> {
    use std::os::unix::fs::DirBuilderExt;
    let private = |d: &Path| {
        std::fs::DirBuilder::new().mode(0o700).create(d).map_err(Error::io(format!("creating {}", d.display())))
    };
    let keys = dir.join("keys");
    private(&keys)?;
    let (broker_public, broker_secret) = crate::keys::write_certificates(&keys, "broker")?;
    let mut broker = vec!["--curve-secret".to_string(), broker_secret.display().to_string()];
    let mut peers = Vec::new();
    for role in ["client", "worker"] {
        let (public, secret) = crate::keys::write_certificates(&keys, role)?;
        let list = dir.join(format!("{role}s"));
        private(&list)?;
        let allowed = list.join(format!("{role}.key"));
        std::fs::copy(&public, &allowed).map_err(Error::io(format!("writing {}", allowed.display())))?;
        broker.extend([format!("--allow-{role}s"), list.display().to_string()]);
        peers.push(secret);
    }
    let worker = CurveClient::from_files(&peers[1], &broker_public)?.args();
    Ok((broker, worker, CurveClient::from_files(&peers[0], &broker_public)?))
}

impl BenchCluster {
    /// Starts the broker on `wire`, then the workers (extra flags for
    /// each), and waits up to 30 s for all workers to register; `pin` pins
    /// every process.
    pub fn start(
        wire: Wire,
        plugin: &Path,
        params: Option<&str>,
        workers: usize,
        pin: Option<usize>,
        extra_broker: &[&str],
        extra_worker: &[&str],
    ) -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = super::private_dir(&format!("bench-{}-{n}", std::process::id()))?;
        let (frontend, backend) = wire.endpoints(&dir)?;
        let (curve_broker, curve_worker, curve) = match wire {
            Wire::Curve => {
                let (b, w, c) = curve_keys(&dir)?;
                (b, w, Some(c))
            }
            Wire::Unix | Wire::Ipc | Wire::Tcp => Default::default(),
        };
        let mut args = vec!["--frontend", &frontend, "--backend", &backend];
        args.extend(curve_broker.iter().map(String::as_str));
        args.extend_from_slice(extra_broker);
        let broker = procs::spawn(&find_executable("powerhose-broker")?, &args, pin, &[])?;
        let client = Client::connect_with(&frontend, curve.as_ref())?;
        client.ping(Duration::from_secs(10))?;
        let plugin = plugin.to_str().ok_or_else(|| Error::PathNotUtf8 { path: plugin.to_path_buf() })?;
        let mut wargs = vec!["--plugin", plugin, "--backend", &backend];
        if let Some(p) = params {
            wargs.extend(["--params", p]);
        }
        wargs.extend(curve_worker.iter().map(String::as_str));
        wargs.extend_from_slice(extra_worker);
        let worker_exe = find_executable("powerhose-worker")?;
        let workers = (0..workers).map(|_| procs::spawn(&worker_exe, &wargs, pin, &[])).collect::<Result<Vec<_>>>()?;
        let wait = Duration::from_secs(30);
        let deadline = std::time::Instant::now() + wait;
        while client.workers("", Duration::from_secs(5))? < workers.len() {
            if std::time::Instant::now() > deadline {
                return Err(Error::WorkersDidNotRegister { waited: wait });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(BenchCluster { broker, workers, frontend, dir, curve })
    }

    /// A new client of the cluster (with its keys under [`Wire::Curve`]).
    pub fn client(&self) -> Result<Client> {
        Client::connect_with(&self.frontend, self.curve.as_ref())
    }

    pub(super) fn cpu(&self) -> (Duration, Duration) {
        (procs::cpu_time(self.broker.pid()), self.workers.iter().map(|w| procs::cpu_time(w.pid())).sum())
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        self.workers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn local_wires_live_in_the_private_dir() {
        let dir = Path::new("/run/user/1/bench-1-0");
        let (front, back) = Wire::Unix.endpoints(dir).unwrap();
        assert!(crate::local::is_local(&front) && crate::local::is_local(&back), "{front} {back}");
        assert_eq!(crate::local::path_of(&front).unwrap(), dir.join("front.sock"));
        let (front, _) = Wire::Ipc.endpoints(dir).unwrap();
        assert_eq!(front, "ipc:///run/user/1/bench-1-0/front.ipc");
        assert!(Wire::Tcp.endpoints(dir).unwrap().0.starts_with("tcp://127.0.0.1:"));
    }

    #[test]
    fn curve_keys_are_private_and_the_peers_are_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, worker, client) = curve_keys(dir.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        assert_eq!(mode(&dir.path().join("keys/broker.key_secret")), 0o600);
        let flag = |args: &[String], name: &str| {
            let i = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("{name} in {args:?}"));
            PathBuf::from(&args[i + 1])
        };
        let server = crate::keys::load_certificate(&flag(&broker, "--curve-secret")).unwrap();
        assert!(server.secret.is_some());
        // Each peer's public key is in its role's list, and each knows the broker's.
        for (role, peer) in [
            ("clients", client.clone()),
            (
                "workers",
                CurveClient::from_files(&flag(&worker, "--curve-secret"), &flag(&worker, "--curve-server")).unwrap(),
            ),
        ] {
            let list = flag(&broker, &format!("--allow-{role}"));
            assert_eq!(mode(&list), 0o700);
            let allowed: Vec<_> = std::fs::read_dir(&list).unwrap().map(|e| e.unwrap().path()).collect();
            assert_eq!(allowed.len(), 1, "{allowed:?}");
            assert_eq!(crate::keys::load_certificate(&allowed[0]).unwrap().public, peer.keys.public);
            assert_eq!(peer.server, server.public);
        }
        assert_ne!(client.keys.public, server.public, "the client is not the owner");
    }
}
