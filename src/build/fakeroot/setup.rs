//! The child's side: the namespaces and the mount tree around the writable
//! root, with the container's own pieces (crate::container::namespace and
//! the steps of crate::container::rootfs).
//!
//! Order, and why:
//! 1. Missing mount points (`/proc`, `/sys`, `/dev`, `/tmp`) are made in the
//!    tree first, as plain directories, in the parent: were one missing, the
//!    root step would put an overlay on the tree and the script's writes
//!    would land in its tmpfs, not in the tree.
//! 2. `unshare(CLONE_NEWUSER | CLONE_NEWNS)`, the invoking user mapped to
//!    root, setgroups denied ([`namespace::enter`]).
//! 3. `MakePrivate`, `Staging`, `PivotToStaging`: as a launch (see
//!    crate::container::rootfs): the host is now at `/oldroot`.
//! 4. The tree, found under `/oldroot` on components, is bound
//!    (recursively, *writable*, adding `nosuid,nodev`) at `/lower`.
//! 5. `Root`: `/lower` becomes `/newroot` as it is (nothing is missing, so
//!    no overlay); the host's `/proc` (a fresh procfs would need a PID
//!    namespace of our own), `/sys` read-only and `/dev` recursively with
//!    its device nodes, a private tmpfs at `/tmp`, the host's
//!    `/etc/resolv.conf` and `/etc/hosts` over the image's when it has them
//!    (the network is the host's: no network namespace); then `pivot_root`
//!    into the tree and the host detached.

use std::path::Path;

use crate::container::namespace::{self, Identity};
use crate::container::paths;
use crate::container::rootfs::{self, Bind, BindKind, Layout, RootLayer, Step, Tmpfs};
use crate::container::sys::{MountAttrs, Sys, SysError};

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

/// The steps after it: the root, the system mounts, the pivot into it.
pub fn after_root() -> Vec<Step> {
    vec![
        Step::Root(RootLayer::default()),
        Step::Bind(system_bind("/proc", false, false)),
        Step::Bind(system_bind("/sys", true, false)),
        Step::Bind(system_bind("/dev", false, true)),
        Step::Tmpfs(Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
            origin: "fakeroot".into(),
        }),
        Step::Bind(host_file("/etc/resolv.conf")),
        Step::Bind(host_file("/etc/hosts")),
        Step::EnterNewRoot,
    ]
}

/// Make the missing [`MOUNT_POINTS`] in the tree at `root` (only a last
/// component: a mount point below a symlink or a missing directory is left
/// to fail at its mount, named).
pub fn make_mount_points(sys: &dyn Sys, root: &Path) -> Result<(), rootfs::RootfsError> {
    let root_fd = paths::open_root(root).map_err(|e| destination(root, e))?;
    for dir in MOUNT_POINTS {
        let walk = paths::walk(std::os::fd::AsFd::as_fd(&root_fd), Path::new(dir))
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

/// Everything in the child up to `pivot_root` into `root` (an absolute,
/// canonical path on the host).
pub fn enter(sys: &dyn Sys, id: &Identity, root: &Path) -> Result<(), crate::error::Error> {
    namespace::enter(sys, id, Path::new("/proc/self"), Path::new("/proc/sys"))?;
    let layout = Layout::container();
    let mut no_image = NoImage;
    let mut quiet = |_: &Step, _: std::time::Duration, _: Option<&str>| {};
    rootfs::execute(sys, &layout, &before_root(), &mut no_image, &mut quiet)?;
    bind_tree(sys, &layout, root)?;
    rootfs::execute(sys, &layout, &after_root(), &mut no_image, &mut quiet)?;
    Ok(())
}

/// For [`super::Place::Host`]: only the namespaces (the mount namespace
/// is the host's tree, copied, and nothing is mounted in it).
pub fn enter_host(sys: &dyn Sys, id: &Identity) -> Result<(), crate::error::Error> {
    namespace::enter(sys, id, Path::new("/proc/self"), Path::new("/proc/sys"))?;
    Ok(())
}

/// The tree at `/lower`, writable: resolved on components below the old
/// root, cloned recursively, `nosuid,nodev` added (never cleared).
fn bind_tree(sys: &dyn Sys, layout: &Layout, root: &Path) -> Result<(), rootfs::RootfsError> {
    let host = paths::open_root(&layout.oldroot).map_err(|e| destination(&layout.oldroot, e))?;
    let walk =
        paths::walk(std::os::fd::AsFd::as_fd(&host), root).map_err(|e| destination(root, e))?;
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
    sys.add_attrs(std::os::fd::AsFd::as_fd(&tree), attrs, true, root)?;
    let lower = paths::open_root(&layout.lower).map_err(|e| destination(&layout.lower, e))?;
    sys.attach(
        std::os::fd::AsFd::as_fd(&tree),
        std::os::fd::AsFd::as_fd(&lower),
        &layout.lower,
    )?;
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
