//! Who may do what: the CURVE credentials each side holds, the role the
//! broker gives each peer, and what each role may ask.
//!
//! Over ipc the socket file (0600, in a 0700 directory) admits only its
//! owner. Over tcp with `--curve-secret`, a ZAP handler ([`zap`]) admits the
//! keys of the allow-list directories ([`allow`]) and names the peer's role
//! in the connection's `User-Id`, which libzmq attaches to every message that
//! peer sends; the broker reads it back per message, so a key removed from
//! its directory stops being obeyed at the next scan. Plaintext tcp peers
//! (loopback, or `--insecure`) are anonymous: a client's rights, no more.

pub(crate) mod allow;
pub mod exposure;
#[cfg(test)]
mod tests;
pub(crate) mod zap;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::keys::{load_certificate, Keypair};

/// The ZAP domain of the front socket (clients and operators).
pub const FRONT_DOMAIN: &str = "powerhose-front";
/// The ZAP domain of the back socket (workers).
pub const BACK_DOMAIN: &str = "powerhose-back";

/// A peer's standing with the broker, from how it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connected over the private ipc socket (the same user), or holding
    /// the broker's own key (whoever has its secret is the broker's owner).
    Owner,
    /// A key in `--allow-operators`: a client that may also reload, scale
    /// and see every worker.
    Operator,
    /// A key in `--allow-clients`: submits jobs, pings, reads the summary status.
    Client,
    /// A key in `--allow-workers`: registers and serves jobs.
    Worker,
    /// A plaintext tcp peer (loopback, or a broker started `--insecure`):
    /// a client's rights, no more.
    Anonymous,
}

impl Role {
    /// May reload and scale the workers.
    pub fn may_control(self) -> bool {
        matches!(self, Role::Owner | Role::Operator)
    }

    /// May see each worker's pid and host in STATUS.
    pub fn sees_workers(self) -> bool {
        self.may_control()
    }

    /// The name in a connection's `User-Id` (`ROLE:KEY`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Operator => "operator",
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Anonymous => "anonymous",
        }
    }

    fn from_name(name: &str) -> Option<Role> {
        [Role::Owner, Role::Operator, Role::Client, Role::Worker, Role::Anonymous]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// The role and Z85 key in a `User-Id` the ZAP handler gave (`ROLE:KEY`).
pub(crate) fn parse_user_id(user_id: &str) -> Option<(Role, &str)> {
    let (role, key) = user_id.split_once(':')?;
    Some((Role::from_name(role)?, key))
}

/// The `User-Id` for a peer of `role` holding `key` (Z85).
pub(crate) fn user_id(role: Role, key: &str) -> String {
    format!("{}:{key}", role.name())
}

/// Fails with one line when this build's libzmq has no CURVE.
pub(crate) fn require_curve(flag: &str) -> Result<()> {
    curve_available(zmq::has("curve"), flag)
}

/// [`require_curve`] given what libzmq says (`zmq_has("curve")`).
fn curve_available(has: Option<bool>, flag: &str) -> Result<()> {
    if has == Some(true) {
        Ok(())
    } else {
        Err(Error::BadFlag(format!("{flag}: this build's libzmq has no CURVE support (built without libsodium)")))
    }
}

/// `--curve-secret FILE`: a certificate that holds its secret key.
fn load_secret(path: &Path) -> Result<Keypair> {
    require_curve("--curve-secret")?;
    let keys = load_certificate(path)?;
    if keys.secret.is_none() {
        return Err(Error::BadFlag(format!(
            "--curve-secret {}: a public certificate; give the NAME.key_secret file",
            path.display()
        )));
    }
    Ok(keys)
}

/// A client's or a worker's CURVE credentials: its own key pair and the
/// broker's public key.
#[derive(Clone, Debug)]
pub struct CurveClient {
    /// This side's key pair (the secret is set).
    pub keys: Keypair,
    /// The broker's public key.
    pub server: [u8; 32],
    /// Where the pair was read from, to hand to child processes.
    pub secret_file: PathBuf,
    /// Where the broker's public key was read from.
    pub server_file: PathBuf,
}

impl CurveClient {
    /// Reads `--curve-secret` (a `NAME.key_secret`) and `--curve-server`
    /// (the broker's `NAME.key`; its `.key_secret` serves too).
    pub fn from_files(secret: &Path, server: &Path) -> Result<CurveClient> {
        let keys = load_secret(secret)?;
        let server_keys = load_certificate(server)?;
        Ok(CurveClient {
            keys,
            server: server_keys.public,
            secret_file: secret.to_path_buf(),
            server_file: server.to_path_buf(),
        })
    }

    /// Sets the socket (before it connects) to talk CURVE with the broker.
    pub(crate) fn apply(&self, socket: &zmq::Socket) -> Result<()> {
        let secret = self.keys.secret.as_ref().expect("a client's pair has its secret");
        socket.set_curve_serverkey(&self.server).map_err(Error::zmq("curve_serverkey"))?;
        socket.set_curve_publickey(&self.keys.public).map_err(Error::zmq("curve_publickey"))?;
        socket.set_curve_secretkey(secret).map_err(Error::zmq("curve_secretkey"))?;
        Ok(())
    }

    /// The flags that give a child process these credentials.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--curve-secret".into(),
            self.secret_file.display().to_string(),
            "--curve-server".into(),
            self.server_file.display().to_string(),
        ]
    }
}

/// The broker's CURVE set-up: its key pair and one allow-list directory per
/// role. A role without a directory is admitted by no key.
#[derive(Clone, Debug)]
pub struct CurveServer {
    /// The broker's key pair (`--curve-secret`).
    pub keys: Keypair,
    /// Where it was read from.
    pub secret_file: PathBuf,
    /// `--allow-clients`: public certificates of the clients.
    pub allow_clients: Option<PathBuf>,
    /// `--allow-workers`: public certificates of the workers.
    pub allow_workers: Option<PathBuf>,
    /// `--allow-operators`: public certificates of the operators.
    pub allow_operators: Option<PathBuf>,
}

impl CurveServer {
    /// Reads the broker's secret certificate; no role is allowed yet.
    pub fn from_file(secret: &Path) -> Result<CurveServer> {
        let keys = load_secret(secret)?;
        Ok(CurveServer {
            keys,
            secret_file: secret.to_path_buf(),
            allow_clients: None,
            allow_workers: None,
            allow_operators: None,
        })
    }

    /// The broker's own pair as a client's credentials: what an in-process
    /// supervisor and the workers it starts use (the owner's role).
    pub fn owner_credentials(&self) -> CurveClient {
        CurveClient {
            keys: self.keys.clone(),
            server: self.keys.public,
            secret_file: self.secret_file.clone(),
            server_file: self.secret_file.clone(),
        }
    }

    /// Sets a socket (before it binds) to serve CURVE in `domain`.
    pub(crate) fn apply(&self, socket: &zmq::Socket, domain: &str) -> Result<()> {
        let secret = self.keys.secret.as_ref().expect("the broker's pair has its secret");
        socket.set_curve_server(true).map_err(Error::zmq("curve_server"))?;
        socket.set_curve_secretkey(secret).map_err(Error::zmq("curve_secretkey"))?;
        socket.set_zap_domain(domain).map_err(Error::zmq("zap_domain"))?;
        Ok(())
    }
}
