//! Endpoints: the private per-user runtime directory that holds the default ipc
//! sockets, and the lock that lets exactly one broker own an endpoint.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::syscall;

/// The directory for default sockets: `$POWERHOSE_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/powerhose`, else `/tmp/powerhose-$UID`; created 0700, and
/// an existing one refused if another user owns it or others can enter it.
pub fn runtime_dir() -> Result<PathBuf> {
    let dir = runtime_dir_path(|name| std::env::var_os(name), crate::sys::uid());
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// The runtime directory for an environment (`var` looks a variable up) and
/// user, without creating it: also used to find another process's default.
pub fn runtime_dir_path(var: impl Fn(&str) -> Option<std::ffi::OsString>, uid: u32) -> PathBuf {
    if let Some(dir) = var("POWERHOSE_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(xdg) = var("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        PathBuf::from(xdg).join("powerhose")
    } else {
        PathBuf::from(format!("/tmp/powerhose-{uid}"))
    }
}

/// Creates `dir` 0700, or checks the one there: ours, a directory, and
/// closed to others. Only a directory created here is ours to chmod: one
/// found open may hold what someone else planted (a symlink for a lock
/// file, a socket), so it is refused until its owner has looked.
fn ensure_private_dir(dir: &Path) -> Result<()> {
    let insecure = |reason: String| Error::InsecureDir { path: dir.to_path_buf(), reason };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    // Not recursive: AlreadyExists tells a directory found from one created.
    let created = match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()))(e)),
    };
    let meta = fs::symlink_metadata(dir).map_err(Error::io(format!("checking {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(insecure("not a directory".into()));
    }
    if meta.uid() != crate::sys::uid() {
        return Err(insecure(format!("owned by uid {}", meta.uid())));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        if !created {
            return Err(insecure(format!(
                "mode {mode:o} lets others in; check what it holds, then `chmod 700 {}`",
                dir.display()
            )));
        }
        // Only a umask can have opened what we just made.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| insecure(format!("mode {mode:o} and chmod failed: {e}")))?;
    }
    Ok(())
}

/// The default front (client) endpoint in runtime directory `dir`: the
/// local transport, which our clients use.
pub fn frontend_in(dir: &Path) -> String {
    format!("{}{}", crate::local::SCHEME, dir.join("front.sock").display())
}

/// The default front (client) endpoint.
pub fn default_frontend() -> Result<String> {
    Ok(frontend_in(&runtime_dir()?))
}

/// The default ZeroMQ front endpoint, served beside [`default_frontend`]
/// by default: for ZeroMQ clients (Powerhose 0.7's, pyzmq).
pub fn default_zmq_frontend() -> Result<String> {
    Ok(format!("ipc://{}", runtime_dir()?.join("front.ipc").display()))
}

/// The default front endpoint, computed without creating the runtime
/// directory: for checks that must leave no trace.
pub fn default_frontend_path() -> String {
    frontend_in(&runtime_dir_path(|name| std::env::var_os(name), crate::sys::uid()))
}

/// The default back (worker) endpoint: the local transport.
pub fn default_backend() -> Result<String> {
    Ok(format!("{}{}", crate::local::SCHEME, runtime_dir()?.join("back.sock").display()))
}

/// The socket path of an `ipc://` or `unix://` endpoint, `None` for other
/// transports and for abstract (`@name`) sockets.
pub fn ipc_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("ipc://").or_else(|| endpoint.strip_prefix(crate::local::SCHEME))?;
    (!path.starts_with('@')).then(|| PathBuf::from(path))
}

/// Exclusive ownership of an ipc endpoint for the life of the process.
///
/// ZeroMQ lets a second process bind the same ipc path and silently steals new
/// connections, so a broker takes this lock *before* binding. flock is released
/// by the kernel when the process dies (even by SIGKILL). On drop the socket
/// file and the lock file are removed.
#[derive(Debug)]
pub struct EndpointLock {
    file: File,
    lock_path: PathBuf,
    socket_path: PathBuf,
    /// (device, inode) of the socket file this process bound.
    socket_id: Option<FileId>,
}

/// A file's identity: device and inode, and its birth time where the file
/// system keeps one, since a deleted socket's inode number is soon given to
/// the next file made (the socket a new broker binds where a ghost's was
/// removed). Not the change time: a chmod changes that.
type FileId = (u64, u64, Option<std::time::SystemTime>);

fn file_id(meta: &fs::Metadata) -> FileId {
    (meta.dev(), meta.ino(), meta.created().ok())
}

