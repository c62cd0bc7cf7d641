//! Endpoints: the private per-user runtime directory that holds the default ipc
//! sockets, and the lock that lets exactly one broker own an endpoint.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::syscall;

/// The directory for default sockets: `$POWERHOSE_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/powerhose`, else `/tmp/powerhose-$UID`; created 0700 and
/// refused if another user owns it or others can enter it.
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

fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()))(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(Error::io(format!("checking {}", dir.display())))?;
    let insecure = |reason: String| Error::InsecureDir { path: dir.to_path_buf(), reason };
    if !meta.is_dir() {
        return Err(insecure("not a directory".into()));
    }
    if meta.uid() != crate::sys::uid() {
        return Err(insecure(format!("owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| insecure(format!("mode {:o} and chmod failed: {e}", meta.mode() & 0o777)))?;
    }
    Ok(())
}

/// The default front (client) endpoint.
pub fn default_frontend() -> Result<String> {
    Ok(format!("ipc://{}", runtime_dir()?.join("front.ipc").display()))
}

/// The default front endpoint, computed without creating the runtime
/// directory: for checks that must leave no trace.
pub fn default_frontend_path() -> String {
    let dir = runtime_dir_path(|name| std::env::var_os(name), crate::sys::uid());
    format!("ipc://{}", dir.join("front.ipc").display())
}

/// The default back (worker) endpoint.
pub fn default_backend() -> Result<String> {
    Ok(format!("ipc://{}", runtime_dir()?.join("back.ipc").display()))
}

/// The socket path of an `ipc://` endpoint, `None` for other transports and
/// for abstract (`@name`) sockets.
pub fn ipc_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("ipc://")?;
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
    socket_id: Option<(u64, u64)>,
}

fn file_id(meta: &fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
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

    /// Records the socket file just bound, so drop removes that file and no other.
    pub fn bound(&mut self) {
        self.socket_id = fs::metadata(&self.socket_path).ok().map(|m| file_id(&m));
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
        std::fs::write(dir.path().join("front.ipc"), b"").unwrap();
        first.bound();
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
        std::fs::write(&socket, b"").unwrap();
        ghost.bound();
        // Someone cleans the directory; a new broker takes the endpoint.
        std::fs::remove_file(&socket).unwrap();
        std::fs::remove_file(&lock).unwrap();
        let mut live = EndpointLock::acquire(&endpoint).unwrap().unwrap();
        std::fs::write(&socket, b"").unwrap();
        live.bound();
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
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
    }
}
