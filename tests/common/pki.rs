//! Keys for the CURVE tests: certificates made by `powerhose-keygen`, one
//! allow-list directory per role, and free loopback ports. (Network
//! namespaces are in `net`.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use powerhose::auth::CurveClient;
use powerhose::{Client, Error, JobRequest};

use super::{plugin, Proc, TestDir, BROKER, WORKER};

pub const KEYGEN: &str = env!("CARGO_BIN_EXE_powerhose-keygen");

/// Certificates in `DIR/keys`, allow-lists in `DIR/clients`, `DIR/workers`
/// and `DIR/operators`; the broker's pair is `broker`.
pub struct Pki {
    root: PathBuf,
}

impl Pki {
    pub fn new(dir: &TestDir) -> Pki {
        let root = dir.path().to_path_buf();
        for sub in ["keys", "clients", "workers", "operators"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let pki = Pki { root };
        pki.make("broker");
        pki
    }

    /// Makes NAME's pair with `powerhose-keygen`.
    pub fn make(&self, name: &str) {
        let out = Command::new(KEYGEN).args([name, "--dir"]).arg(self.root.join("keys")).output().unwrap();
        assert!(out.status.success(), "keygen {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn public(&self, name: &str) -> PathBuf {
        self.root.join("keys").join(format!("{name}.key"))
    }

    pub fn secret(&self, name: &str) -> PathBuf {
        self.root.join("keys").join(format!("{name}.key_secret"))
    }

    /// A role's allow-list directory (`clients`, `workers`, `operators`).
    pub fn list(&self, role: &str) -> PathBuf {
        self.root.join(role)
    }

    /// Makes NAME's pair and puts its public certificate in `role`'s list.
    pub fn allow(&self, role: &str, name: &str) {
        if !self.public(name).exists() {
            self.make(name);
        }
        std::fs::copy(self.public(name), self.list(role).join(format!("{name}.key"))).unwrap();
    }

    /// [`Self::allow`] for each (role, name).
    pub fn allow_all(&self, grants: &[(&str, &str)]) {
        for (role, name) in grants {
            self.allow(role, name);
        }
    }

    /// Removes NAME's certificate from `role`'s list.
    pub fn revoke(&self, role: &str, name: &str) {
        std::fs::remove_file(self.list(role).join(format!("{name}.key"))).unwrap();
    }

    /// The broker's flags: its secret and every list.
    pub fn broker_args(&self) -> Vec<String> {
        let mut args = vec!["--curve-secret".to_string(), path(&self.secret("broker"))];
        for role in ["clients", "workers", "operators"] {
            args.extend([format!("--allow-{role}"), path(&self.list(role))]);
        }
        args
    }

    /// A client's or worker's flags for NAME's pair.
    pub fn peer_args(&self, name: &str) -> Vec<String> {
        vec!["--curve-secret".into(), path(&self.secret(name)), "--curve-server".into(), path(&self.public("broker"))]
    }

    pub fn credentials(&self, name: &str) -> CurveClient {
        CurveClient::from_files(&self.secret(name), &self.public("broker")).unwrap()
    }

    /// A client holding NAME's pair.
    pub fn client(&self, front: &str, name: &str) -> Client {
        Client::connect_with(front, Some(&self.credentials(name))).unwrap()
    }
}

pub fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

pub use super::ports::free_tcp;

/// Waits (bounded) until `client` (an operator or the owner) sees `n`
/// workers registered.
pub fn wait_workers(client: &Client, n: usize) {
    super::wait_until(&format!("{n} workers registered"), Duration::from_secs(30), || {
        client.status(Duration::from_secs(5)).is_ok_and(|s| s.workers.len() == n)
    });
}

/// A lone broker with both endpoints on loopback tcp under CURVE.
pub fn curve_broker(dir: &TestDir, pki: &Pki, extra: &[&str]) -> (Proc, String, String) {
    let (front, back) = (free_tcp(), free_tcp());
    let mut args = vec!["--frontend".to_string(), front.clone(), "--backend".into(), back.clone()];
    args.extend(pki.broker_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = Proc::spawn(BROKER, &args, dir, "broker");
    let owner = Client::connect_with(&front, Some(&pki.credentials("broker"))).unwrap();
    owner.ping(Duration::from_secs(30)).unwrap_or_else(|e| panic!("broker not up: {e}\n{}", broker.stderr()));
    (broker, front, back)
}

/// A test_plugin worker holding NAME's key.
pub fn curve_worker(dir: &TestDir, pki: &Pki, back: &str, name: &str) -> Proc {
    let plugin = plugin("test_plugin");
    let mut args = vec!["--plugin".to_string(), path(&plugin), "--backend".into(), back.to_string()];
    args.extend(pki.peer_args(name));
    args.extend(["--heartbeat-ms".into(), "200".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(WORKER, &args, dir, name)
}

/// A ping (or call) that got nothing through: refused at the handshake.
pub fn refused(result: powerhose::Result<u32>) -> bool {
    matches!(result, Err(Error::Timeout(_) | Error::BrokerUnreachable { .. }))
}

/// A job answering its worker's pid, retried once if its worker is lost.
pub fn pid_job() -> JobRequest {
    JobRequest::new("").header("action", "pid").retry(1)
}
