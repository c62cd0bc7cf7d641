//! A test's own private directory and the transport of its endpoints
//! (local by default, ZeroMQ for tests that speak ZeroMQ), and the macro that
//! runs a test on both transports.

use std::path::{Path, PathBuf};

use powerhose::Client;

/// The transport of a test's endpoints: the local one (`unix://`, the
/// default, which our clients and workers use) or ZeroMQ's ipc (which
/// ZeroMQ peers need: raw sockets, pyzmq, Powerhose 0.7 clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Local,
    Zmq,
}

/// Runs a test body once per transport: `both_transports! { fn name(t) {..} }`
/// makes the tests `name::local` and `name::zmq`, each with its own `TestDir`
/// made by the body (`TestDir::on(t)`).
#[macro_export]
macro_rules! both_transports {
    ($($(#[$meta:meta])* fn $name:ident($t:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            fn body($t: Transport) $body
            #[test]
            fn local() {
                body(Transport::Local)
            }
            #[test]
            fn zmq() {
                body(Transport::Zmq)
            }
        }
    )*};
}

/// A temp dir with the test's endpoints in it.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub transport: Transport,
}

impl TestDir {
    /// On the local transport, the default.
    pub fn new() -> Self {
        TestDir::on(Transport::Local)
    }

    /// On ZeroMQ's ipc: for tests that speak to the broker with ZeroMQ sockets.
    pub fn zmq() -> Self {
        TestDir::on(Transport::Zmq)
    }

    pub fn on(transport: Transport) -> Self {
        // Short paths: ipc socket paths must fit in 107 bytes. Private (0700):
        // tests use it as the runtime directory, which must be.
        let dir = tempfile::Builder::new()
            .prefix("ph")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in("/tmp")
            .unwrap();
        TestDir { dir, transport }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn front(&self) -> String {
        self.endpoint("front")
    }
    pub fn back(&self) -> String {
        self.endpoint("back")
    }
    /// The socket file of endpoint `NAME` on this test's transport.
    pub fn socket(&self, name: &str) -> PathBuf {
        let ext = if self.transport == Transport::Local { "sock" } else { "ipc" };
        self.path().join(format!("{name}.{ext}"))
    }
    /// `NAME` on this test's transport, in its directory.
    pub fn endpoint(&self, name: &str) -> String {
        match self.transport {
            Transport::Local => format!("unix://{}/{name}.sock", self.path().display()),
            Transport::Zmq => format!("ipc://{}/{name}.ipc", self.path().display()),
        }
    }
    pub fn client(&self) -> Client {
        Client::connect(&self.front()).unwrap()
    }
    /// Socket and lock files left in the dir (none after a clean stop).
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ipc") || n.ends_with(".sock") || n.ends_with(".lock"))
            .collect()
    }
}
