//! The container's mount tree: an ordered list of steps and the one loop
//! that carries them out.
//!
//! Order, and why (see `docs/launch.md`):
//! 1. `MakePrivate`: nothing rfake mounts may propagate back to the host.
//! 2. `ServeImage`: the single-file image becomes a detached FUSE mount and
//!    its server starts now, while the host root is still `/` and nothing is
//!    hidden; the pivots below carry the server's root into the container.
//! 3. `Staging`: a tmpfs at `/tmp` of *this* namespace holds `newroot`,
//!    `lower` (where the image goes) and `oldroot` (where the host goes).
//! 4. `PivotToStaging`: the host is now only at `/oldroot` (its `/tmp` no
//!    longer hidden by the staging tmpfs); every bind source is taken from
//!    there and every destination is resolved inside `/newroot`.
//! 5. `AttachImage` / `BindRootDir`: the image at `/lower`.
//! 6. `Root`: `/lower` becomes `/newroot`, moved as it is, or under an
//!    overlay with a tmpfs upper layer when a bind destination is missing
//!    from the read-only image or `--writable-tmpfs` asks for it.
//! 7. `Bind` / `Tmpfs` / `IdentityFiles`: recursive binds, then flags only
//!    ever *added*; missing destinations created in the overlay only.
//! 8. `SealRoot`: an overlay made only for mount points is made read-only.
//! 9. `EnterNewRoot`: `pivot_root` (not `chroot`) into the image, then the
//!    old root is detached, so no host path remains reachable except binds.

mod mounts;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::container::passwd::UserEntry;
use crate::container::paths::{self, PathError, Walk};
use crate::container::sys::{MountAttrs, Sys, SysError};
use crate::exit::ExitKind;
use crate::overlay::Overlays;
use crate::text::shown;

/// Where the staging tmpfs is mounted in the new mount namespace.
pub const STAGING: &str = "/tmp";
/// The image root after the first pivot.
pub const NEWROOT: &str = "/newroot";
/// Where the image itself is mounted (the overlay's lower layer).
pub const LOWER: &str = "/lower";
/// The tmpfs holding the overlay's upper and work directories.
pub const OVERLAY: &str = "/overlay";
/// Generated files (identity files) in the staging tmpfs.
pub const FILES: &str = "/files";
/// The host root after the first pivot.
pub const OLDROOT: &str = "/oldroot";
/// Size of the overlay tmpfs when it only holds mount points.
pub const MOUNT_POINT_OVERLAY_SIZE: u64 = 1 << 20;

/// Where the steps work: the staging tmpfs and, after the first pivot, the
/// places inside it. [`Layout::container`] is what a launch uses; tests
/// point every place at a temporary directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the staging tmpfs is mounted (before the first pivot).
    pub staging: PathBuf,
    /// The container root being built.
    pub newroot: PathBuf,
    /// Where the image itself is attached (the overlay's lower layer).
    pub lower: PathBuf,
    /// The tmpfs holding the overlay's upper and work directories.
    pub overlay: PathBuf,
    /// Generated files (identity files).
    pub files: PathBuf,
    /// The host root after the first pivot.
    pub oldroot: PathBuf,
}

impl Layout {
    /// The places a launch uses, in its own mount namespace.
    pub fn container() -> Layout {
        Layout {
            staging: STAGING.into(),
            newroot: NEWROOT.into(),
            lower: LOWER.into(),
            overlay: OVERLAY.into(),
            files: FILES.into(),
            oldroot: OLDROOT.into(),
        }
    }

    /// The same places before [`Step::PivotToStaging`]: inside the staging
    /// tmpfs where it is mounted, the host at `/`. A root with an image
    /// overlay is built there (its FUSE servers start from the host).
    fn before_pivot(&self) -> Layout {
        let inside = |p: &Path| self.staging.join(p.file_name().unwrap_or(p.as_os_str()));
        Layout {
            staging: self.staging.clone(),
            newroot: inside(&self.newroot),
            lower: inside(&self.lower),
            overlay: inside(&self.overlay),
            files: inside(&self.files),
            oldroot: PathBuf::from("/"),
        }
    }

