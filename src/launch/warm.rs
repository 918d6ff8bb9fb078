//! Warm mounts: every launch of the same image file by the same user on a
//! node uses one mount of it, served by one server with one cache, while
//! any launch runs and for `warm_linger` after the last one ends.
//!
//! The first launch starts a *warm keeper* ([`super::keeper`]): it makes a
//! user namespace (the user as root, like every launch's outer one) and a
//! private mount namespace, serves the image there and attaches it at
//! [`IMAGE_DIR`] on a small tmpfs. Each launch connects to the rendezvous
//! socket (named from the uid, the user's secret, the image's path, device,
//! inode, size and times, and the server settings: a replaced image gets a
//! fresh mount) and receives two descriptors: the keeper's user namespace
//! and a detached copy of the image mount (open_tree, OPEN_TREE_CLONE),
//! and the server's pid. It enters the user
//! namespace, makes a mount namespace of its own and builds its container
//! exactly as alone, attaching the copy where it would have attached a
//! fresh mount. So binds, environment and identity stay per launch; the
//! FUSE connection, the server's caches and the kernel's page and dentry
//! caches are shared.
//!
//! A launch stays connected while it runs; when the last one has gone and
//! the linger has passed with nobody new, the keeper stops the server and
//! exits, and the namespaces and the mount go with it. When the server ends
//! before that (killed, a crash), the keeper frees the name at once and
//! tells the launches still running ([`super::watch`]).
//!
//! A warm mount is only an optimisation: when there is none to be had (a
//! socket of another user's, an unusable secret, a failed rendezvous), the
//! launch warns once and mounts the image for itself.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::{Plan, image_mount, keeper, watch};
use crate::container::rootfs::ServeError;
use crate::container::rootfs::{self, ImageMounter, Step};
use crate::container::sys::{LinuxSys, Sys, SysError};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::launch::rendezvous::{self, JoinError, Role};

/// Where the keeper attaches the image, in its own mount namespace.
pub const IMAGE_DIR: &str = "/tmp/image";
/// How often a launch retries when a keeper went away as it connected.
const ATTEMPTS: usize = 3;

/// Where a launch finds the warm mount of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPlan {
    /// The abstract socket's name.
    pub socket: rendezvous::SocketName,
    /// How long the mount outlives its last launch.
    pub linger: Duration,
}

impl std::fmt::Display for WarmPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.socket.unusable() {
            Some(e) => write!(f, "off: {e} (each launch makes a mount of its own)"),
            None => write!(f, "socket {}, linger {:?}", self.socket, self.linger),
        }
    }
}

/// A launch's membership of a warm mount; the keeper counts it until this
/// is dropped (or the process ends).
#[derive(Debug)]
pub struct Lease {
    stream: UnixStream,
    userns: OwnedFd,
    mount: Option<OwnedFd>,
    /// The keeper's image server: its pid and pidfd.
    server: Option<(u32, OwnedFd)>,
}

/// What names a warm mount in messages.
fn key(plan: &Plan) -> String {
    format!("the warm mount of {}", plan.image.path.display())
}