impl EndpointLock {
    /// Takes the lock for `endpoint`; `Ok(None)` for transports that need none
    /// (tcp refuses a second bind by itself).
    pub fn acquire(endpoint: &str) -> Result<Option<EndpointLock>> {
        let Some(socket_path) = ipc_path(endpoint) else {
            return Ok(None);
        };
        // sun_path holds 107 bytes plus the NUL; ZeroMQ's own error is cryptic.
        if socket_path.as_os_str().len() > 107 {
            return Err(Error::IpcPathTooLong { path: socket_path });
        }
        let mut lock_name = socket_path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock_path = socket_path.with_file_name(lock_name);
        loop {
            let file = open_lock_file(&lock_path, true)?;
            // SAFETY: flock on an fd we own.
            if let Err(err) = unsafe { syscall!(flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)) } {
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(Error::BrokerAlreadyRunning { endpoint: endpoint.to_string(), pid: holder(&file) });
                }
                return Err(Error::io(format!("locking {}", lock_path.display()))(err));
            }
            // The previous owner may have unlinked the file between our open
            // and our flock; then we hold a lock nobody else can see: retry.
            let same = match (file.metadata(), fs::metadata(&lock_path)) {
                (Ok(a), Ok(b)) => file_id(&a) == file_id(&b),
                _ => false,
            };
            if !same {
                continue;
            }
            // One write of the whole pid: a reader sees the old text, nothing, or all of it.
            file.set_len(0).map_err(Error::io("truncating lock file"))?;
            file.write_all_at(std::process::id().to_string().as_bytes(), 0).map_err(Error::io("writing lock file"))?;
            return Ok(Some(EndpointLock { file, lock_path, socket_path, socket_id: None }));
        }
    }

    /// Records the socket file just bound, so drop removes that file and no
    /// other, and makes it 0600: an endpoint outside the private runtime
    /// directory is then still only ours to connect to.
    pub fn bound(&mut self) -> Result<()> {
        let path = self.socket_path.display();
        // An O_PATH handle on the file itself (a symlink swapped in would be
        // the link, not its target), chmodded through /proc: no window in
        // which a path lookup could land on another file.
        let socket = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.socket_path)
            .map_err(Error::io(format!("opening the socket {path}")))?;
        let meta = socket.metadata().map_err(Error::io(format!("checking the socket {path}")))?;
        if !meta.file_type().is_socket() {
            return Err(Error::io(format!("checking the socket {path}"))(std::io::Error::other("not a socket")));
        }
        self.socket_id = Some(file_id(&meta));
        let fd_path = format!("/proc/self/fd/{}", socket.as_raw_fd());
        fs::set_permissions(fd_path, fs::Permissions::from_mode(0o600))
            .map_err(Error::io(format!("making the socket {path} 0600")))
    }

    /// The pid recorded by whoever holds (or last held) the lock of `endpoint`.
    pub fn holder_pid(endpoint: &str) -> Option<u32> {
        let socket_path = ipc_path(endpoint)?;
        let mut lock_name = socket_path.file_name()?.to_os_string();
        lock_name.push(".lock");
        // Only a lock file of ours names a pid worth believing.
        let mut text = String::new();
        open_lock_file(&socket_path.with_file_name(lock_name), false).ok()?.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }
}

