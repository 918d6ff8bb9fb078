//! The root layer, binds, private tmpfs mounts and identity files.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{
    Bind, BindKind, IdentitySpec, Layout, MOUNT_POINT_OVERLAY_SIZE, RootLayer, RootfsError,
    ServeError, State, Tmpfs, Wanted, open_root, open_root_any, resolve,
};
use crate::container::passwd;
use crate::container::paths::{self, PathError, Walk};
use crate::container::sys::{FsParam, MountAttrs, Sys, SysError};
use crate::exit::ExitKind;
use crate::input;
use crate::overlay::{self, Kind};
use crate::text::shown;

/// Which of `wanted` the image at `lower` lacks: where each would be (a
/// container path without symlinks) and whether it is a directory. Escapes
/// are refused here, before anything is mounted over the image.
/// A destination the image lacks: its container path, whether it is a
/// directory, the target when it is a symlink.
type Missing<'a> = (PathBuf, bool, Option<&'a Path>);

fn missing_destinations<'a>(
    lower: BorrowedFd<'_>,
    wanted: &[Wanted<'a>],
) -> Result<Vec<Missing<'a>>, RootfsError> {
    let mut missing = Vec::new();
    for w in wanted {
        if let Some(target) = w.link {
            // A symlink: its own name is not followed.
            let (parent, name) = split_link(w.dst, w.origin)?;
            let walk = resolve(lower, parent, w.origin)?;
            if !walk.exists() || entry_at(walk.deepest_dir(), name).is_none() {
                missing.push((walk.container_path().join(name), false, Some(target)));
            }
            continue;
        }
        let walk = resolve(lower, w.dst, w.origin)?;
        if !walk.exists() {
            missing.push((walk.container_path(), w.dir, None));
        }
    }
    Ok(missing)
}

/// A link's directory and name (the container root is never a link).
fn split_link<'p>(link: &'p Path, origin: &str) -> Result<(&'p Path, &'p OsStr), RootfsError> {
    match (link.parent(), link.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(RootfsError::Destination {
            dst: link.to_path_buf(),
            origin: origin.to_string(),
            source: PathError::IsRoot {
                path: link.to_path_buf(),
            },
        }),
    }
}

/// What is at `name` in `dir`, not following a symlink: `Some(target)` for
/// a symlink, `Some(None)` for anything else, `None` when nothing is.
fn entry_at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<Option<PathBuf>> {
    let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
        let target = rustix::fs::readlinkat(dir, name, Vec::new()).ok()?;
        Some(Some(PathBuf::from(std::ffi::OsString::from_vec(
            target.into_bytes(),
        ))))
    } else {
        Some(None)
    }
}

/// Create the missing components of `walk` one by one below its deepest
/// existing directory (directories, and an empty file at the end unless
/// `dir`), each relative to its parent's descriptor; returns the walk of
/// the created path.
fn create_missing(
    sys: &dyn Sys,
    mut walk: Walk,
    dir: bool,
    origin: &str,
) -> Result<Walk, RootfsError> {
    while let Some(name) = walk.missing().first().cloned() {
        let last = walk.missing().len() == 1;
        let what = walk.existing_path().join(&name);
        let made = if last && !dir {
            sys.create_file_at(walk.deepest_dir(), &name, 0o644, &what)
        } else {
            sys.mkdir_at(walk.deepest_dir(), &name, 0o755, &what)
        };
        match made {
            Ok(()) => {}
            Err(e) if e.errno == nix::errno::Errno::EEXIST => {}
            Err(e) => return Err(e.into()),
        }
        walk.descend(dir || !last)
            .map_err(|source| RootfsError::Destination {
                dst: what.clone(),
                origin: origin.to_string(),
                source,
            })?;
    }
    Ok(walk)
}

