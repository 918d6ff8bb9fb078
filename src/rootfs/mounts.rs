//! The root layer, binds, private tmpfs mounts and identity files.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{
    Bind, BindKind, FILES, IdentitySpec, LOWER, MOUNT_POINT_OVERLAY_SIZE, NEWROOT, OVERLAY,
    RootLayer, RootfsError, State, Tmpfs, Wanted, resolve,
};
use crate::passwd;
use crate::paths::{self, Resolved};
use crate::sys::{MountAttrs, Sys};

/// Which of `wanted` the image at `root` lacks: where each would be (no
/// symlink in it) and whether it is a directory. Escapes are refused here,
/// before anything is mounted over the image.
fn missing_destinations(
    root: &Path,
    wanted: &[Wanted],
) -> Result<Vec<(PathBuf, bool)>, RootfsError> {
    let mut missing = Vec::new();
    for w in wanted {
        if let Resolved::Missing(p) = resolve(root, w.dst, w.origin)? {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            missing.push((rel, w.dir));
        }
    }
    Ok(missing)
}

/// Create `rel` (relative to `base`): directories, and a file at the end
/// unless `dir`; components that exist are kept.
fn create_path(sys: &dyn Sys, base: &Path, rel: &Path, dir: bool) -> Result<(), RootfsError> {
    let parts: Vec<_> = rel.components().collect();
    let mut path = base.to_path_buf();
    for (i, c) in parts.iter().enumerate() {
        path.push(c);
        if path.exists() {
            continue;
        }
        if i + 1 == parts.len() && !dir {
            sys.create_file(&path, 0o644, "")?;
        } else {
            sys.mkdir(&path, 0o755)?;
        }
    }
    Ok(())
}

/// `/lower` becomes `/newroot`: moved as it is, or under an overlay.
pub(super) fn root(
    sys: &dyn Sys,
    layer: &RootLayer,
    state: &mut State,
    wanted: &[Wanted],
) -> Result<Option<String>, RootfsError> {
    let (lower, newroot) = (Path::new(LOWER), Path::new(NEWROOT));
    let missing = missing_destinations(lower, wanted)?;
    if layer.writable_size.is_none() && missing.is_empty() {
        sys.mount(
            &lower.to_string_lossy(),
            newroot,
            None,
            MsFlags::MS_MOVE,
            None,
        )?;
        return Ok(Some("the image as it is".into()));
    }
    // overlayfs(5) with a tmpfs upper layer: writes (and mount points) land
    // in memory owned by this namespace; the image is never modified.
    // Unprivileged overlay mounts in a user namespace: Linux 5.11+.
    let size = layer.writable_size.unwrap_or(MOUNT_POINT_OVERLAY_SIZE);
    let overlay = Path::new(OVERLAY);
    sys.mkdir(overlay, 0o755)?;
    sys.mount(
        "rfake-overlay",
        overlay,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("mode=0755,size={size}")),
    )?;
    let upper = overlay.join("upper");
    sys.mkdir(&upper, 0o755)?;
    sys.mkdir(&overlay.join("work"), 0o755)?;
    // Mount points are made in the upper layer *before* the overlay exists:
    // through the overlay, creating them would need write permission on the
    // image's directories, which rfake may not have (an image directory
    // owned by an id outside the one-entry map).
    for (rel, dir) in &missing {
        create_path(sys, &upper, rel, *dir)?;
    }
    sys.mount(
        "rfake-root",
        newroot,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!(
            "lowerdir={LOWER},upperdir={OVERLAY}/upper,workdir={OVERLAY}/work"
        )),
    )?;
    state.overlay = true;
    state.seal = layer.writable_size.is_none();
    let why = if layer.writable_size.is_some() {
        "writable overlay".to_string()
    } else {
        let names: Vec<String> = missing
            .iter()
            .map(|(p, _)| format!("/{}", p.display()))
            .collect();
        format!("overlay for missing mount points: {}", names.join(", "))
    };
    Ok(Some(why))
}

/// Create the missing destination `dst` in the overlay, as a directory or
/// an empty file; never on the host or in the image.
fn create_destination(
    sys: &dyn Sys,
    dst: &Path,
    dir: bool,
    origin: &str,
    state: &State,
) -> Result<PathBuf, RootfsError> {
    let newroot = Path::new(NEWROOT);
    let Resolved::Missing(target) = resolve(newroot, dst, origin)? else {
        unreachable!("create_destination is called for missing paths only");
    };
    if !state.overlay {
        return Err(RootfsError::MissingDestination {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
        });
    }
    // The deepest existing ancestor must be in the overlay itself: below
    // another bind it would be the host's directory.
    let root_dev = dev_of(newroot)?;
    let mut existing = target.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(newroot);
    }
    let in_private_tmpfs = state.private.iter().any(|m| existing.starts_with(m));
    if dev_of(existing)? != root_dev && !in_private_tmpfs {
        return Err(RootfsError::WouldCreateOnHost {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
            inside: existing
                .strip_prefix(newroot)
                .map(|p| Path::new("/").join(p))
                .unwrap_or_else(|_| existing.to_path_buf()),
        });
    }
    let rel = target.strip_prefix(existing).unwrap_or(Path::new(""));
    create_path(sys, existing, rel, dir)?;
    Ok(target)
}