    /// Every place below `base` (for tests: nothing outside it is touched
    /// by the file operations).
    #[cfg(test)]
    pub fn under(base: &Path) -> Layout {
        Layout {
            staging: base.join("staging"),
            newroot: base.join("newroot"),
            lower: base.join("lower"),
            overlay: base.join("overlay"),
            files: base.join("files"),
            oldroot: base.join("oldroot"),
        }
    }
}

/// What a bind destination must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    Dir,
    File,
    /// Whatever the source is.
    AsSource,
}

/// One bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path.
    pub src: PathBuf,
    /// Container path.
    pub dst: PathBuf,
    pub kind: BindKind,
    pub readonly: bool,
    /// Device nodes stay usable (only `/dev` itself).
    pub allow_devices: bool,
    /// Skip quietly when the source or the destination is missing.
    pub optional: bool,
    /// Create the destination (in the overlay, never in the image or on
    /// the host) when the image lacks it.
    pub create: bool,
    /// Who asked for it, for messages ("default", "--bind", config line).
    pub origin: String,
}

impl Bind {
    /// The attributes added after binding: always `nosuid`; `nodev` unless
    /// device nodes are the point; `ro` when asked.
    pub fn attrs(&self) -> MountAttrs {
        MountAttrs {
            rdonly: self.readonly,
            nosuid: true,
            nodev: !self.allow_devices,
        }
    }
}

/// A private tmpfs inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub dst: PathBuf,
    /// Octal mode of its root (`1777` for /tmp, `700` for a home).
    pub mode: u32,
    pub origin: String,
}

/// A symlink made inside the container: in the overlay (when the image
/// lacks `link`) or in a private tmpfs; never in the image or on the host.
/// When something is at `link` already, it is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symlink {
    pub link: PathBuf,
    pub target: PathBuf,
    pub origin: String,
}

/// The container user's passwd and group entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySpec {
    /// `shell` is a preference: used when the image has it.
    pub user: UserEntry,
    pub group_name: String,
}

/// How the image becomes the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootLayer {
    /// `--writable-tmpfs`: a writable overlay of this many bytes.
    pub writable_size: Option<u64>,
    /// `--overlay`: persistent layers over the image.
    pub overlays: Overlays,
}

/// One step of building the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    MakePrivate,
    Staging,
    PivotToStaging,
    /// Serve the single-file image as a detached mount.
    ServeImage,
    /// Attach the served image at [`LOWER`].
    AttachImage,
    /// Bind an unpacked directory image (host path) read-only at [`LOWER`].
    BindRootDir(PathBuf),
    Root(RootLayer),
    Bind(Bind),
    Tmpfs(Tmpfs),
    Symlink(Symlink),
    IdentityFiles(IdentitySpec),
    SealRoot,
    EnterNewRoot,
}

/// A destination a step may need created: its container path and
/// whether it is a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub dst: &'a Path,
    pub dir: bool,
    /// A symlink to this target, not a file or directory.
    pub link: Option<&'a Path>,
    pub origin: &'a str,
}

