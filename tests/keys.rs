//! CURVE certificates across implementations: what `powerhose-keygen` writes
//! pyzmq reads, what pyzmq writes `powerhose::keys` reads, and keygen'd keys
//! carry a CURVE handshake over TCP.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use powerhose::keys::{self, Keypair};
use zmq::{Context, SocketType};

const KEYGEN: &str = env!("CARGO_BIN_EXE_powerhose-keygen");

/// How long a CURVE peer may take to get a message through.
const WITHIN: Duration = Duration::from_secs(10);

/// Runs Python (with pyzmq) on `script` with `args`; its stdout.
fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 with pyzmq is required (`pip install pyzmq`; .ci/run installs it)");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `powerhose-keygen NAME --dir DIR`: its three lines (public path, secret
/// path, public key).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let out = Command::new(KEYGEN).arg(name).arg("--dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    (PathBuf::from(lines[0]), PathBuf::from(lines[1]), lines[2].to_string())
}

/// pyzmq's `load_certificate` of `path`: (public, secret or "None"), as text.
fn pyzmq_load(path: &Path) -> (String, String) {
    let script = "import sys, zmq.auth\n\
                  public, secret = zmq.auth.load_certificate(sys.argv[1])\n\
                  print(public.decode()); print(secret.decode() if secret else None)";
    let out = python(script, &[path]);
    let (public, secret) = out.trim_end().split_once('\n').unwrap();
    (public.to_string(), secret.to_string())
}

fn z85(key: &[u8; 32]) -> String {
    zmq::z85_encode(key).unwrap()
}

#[test]
fn pyzmq_reads_what_keygen_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (public_path, secret_path, printed) = keygen(dir.path(), "server");
    assert_eq!(public_path, dir.path().join("server.key"));
    assert_eq!(secret_path, dir.path().join("server.key_secret"));
    assert_eq!(fs::metadata(&secret_path).unwrap().permissions().mode() & 0o777, 0o600);
    let ours = keys::load_certificate(&secret_path).unwrap();
    assert_eq!(printed, ours.public_z85());
    assert_eq!(pyzmq_load(&secret_path), (printed.clone(), z85(&ours.secret.unwrap())));
    assert_eq!(pyzmq_load(&public_path), (printed, "None".to_string()));
}

#[test]
fn keygen_refuses_a_bad_name_and_an_existing_pair() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", "a/b", ".."] {
        let out = Command::new(KEYGEN).arg(name).arg("--dir").arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("powerhose-keygen: error: bad certificate name"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let (_, secret_path, _) = keygen(dir.path(), "s");
    let before = fs::read(&secret_path).unwrap();
    let out = Command::new(KEYGEN).arg("s").arg("--dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.ends_with("already exists; not overwriting it\n"), "{stderr}");
    assert_eq!(fs::read(&secret_path).unwrap(), before);
}

#[test]
fn keys_reads_what_pyzmq_writes() {
    let dir = tempfile::tempdir().unwrap();
    let script = "import sys, zmq.auth\n\
                  public, secret = zmq.auth.create_certificates(sys.argv[1], 'py', {'owner': 'tests'})\n\
                  for path in (public, secret): print(path)\n\
                  for key in zmq.auth.load_certificate(secret): print(key.decode())";
    let out = python(script, &[dir.path()]);
    let lines: Vec<&str> = out.lines().collect();
    let (public_path, secret_path) = (Path::new(lines[0]), Path::new(lines[1]));
    let expected = Keypair {
        public: zmq::z85_decode(lines[2]).unwrap().try_into().unwrap(),
        secret: Some(zmq::z85_decode(lines[3]).unwrap().try_into().unwrap()),
    };
    assert_eq!(keys::load_certificate(public_path).unwrap(), Keypair { secret: None, ..expected.clone() });
    // pyzmq leaves the secret file's mode to the umask (0644 by default):
    // refused while open to others, read once private.
    fs::set_permissions(secret_path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = keys::load_certificate(secret_path).unwrap_err().to_string();
    assert!(err.ends_with("(group or others have access); chmod 600 it"), "{err}");
    fs::set_permissions(secret_path, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(keys::load_certificate(secret_path).unwrap(), expected);
    // As an allow-list directory: the public certificate only.
    assert_eq!(keys::load_public_dir(dir.path()).unwrap(), vec![(public_path.to_path_buf(), expected.public)]);
}

/// The next multipart message on `socket` within [`WITHIN`].
fn recv(socket: &zmq::Socket, what: &str) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + WITHIN;
    while Instant::now() < deadline {
        if socket.poll(zmq::POLLIN, 100).unwrap() > 0 {
            return socket.recv_multipart(0).unwrap();
        }
    }
    panic!("{what} got nothing within {WITHIN:?}");
}

#[test]
fn keygen_keys_carry_a_curve_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let (server_public, server_secret, _) = keygen(dir.path(), "server");
    let (_, client_secret, _) = keygen(dir.path(), "client");
    let server_keys = keys::load_certificate(&server_secret).unwrap();
    let client_keys = keys::load_certificate(&client_secret).unwrap();
    // The client knows the server by its public certificate only.
    let server_public = keys::load_certificate(&server_public).unwrap().public;

    let ctx = Context::new();
    let server = ctx.socket(SocketType::ROUTER).unwrap();
    server.set_linger(0).unwrap();
    server.set_curve_server(true).unwrap();
    server.set_curve_secretkey(&server_keys.secret.unwrap()).unwrap();
    server.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = server.get_last_endpoint().unwrap().unwrap();

    let client = ctx.socket(SocketType::DEALER).unwrap();
    client.set_linger(0).unwrap();
    client.set_curve_serverkey(&server_public).unwrap();
    client.set_curve_publickey(&client_keys.public).unwrap();
    client.set_curve_secretkey(&client_keys.secret.unwrap()).unwrap();
    client.connect(&endpoint).unwrap();

    client.send("hello", zmq::DONTWAIT).unwrap();
    let frames = recv(&server, "the server");
    assert_eq!(frames[1], b"hello");
    server.send_multipart([frames[0].as_slice(), b"welcome"], 0).unwrap();
    assert_eq!(recv(&client, "the client"), vec![b"welcome".to_vec()]);
}
