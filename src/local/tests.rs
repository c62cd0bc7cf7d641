//! The local transport between real sockets in one process: greetings,
//! messages of every size, partial writes to a peer that does not read, and
//! what each side sees when the other misbehaves or leaves.

use std::time::{Duration, Instant};

use super::*;

fn dir() -> tempfile_dir::Dir {
    tempfile_dir::Dir::new()
}

/// A private directory removed on drop (no tempfile dependency).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("ph-local-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(5))
}

/// A connected pair: (connector, acceptor), the acceptor's greeting flushed.
fn pair(dir: &std::path::Path, identity: &[u8]) -> (Conn, Conn, Listener) {
    let listener = Listener::bind(&dir.join("s.sock")).unwrap();
    let client = connect(listener.path(), identity).unwrap();
    let fd = loop {
        if let Some(fd) = listener.accept().unwrap() {
            break fd;
        }
    };
    let mut server = Conn::accepted(fd, 1 << 20);
    assert!(server.flush().unwrap());
    (client, server, listener)
}

#[test]
fn endpoints_name_their_paths() {
    assert_eq!(path_of("unix:///run/x/front.sock"), Some("/run/x/front.sock".into()));
    assert_eq!(path_of("unix://"), None);
    assert_eq!(path_of("ipc:///x"), None);
    assert!(is_local("unix:///x") && !is_local("tcp://h:1"));
}

#[test]
fn the_identity_then_messages_cross_both_ways() {
    let d = dir();
    let (mut client, mut server, _l) = pair(&d.0, b"worker-1");
    let hello = server.recv_by(soon()).unwrap().unwrap();
    assert_eq!(&hello[0][..], b"worker-1");
    client.send_by(&[b"REQ", b"data"], soon()).unwrap();
    let got = server.recv_by(soon()).unwrap().unwrap();
    assert_eq!((&got[0][..], &got[1][..]), (&b"REQ"[..], &b"data"[..]));
    server.send_by(&[b"REPLY"], soon()).unwrap();
    assert_eq!(&client.recv_by(soon()).unwrap().unwrap()[0][..], b"REPLY");
    // Nothing more: a bounded wait says so.
    assert!(client.recv_by(Some(Instant::now() + Duration::from_millis(20))).unwrap().is_none());
    assert!(client.try_recv().unwrap().is_none());
}

#[test]
fn a_large_message_to_a_slow_reader_is_buffered_and_arrives_whole() {
    let d = dir();
    let (mut client, mut server, _l) = pair(&d.0, b"");
    let big: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    // The kernel takes a part; the rest waits in the connection.
    server.send(&[b"head", &big]).unwrap();
    assert!(server.unwritten() > 0);
    server.send(&[b"next"]).unwrap();
    let reader = std::thread::spawn(move || {
        let first = client.recv_by(soon()).unwrap().unwrap();
        let second = client.recv_by(soon()).unwrap().unwrap();
        let third = client.recv_by(soon()).unwrap().unwrap();
        (first[1].to_vec(), second[0].to_vec(), third[0].to_vec())
    });
    // Queued behind a part already written: it goes after, whole.
    assert!(server.wait(true, soon()).unwrap());
    server.flush().unwrap();
    server.queue(&[b"last"]);
    while !server.flush().unwrap() {
        assert!(server.wait(true, soon()).unwrap());
    }
    assert_eq!(server.unwritten(), 0);
    assert_eq!(reader.join().unwrap(), (big, b"next".to_vec(), b"last".to_vec()));
}

#[test]
fn a_closed_peer_is_the_end_of_the_stream() {
    let d = dir();
    let (mut client, server, _l) = pair(&d.0, b"");
    drop(server);
    let err = client.recv_by(soon()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    // Writing to it fails too, with an error (no SIGPIPE).
    let mut failed = false;
    for _ in 0..100 {
        if client.send_by(&[b"x"], soon()).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed);
}

#[test]
fn a_peer_that_does_not_greet_or_sends_too_much_is_refused() {
    let d = dir();
    let (_client, mut server, l) = pair(&d.0, b"");
    drop(server.recv_by(soon()).unwrap());
    // A raw stream claiming a 2 GiB frame.
    let raw = std::os::unix::net::UnixStream::connect(l.path()).unwrap();
    let fd = loop {
        if let Some(fd) = l.accept().unwrap() {
            break fd;
        }
    };
    use std::io::Write;
    (&raw).write_all(b"PHLOCAL\x01\xff\xff\xff\x7f").unwrap();
    let mut victim = Conn::accepted(fd, 1 << 20);
    assert_eq!(victim.recv_by(soon()).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    // A ZeroMQ peer's greeting.
    let raw = std::os::unix::net::UnixStream::connect(l.path()).unwrap();
    let fd = loop {
        if let Some(fd) = l.accept().unwrap() {
            break fd;
        }
    };
    (&raw).write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F]).unwrap();
    let mut victim = Conn::accepted(fd, 1 << 20);
    let err = victim.recv_by(soon()).unwrap_err();
    assert!(err.to_string().contains("bad greeting"), "{err}");
}

#[test]
fn the_socket_file_is_private_and_peers_are_named() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let (client, server, l) = pair(&d.0, b"");
    let mode = std::fs::metadata(l.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cred = server.peer().unwrap();
    assert_eq!(cred.pid as u32, std::process::id());
    assert!(uid_allowed(cred.uid));
    drop(client);
}

#[test]
fn connecting_where_no_broker_listens_fails_at_once() {
    let d = dir();
    let err = connect(&d.0.join("none.sock"), b"").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