impl Step {
    /// The destinations this step may need created when the image lacks
    /// them. Called after the first pivot: a bind taking its kind from its
    /// source asks `source_is_dir` (`None`: missing, reported by the bind
    /// itself).
    fn wanted(&self, source_is_dir: &mut dyn FnMut(&Path) -> Option<bool>) -> Vec<Wanted<'_>> {
        match self {
            Step::Bind(b) if b.create => {
                let dir = match b.kind {
                    BindKind::Dir => true,
                    BindKind::File => false,
                    BindKind::AsSource => match source_is_dir(&b.src) {
                        Some(dir) => dir,
                        None => return vec![],
                    },
                };
                vec![Wanted {
                    dst: &b.dst,
                    dir,
                    link: None,
                    origin: &b.origin,
                }]
            }
            Step::Tmpfs(t) => vec![Wanted {
                dst: &t.dst,
                dir: true,
                link: None,
                origin: &t.origin,
            }],
            Step::Symlink(l) => vec![Wanted {
                dst: &l.link,
                dir: false,
                link: Some(&l.target),
                origin: &l.origin,
            }],
            Step::IdentityFiles(_) => ["/etc/passwd", "/etc/group"]
                .into_iter()
                .map(|f| Wanted {
                    dst: Path::new(f),
                    dir: false,
                    link: None,
                    origin: "identity files",
                })
                .collect(),
            _ => vec![],
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::MakePrivate => write!(f, "make / rprivate in the new mount namespace"),
            Step::Staging => write!(f, "mount staging tmpfs at {STAGING}"),
            Step::PivotToStaging => write!(f, "pivot_root to staging, host at {OLDROOT}"),
            Step::ServeImage => write!(f, "serve the image (detached FUSE mount)"),
            Step::AttachImage => write!(f, "attach the image at {LOWER}"),
            Step::BindRootDir(dir) => {
                write!(f, "bind directory {} at {LOWER} (ro)", dir.display())
            }
            Step::Root(RootLayer {
                overlays,
                writable_size,
            }) if !overlays.is_empty() => {
                write!(f, "root: overlay {overlays} over the image")?;
                match (&overlays.writable, writable_size) {
                    (None, Some(size)) => write!(f, ", writable: {size} bytes of tmpfs"),
                    (None, None) => write!(f, ", read-only"),
                    (Some(_), _) => Ok(()),
                }
            }
            Step::Root(RootLayer {
                writable_size: Some(size),
                ..
            }) => write!(f, "root: writable overlay, {size} bytes of tmpfs"),
            Step::Root(RootLayer {
                writable_size: None,
                ..
            }) => write!(
                f,
                "root: the image, read-only (overlay if a mount point is missing)"
            ),
            Step::Bind(b) => write!(
                f,
                "bind {} -> {} ({}{}) [{}]",
                b.src.display(),
                b.dst.display(),
                b.attrs(),
                if b.optional { ", optional" } else { "" },
                b.origin
            ),
            Step::Tmpfs(t) => write!(
                f,
                "tmpfs {} (mode {:o}) [{}]",
                t.dst.display(),
                t.mode,
                t.origin
            ),
            Step::Symlink(l) => write!(
                f,
                "symlink {} -> {} [{}]",
                l.link.display(),
                l.target.display(),
                l.origin
            ),
            Step::IdentityFiles(spec) => write!(
                f,
                "identity files: /etc/passwd with {} (uid {}, home {}), /etc/group with {}",
                spec.user.name,
                spec.user.uid,
                spec.user.home.display(),
                spec.group_name
            ),
            Step::SealRoot => write!(f, "make the root read-only again"),
            Step::EnterNewRoot => write!(f, "pivot_root into the image, detach the host"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("bind destination {} (from {origin}): {source}", shown(dst))]
    Destination {
        dst: PathBuf,
        origin: String,
        source: PathError,
    },
    #[error(
        "bind source {} (from {origin}) does not exist on the host",
        shown(src)
    )]
    MissingSource { src: PathBuf, origin: String },
    #[error("bind source {} (from {origin}): {source}", shown(src))]
    Source {
        src: PathBuf,
        origin: String,
        source: PathError,
    },
    #[error(
        "bind destination {} (from {origin}) does not exist in the image",
        shown(dst)
    )]
    MissingDestination { dst: PathBuf, origin: String },
    #[error(
        "bind destination {} (from {origin}) is missing inside another bind ({}); rfake does not create it on the host",
        shown(dst),
        shown(inside)
    )]
    WouldCreateOnHost {
        dst: PathBuf,
        origin: String,
        inside: PathBuf,
    },
    #[error("bind {} -> {} (from {origin}): {what}", shown(src), shown(dst))]
    KindMismatch {
        src: PathBuf,
        dst: PathBuf,
        origin: String,
        what: &'static str,
    },
    #[error(transparent)]
    Image(ServeError),
    /// The kernel refused the overlay of `--overlay` layers.
    #[error("--overlay {}: {}", shown(layer), overlay_advice(*errno, fs))]
    Overlay {
        /// The writable layer, else the topmost read-only one.
        layer: PathBuf,
        errno: nix::errno::Errno,
        /// The name of the file system it is on.
        fs: String,
    },
}

