//! The output file: written unnamed (`O_TMPFILE`) in OUT's directory and
//! given its name only when complete, so an interrupted, failed or
//! disk-full build (even one killed by SIGKILL) leaves neither OUT nor a
//! temporary file. Where the filesystem lacks `O_TMPFILE` (NFS), a hidden
//! named file beside OUT is used and removed on failure and on
//! SIGINT/SIGTERM/SIGHUP.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A file being built for `target`.
#[derive(Debug)]
pub struct Pending {
    pub file: File,
    target: PathBuf,
    /// The visible temporary name, when `O_TMPFILE` was not available.
    named: Option<PathBuf>,
    done: bool,
}

/// The named temporary files to remove if a signal ends the build.
static CLEANUP: Mutex<Vec<CString>> = Mutex::new(Vec::new());

extern "C" fn remove_and_reraise(sig: libc::c_int) {
    // try_lock: never block in a signal handler.
    if let Ok(guard) = CLEANUP.try_lock() {
        for path in guard.iter() {
            // SAFETY: unlink(2) is async-signal-safe; the path is valid.
            unsafe { libc::unlink(path.as_ptr()) };
        }
    }
    // SAFETY: restore the default action and re-raise, so the exit status
    // says which signal ended the build.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

impl Pending {
    /// Start a file that will become `target`.
    pub fn create(target: &Path) -> io::Result<Pending> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o644)
            .open(&dir)
        {
            Ok(file) => Ok(Pending {
                file,
                target: target.to_path_buf(),
                named: None,
                done: false,
            }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) =>
            {
                Pending::create_named(target, &dir)
            }
            Err(e) => Err(e),
        }
    }

    fn create_named(target: &Path, dir: &Path) -> io::Result<Pending> {
        let name = format!(
            ".{}.rfake-build-{}",
            target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)?;
        if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
            if let Ok(mut g) = CLEANUP.lock() {
                g.push(c);
            }
        }
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installing a handler that only unlinks and re-raises.
            unsafe {
                libc::signal(sig, remove_and_reraise as *const () as libc::sighandler_t);
            }
        }
        Ok(Pending {
            file,
            target: target.to_path_buf(),
            named: Some(path),
            done: false,
        })
    }

    /// A path other code (a C library) can open to write this same file.
    pub fn path_for_writers(&self) -> PathBuf {
        match &self.named {
            Some(p) => p.clone(),
            None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
        }
    }

    /// Give the complete file its name, replacing any existing `target`.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        match &self.named {
            Some(tmp) => std::fs::rename(tmp, &self.target)?,
            None => {
                // linkat(2) of an O_TMPFILE file through /proc/self/fd needs
                // AT_SYMLINK_FOLLOW; it cannot replace, so link to a hidden
                // name in the same directory, then rename over the target.
                let dir = self.target.parent().unwrap_or(Path::new("."));
                let hidden = dir.join(format!(
                    ".{}.rfake-build-{}",
                    self.target
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy(),
                    std::process::id()
                ));
                let from = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
                    .map_err(io::Error::other)?;
                let to = CString::new(hidden.as_os_str().as_bytes()).map_err(io::Error::other)?;
                // SAFETY: valid NUL-terminated paths.
                let rc = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        from.as_ptr(),
                        libc::AT_FDCWD,
                        to.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Err(e) = std::fs::rename(&hidden, &self.target) {
                    let _ = std::fs::remove_file(&hidden);
                    return Err(e);
                }
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(tmp) = &self.named {
            if !self.done {
                let _ = std::fs::remove_file(tmp);
            }
            if let Ok(c) = CString::new(tmp.as_os_str().as_bytes()) {
                if let Ok(mut g) = CLEANUP.lock() {
                    g.retain(|p| *p != c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn nothing_visible_until_commit() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out.sqfs");
        let mut p = Pending::create(&target).unwrap();
        p.file.write_all(b"data").unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        p.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_leaves_nothing_and_replaces_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out.sif");
        std::fs::write(&target, b"old").unwrap();
        let mut p = Pending::create(&target).unwrap();
        p.file.write_all(b"partial").unwrap();
        drop(p);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let mut p = Pending::create(&target).unwrap();
        p.file.write_all(b"new").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn writers_can_reopen_it() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x");
        let p = Pending::create(&target).unwrap();
        std::fs::write(p.path_for_writers(), b"via path").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"via path");
    }

    #[test]
    fn named_fallback_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("y");
        let mut p = Pending::create_named(&target, d.path()).unwrap();
        p.file.write_all(b"x").unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        drop(p);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