/// `lower` becomes `newroot`: moved as it is, or under an overlay.
///
/// The overlay's layers, top to bottom (overlayfs(5): the first lowerdir
/// is the topmost):
/// - upper: the `--overlay` writable directory's `upper` (its `work`
///   beside it), else a tmpfs of ours (`--writable-tmpfs`, or mount points
///   only), else none (a read-only overlay of lower layers);
/// - a tmpfs layer holding the missing mount points, when the upper is a
///   persistent one: they never land in the user's overlay;
/// - the read-only `--overlay` layers, in command-line order;
/// - the image.
pub(super) fn root(
    sys: &dyn Sys,
    layout: &Layout,
    layer: &RootLayer,
    state: &mut State,
    wanted: &[Wanted],
) -> Result<Option<String>, RootfsError> {
    let (lower, newroot) = (layout.lower.as_path(), layout.newroot.as_path());
    let lower_fd = open_root(lower)?;
    let missing = missing_destinations(lower_fd.as_fd(), wanted)?;
    drop(lower_fd);
    let overlays = &layer.overlays;
    if layer.writable_size.is_none() && missing.is_empty() && overlays.is_empty() {
        sys.mount(lower, newroot, None, MsFlags::MS_MOVE, None)?;
        state.enter_root(newroot)?;
        return Ok(Some("the image as it is".into()));
    }
    // The host's paths, as seen after the first pivot.
    let on_host = |p: &Path| layout.oldroot.join(p.strip_prefix("/").unwrap_or(p));
    let overlay = layout.overlay.as_path();
    // An ext3 image layer: served by fuse2fs beside our overlay tmpfs (this
    // runs before the pivot then, from the host).
    let image_dir = |i: usize| overlay.with_file_name(format!("overlay-image-{i}"));
    if overlays.has_images() {
        // The servers mount from namespaces of their own (overlay::fuse):
        // their mounts come here through the staging tmpfs, shared until
        // the root is made.
        sys.mount(
            Path::new("none"),
            &layout.staging,
            None,
            MsFlags::MS_SHARED,
            None,
        )?;
    }
    for (i, l) in overlays.layers().enumerate() {
        if l.kind == Kind::Ext3 {
            let fuse2fs = overlays.tools.fuse2fs.as_deref().ok_or_else(|| {
                RootfsError::Image(ServeError::new(
                    ExitKind::Internal,
                    "image overlays planned without fuse2fs",
                ))
            })?;
            let dir = image_dir(i);
            sys.mkdir(&dir, 0o755)?;
            overlay::fuse::serve_image(fuse2fs, l, &dir).map_err(image_err)?;
        }
    }
    // What each read-only layer contributes: a directory's (on the host),
    // an image's `upper/` when it has one, else its root.
    let mut lowers: Vec<PathBuf> = overlays
        .layers()
        .enumerate()
        .filter(|(_, l)| l.readonly)
        .map(|(i, l)| match l.kind {
            Kind::Dir => on_host(&l.lower_dir),
            Kind::Ext3 => {
                let upper = image_dir(i).join("upper");
                if upper.is_dir() { upper } else { image_dir(i) }
            }
        })
        .collect();
    lowers.push(lower.to_path_buf());
    // A tmpfs of ours for what must not persist: the writable layer of
    // `--writable-tmpfs`, or only the mount points.
    let needs_tmpfs =
        !missing.is_empty() || (overlays.writable.is_none() && layer.writable_size.is_some());
    if needs_tmpfs {
        // overlayfs(5) with a tmpfs upper layer: writes (and mount points)
        // land in memory owned by this namespace; the image is never
        // modified. Unprivileged overlay mounts in a user namespace: Linux
        // 5.11+.
        let size = match (&overlays.writable, layer.writable_size) {
            (None, Some(size)) => size,
            _ => MOUNT_POINT_OVERLAY_SIZE,
        };
        sys.mkdir(overlay, 0o755)?;
        sys.mount(
            Path::new("rfake-overlay"),
            overlay,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(std::ffi::OsStr::new(&format!("mode=0755,size={size}"))),
        )?;
    }
    let tmp_upper = overlay.join("upper");
    let tmp_work = overlay.join("work");
    if needs_tmpfs {
        sys.mkdir(&tmp_upper, 0o755)?;
        sys.mkdir(&tmp_work, 0o755)?;
        make_mount_points(sys, &tmp_upper, &missing)?;
    }
    let upper = match &overlays.writable {
        Some(rw) if rw.kind == Kind::Ext3 => {
            // Apptainer's layout inside the image: upper/ and work/.
            let dir = image_dir(0);
            let upper = dir.join("upper");
            let work = dir.join("work");
            for (d, name, mode) in [(&upper, "upper/", 0o755), (&work, "work/", 0o700)] {
                match sys.mkdir(d, mode) {
                    Err(e) if e.errno != nix::errno::Errno::EEXIST => return Err(e.into()),
                    _ => {}
                }
                // The user is uid 0 in this namespace: a directory of
                // another id is not theirs to write (the kernel refuses
                // writes to an inode whose owner it cannot map).
                let uid = rustix::fs::stat(d.as_path())
                    .map(|st| st.st_uid)
                    .unwrap_or(0);
                if uid != 0 {
                    return Err(image_err(overlay::OverlayError::NotOurs {
                        path: rw.path.clone(),
                        dir: name,
                        uid,
                    }));
                }
            }
            if needs_tmpfs {
                lowers.insert(0, tmp_upper.clone());
            }
            Some((upper, work))
        }
        Some(rw) => {
            // As Apptainer lays a directory overlay out: DIR/upper, and
            // the kernel's scratch DIR/work (0700), made when missing. The
            // mount points stay in our tmpfs, as a lower layer just below.
            let dir = on_host(&rw.path);
            let upper = dir.join("upper");
            let work = dir.join("work");
            for (d, mode) in [(&upper, 0o755), (&work, 0o700)] {
                match sys.mkdir(d, mode) {
                    Err(e) if e.errno != nix::errno::Errno::EEXIST => return Err(e.into()),
                    _ => {}
                }
            }
            if needs_tmpfs {
                lowers.insert(0, tmp_upper.clone());
            }
            Some((upper, work))
        }
        None if needs_tmpfs => Some((tmp_upper.clone(), tmp_work.clone())),
        None => None,
    };
    if let (Some(rw), Some((upper, work))) = (overlays.writable_image(), &upper) {
        // The kernel's overlayfs refuses a FUSE upper layer in a user
        // namespace ("upper fs missing required features"): the same
        // layers, stacked by fuse-overlayfs.
        let tool = overlays.tools.fuse_overlayfs.as_deref().ok_or_else(|| {
            RootfsError::Image(ServeError::new(
                ExitKind::Internal,
                "a writable image overlay planned without fuse-overlayfs",
            ))
        })?;
        overlay::fuse::stack(tool, &lowers, upper, work, newroot, &rw.path).map_err(image_err)?;
    } else {
        mount_overlay(sys, layout, overlays, &lowers, &upper, newroot)?;
    }
    if overlays.has_images() {
        sys.mount(
            Path::new("none"),
            &layout.staging,
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        )?;
    }
    state.enter_root(newroot)?;
    state.overlay = upper.is_some();
    state.seal = layer.writable_size.is_none() && overlays.writable.is_none() && upper.is_some();
    let mut why = Vec::new();
    if let Some(rw) = &overlays.writable {
        why.push(format!("persistent overlay {}", rw.path.display()));
    } else if layer.writable_size.is_some() {
        why.push("writable overlay".to_string());
    }
    if !overlays.readonly.is_empty() {
        why.push(format!("{} read-only overlay(s)", overlays.readonly.len()));
    }
    if overlays.writable_image().is_some() {
        why.push("fuse2fs and fuse-overlayfs".to_string());
    } else if overlays.has_images() {
        why.push("fuse2fs".to_string());
    }
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|(p, _, _)| shown(p)).collect();
        why.push(format!(
            "overlay for missing mount points: {}",
            names.join(", ")
        ));
    }
    Ok(Some(why.join("; ")))
}

