//! The mount layer: serving a single-file image's SquashFS as a filesystem.
//!
//! The rest of rfake only sees [`crate::container::rootfs::ImageMounter`]. Two servers
//! implement it: rfake's own ([`builtin`], the default) and an external
//! squashfuse process ([`squashfuse`]). Both share how the FUSE filesystem
//! is made ([`FuseMount`]):
//! - rfake opens `/dev/fuse` itself, inside the user namespace (the kernel
//!   refuses a FUSE device opened in another user namespace than the one
//!   owning the new superblock, EINVAL), and creates the filesystem as a
//!   *detached* mount with the new mount API (fsopen/fsconfig/fsmount;
//!   allowed to root of a user namespace since Linux 4.18 for FUSE, 5.2
//!   for the API), with the flags it picks (`ro,nosuid,nodev`);
//! - the server is started while the host root is still `/` and nothing is
//!   hidden, and every later `pivot_root` carries its root along into the
//!   container, so `/proc/PID/root` of the server never shows the host;
//! - rfake waits for the server's FUSE INIT (the first `fstat` of the
//!   mount blocks until then) before anything is pivoted away;
//! - the mount is attached (`move_mount`) where the rootfs steps want it.
//!
//! The server is tied to rfake: parent-death signal SIGKILL, its own session
//! (a terminal's ^C does not reach it) and SIGINT/SIGTERM/SIGHUP/SIGQUIT
//! ignored, so during a job's cancellation the payload can still read its
//! files while it cleans up; rfake stops the server after the payload has
//! exited.

pub mod builtin;
pub mod squashfuse;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::container::rootfs::ServeError;
use crate::container::sys::{FsParam, MountAttrs, Sys, SysError};
use crate::exit::ExitKind;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount image {}: {source}", crate::text::shown(image))]
    Sys { image: PathBuf, source: SysError },
    #[error("cannot start {}: {source}", crate::text::shown(program))]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(
        "image {}: {server} could not serve it: {message}",
        crate::text::shown(image)
    )]
    Server {
        image: PathBuf,
        server: &'static str,
        message: String,
    },
}

impl MountError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            MountError::Sys { .. } => ExitKind::OsError,
            MountError::Spawn { .. } | MountError::Host(_) => ExitKind::HostUnavailable,
            MountError::Server { .. } => ExitKind::BadImage,
        }
    }
}

/// A running FUSE server process; killed (SIGKILL) and reaped when
/// stopped or dropped.
#[derive(Debug)]
pub struct Server {
    pid: Pid,
    /// What it wrote (external servers), for the message when it fails.
    log: Option<File>,
    reaped: bool,
    /// Readable when it has ended (none before Linux 5.3).
    pidfd: Option<OwnedFd>,
}

