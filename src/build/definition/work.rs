//! The build's work directory and its removal on SIGINT, SIGTERM and SIGHUP.

use std::path::{Path, PathBuf};

use super::failed;
use crate::build::materialize::remove_tree;
use crate::error::Error;
use crate::text::{io_text, shown};

/// The build's work directory, removed when dropped; while it exists,
/// SIGINT and SIGTERM remove it before rfake dies of them.
pub struct Work {
    dir: PathBuf,
}

impl Work {
    pub fn create(base: &Path) -> Result<Work, Error> {
        let dir = tempfile::Builder::new()
            .prefix(".rfake-build-")
            .tempdir_in(base)
            .map_err(|e| failed(base, "creating the build's work directory", &e))?
            .keep();
        cleanup::register(&dir);
        Ok(Work { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.dir) {
            log::warn!(
                "removing the build's work directory {}: {}",
                shown(&self.dir),
                io_text(&e)
            );
        }
        cleanup::unregister();
    }
}

/// Removing the work directory when rfake is interrupted.
pub mod cleanup {
    use std::ffi::CString;
    use std::path::Path;
    use std::sync::Mutex;

    /// The directory to remove, as `rm -rf` would get it.
    static DIR: Mutex<Option<CString>> = Mutex::new(None);

    extern "C" fn on_signal(signal: libc::c_int) {
        // Not async-signal-safe in general, but the process is about to
        // die of this signal and is single-threaded here (no build worker
        // runs while a definition's commands run or files are copied).
        if let Ok(guard) = DIR.try_lock() {
            if let Some(dir) = guard.as_ref() {
                use std::os::unix::ffi::OsStrExt;
                let _ = super::remove_tree(Path::new(std::ffi::OsStr::from_bytes(dir.as_bytes())));
            }
        }
        // SAFETY: restoring the default action and raising the signal again
        // ends the process as that signal would have.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    pub fn register(dir: &Path) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = CString::new(dir.as_os_str().as_bytes()) {
            if let Ok(mut guard) = DIR.lock() {
                *guard = Some(c);
            }
        }
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `on_signal` is an `extern "C"` function of the right
            // type; installing it changes no other state.
            unsafe {
                libc::signal(signal, on_signal as *const () as libc::sighandler_t);
            }
        }
    }

    /// End rfake as killed by `signal`, after removing the work directory:
    /// the build was interrupted (its step died of the signal rfake got).
    pub fn die_of(signal: libc::c_int) -> ! {
        on_signal(signal);
        // SAFETY: only reached if the signal did not end the process.
        unsafe { libc::_exit(128 + signal) }
    }

    pub fn unregister() {
        if let Ok(mut guard) = DIR.lock() {
            *guard = None;
        }
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: restores the default action.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
}