/// An overlay error as an image server's failure (its exit code kept).
fn image_err(e: overlay::OverlayError) -> RootfsError {
    RootfsError::Image(ServeError::new(e.exit_kind(), e))
}

/// The kernel's overlay of `lowers` (topmost first) under `upper`.
fn mount_overlay(
    sys: &dyn Sys,
    layout: &Layout,
    overlays: &crate::overlay::Overlays,
    lowers: &[PathBuf],
    upper: &Option<(PathBuf, PathBuf)>,
    newroot: &Path,
) -> Result<(), RootfsError> {
    let on_host = |p: &Path| layout.oldroot.join(p.strip_prefix("/").unwrap_or(p));
    let mut data = std::ffi::OsString::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(":");
        }
        data.push(l);
    }
    if let Some((upper, work)) = upper {
        data.push(",upperdir=");
        data.push(upper);
        data.push(",workdir=");
        data.push(work);
    }
    if !overlays.is_empty() {
        // The overlay's own marks (opaque directories, redirects) in
        // `user.overlay.*` xattrs: the only ones a user namespace may
        // write, and the same on every run, so an overlay written once
        // reads back the same (overlayfs(5), "userxattr").
        data.push(",userxattr");
    }
    // A lower-only overlay needs two lower layers: with one read-only
    // `--overlay` and nothing else there are (it and the image).
    sys.mount(
        Path::new("rfake-root"),
        newroot,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )
    .map_err(
        |e| match overlays.writable.as_ref().or(overlays.readonly.first()) {
            Some(l) if e.op == "mount" => RootfsError::Overlay {
                layer: l.path.clone(),
                errno: e.errno,
                fs: crate::overlay::fs_name(&on_host(&l.path)),
            },
            _ => e.into(),
        },
    )?;
    if let Some(rw) = &overlays.writable {
        // overlayfs falls back to a read-only mount, with only a kernel
        // log line, when it cannot use the work directory (a FUSE upper,
        // a file system without the features it needs): a writable
        // overlay that is not is refused, not left to fail on each write.
        let rdonly = rustix::fs::statvfs(newroot)
            .map(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
            .unwrap_or(false);
        if rdonly {
            let _ = sys.umount_detach(newroot);
            return Err(RootfsError::Overlay {
                layer: rw.path.clone(),
                errno: nix::errno::Errno::EROFS,
                fs: crate::overlay::fs_name(&on_host(&rw.path)),
            });
        }
    }
    Ok(())
}

