//! The mount tree around the writable root, with the container's own
//! pieces (crate::container::namespace and the steps of
//! crate::container::rootfs), and the step's procfs.
//!
//! Order, and why:
//! 1. Missing mount points (`/proc`, `/sys`, `/dev`, `/tmp`) are made in the
//!    tree first, as plain directories, in rfake: were one missing, the
//!    root step would put an overlay on the tree and the script's writes
//!    would land in its tmpfs, not in the tree.
//! 2. In rfake's forked child: `unshare(CLONE_NEWUSER | CLONE_NEWNS |
//!    CLONE_NEWPID)`, the invoking user mapped to root, setgroups denied
//!    ([`namespaces`]). The PID namespace is the user namespace's, and
//!    only the child's own next child enters it (as its pid 1, the init
//!    of super::init); everything below is the init's.
//! 3. `MakePrivate`, `Staging`, `PivotToStaging`: as a launch (see
//!    crate::container::rootfs): the host is now at `/oldroot`.
//! 4. The tree, found under `/oldroot` on components, is bound
//!    (recursively, *writable*, adding `nosuid,nodev`) at `/lower`.
//! 5. `Root`: `/lower` becomes `/newroot` as it is (nothing is missing, so
//!    no overlay); `/sys` read-only and `/dev` recursively with its device
//!    nodes bound from the host, a private tmpfs at `/tmp`, the host's
//!    `/etc/resolv.conf` and `/etc/hosts` over the image's when it has them
//!    (the network is the host's: no network namespace).
//! 6. A new procfs of the step's PID namespace at `/proc`, twice
//!    ([`procfs`]), while the host's `/proc` is still in the mount
//!    namespace (at `/oldroot/proc`): the kernel lets a user namespace
//!    mount procfs only where one is already fully visible.
//! 7. `pivot_root` into the tree, the host detached.
//!
//! `/sys` stays the host's, read-only: mounting sysfs needs `CAP_SYS_ADMIN`
//! in the user namespace that owns the *network* namespace, and the step
//! keeps the host's network.

use std::os::fd::AsFd;
use std::path::Path;

use crate::container::namespace::{self, Identity};
use crate::container::paths;
use crate::container::rootfs::{self, Bind, BindKind, Layout, RootLayer, Step, Tmpfs};
use crate::container::sys::{FsParam, MountAttrs, Sys, SysError};

/// The directories the mounts need in the tree.
pub const MOUNT_POINTS: [&str; 4] = ["/proc", "/sys", "/dev", "/tmp"];

fn system_bind(path: &str, readonly: bool, allow_devices: bool) -> Bind {
    Bind {
        src: path.into(),
        dst: path.into(),
        kind: BindKind::Dir,
        readonly,
        allow_devices,
        optional: false,
        create: false,
        origin: "fakeroot".into(),
    }
}

/// Read-only: the host's file is not the build's to change.
fn host_file(path: &str) -> Bind {
    Bind {
        kind: BindKind::File,
        optional: true,
        ..system_bind(path, true, false)
    }
}

/// The steps before the tree is bound at `/lower`.
pub fn before_root() -> Vec<Step> {
    vec![Step::MakePrivate, Step::Staging, Step::PivotToStaging]
}

/// The steps after it: the root and the system mounts (the pivot into it
/// follows [`procfs`]).
pub fn after_root() -> Vec<Step> {
    vec![
        Step::Root(RootLayer::default()),
        Step::Bind(system_bind("/sys", true, false)),
        Step::Bind(system_bind("/dev", false, true)),
        Step::Tmpfs(Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
            origin: "fakeroot".into(),
        }),
        Step::Bind(host_file("/etc/resolv.conf")),
        Step::Bind(host_file("/etc/hosts")),
    ]
}

/// Make the missing [`MOUNT_POINTS`] in the tree at `root` (only a last
/// component: a mount point below a symlink or a missing directory is left
/// to fail at its mount, named).
pub fn make_mount_points(sys: &dyn Sys, root: &Path) -> Result<(), rootfs::RootfsError> {
    let root_fd = paths::open_root(root).map_err(|e| destination(root, e))?;
    for dir in MOUNT_POINTS {
        let walk = paths::walk(AsFd::as_fd(&root_fd), Path::new(dir))
            .map_err(|e| destination(Path::new(dir), e))?;
        if let [name] = walk.missing() {
            sys.mkdir_at(walk.deepest_dir(), name, 0o755, &root.join(&dir[1..]))?;
        }
    }
    Ok(())
}

fn destination(dst: &Path, source: paths::PathError) -> rootfs::RootfsError {
    rootfs::RootfsError::Destination {
        dst: dst.to_path_buf(),
        origin: "fakeroot".into(),
        source,
    }
}

/// In rfake's forked child: the user, mount and PID namespaces
/// (`CLONE_NEWPID` applies to the children to come).
pub fn namespaces(sys: &dyn Sys, id: &Identity) -> Result<(), crate::error::Error> {
    namespace::enter_with_pids(sys, id, Path::new("/proc/self"), Path::new("/proc/sys"))?;
    Ok(())
}