/// Connect to the warm mount of `plan`'s image, starting its keeper if
/// there is none. `None`: there is no warm mount to be had (a warning says
/// why) and the launch mounts the image for itself, as a warm mount is
/// only an optimisation. An error is one the launch's own mount would have
/// had too (the keeper could not serve the image).
pub fn lease(plan: &Plan, warm: &WarmPlan) -> Result<Option<Lease>, Error> {
    let key = key(plan);
    let own = "this launch makes a mount of its own";
    let name = match warm.socket.resolve() {
        Ok(name) => name,
        Err(e) => {
            log::warn!("{key} is off: {e}; {own}");
            return Ok(None);
        }
    };
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let stream = match connect(plan, warm, &name, &key) {
            Ok(Some(stream)) => stream,
            Ok(None) => continue,
            // Another user holds the name: seen in /proc/net/unix while a
            // keeper of ours had it, say. Refused before anything is read.
            Err(JoinError::Foreign { owner, .. }) => {
                log::warn!(
                    "{key}: its rendezvous socket @{name} belongs to uid {owner}, not to you \
                     (another user took the name); {own}"
                );
                return Ok(None);
            }
            Err(e) => {
                log::warn!("{e}; {own}");
                return Ok(None);
            }
        };
        match rendezvous::receive_fds(&stream, &key) {
            Ok(handover) => {
                let server = handover.server;
                let Ok([userns, mount]) = <[OwnedFd; 2]>::try_from(handover.fds) else {
                    return Err(Error::Internal(format!(
                        "{key}: the keeper did not send 2 descriptors"
                    )));
                };
                // Its server may have ended since the keeper looked.
                let server = match server.map(watch::server_alive) {
                    Some(None) => {
                        last = "its image server had ended".into();
                        continue;
                    }
                    Some(alive) => alive,
                    None => None,
                };
                return Ok(Some(Lease {
                    stream,
                    userns,
                    mount: Some(mount),
                    server,
                }));
            }
            // The keeper's linger ended as we connected, or its server has
            // ended and it is leaving: start again.
            Err(e @ (JoinError::NoAnswer { .. } | JoinError::Gone { .. })) => {
                last = e.to_string();
            }
            // Its set-up failed: that is this launch's error too.
            Err(JoinError::Keeper { message, code, .. }) => {
                return Err(JoinError::Relayed { message, code }.into());
            }
            Err(e) => {
                log::warn!("{e}; {own}");
                return Ok(None);
            }
        }
    }
    log::warn!("{key}: no keeper served it in {ATTEMPTS} attempts ({last}); {own}");
    Ok(None)
}

/// Connect to the keeper on `name`, starting one first if nobody listens.
/// `None`: the keeper started is not there (start again).
fn connect(
    plan: &Plan,
    warm: &WarmPlan,
    name: &str,
    key: &str,
) -> Result<Option<UnixStream>, JoinError> {
    match rendezvous::rendezvous(name, key)? {
        Role::Member(stream) => Ok(Some(stream)),
        Role::Leader(listener) => {
            log::info!("no warm mount of the image yet: making one");
            keeper::spawn_detached(listener, |l| run_keeper(plan, warm, l)).map_err(|e| {
                JoinError::Io {
                    key: key.to_string(),
                    what: "starting its keeper",
                    error: std::io::Error::other(e.to_string()),
                }
            })?;
            match rendezvous::rendezvous(name, key)? {
                Role::Member(stream) => Ok(Some(stream)),
                Role::Leader(_) => Ok(None),
            }
        }
    }
}

impl Lease {
    /// Enter the keeper's user namespace (the user owns it, so gets its
    /// capabilities there) and make a mount namespace of this launch's own.
    pub fn enter(&self, sys: &dyn Sys) -> Result<(), Error> {
        sys.setns(
            self.userns.as_fd(),
            CloneFlags::CLONE_NEWUSER,
            "the warm mount's user namespace",
        )?;
        sys.unshare(CloneFlags::CLONE_NEWNS)?;
        Ok(())
    }

    /// The image mount, for [`WarmMount`].
    pub fn take_mount(&mut self) -> Option<OwnedFd> {
        self.mount.take()
    }

    /// What tells this launch that the image server has ended.
    pub fn watch<'a>(&'a mut self, image: &'a Path) -> watch::FromKeeper<'a> {
        watch::FromKeeper::new(&self.stream, self.server.take(), image)
    }

    /// The image server's pid, as the keeper handed it over.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(|(pid, _)| *pid)
    }

    /// Leave: the keeper sees the connection close.
    pub fn release(self) {
        drop(self.stream);
    }
}

/// The image mount received from the keeper: served already, attached
/// where a fresh mount would be.
pub struct WarmMount {
    pub mount: Option<OwnedFd>,
}

impl ImageMounter for WarmMount {
    fn prepare(&mut self, _: &dyn Sys) -> Result<(), ServeError> {
        Ok(())
    }

    fn attach(&mut self, sys: &dyn Sys, target: &Path) -> Result<(), ServeError> {
        let mount = self.mount.take().ok_or_else(|| {
            ServeError::new(ExitKind::Internal, "the warm mount is attached twice")
        })?;
        sys.move_mount(&mount, target)?;
        Ok(())
    }
}