/// Mount points are made in the tmpfs layer *before* the overlay exists:
/// through the overlay, creating them would need write permission on the
/// image's directories, which rfake may not have (an image directory owned
/// by an id outside the one-entry map). The layer is a new tmpfs of ours:
/// the walk meets no symlink there.
fn make_mount_points(sys: &dyn Sys, upper: &Path, missing: &[Missing]) -> Result<(), RootfsError> {
    let upper_fd = open_root(upper)?;
    for (path, dir, link) in missing {
        match link {
            Some(target) => {
                let (parent, name) = split_link(path, "overlay")?;
                let walk = resolve(upper_fd.as_fd(), parent, "overlay")?;
                let walk = create_missing(sys, walk, true, "overlay")?;
                let dir = walk.fd().expect("an existing walk has a descriptor");
                sys.symlink_at(target, dir, name, path)?;
            }
            None => {
                let walk = resolve(upper_fd.as_fd(), path, "overlay")?;
                create_missing(sys, walk, *dir, "overlay")?;
            }
        }
    }
    Ok(())
}

/// Create the missing destination of `walk` in the overlay (or in a
/// private tmpfs), as a directory or an empty file; never on the host or
/// in the image.
fn create_destination(
    sys: &dyn Sys,
    dst: &Path,
    walk: Walk,
    dir: bool,
    origin: &str,
    state: &State,
) -> Result<Walk, RootfsError> {
    if !state.overlay {
        return Err(RootfsError::MissingDestination {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
        });
    }
    // The deepest existing directory must be in the overlay itself or a
    // private tmpfs of ours: below another bind it would be the host's.
    let dev = dev_of(walk.deepest_dir(), &walk.existing_path())?;
    if Some(dev) != state.root_dev && !state.private.contains(&dev) {
        return Err(RootfsError::WouldCreateOnHost {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
            inside: walk.existing_path(),
        });
    }
    create_missing(sys, walk, dir, origin)
}

fn dev_of(fd: BorrowedFd<'_>, what: &Path) -> Result<u64, RootfsError> {
    rustix::fs::fstat(fd).map(|st| st.st_dev).map_err(|e| {
        RootfsError::Sys(SysError::new(
            "stat",
            what,
            nix::errno::Errno::from_raw(e.raw_os_error()),
        ))
    })
}

fn is_dir(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .unwrap_or(false)
}

/// What to do when a destination is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfMissing {
    /// Skip the step quietly.
    Skip,
    /// Create it in the overlay (or a private tmpfs).
    Create,
    /// Refuse.
    Fail,
}