/// What an overlay mount's errno means for the user.
fn overlay_advice(errno: nix::errno::Errno, fs: &str) -> String {
    use nix::errno::Errno;
    match errno {
        Errno::EBUSY => format!(
            "in use as the writable overlay of another container ({}); \
             one container at a time may write to it (add :ro for the others)",
            errno.desc()
        ),
        Errno::EROFS => format!(
            "the kernel could only mount it read-only (it could not use its work directory): \
             it is on {fs}, and overlayfs in a user namespace needs an upper file system with \
             user xattrs, d_type and RENAME_WHITEOUT (a local ext4, xfs or btrfs; tmpfs from \
             Linux 6.6; not NFS, Lustre or FUSE): use a directory on a local disk, or add :ro"
        ),
        Errno::EINVAL | Errno::EOPNOTSUPP => format!(
            "the kernel refused it as an overlay layer ({}: {errno:?}): it is on {fs}, and \
             overlayfs in a user namespace needs an upper file system with user xattrs, \
             d_type and RENAME_WHITEOUT (a local ext4, xfs or btrfs; tmpfs from Linux 6.6; \
             not NFS, Lustre or FUSE): use a directory on a local disk",
            errno.desc()
        ),
        Errno::EPERM => format!(
            "the kernel does not allow overlay mounts in a user namespace here ({}: EPERM; \
             Linux 5.11 or later is needed)",
            errno.desc()
        ),
        _ => format!(
            "mounting the overlay: {} ({errno:?}); it is on {fs}",
            errno.desc()
        ),
    }
}

/// An image server's failure, with the exit code it means (its own error
/// type stays in the image server).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct ServeError {
    pub exit: ExitKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl ServeError {
    pub fn new(
        exit: ExitKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ServeError {
            exit,
            source: source.into(),
        }
    }
}

impl From<SysError> for ServeError {
    fn from(e: SysError) -> Self {
        ServeError::new(ExitKind::OsError, e)
    }
}

/// Serves a single-file image; the image server implements it.
pub trait ImageMounter {
    /// [`Step::ServeImage`]: make the image's filesystem, not yet attached.
    fn prepare(&mut self, sys: &dyn Sys) -> Result<(), ServeError>;
    /// [`Step::AttachImage`]: attach it at `target`, ready to use.
    fn attach(&mut self, sys: &dyn Sys, target: &Path) -> Result<(), ServeError>;
}

/// What earlier steps decided, for later ones.
#[derive(Debug, Default)]
struct State {
    /// The container root, opened once it is complete ([`Step::Root`]):
    /// every destination is resolved below this descriptor, so nothing
    /// mounted over the root's path later changes what it means.
    root: Option<OwnedFd>,
    /// The device of that root (the overlay when there is one).
    root_dev: Option<u64>,
    /// The host root (the old root after the first pivot), opened when
    /// first needed.
    host: Option<OwnedFd>,
    host_path: PathBuf,
    /// The root is an overlay (missing destinations may be created).
    overlay: bool,
    /// The overlay exists only for mount points: seal it afterwards.
    seal: bool,
    /// [`Step::PivotToStaging`] is done: the host is at the old root.
    pivoted: bool,
    /// Devices of the private tmpfs mounts made so far: destinations may be
    /// created inside them too.
    private: Vec<u64>,
}