/// Opens (or creates) a lock file without following a symlink, and checks
/// what was opened: in a directory others could write to, a planted symlink
/// or file must never receive our writes nor our trust.
fn open_lock_file(path: &Path, create: bool) -> Result<File> {
    let unsafe_lock = |reason: String| Error::UnsafeLockFile { path: path.to_path_buf(), reason };
    let file = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        // O_NONBLOCK: a planted FIFO must not hang the open (regular files ignore it).
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => unsafe_lock("is a symlink".into()),
            _ => Error::io(format!("opening lock file {}", path.display()))(e),
        })?;
    let meta = file.metadata().map_err(Error::io(format!("checking lock file {}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(unsafe_lock("is not a regular file".into()));
    }
    if meta.uid() != crate::sys::uid() {
        return Err(unsafe_lock(format!("is owned by uid {}", meta.uid())));
    }
    // 0 links is a lock file its owner just removed: acquire sees it and retries.
    if meta.nlink() > 1 {
        return Err(unsafe_lock(format!("has {} hard links", meta.nlink())));
    }
    Ok(file)
}

/// The pid in a lock file that another process holds. It writes the pid just
/// after taking the lock, so an empty file is re-read for a moment.
fn holder(file: &File) -> Option<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let mut text = String::new();
        let _ = (&*file).rewind().and_then(|_| (&*file).read_to_string(&mut text));
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

impl Drop for EndpointLock {
    fn drop(&mut self) {
        // Only our own files: if someone removed them and another broker took
        // the endpoint, the paths now belong to it. Unlink while still holding
        // the lock (see the inode check in acquire).
        let current = |p: &Path| fs::metadata(p).ok().map(|m| file_id(&m));
        if self.socket_id.is_some() && current(&self.socket_path) == self.socket_id {
            let _ = fs::remove_file(&self.socket_path);
            // Its lanes (see crate::local::lanes_dir): a front's link, a
            // back's directory once its workers' lanes are gone (the last
            // worker to leave removes it otherwise).
            let lanes = crate::local::lanes_dir(&self.socket_path);
            match fs::symlink_metadata(&lanes) {
                Ok(m) if m.file_type().is_symlink() => drop(fs::remove_file(&lanes)),
                Ok(m) if m.is_dir() => drop(fs::remove_dir(&lanes)),
                _ => {}
            }
        }
        if self.file.metadata().ok().map(|m| file_id(&m)) == current(&self.lock_path) {
            let _ = fs::remove_file(&self.lock_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipc_paths() {
        assert_eq!(ipc_path("ipc:///run/x.ipc"), Some(PathBuf::from("/run/x.ipc")));
        assert_eq!(ipc_path("ipc://@abstract"), None);
        assert_eq!(ipc_path("tcp://127.0.0.1:5555"), None);
    }

    #[test]
    fn second_lock_is_refused_with_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/front.ipc", dir.path().display());
        let mut first = EndpointLock::acquire(&endpoint).unwrap().unwrap();
        std::os::unix::net::UnixListener::bind(dir.path().join("front.ipc")).unwrap();
        first.bound().unwrap();
        match EndpointLock::acquire(&endpoint) {
            Err(Error::BrokerAlreadyRunning { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()))
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert_eq!(EndpointLock::holder_pid(&endpoint), Some(std::process::id()));
        drop(first);
        assert!(!dir.path().join("front.ipc.lock").exists());
        assert!(!dir.path().join("front.ipc").exists());
        assert!(EndpointLock::acquire(&endpoint).unwrap().is_some());
    }

    #[test]
    fn drop_leaves_files_that_another_broker_now_owns() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/front.ipc", dir.path().display());
        let (socket, lock) = (dir.path().join("front.ipc"), dir.path().join("front.ipc.lock"));
        let mut ghost = EndpointLock::acquire(&endpoint).unwrap().unwrap();
        std::os::unix::net::UnixListener::bind(&socket).unwrap();
        ghost.bound().unwrap();
        // Someone cleans the directory; a new broker takes the endpoint.
        std::fs::remove_file(&socket).unwrap();
        std::fs::remove_file(&lock).unwrap();
        let mut live = EndpointLock::acquire(&endpoint).unwrap().unwrap();
        std::os::unix::net::UnixListener::bind(&socket).unwrap();
        live.bound().unwrap();
        drop(ghost);
        assert!(socket.exists() && lock.exists(), "the live broker's files stay");
        drop(live);
        assert!(!socket.exists() && !lock.exists());
    }

    #[test]
    fn planted_lock_files_are_refused_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/front.ipc", dir.path().display());
        let (lock, victim) = (dir.path().join("front.ipc.lock"), dir.path().join("victim"));
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let err = EndpointLock::acquire(&endpoint).unwrap_err();
        assert_eq!(err.to_string(), format!("lock file {} is a symlink: refusing to use it", lock.display()));
        assert_eq!(EndpointLock::holder_pid(&endpoint), None);
        assert_eq!(fs::read(&victim).unwrap(), b"precious");

        // A hard link to the victim, then a lock file of another user's.
        fs::remove_file(&lock).unwrap();
        fs::hard_link(&victim, &lock).unwrap();
        assert!(EndpointLock::acquire(&endpoint).unwrap_err().to_string().contains("has 2 hard links"));
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        fs::remove_file(&lock).unwrap();
        fs::write(&lock, b"4242").unwrap();
        std::os::unix::fs::chown(&lock, Some(65534), None).unwrap();
        let err = EndpointLock::acquire(&endpoint).unwrap_err().to_string();
        assert!(err.ends_with("is owned by uid 65534: refusing to use it") && !err.contains("4242"), "{err}");
        assert_eq!(EndpointLock::holder_pid(&endpoint), None, "a stranger's file names no holder");
        assert_eq!(fs::read(&lock).unwrap(), b"4242");
    }

    #[test]
    fn private_dir_is_created_0700() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("rt");
        ensure_private_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
        ensure_private_dir(&sub).unwrap();
        // Found open to others: refused as it is, never chmodded.
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(&sub).unwrap_err().to_string();
        let path = sub.display();
        assert_eq!(
            err,
            format!("runtime directory {path} is not private: mode 777 lets others in; check what it holds, then `chmod 700 {path}`")
        );
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o777);
        // Another user's directory, and a file, stay refused.
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&sub, Some(65534), None).unwrap();
        assert!(ensure_private_dir(&sub).unwrap_err().to_string().ends_with("owned by uid 65534"));
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(ensure_private_dir(&file).unwrap_err().to_string().ends_with("not a directory"));
        // A path nested under missing directories is created too.
        let nested = dir.path().join("a/b/rt");
        ensure_private_dir(&nested).unwrap();
        assert_eq!(fs::metadata(&nested).unwrap().mode() & 0o777, 0o700);
    }
}