fn dev_of(path: &Path) -> Result<u64, RootfsError> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| RootfsError::Sys(crate::sys::SysError::from_io("stat", path, &e)))
}

/// Find or create the destination; `Ok(None)` when an optional one is skipped.
fn destination(
    sys: &dyn Sys,
    dst: &Path,
    dir: bool,
    optional: bool,
    create: bool,
    origin: &str,
    state: &State,
) -> Result<Option<PathBuf>, RootfsError> {
    match resolve(Path::new(NEWROOT), dst, origin)? {
        Resolved::Exists(p) => Ok(Some(p)),
        Resolved::Missing(_) if optional => Ok(None),
        Resolved::Missing(_) if create => {
            create_destination(sys, dst, dir, origin, state).map(Some)
        }
        Resolved::Missing(_) => Err(RootfsError::MissingDestination {
            dst: dst.to_path_buf(),
            origin: origin.to_string(),
        }),
    }
}

pub(super) fn bind(
    sys: &dyn Sys,
    bind: &Bind,
    state: &State,
) -> Result<Option<String>, RootfsError> {
    let src = match super::host_path(&bind.src) {
        Some(src) => src,
        None if bind.optional => return Ok(Some("skipped: no such source on the host".into())),
        None => {
            return Err(RootfsError::MissingSource {
                src: bind.src.clone(),
                origin: bind.origin.clone(),
            });
        }
    };
    let src_is_dir = src.is_dir();
    let want_dir = match bind.kind {
        BindKind::Dir => true,
        BindKind::File => false,
        BindKind::AsSource => src_is_dir,
    };
    let Some(dst) = destination(
        sys,
        &bind.dst,
        want_dir,
        bind.optional,
        bind.create,
        &bind.origin,
        state,
    )?
    else {
        return Ok(Some("skipped: the image has no such destination".into()));
    };
    let dst_is_dir = std::fs::metadata(&dst).map(|m| m.is_dir()).unwrap_or(false);
    if src_is_dir != want_dir || dst_is_dir != want_dir {
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
    sys.mount(
        &src.to_string_lossy(),
        &dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // Only add flags, recursively: flags inherited from the host are locked
    // and clearing one would fail (mount_setattr(2), EPERM).
    sys.mount_add_attrs(&dst, bind.attrs(), true)?;
    Ok(None)
}

pub(super) fn tmpfs(
    sys: &dyn Sys,
    tmpfs: &Tmpfs,
    state: &mut State,
) -> Result<Option<String>, RootfsError> {
    let Some(dst) = destination(sys, &tmpfs.dst, true, false, true, &tmpfs.origin, state)? else {
        unreachable!("a tmpfs destination is never optional");
    };
    // Owned by root of the outer namespace: the user, also seen from an
    // inner namespace.
    let data = format!("mode={:o}", tmpfs.mode);
    sys.mount(
        "rfake-tmpfs",
        &dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )?;
    state.private.push(dst);
    Ok(None)
}

/// The largest `/etc/passwd` or `/etc/group` read from an image.
const IDENTITY_FILE_LIMIT: u64 = 16 << 20;

pub(super) fn identity_files(
    sys: &dyn Sys,
    spec: &IdentitySpec,
    state: &State,
) -> Result<Option<String>, RootfsError> {
    let newroot = Path::new(NEWROOT);
    let read = |name: &str| -> Option<String> {
        match resolve(newroot, Path::new(name), "identity files") {
            // A FIFO there would block the launch, a huge file eat memory:
            // such a file is ignored, as a missing one is (crate::input).
            Ok(Resolved::Exists(p)) => crate::input::read_text(&p, IDENTITY_FILE_LIMIT)
                .map_err(|e| log::warn!("the image's {name} ignored: {e}"))
                .ok(),
            _ => None,
        }
    };
    let image_passwd = read("/etc/passwd");
    let image_group = read("/etc/group");
    let mut user = spec.user.clone();
    let exists = |p: &Path| matches!(paths::resolve_in_root(newroot, p), Ok(Resolved::Exists(_)));
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
    let files = Path::new(FILES);
    sys.mkdir(files, 0o755)?;
    for (name, text) in [("passwd", &passwd_text), ("group", &group_text)] {
        let staged = files.join(name);
        sys.create_file(&staged, 0o644, text)?;
        let dst_name = PathBuf::from("/etc").join(name);
        let Some(dst) = destination(sys, &dst_name, false, false, true, "identity files", state)?
        else {
            unreachable!("identity files are never optional");
        };
        sys.mount(
            &staged.to_string_lossy(),
            &dst,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
        let attrs = MountAttrs {
            rdonly: false,
            nosuid: true,
            nodev: true,
        };
        sys.mount_add_attrs(&dst, attrs, false)?;
    }
    Ok(None)
}