impl State {
    /// Open the completed container root at `path`.
    fn enter_root(&mut self, path: &Path) -> Result<(), RootfsError> {
        let fd = open_root(path)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| {
            SysError::new("stat", path, nix::errno::Errno::from_raw(e.raw_os_error()))
        })?;
        self.root_dev = Some(st.st_dev);
        self.root = Some(fd);
        Ok(())
    }

    fn root(&self) -> Result<BorrowedFd<'_>, RootfsError> {
        self.root.as_ref().map(|fd| fd.as_fd()).ok_or_else(|| {
            // A step that needs the root before `Root` made it: a planning bug.
            RootfsError::Sys(SysError::about(
                "resolve",
                "the container root, not made yet",
                nix::errno::Errno::ENOENT,
            ))
        })
    }

    /// Resolve a host path under the old root, on components: the host's
    /// own absolute symlinks (`/etc/resolv.conf -> /run/...`) point into
    /// the host, not the staging root.
    fn host_walk(&mut self, path: &Path) -> Result<Walk, PathError> {
        if self.host.is_none() {
            // Before the pivot the host is `/` (the descriptor stays the
            // host's root after it).
            let root = if self.pivoted {
                self.host_path.as_path()
            } else {
                Path::new("/")
            };
            self.host = Some(paths::open_root(root)?);
        }
        let host = self.host.as_ref().expect("opened above").as_fd();
        paths::walk(host, path)
    }
}

/// Carry out `steps` in order, in the places of `layout`. `on_step` is told
/// each step and its duration.
pub fn execute(
    sys: &dyn Sys,
    layout: &Layout,
    steps: &[Step],
    mounter: &mut dyn ImageMounter,
    on_step: &mut dyn FnMut(&Step, std::time::Duration, Option<&str>),
) -> Result<(), RootfsError> {
    let mut state = State {
        host_path: layout.oldroot.clone(),
        // Steps given without the pivot (tests) run after it.
        pivoted: !steps.contains(&Step::PivotToStaging),
        ..State::default()
    };
    for step in steps {
        let start = std::time::Instant::now();
        let note = run_step(sys, layout, step, mounter, &mut state, steps)?;
        on_step(step, start.elapsed(), note.as_deref());
    }
    Ok(())
}