/// In the step's init ([`super::Place::Tree`]): the mount tree around
/// `root` (an absolute, canonical path on the host), up to and with the
/// `pivot_root` into it.
pub fn tree(sys: &dyn Sys, root: &Path) -> Result<(), crate::error::Error> {
    let layout = Layout::container();
    let mut no_image = NoImage;
    let mut quiet = |_: &Step, _: std::time::Duration, _: Option<&str>| {};
    rootfs::execute(sys, &layout, &before_root(), &mut no_image, &mut quiet)?;
    bind_tree(sys, &layout, root)?;
    rootfs::execute(sys, &layout, &after_root(), &mut no_image, &mut quiet)?;
    procfs_in(sys, &layout.newroot)?;
    rootfs::execute(
        sys,
        &layout,
        &[Step::EnterNewRoot],
        &mut no_image,
        &mut quiet,
    )?;
    Ok(())
}

/// Two new procfs at `/proc` of the tree at `newroot`, one over the other:
/// a script that unmounts /proc (debootstrap's second stage does, to mount
/// its own) finds the second, as new, which also lets it mount yet another
/// (with a single one, /proc would be empty and no procfs could be mounted
/// again).
fn procfs_in(sys: &dyn Sys, newroot: &Path) -> Result<(), rootfs::RootfsError> {
    let newroot_fd = paths::open_root(newroot).map_err(|e| destination(newroot, e))?;
    let dst = Path::new("/proc");
    let proc = paths::walk(newroot_fd.as_fd(), dst).map_err(|e| destination(dst, e))?;
    let Some(proc_fd) = proc.fd() else {
        return Err(rootfs::RootfsError::MissingDestination {
            dst: dst.into(),
            origin: "fakeroot".into(),
        });
    };
    for _ in 0..2 {
        // Onto the descriptor: the kernel stacks the second on the first.
        sys.attach(procfs(sys)?.as_fd(), proc_fd, dst)?;
    }
    Ok(())
}

/// In the step's init ([`super::Place::Host`]): the host's file system as
/// it is (a copy, in the step's mount namespace), a new procfs over its
/// `/proc`.
pub fn host(sys: &dyn Sys) -> Result<(), crate::error::Error> {
    sys.move_mount(&procfs(sys)?, Path::new("/proc"))?;
    Ok(())
}

/// A new procfs, detached: it shows the PID namespace of the caller (made
/// by `fsopen(2)`, so the caller must be in the step's PID namespace, its
/// init). `nosuid,nodev`, as the host's binds.
fn procfs(sys: &dyn Sys) -> Result<std::os::fd::OwnedFd, SysError> {
    let attrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: true,
    };
    sys.mount_detached("proc", &[FsParam::Value("source", "proc".into())], attrs)
}

/// The tree at `/lower`, writable: resolved on components below the old
/// root, cloned recursively, `nosuid,nodev` added (never cleared).
fn bind_tree(sys: &dyn Sys, layout: &Layout, root: &Path) -> Result<(), rootfs::RootfsError> {
    let host = paths::open_root(&layout.oldroot).map_err(|e| destination(&layout.oldroot, e))?;
    let walk = paths::walk(AsFd::as_fd(&host), root).map_err(|e| destination(root, e))?;
    let Some(tree_fd) = walk.fd() else {
        return Err(rootfs::RootfsError::MissingSource {
            src: root.to_path_buf(),
            origin: "the build's tree".into(),
        });
    };
    let tree = sys.clone_tree(tree_fd, true, root)?;
    let attrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: true,
    };
    sys.add_attrs(AsFd::as_fd(&tree), attrs, true, root)?;
    let lower = paths::open_root(&layout.lower).map_err(|e| destination(&layout.lower, e))?;
    sys.attach(AsFd::as_fd(&tree), AsFd::as_fd(&lower), &layout.lower)?;
    Ok(())
}

/// There is no image to serve: the tree is bound by [`bind_tree`].
struct NoImage;

impl rootfs::ImageMounter for NoImage {
    fn prepare(&mut self, _: &dyn Sys) -> Result<(), rootfs::ServeError> {
        Err(SysError::about(
            "serve",
            "no image in a fakeroot step",
            nix::errno::Errno::EINVAL,
        )
        .into())
    }
    fn attach(&mut self, _: &dyn Sys, _: &Path) -> Result<(), rootfs::ServeError> {
        Err(SysError::about(
            "attach",
            "no image in a fakeroot step",
            nix::errno::Errno::EINVAL,
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::sys::recorder::Recorder;

    /// Two procfs, made by the caller (the init), attached at the tree's
    /// `/proc`; a tree without `/proc` is refused, naming it.
    #[test]
    fn procfs_twice_at_proc() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::new(dir.path());
        let err = procfs_in(&rec, dir.path()).unwrap_err();
        assert!(err.to_string().contains("/proc"), "{err}");
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        rec.take();
        procfs_in(&rec, dir.path()).unwrap();
        let fsmount = r#"fsmount proc [Value("source", "proc")] +nosuid,nodev"#;
        assert_eq!(
            rec.take(),
            [fsmount, "attach -> /proc", fsmount, "attach -> /proc"]
        );
    }
}
