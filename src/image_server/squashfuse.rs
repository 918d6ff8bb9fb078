//! An external squashfuse (`squashfuse_ll` preferred) serving the image,
//! selected with `image_server = "squashfuse"` or `--squashfuse`.
//!
//! squashfuse is handed the image and the FUSE device as `/dev/fd/N`
//! (libfuse 3.3+ accepts a pre-mounted `/dev/fd/N` mount point); what it
//! writes goes to a memory file, shown if it fails. libfuse installs its
//! exit handlers only over SIG_DFL, so the ignored signals stay ignored.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::Pid;

use super::{MountError, Server};

/// What squashfuse needs to know about the image.
#[derive(Debug)]
pub struct Squashfuse {
    pub program: PathBuf,
    /// The image, opened once at validation time (close-on-exec).
    pub image: Arc<File>,
    pub offset: u64,
}

impl Squashfuse {
    /// Start squashfuse on the FUSE device `fuse_fd`.
    pub fn start(&self, fuse_fd: RawFd) -> Result<Server, MountError> {
        let spawn_err = |source| MountError::Spawn {
            program: self.program.clone(),
            source,
        };
        let log_fd = memfd_create("rfake-squashfuse-log", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| spawn_err(e.into()))?;
        let log = File::from(log_fd);
        let image_fd = self.image.as_raw_fd();
        let mut cmd = Command::new(&self.program);
        cmd.arg("-f");
        if self.offset > 0 {
            cmd.arg("-o").arg(format!("offset={}", self.offset));
        }
        cmd.arg(format!("/dev/fd/{image_fd}"))
            .arg(format!("/dev/fd/{fuse_fd}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(spawn_err)?))
            .stderr(Stdio::from(log.try_clone().map_err(spawn_err)?));
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Its root is "/" (carried into the container by pivot_root);
                // its working directory must not pin a host directory.
                if libc::chdir(c"/".as_ptr()) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in [image_fd, fuse_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                crate::container::process::die_with_parent(parent)?;
                libc::setsid();
                for sig in [
                    Signal::SIGINT,
                    Signal::SIGTERM,
                    Signal::SIGHUP,
                    Signal::SIGQUIT,
                ] {
                    let _ = signal(sig, SigHandler::SigIgn);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        Ok(Server::new(Pid::from_raw(child.id() as i32), Some(log)))
    }
}
