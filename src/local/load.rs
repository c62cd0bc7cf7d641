//! A lane's load: the requests sent to it and not yet answered, one word
//! in a file beside the lane (`SERVICE@PID.load`, 0600) that the worker
//! and every local client map. A client adds one before it sends and the
//! worker takes one off as it answers, so that each client, whichever
//! process it is in, sends to the lane with the fewest waiting: the choice
//! a broker makes, without asking it. A client that dies before its answer
//! leaves nothing behind (the worker still answers); one whose request
//! never left takes its one off itself.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::syscall;

/// The file of the load of the lane at `lane`.
pub fn load_path(lane: &Path) -> PathBuf {
    let mut path = lane.as_os_str().to_owned();
    path.push(".load");
    PathBuf::from(path)
}

/// One lane's load word, mapped.
pub struct LoadWord {
    word: std::ptr::NonNull<AtomicU64>,
}

// SAFETY: the word is only used through atomic operations, from any thread;
// the mapping lives as long as the LoadWord.
unsafe impl Send for LoadWord {}
// SAFETY: as above.
unsafe impl Sync for LoadWord {}

const LEN: usize = std::mem::size_of::<AtomicU64>();

impl LoadWord {
    /// The worker's: a new file at `path` (replacing one left by a process
    /// of the same pid), zero.
    pub fn create(path: &Path) -> io::Result<LoadWord> {
        let _ = std::fs::remove_file(path);
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)?;
        file.set_len(LEN as u64)?;
        LoadWord::map(&file)
    }

    /// A client's: the file at `path`, if it is a lane's of this user (or root).
    pub fn open(path: &Path) -> io::Result<LoadWord> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() < LEN as u64 || !super::uid_allowed(meta.uid()) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a lane's load file of this user"));
        }
        LoadWord::map(&file)
    }

    fn map(file: &std::fs::File) -> io::Result<LoadWord> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new shared mapping of LEN bytes of an open file at least
        // that long; the kernel picks the address. The result is checked
        // for MAP_FAILED below (not -1: syscall! does not fit a pointer).
        let at = unsafe { libc::mmap(std::ptr::null_mut(), LEN, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A page-aligned address is aligned for a u64 and not null.
        let word = std::ptr::NonNull::new(at.cast::<AtomicU64>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(LoadWord { word })
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: the mapping is alive while self is, aligned and LEN long.
        unsafe { self.word.as_ref() }
    }

    /// The requests sent and not answered.
    pub fn get(&self) -> u64 {
        self.word().load(Ordering::Relaxed)
    }

    /// One more request sent.
    pub fn add(&self) {
        self.word().fetch_add(1, Ordering::Relaxed);
    }

    /// One more request sent, if the word is still `seen`: a client that
    /// chose this lane for its load claims it only if no other client took
    /// it in between (false: look again).
    pub fn claim(&self, seen: u64) -> bool {
        self.word().compare_exchange(seen, seen + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// One request answered (or never sent); never below zero.
    pub fn sub(&self) {
        let _ = self.word().fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl Drop for LoadWord {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        if let Err(e) = unsafe { syscall!(munmap(self.word.as_ptr().cast(), LEN)) } {
            tracing::debug!("unmapping a lane's load: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_and_its_clients_share_the_word_and_it_never_goes_below_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = load_path(&dir.path().join("svc@1"));
        assert!(path.ends_with("svc@1.load"));
        let worker = LoadWord::create(&path).unwrap();
        let (a, b) = (LoadWord::open(&path).unwrap(), LoadWord::open(&path).unwrap());
        a.add();
        b.add();
        assert_eq!(worker.get(), 2);
        worker.sub();
        worker.sub();
        worker.sub();
        assert_eq!((a.get(), b.get()), (0, 0));
        assert!(a.claim(0) && !b.claim(0), "one of two clients that saw 0 claims it");
        assert!(b.claim(1));
        assert_eq!(worker.get(), 2);
        worker.sub();
        worker.sub();
        // Made again by a process of the same pid: a new word, zero.
        a.add();
        let again = LoadWord::create(&path).unwrap();
        assert_eq!(again.get(), 0);
        std::fs::write(dir.path().join("short"), b"1").unwrap();
        assert!(LoadWord::open(&dir.path().join("short")).is_err(), "too short to be a load word");
        assert!(LoadWord::open(dir.path()).is_err(), "not a file");
    }
}