/// The keeper: serve the image in namespaces of its own, then hand each
/// launch the user namespace and a copy of the mount until the last has
/// gone and the linger has passed. Returns its exit status.
fn run_keeper(plan: &Plan, warm: &WarmPlan, listener: UnixListener) -> i32 {
    let sys = LinuxSys;
    let _ = std::env::set_current_dir("/");
    // SAFETY: naming this process (what ps and top show).
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rfake-warm".as_ptr()) };
    // The keeper and its server outlive the launch that started them: they
    // must not hold its stderr open (a set-up error reaches every waiting
    // launch through the socket instead).
    keeper::redirect_to_null(2);
    let set_up = || -> Result<(File, Option<crate::image_server::Server>), Error> {
        crate::container::namespace::enter(
            &sys,
            &plan.identity,
            Path::new("/proc/self"),
            Path::new("/proc/sys"),
        )?;
        let mut mount = image_mount(plan)?
            .ok_or_else(|| Error::Internal("a warm mount of a directory image".into()))?;
        rootfs::execute(
            &sys,
            &rootfs::Layout::container(),
            &[Step::MakePrivate, Step::ServeImage],
            &mut mount,
            &mut |_, _, _| {},
        )?;
        let dir = Path::new(IMAGE_DIR);
        let parent = dir.parent().unwrap_or(Path::new("/"));
        sys.mount(
            Path::new("rfake-warm"),
            parent,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(std::ffi::OsStr::new("size=64k,mode=700")),
        )?;
        sys.mkdir(dir, 0o700)?;
        mount
            .attach(&sys, dir)
            .map_err(|e| Error::Rootfs(rootfs::RootfsError::Image(e)))?;
        let userns = File::open("/proc/self/ns/user")
            .map_err(|e| SysError::from_io("open", "/proc/self/ns/user", &e))?;
        Ok((userns, mount.take_server()))
    };
    match set_up() {
        Ok((userns, mut server)) => {
            let pid = server.as_ref().map(|s| s.pid());
            let mut watch = server
                .as_mut()
                .and_then(|s| watch::OwnServer::new(s, &plan.image.path));
            keeper::serve(
                listener,
                warm.linger,
                |stream| {
                    let copy = sys
                        .clone_mount(Path::new(IMAGE_DIR))
                        .map_err(|e| std::io::Error::from_raw_os_error(e.errno as i32))?;
                    rendezvous::send_fds(stream, &[userns.as_raw_fd(), copy.as_raw_fd()], pid)
                },
                watch
                    .as_mut()
                    .map(|w| w as &mut dyn crate::container::process::Watch),
            );
            if let Some(server) = server {
                server.stop();
            }
            0
        }
        Err(e) => {
            let code = e.exit_kind().code();
            keeper::refuse_pending(&listener, code, &e.to_string());
            i32::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::sys::recorder::{Recorder, dev_null};

    /// A launch on a warm mount joins the keeper's user namespace and makes
    /// a mount namespace of its own; its image is the keeper's mount,
    /// attached where a fresh one would be, and nothing is served again.
    #[test]
    fn a_warm_launch_enters_the_keepers_user_namespace_and_attaches_its_mount() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new(dir.path());
        let (stream, _keeper) = UnixStream::pair().unwrap();
        let lease = Lease {
            stream,
            userns: dev_null(),
            mount: Some(dev_null()),
            server: None,
        };
        lease.enter(&rec).unwrap();
        let mut lease = lease;
        let mut mount = WarmMount {
            mount: lease.take_mount(),
        };
        let layout = rootfs::Layout::under(dir.path());
        std::fs::create_dir_all(&layout.staging).unwrap();
        rootfs::execute(
            &rec,
            &layout,
            &[Step::ServeImage, Step::AttachImage],
            &mut mount,
            &mut |_, _, _| {},
        )
        .unwrap();
        assert_eq!(
            rec.take(),
            vec![
                "setns CloneFlags(CLONE_NEWUSER) (the warm mount's user namespace)",
                "unshare CloneFlags(CLONE_NEWNS)",
                "move_mount /lower",
            ]
        );
        // The mount is handed over once.
        let again = rootfs::execute(
            &rec,
            &layout,
            &[Step::AttachImage],
            &mut mount,
            &mut |_, _, _| {},
        );
        assert!(again.is_err());
    }
}
