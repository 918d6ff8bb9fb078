//! An external squashfuse (`squashfuse_ll` preferred) serving the image.
//!
//! rfake opens `/dev/fuse` itself, inside the user namespace (the kernel
//! refuses a FUSE device opened in another user namespace than the one
//! owning the new superblock, EINVAL), and creates the FUSE filesystem as a
//! *detached* mount with the new mount API (fsopen/fsconfig/fsmount; allowed
//! to root of a user namespace since Linux 4.18 for FUSE, 5.2 for the API).
//! squashfuse is handed the image and the device as `/dev/fd/N` (libfuse
//! 3.3+ accepts a pre-mounted `/dev/fd/N` mount point). So:
//! - the server starts while the host root is still `/` and nothing is
//!   hidden (a program or its libraries anywhere on the host work), and
//!   every later `pivot_root` carries its root along into the container, so
//!   `/proc/PID/root` of the server never shows the host;
//! - the mount is attached (`move_mount`) where the rootfs steps want it,
//!   and every access waits for the server: no polling for readiness;
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

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigHandler, Signal, signal};

use super::MountError;
use crate::rootfs::ImageMounter;
use crate::sys::{FsParam, MountAttrs, Sys};

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
    /// The detached mount, between `prepare` and `attach`.
    pub mount: Option<OwnedFd>,
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
    fn params(&self, fuse_fd: RawFd) -> Vec<FsParam> {
        // rootmode: the root is a directory; allow_other: a payload with
        // another uid (nested namespaces) may read it; default_permissions:
        // the kernel checks the image's modes.
        vec![
            FsParam::Value("source", self.image_path.to_string_lossy().into_owned()),
            FsParam::Value("subtype", "squashfuse".into()),
            FsParam::Value("fd", fuse_fd.to_string()),
            FsParam::Value("rootmode", "40000".into()),
            FsParam::Value("user_id", self.uid.to_string()),
            FsParam::Value("group_id", self.gid.to_string()),
            FsParam::Flag("allow_other"),
            FsParam::Flag("default_permissions"),
        ]
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
    fn prepare(&mut self, sys: &dyn Sys) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let fuse: OwnedFd =
            crate::host::open_dev_fuse(&self.fuse_device).map_err(MountError::from)?;
        let fuse_fd = fuse.as_raw_fd();
        let attrs = MountAttrs {
            rdonly: true,
            nosuid: true,
            nodev: true,
        };
        let mount = sys
            .mount_detached("fuse", &self.params(fuse_fd), attrs)
            .map_err(|source| MountError::Sys {
                image: self.image_path.clone(),
                source,
            })?;
        let mut server = self.spawn(fuse_fd)?;
        // Our copy must go: if the server dies, the connection must abort
        // (ENOTCONN) instead of every access waiting forever.
        drop(fuse);
        // Wait until it serves: the first getattr of the root waits for the
        // server's FUSE INIT, which it sends only once its libraries are
        // loaded and the image is open. Until then the host root must stay
        // where it is (the next steps pivot away from it).
        if let Err(errno) = nix::sys::stat::fstat(&mount) {
            let e = std::io::Error::from(errno);
            let message = server.failure_message(&e);
            return Err(Box::new(MountError::Server {
                image: self.image_path.clone(),
                message,
            }));
        }
        log::debug!(
            "squashfuse pid {} serving {}",
            server.pid(),
            self.image_path.display()
        );
        self.mount = Some(mount);
        self.server = Some(server);
        Ok(())
    }

    fn attach(
        &mut self,
        sys: &dyn Sys,
        target: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(mount) = self.mount.take() else {
            return Err("internal: the image is attached before it is served".into());
        };
        sys.move_mount(&mount, target)
            .map_err(|source| MountError::Sys {
                image: self.image_path.clone(),
                source,
            })?;
        Ok(())
    }
}