impl Server {
    pub(crate) fn new(pid: Pid, log: Option<File>) -> Server {
        Server {
            pid,
            log,
            reaped: false,
            // Opened while it is our unreaped child: it names this process.
            pidfd: crate::container::process::pidfd_open(pid.as_raw() as u32).ok(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Readable once the server has ended, to watch it by.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// If the server has ended: reap it and say how it ended.
    pub fn reap_if_ended(&mut self) -> Option<WaitStatus> {
        if self.reaped {
            return None;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => None,
            Ok(status) => {
                self.reaped = true;
                Some(status)
            }
        }
    }

    /// Stop the server and reap it.
    pub fn stop(mut self) {
        self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            self.reaped = true;
            builtin::reap_with_usage(self.pid);
        }
    }

    /// Why the server failed: the first line it wrote, else how it ended.
    fn failure_message(&mut self, access: &std::io::Error) -> String {
        // It exits right after failing; give it a moment, then insist.
        let mut exited = None;
        for _ in 0..50 {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => {
                    self.reaped = true;
                    exited = Some(status);
                    break;
                }
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_and_reap();
        let mut text = String::new();
        if let Some(log) = &mut self.log {
            let _ = log.seek(SeekFrom::Start(0));
            let _ = log.read_to_string(&mut text);
        }
        if let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) {
            return line.to_string();
        }
        match exited {
            Some(WaitStatus::Exited(_, code)) => {
                format!("it exited (exit status: {code}) without a message")
            }
            Some(WaitStatus::Signaled(_, sig, _)) => format!("it was killed by {sig}"),
            _ => format!("reading the image's root directory failed ({access})"),
        }
    }
}

/// The line rfake prints when the image server `pid` for `image` has ended
/// under a running payload (`how`: "was killed by SIGKILL"...).
pub fn ended_line(pid: u32, how: &str, image: &Path) -> String {
    format!(
        "the image server (pid {pid}) for {} {how}; the container's files are gone",
        image.display()
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// The FUSE filesystem of one image, between [`FuseMount::prepare`] (made,
/// served, detached) and [`FuseMount::attach`].
#[derive(Debug)]
pub struct FuseMount {
    /// For messages and the mount's source field.
    pub image_path: PathBuf,
    /// The FUSE device, normally `/dev/fuse`.
    pub fuse_device: PathBuf,
    /// The filesystem subtype shown in /proc/mounts ("fuse.SUBTYPE").
    pub subtype: &'static str,
    /// Owner of the mount inside the namespace.
    pub uid: u32,
    pub gid: u32,
    mount: Option<OwnedFd>,
    server: Option<Server>,
}

impl FuseMount {
    pub fn new(image_path: PathBuf, fuse_device: PathBuf, subtype: &'static str) -> Self {
        FuseMount {
            image_path,
            fuse_device,
            subtype,
            // The mount is made by root of the outer namespace.
            uid: 0,
            gid: 0,
            mount: None,
            server: None,
        }
    }

    fn params(&self, fuse_fd: RawFd) -> Vec<FsParam> {
        // rootmode: the root is a directory; allow_other: a payload with
        // another uid (nested namespaces) may read it; default_permissions:
        // the kernel checks the image's modes; ro: a read-only superblock
        // (not only a read-only mount), so that reads do not invalidate the
        // cached atime and make the next stat a round trip.
        vec![
            FsParam::Value("source", self.image_path.to_string_lossy().into_owned()),
            FsParam::Value("subtype", self.subtype.into()),
            FsParam::Value("fd", fuse_fd.to_string()),
            FsParam::Value("rootmode", "40000".into()),
            FsParam::Value("user_id", self.uid.to_string()),
            FsParam::Value("group_id", self.gid.to_string()),
            FsParam::Flag("allow_other"),
            FsParam::Flag("default_permissions"),
            FsParam::Flag("ro"),
        ]
    }

    /// Make the filesystem, start its server with `start` (given the FUSE
    /// device's fd; `server` names it in messages) and wait until it serves.
    pub fn prepare(
        &mut self,
        sys: &dyn Sys,
        server: &'static str,
        start: impl FnOnce(RawFd) -> Result<Server, MountError>,
    ) -> Result<(), MountError> {
        let fuse: OwnedFd = crate::host::open_dev_fuse(&self.fuse_device)?;
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
        let mut running = start(fuse_fd)?;
        // Our copy must go: if the server dies, the connection must abort
        // (ENOTCONN) instead of every access waiting forever.
        drop(fuse);
        // Wait until it serves: the first getattr of the root waits for the
        // server's FUSE INIT, which it sends only once the image is open.
        // Until then the host root must stay where it is (the next steps
        // pivot away from it).
        if let Err(errno) = nix::sys::stat::fstat(&mount) {
            let e = std::io::Error::from(errno);
            let message = running.failure_message(&e);
            return Err(MountError::Server {
                image: self.image_path.clone(),
                server,
                message,
            });
        }
        log::debug!(
            "{server} pid {} serving {}",
            running.pid(),
            self.image_path.display()
        );
        self.mount = Some(mount);
        self.server = Some(running);
        Ok(())
    }

    pub fn attach(&mut self, sys: &dyn Sys, target: &Path) -> Result<(), MountError> {
        let Some(mount) = self.mount.take() else {
            return Err(MountError::Sys {
                image: self.image_path.clone(),
                source: SysError::new("move_mount", target, nix::errno::Errno::EBADF),
            });
        };
        sys.move_mount(&mount, target)
            .map_err(|source| MountError::Sys {
                image: self.image_path.clone(),
                source,
            })
    }

    /// The running server, handed over to the caller (who stops it).
    pub fn take_server(&mut self) -> Option<Server> {
        self.server.take()
    }
}

/// Which server serves the image, with what it needs.
#[derive(Debug)]
pub enum ServerKind {
    Builtin(builtin::Builtin),
    Squashfuse(squashfuse::Squashfuse),
}

/// An image served by one of the servers: what the rootfs steps drive.
#[derive(Debug)]
pub struct ImageMount {
    pub fuse: FuseMount,
    pub kind: ServerKind,
}

impl ImageMount {
    /// The running server, handed over to the caller (who stops it).
    pub fn take_server(&mut self) -> Option<Server> {
        self.fuse.take_server()
    }
}

impl From<MountError> for ServeError {
    fn from(e: MountError) -> Self {
        ServeError::new(e.exit_kind(), e)
    }
}

impl crate::container::rootfs::ImageMounter for ImageMount {
    fn prepare(&mut self, sys: &dyn Sys) -> Result<(), ServeError> {
        match &mut self.kind {
            ServerKind::Builtin(b) => {
                let fs = b.open(&self.fuse.image_path)?;
                self.fuse
                    .prepare(sys, "rfake's FUSE server", |fd| b.start(fs, fd))?
            }
            ServerKind::Squashfuse(s) => self.fuse.prepare(sys, "squashfuse", |fd| s.start(fd))?,
        }
        Ok(())
    }

    fn attach(&mut self, sys: &dyn Sys, target: &Path) -> Result<(), ServeError> {
        Ok(self.fuse.attach(sys, target)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::sys::recorder::Recorder;

    /// A stand-in server: a child that is already running (the `Server`
    /// kills and reaps it by pid when dropped).
    #[allow(clippy::zombie_processes)]
    fn child() -> Server {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        Server::new(Pid::from_raw(child.id() as i32), None)
    }

    /// The image's file system is made detached, read-only, nosuid and
    /// nodev in the fsmount call itself, on the device rfake opened; the
    /// server starts before the first access; the mount is attached where
    /// asked, once.
    #[test]
    fn an_image_is_served_detached_read_only_then_attached() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new(dir.path());
        // /dev/null stands in for /dev/fuse: the recorder mounts nothing.
        let mut m = FuseMount::new("/img/a.sqfs".into(), "/dev/null".into(), "rfake");
        let mut started = None;
        m.prepare(&rec, "test server", |fd| {
            started = Some(fd);
            Ok(child())
        })
        .unwrap();
        let fd = started.expect("the server was started");
        let calls = rec.take();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            calls[0],
            format!(
                "fsmount fuse [Value(\"source\", \"/img/a.sqfs\"), Value(\"subtype\", \"rfake\"), \
                 Value(\"fd\", \"{fd}\"), Value(\"rootmode\", \"40000\"), Value(\"user_id\", \"0\"), \
                 Value(\"group_id\", \"0\"), Flag(\"allow_other\"), Flag(\"default_permissions\"), \
                 Flag(\"ro\")] +ro,nosuid,nodev"
            )
        );
        m.attach(&rec, Path::new("/lower")).unwrap();
        assert_eq!(rec.take(), vec!["move_mount /lower"]);
        // Attached once: a second attach is an error, not a second mount.
        assert!(m.attach(&rec, Path::new("/lower")).is_err());
        assert!(rec.take().is_empty());
        let server = m.take_server().expect("the server is handed over");
        drop(server); // killed and reaped
    }

    /// A server that fails to start leaves no mount behind to attach.
    #[test]
    fn a_server_that_does_not_start_fails_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new(dir.path());
        let mut m = FuseMount::new("/img/a.sqfs".into(), "/dev/null".into(), "rfake");
        let err = m
            .prepare(&rec, "test server", |_| {
                Err(MountError::Spawn {
                    program: "/nonexistent".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                })
            })
            .unwrap_err();
        assert_eq!(err.exit_kind(), ExitKind::HostUnavailable);
        assert!(m.attach(&rec, Path::new("/lower")).is_err());
        assert!(m.take_server().is_none());
    }
}