fn run_step(
    sys: &dyn Sys,
    layout: &Layout,
    step: &Step,
    mounter: &mut dyn ImageMounter,
    state: &mut State,
    all_steps: &[Step],
) -> Result<Option<String>, RootfsError> {
    let newroot = layout.newroot.as_path();
    let staging = layout.staging.as_path();
    // The image and the root are attached and built before the pivot when
    // the root has an image overlay (then in the staging tmpfs where it is).
    let before_pivot;
    let here = if state.pivoted {
        layout
    } else {
        before_pivot = layout.before_pivot();
        &before_pivot
    };
    let lower = here.lower.as_path();
    match step {
        Step::MakePrivate => {
            // mount_namespaces(7): a new mount namespace starts as a copy of the
            // parent's, with shared peer groups; make every mount private so no
            // mount or unmount of ours reaches the host.
            sys.mount(
                Path::new("none"),
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )?;
        }
        Step::Staging => {
            sys.mount(
                Path::new("rfake-staging"),
                staging,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(std::ffi::OsStr::new("mode=0755,size=16m")),
            )?;
            for place in [newroot, layout.lower.as_path(), layout.oldroot.as_path()] {
                let name = place.file_name().unwrap_or(place.as_os_str());
                sys.mkdir(&staging.join(name), 0o755)?;
            }
        }
        Step::PivotToStaging => {
            let old = layout.oldroot.file_name().unwrap_or_default();
            sys.pivot_root(staging, &staging.join(old))?;
            sys.chdir(Path::new("/"))?;
            state.pivoted = true;
        }
        Step::ServeImage => mounter.prepare(sys).map_err(RootfsError::Image)?,
        Step::AttachImage => mounter.attach(sys, lower).map_err(RootfsError::Image)?,
        Step::BindRootDir(dir) => {
            let src = state.host_walk(dir).map_err(|source| RootfsError::Source {
                src: dir.clone(),
                origin: "the image directory".into(),
                source,
            })?;
            let Some(src_fd) = src.fd() else {
                return Err(RootfsError::MissingSource {
                    src: dir.clone(),
                    origin: "the image directory".into(),
                });
            };
            let tree = sys.clone_tree(src_fd, true, dir)?;
            let attrs = MountAttrs {
                rdonly: true,
                nosuid: true,
                nodev: true,
            };
            sys.add_attrs(tree.as_fd(), attrs, true, dir)?;
            let target = open_root(lower)?;
            sys.attach(tree.as_fd(), target.as_fd(), lower)?;
        }
        Step::Root(layer) => {
            let mut source_is_dir = |src: &Path| {
                let walk = state.host_walk(src).ok()?;
                let fd = walk.fd()?;
                let st = rustix::fs::fstat(fd).ok()?;
                Some(
                    rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::Directory,
                )
            };
            // What goes inside a private tmpfs (a private /dev) is made
            // there, not in the image's directory the tmpfs hides.
            let private: Vec<&Path> = all_steps
                .iter()
                .filter_map(|s| match s {
                    Step::Tmpfs(t) => Some(t.dst.as_path()),
                    _ => None,
                })
                .collect();
            let wanted: Vec<Wanted> = all_steps
                .iter()
                .flat_map(|s| s.wanted(&mut source_is_dir))
                .filter(|w| !private.iter().any(|p| w.dst != *p && w.dst.starts_with(p)))
                .collect();
            return mounts::root(sys, here, layer, state, &wanted);
        }
        Step::Bind(bind) => return mounts::bind(sys, bind, state),
        Step::Tmpfs(tmpfs) => return mounts::tmpfs(sys, tmpfs, state),
        Step::Symlink(link) => return mounts::symlink(sys, link, state),
        Step::IdentityFiles(spec) => return mounts::identity_files(sys, layout, spec, state),
        Step::SealRoot => {
            if state.seal {
                let ro = MountAttrs {
                    rdonly: true,
                    ..MountAttrs::default()
                };
                sys.mount_add_attrs(newroot, ro, false)?;
            } else {
                return Ok(Some("nothing to do".into()));
            }
        }
        Step::EnterNewRoot => {
            // pivot_root(2), "pivot_root(".", ".")": the old root ends up
            // stacked on the new one and is then lazily detached, so the image
            // needs no spare directory (it is read-only anyway).
            sys.chdir(newroot)?;
            sys.pivot_root(Path::new("."), Path::new("."))?;
            sys.umount_detach(Path::new("."))?;
            sys.chdir(Path::new("/"))?;
        }
    }
    Ok(None)
}

/// Open a directory of ours (the staging places) as a resolution root.
fn open_root(path: &Path) -> Result<OwnedFd, RootfsError> {
    paths::open_root(path).map_err(|e| match e {
        PathError::Io { path, errno } => RootfsError::Sys(SysError::new("open", path, errno)),
        other => RootfsError::Destination {
            dst: path.to_path_buf(),
            origin: "rfake".into(),
            source: other,
        },
    })
}

/// Open a file of ours (`O_PATH`), to bind it.
fn open_root_any(path: &Path) -> Result<OwnedFd, RootfsError> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        RootfsError::Sys(SysError::new(
            "open",
            path,
            nix::errno::Errno::from_raw(e.raw_os_error()),
        ))
    })
}

/// Resolve a destination below `root` (confined: [`paths::walk`]), with the
/// step's origin in errors.
fn resolve(root: BorrowedFd<'_>, dst: &Path, origin: &str) -> Result<Walk, RootfsError> {
    paths::walk(root, dst).map_err(|source| RootfsError::Destination {
        dst: dst.to_path_buf(),
        origin: origin.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