/// Find or create the destination `dst` inside the container root (a
/// directory when `dir`); `Ok(None)` when a missing one is skipped. The
/// container root itself is never a destination.
fn destination(
    sys: &dyn Sys,
    dst: &Path,
    dir: bool,
    if_missing: IfMissing,
    origin: &str,
    state: &State,
) -> Result<Option<Walk>, RootfsError> {
    let walk = resolve(state.root()?, dst, origin)?;
    if walk.is_root() {
        return Err(RootfsError::Destination {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
            source: PathError::IsRoot {
                path: dst.to_path_buf(),
            },
        });
    }
    if walk.exists() {
        return Ok(Some(walk));
    }
    match if_missing {
        IfMissing::Skip => Ok(None),
        IfMissing::Create => create_destination(sys, dst, walk, dir, origin, state).map(Some),
        IfMissing::Fail => Err(RootfsError::MissingDestination {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
        }),
    }
}

pub(super) fn bind(
    sys: &dyn Sys,
    bind: &Bind,
    state: &mut State,
) -> Result<Option<String>, RootfsError> {
    let src = match state.host_walk(&bind.src) {
        Ok(walk) if walk.exists() => walk,
        Ok(_) if bind.optional => return Ok(Some("skipped: no such source on the host".into())),
        Ok(_) => {
            return Err(RootfsError::MissingSource {
                src: bind.src.clone(),
                origin: bind.origin.clone(),
            });
        }
        Err(_) if bind.optional => {
            return Ok(Some("skipped: the source cannot be resolved".into()));
        }
        Err(source) => {
            return Err(RootfsError::Source {
                src: bind.src.clone(),
                origin: bind.origin.clone(),
                source,
            });
        }
    };
    let src_fd = src.fd().expect("an existing walk has a descriptor");
    let src_is_dir = is_dir(src_fd);
    let want_dir = match bind.kind {
        BindKind::Dir => true,
        BindKind::File => false,
        BindKind::AsSource => src_is_dir,
    };
    let if_missing = if bind.optional {
        IfMissing::Skip
    } else if bind.create {
        IfMissing::Create
    } else {
        IfMissing::Fail
    };
    let Some(dst) = destination(sys, &bind.dst, want_dir, if_missing, &bind.origin, state)? else {
        return Ok(Some("skipped: the image has no such destination".into()));
    };
    let dst_fd = dst.fd().expect("an existing walk has a descriptor");
    if src_is_dir != want_dir || is_dir(dst_fd) != want_dir {
        if bind.optional {
            return Ok(Some("skipped: file/directory mismatch".into()));
        }
        return Err(RootfsError::KindMismatch {
            src: bind.src.clone(),
            dst: bind.dst.clone(),
            origin: bind.origin.clone(),
            what: if src_is_dir {
                "the source is a directory, the destination is not"
            } else {
                "the source is a file, the destination is a directory"
            },
        });
    }
    // Recursive, so submounts (/dev/shm, /dev/pts, /sys/fs/cgroup...) come
    // along; a non-recursive bind of a tree with locked submounts is refused.
    let tree = sys.clone_tree(src_fd, true, &bind.src)?;
    // Only add flags, recursively, before it is attached: flags inherited
    // from the host are locked and clearing one would fail
    // (mount_setattr(2), EPERM).
    sys.add_attrs(tree.as_fd(), bind.attrs(), true, &bind.dst)?;
    // Onto the descriptor the confined resolution ended on: the destination
    // is never looked up by name again.
    sys.attach(tree.as_fd(), dst_fd, &bind.dst)?;
    Ok(None)
}

pub(super) fn tmpfs(
    sys: &dyn Sys,
    tmpfs: &Tmpfs,
    state: &mut State,
) -> Result<Option<String>, RootfsError> {
    let Some(dst) = destination(
        sys,
        &tmpfs.dst,
        true,
        IfMissing::Create,
        &tmpfs.origin,
        state,
    )?
    else {
        unreachable!("a missing tmpfs destination is created, never skipped");
    };
    // Owned by root of the outer namespace: the user, also seen from an
    // inner namespace.
    let attrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: true,
    };
    let mount = sys.mount_detached(
        "tmpfs",
        &[
            FsParam::Value("source", "rfake-tmpfs".into()),
            FsParam::Value("mode", format!("{:o}", tmpfs.mode)),
        ],
        attrs,
    )?;
    sys.attach(
        mount.as_fd(),
        dst.fd().expect("an existing walk has a descriptor"),
        &tmpfs.dst,
    )?;
    state.private.push(dev_of(mount.as_fd(), &tmpfs.dst)?);
    Ok(None)
}

