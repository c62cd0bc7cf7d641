//! A lane's socket file: `SERVICE@PID` in the lanes directory beside the
//! worker's first `unix://` broker (see `crate::local::lanes_dir`), bound
//! under a temporary name and renamed once it listens, removed when the
//! lane closes; lanes of workers that died are swept by the next to open.

use std::io;
use std::path::{Path, PathBuf};

use crate::local::load::{load_path, LoadWord};
use crate::local::Listener;

/// A lane's socket, removed when it is dropped.
pub(in crate::worker) struct Lane {
    pub(super) listener: Listener,
    /// The requests sent to it and not answered (see `crate::local::load`).
    pub(super) load: LoadWord,
}

impl Lane {
    /// Opens the lane of `service` for this process in `dir` (made 0700 if
    /// missing). Bound under a temporary name and renamed when it listens:
    /// a client never finds a lane that refuses it because it is not ready.
    fn open(dir: &Path, service: &str) -> io::Result<Lane> {
        let name = crate::local::lane_name(service, std::process::id()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no lane for a service named {service:?}"))
        })?;
        let (path, temporary) = (dir.join(&name), dir.join(format!(".{name}.new")));
        // The last lane of another worker may take the directory between
        // our making it and binding in it: made again then.
        let mut attempts = 3;
        let listener = loop {
            make_private_dir(dir)?;
            sweep(dir);
            // A worker of this pid before (pid reuse) left it behind.
            let _ = std::fs::remove_file(&temporary);
            match Listener::bind(&temporary) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts > 1 => attempts -= 1,
                bound => break bound?,
            }
        };
        // The load first: a client that finds the lane finds its load.
        let load = LoadWord::create(&load_path(&path))?;
        std::fs::rename(&temporary, &path)?;
        Ok(Lane { listener: listener.moved_to(path), load })
    }

    /// The lane's socket file.
    pub(super) fn path(&self) -> &Path {
        self.listener.path()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.listener.path());
        let _ = std::fs::remove_file(load_path(self.listener.path()));
        // The last lane out takes the directory (its broker, if it left first, could not).
        if let Some(dir) = self.listener.path().parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Makes `dir` 0700, or checks that the one there is a directory of ours
/// that no one else may write to: lanes in another user's directory could
/// be replaced under their clients.
fn make_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != crate::sys::uid() || meta.mode() & 0o022 != 0 {
        let why = format!("{} is not a directory of this user's that only it may write to", dir.display());
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    }
    Ok(())
}

/// Removes the lanes of workers that are gone (killed, they could not):
/// clients would try each once before they skip it.
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let lane = name.strip_suffix(".load").unwrap_or(name);
        let Some((_, pid)) = crate::local::parse_lane_name(lane) else { continue };
        if crate::sys::process_state(pid).is_none_or(|state| state == 'Z') {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The lane directory of the first local broker in `backends`, if any.
pub(super) fn dir_of(backends: &[String]) -> Option<PathBuf> {
    backends.iter().find_map(|b| crate::local::path_of(b)).map(|p| crate::local::lanes_dir(&p))
}

/// The lane of `service`, or `None` (said why) when it cannot open: the
/// worker then serves through its brokers only.
pub(in crate::worker) fn open(backends: &[String], service: &str) -> Option<Lane> {
    // Lanes are for clients on this host: a worker of remote brokers has none.
    let dir = dir_of(backends)?;
    match Lane::open(&dir, service) {
        Ok(lane) => Some(lane),
        Err(e) => {
            tracing::warn!("no lane in {}: {e}; serving through the broker only", dir.display());
            None
        }
    }
}
