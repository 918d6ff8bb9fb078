//! An external squashfuse (`squashfuse_ll` preferred) serving the image.
//!
//! rfake opens `/dev/fuse` and the image itself and does the `mount(2)` of
//! the FUSE filesystem (allowed to root of a user namespace since Linux 4.18);
//! squashfuse is handed both file descriptors as `/dev/fd/N` (libfuse 3.3+
//! accepts a pre-mounted `/dev/fd/N` mount point). So:
//! - the mount exists as soon as `mount(2)` returns and every access waits
//!   for the server, no polling for readiness;
//! - the server never resolves a host path after start-up;
//! - rfake picks the mount flags itself (`ro,nosuid,nodev`).
//!
//! The server is tied to rfake: parent-death signal SIGKILL, its own session
//! (a terminal's ^C does not reach it) and SIGINT/SIGTERM/SIGHUP/SIGQUIT
//! ignored (libfuse installs its exit handlers only over SIG_DFL), so during a
//! job's cancellation the payload can still read its files while it cleans
//! up; rfake stops the server after the payload has exited.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigHandler, Signal, signal};

use super::MountError;
use crate::rootfs::ImageMounter;
use crate::sys::Sys;

/// What the server needs to know about the image.
#[derive(Debug)]
pub struct Squashfuse {
    pub program: PathBuf,
    /// For messages and the mount's source field.
    pub image_path: PathBuf,
    /// The image, opened once at validation time (close-on-exec).
    pub image: std::sync::Arc<File>,
    pub offset: u64,
    /// The FUSE device, normally `/dev/fuse`.
    pub fuse_device: PathBuf,
    /// Where the host's root is when the server starts (`/oldroot` after the
    /// first pivot): the server is chrooted there, so it runs with the host's
    /// view of `program` and its libraries.
    pub host_root: PathBuf,
    /// Owner of the mount inside the namespace.
    pub uid: u32,
    pub gid: u32,
    /// The running server, once mounted.
    pub server: Option<Server>,
}

/// A running squashfuse process; stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    log: File,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the server and reap it.
    pub fn stop(mut self) {
        self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Why the server failed: the first line it wrote, else how it ended.
    fn failure_message(&mut self, access: &std::io::Error) -> String {
        // It exits right after failing; give it a moment, then insist.
        let mut exited = None;
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_and_reap();
        let mut text = String::new();
        let _ = self.log.seek(SeekFrom::Start(0));
        let _ = self.log.read_to_string(&mut text);
        if let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
            return line.to_string();
        }
        match exited {
            Some(status) => format!("it exited ({status}) without a message"),
            None => format!("reading the image's root directory failed ({access})"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

impl Squashfuse {
    fn mount_options(&self, fuse_fd: RawFd) -> String {
        // rootmode: the root is a directory; allow_other: a payload with
        // another uid (nested namespaces) may read it; default_permissions:
        // the kernel checks the image's modes.
        format!(
            "fd={fuse_fd},rootmode=40000,user_id={},group_id={},allow_other,default_permissions",
            self.uid, self.gid
        )
    }

    fn spawn(&self, fuse_fd: RawFd) -> Result<Server, MountError> {
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
            // Stdio::null() would open /dev/null in the staging root.
            .stdin(Stdio::from(
                File::open(self.host_root.join("dev/null")).map_err(spawn_err)?,
            ))
            .stdout(Stdio::from(log.try_clone().map_err(spawn_err)?))
            .stderr(Stdio::from(log.try_clone().map_err(spawn_err)?));
        let parent = std::process::id() as i32;
        let host_root = std::ffi::CString::new(self.host_root.as_os_str().as_encoded_bytes())
            .map_err(|e| spawn_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(host_root.as_ptr()) == -1 || libc::chdir(c"/".as_ptr()) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                for fd in [image_fd, fuse_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
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
        Ok(Server { child, log })
    }
}

impl ImageMounter for Squashfuse {
    fn mount_image(
        &mut self,
        sys: &dyn Sys,
        target: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Opened here, inside the user namespace: the kernel refuses (EINVAL)
        // a FUSE mount whose device was opened in another user namespace
        // than the one owning the new superblock.
        let fuse: OwnedFd =
            crate::host::open_dev_fuse(&self.fuse_device).map_err(MountError::from)?;
        let fuse_fd = fuse.as_raw_fd();
        sys.mount(
            &self.image_path.to_string_lossy(),
            target,
            Some("fuse.squashfuse"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&self.mount_options(fuse_fd)),
        )
        .map_err(|source| MountError::Sys {
            image: self.image_path.clone(),
            source,
        })?;
        let mut server = self.spawn(fuse_fd)?;
        // Our copy must go: if the server dies, the connection must abort
        // (ENOTCONN) instead of every access waiting forever.
        drop(fuse);
        log::debug!(
            "squashfuse pid {} serving {}",
            server.pid(),
            target.display()
        );
        // The first access waits for the server's FUSE INIT and GETATTR.
        if let Err(e) = std::fs::metadata(target) {
            let message = server.failure_message(&e);
            log::debug!("first access to {} failed: {e}", target.display());
            return Err(Box::new(MountError::Server {
                image: self.image_path.clone(),
                message,
            }));
        }
        self.server = Some(server);
        Ok(())
    }
}