/// [`super::Step::Symlink`]: a link the overlay does not hold yet is made in
/// a private tmpfs of ours; one in the overlay was made with the mount
/// points; whatever else is there is left alone.
pub(super) fn symlink(
    sys: &dyn Sys,
    link: &super::Symlink,
    state: &mut State,
) -> Result<Option<String>, RootfsError> {
    let (parent, name) = split_link(&link.link, &link.origin)?;
    let Some(dir) = destination(sys, parent, true, IfMissing::Create, &link.origin, state)? else {
        unreachable!("a missing directory is created, never skipped");
    };
    let dir_fd = dir.fd().expect("an existing walk has a descriptor");
    match entry_at(dir_fd, name) {
        Some(Some(target)) if target == link.target => return Ok(None),
        Some(_) => return Ok(Some("skipped: the image has something there".into())),
        None => {}
    }
    let dev = dev_of(dir_fd, parent)?;
    if !state.private.contains(&dev) && Some(dev) != state.root_dev {
        return Err(RootfsError::WouldCreateOnHost {
            dst: link.link.clone(),
            origin: link.origin.clone(),
            inside: dir.existing_path(),
        });
    }
    sys.symlink_at(&link.target, dir_fd, name, &link.link)?;
    Ok(None)
}

/// Identity files are text of a few KiB; a bigger one is not read.
const IDENTITY_FILE_LIMIT: u64 = 16 << 20;

/// The image's own file at `path`, read through the confined resolution.
/// A FIFO there would block the launch, a huge file eat memory: such a
/// file is ignored with a warning, as a missing one is ignored quietly.
fn image_text(state: &State, path: &str) -> Option<String> {
    let root = state.root().ok()?;
    let read = paths::walk(root, Path::new(path))
        .ok()?
        .open_regular()?
        .and_then(|file| input::read_limited(file, IDENTITY_FILE_LIMIT));
    match read {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            log::warn!("the image's {path} ignored: {e}");
            None
        }
    }
}

pub(super) fn identity_files(
    sys: &dyn Sys,
    layout: &Layout,
    spec: &IdentitySpec,
    state: &State,
) -> Result<Option<String>, RootfsError> {
    let image_passwd = image_text(state, "/etc/passwd");
    let image_group = image_text(state, "/etc/group");
    let mut user = spec.user.clone();
    let exists = |p: &Path| {
        state
            .root()
            .ok()
            .and_then(|root| paths::walk(root, p).ok())
            .is_some_and(|w| w.exists())
    };
    if !exists(&user.shell) {
        user.shell = image_passwd
            .as_deref()
            .and_then(|p| passwd::shell_of(p, &user.name))
            .filter(|s| exists(s))
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    }
    let (passwd_text, group_text) = passwd::generate(
        image_passwd.as_deref(),
        image_group.as_deref(),
        &user,
        &spec.group_name,
    );
    let files = layout.files.as_path();
    sys.mkdir(files, 0o755)?;
    for (name, text) in [("passwd", &passwd_text), ("group", &group_text)] {
        let staged = files.join(name);
        sys.create_file(&staged, 0o644, text)?;
        let dst_name = PathBuf::from("/etc").join(name);
        let Some(dst) = destination(
            sys,
            &dst_name,
            false,
            IfMissing::Create,
            "identity files",
            state,
        )?
        else {
            unreachable!("a missing identity file is created, never skipped");
        };
        let staged_fd = open_root_any(&staged)?;
        let file = sys.clone_tree(staged_fd.as_fd(), false, &staged)?;
        let attrs = MountAttrs {
            rdonly: false,
            nosuid: true,
            nodev: true,
        };
        sys.add_attrs(file.as_fd(), attrs, false, &dst_name)?;
        sys.attach(
            file.as_fd(),
            dst.fd().expect("an existing walk has a descriptor"),
            &dst_name,
        )?;
    }
    Ok(None)
}
