//! Lock files for the cache: `fcntl` open-file-description locks.
//!
//! A [`Lock`] is an exclusive write lock on the whole of `locks/<name>.lock`,
//! held while the value lives (closing the descriptor releases it, also
//! when the process is killed: the kernel, or the NFS/Lustre lock manager
//! for a dead client, drops it).
//!
//! `F_OFD_SETLKW` (Linux ≥ 3.15) rather than `flock(2)` or classic POSIX
//! locks: OFD locks belong to the open file description, so two threads of
//! one process conflict like two processes do, and closing some other
//! descriptor of the same file does not drop the lock (the classic POSIX
//! trap). Like POSIX locks, and unlike `flock(2)` on older NFS clients,
//! they are forwarded to the file server. Where the kernel does not know
//! OFD locks (`EINVAL`), classic `F_SETLKW` is used instead.
//!
//! How they behave on shared file systems:
//! - **NFSv3**: forwarded to the server's lock manager (NLM, `rpc.lockd` and
//!   `rpc.statd` on both ends). Without them the lock fails with `ENOLCK`;
//!   mounted with `nolock`, locks are local to the node.
//! - **NFSv4**: byte-range locks are part of the protocol (leases); they
//!   work across clients, and a dead client's locks go when its lease
//!   expires (90 s by default), so a waiter may wait that long.
//! - **Lustre**: mounted with `flock`, coherent across the cluster;
//!   `localflock`, coherent on each node only (two nodes may fetch the same
//!   blob at once); neither option, the call fails (`ENOSYS`/`EINVAL`).
//! - **GPFS (Spectrum Scale)**: fcntl byte-range locks are coherent across
//!   the cluster.
//!
//! Correctness never depends on these locks. Every entry is content
//! addressed, written under a name of the writer's own in `tmp/`, checked
//! against its digest, fsync'd and renamed into place: two writers that
//! were not kept apart write the same bytes to different temporaries and
//! the second rename replaces identical content. The lock only saves the
//! duplicate download and lets a pull resume what a killed one left. So a
//! file system that refuses locks (`ENOLCK`, `ENOSYS`, `EOPNOTSUPP`) makes
//! [`Lock::exclusive`] answer "unlocked", not fail.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// An exclusive lock on a lock file, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// What [`Lock::try_exclusive`] found.
#[derive(Debug)]
pub enum Try {
    /// Ours now.
    Locked(Lock),
    /// Another open file description (process) holds it.
    Busy,
    /// The file system does not do locks: nobody can be told apart.
    Unsupported,
}

fn whole_file(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value
    // (l_start 0, l_len 0 = the whole file, l_pid 0 as OFD locks require).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// Errors that mean "this file system has no (working) locks".
fn unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOLCK | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL
    )
}

/// Set a write lock: OFD first, classic POSIX when the kernel lacks OFD.
fn set(file: &File, wait: bool) -> Result<(), Errno> {
    let fl = whole_file(libc::F_WRLCK as libc::c_short);
    let call = |ofd: bool| loop {
        let arg = match (ofd, wait) {
            (true, true) => FcntlArg::F_OFD_SETLKW(&fl),
            (true, false) => FcntlArg::F_OFD_SETLK(&fl),
            (false, true) => FcntlArg::F_SETLKW(&fl),
            (false, false) => FcntlArg::F_SETLK(&fl),
        };
        match fcntl(file, arg) {
            Err(Errno::EINTR) => continue,
            other => break other.map(drop),
        }
    };
    match call(true) {
        Err(Errno::EINVAL) => call(false),
        other => other,
    }
}

/// Open `path` read-write, created 0644 if missing, never through a
/// symbolic link: how the cache opens its lock files and the partial
/// downloads it appends to.
pub(super) fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

impl Lock {
    /// Wait for the exclusive lock on `path` (created if missing).
    /// `Ok(None)`: the file system does not do locks; go on unlocked.
    pub fn exclusive(path: &Path) -> io::Result<Option<Lock>> {
        let file = open_rw(path)?;
        match set(&file, true) {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(e) if unsupported(e) => {
                log::debug!("{}: no file locks here ({e}); unlocked", path.display());
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Take the exclusive lock on `path` (created if missing) only if
    /// nobody holds it.
    pub fn try_exclusive(path: &Path) -> io::Result<Try> {
        let file = open_rw(path)?;
        match set(&file, false) {
            Ok(()) => Ok(Try::Locked(Lock { _file: file })),
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(Try::Busy),
            Err(e) if unsupported(e) => Ok(Try::Unsupported),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether some process holds a lock on `path`, without creating or
/// locking anything (`F_OFD_GETLK` on a read-only descriptor): for
/// `rfake cache list` and read-only caches. A missing file or a file
/// system without locks: not held.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    let mut fl = whole_file(libc::F_WRLCK as libc::c_short);
    match fcntl(&file, FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => fl.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_description_sees_the_lock_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!is_held(&path), "no file yet: not held");
        let held = Lock::exclusive(&path).unwrap().expect("tmpfs has locks");
        // Same process, another open file description: OFD locks conflict.
        assert!(matches!(Lock::try_exclusive(&path).unwrap(), Try::Busy));
        assert!(is_held(&path));
        drop(held);
        assert!(!is_held(&path));
        assert!(matches!(
            Lock::try_exclusive(&path).unwrap(),
            Try::Locked(_)
        ));
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.lock");
        let held = Lock::exclusive(&path).unwrap().unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let _l = Lock::exclusive(&p).unwrap().unwrap();
            t.elapsed()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(
            waited >= std::time::Duration::from_millis(150),
            "{waited:?}"
        );
    }
}
