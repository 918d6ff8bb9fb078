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
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::passwd::UserEntry;
use crate::paths::{self, PathError, Resolved};
use crate::sys::{MountAttrs, Sys, SysError};

/// Where the staging tmpfs is mounted in the new mount namespace.
pub const STAGING: &str = "/tmp";
/// The image root, as created in the staging tmpfs, and after the first pivot.
pub const NEWROOT_IN_STAGING: &str = "/tmp/newroot";
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

/// The container user's passwd and group entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySpec {
    /// `shell` is a preference: used when the image has it.
    pub user: UserEntry,
    pub group_name: String,
}

/// How the image becomes the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootLayer {
    /// `--writable-tmpfs`: a writable overlay of this many bytes.
    pub writable_size: Option<u64>,
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
    pub origin: &'a str,
}

impl Step {
    /// The destinations this step may need created when the image lacks
    /// them. Called after the first pivot: a bind taking its kind from its
    /// source looks at the source under [`OLDROOT`].
    fn wanted(&self) -> Vec<Wanted<'_>> {
        match self {
            Step::Bind(b) if b.create => {
                let dir = match b.kind {
                    BindKind::Dir => true,
                    BindKind::File => false,
                    BindKind::AsSource => match host_path(&b.src) {
                        Some(src) => src.is_dir(),
                        None => return vec![], // reported by the bind itself
                    },
                };
                vec![Wanted {
                    dst: &b.dst,
                    dir,
                    origin: &b.origin,
                }]
            }
            Step::Tmpfs(t) => vec![Wanted {
                dst: &t.dst,
                dir: true,
                origin: &t.origin,
            }],
            Step::IdentityFiles(_) => ["/etc/passwd", "/etc/group"]
                .into_iter()
                .map(|f| Wanted {
                    dst: Path::new(f),
                    dir: false,
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
                writable_size: Some(size),
            }) => write!(f, "root: writable overlay, {size} bytes of tmpfs"),
            Step::Root(RootLayer {
                writable_size: None,
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
    #[error("bind destination {dst} (from {origin}): {source}", dst = dst.display())]
    Destination {
        dst: PathBuf,
        origin: String,
        source: PathError,
    },
    #[error("bind source {} (from {origin}) does not exist on the host", src.display())]
    MissingSource { src: PathBuf, origin: String },
    #[error("bind destination {} (from {origin}) does not exist in the image", dst.display())]
    MissingDestination { dst: PathBuf, origin: String },
    #[error(
        "bind destination {} (from {origin}) is missing inside another bind ({}); rfake does not create it on the host",
        dst.display(),
        inside.display()
    )]
    WouldCreateOnHost {
        dst: PathBuf,
        origin: String,
        inside: PathBuf,
    },
    #[error("bind {} -> {} (from {origin}): {what}", src.display(), dst.display())]
    KindMismatch {
        src: PathBuf,
        dst: PathBuf,
        origin: String,
        what: &'static str,
    },
    #[error(transparent)]
    Image(Box<dyn std::error::Error + Send + Sync>),
}

/// Serves a single-file image; the mount layer implements it.
pub trait ImageMounter {
    /// [`Step::ServeImage`]: make the image's filesystem, not yet attached.
    fn prepare(&mut self, sys: &dyn Sys) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// [`Step::AttachImage`]: attach it at `target`, ready to use.
    fn attach(
        &mut self,
        sys: &dyn Sys,
        target: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// What earlier steps decided, for later ones.
#[derive(Debug, Default)]
struct State {
    /// The root is an overlay (missing destinations may be created).
    overlay: bool,
    /// The overlay exists only for mount points: seal it afterwards.
    seal: bool,
    /// Private tmpfs mounts made so far (under [`NEWROOT`]): destinations
    /// may be created inside them too.
    private: Vec<PathBuf>,
}

/// Carry out `steps` in order. `on_step` is told each step and its duration.
pub fn execute(
    sys: &dyn Sys,
    steps: &[Step],
    mounter: &mut dyn ImageMounter,
    on_step: &mut dyn FnMut(&Step, std::time::Duration, Option<&str>),
) -> Result<(), RootfsError> {
    let mut state = State::default();
    for step in steps {
        let start = std::time::Instant::now();
        let note = run_step(sys, step, mounter, &mut state, steps)?;
        on_step(step, start.elapsed(), note.as_deref());
    }
    Ok(())
}

fn run_step(
    sys: &dyn Sys,
    step: &Step,
    mounter: &mut dyn ImageMounter,
    state: &mut State,
    all_steps: &[Step],
) -> Result<Option<String>, RootfsError> {
    let newroot = Path::new(NEWROOT);
    let lower = Path::new(LOWER);
    match step {
        Step::MakePrivate => {
            // mount_namespaces(7): a new mount namespace starts as a copy of the
            // parent's, with shared peer groups; make every mount private so no
            // mount or unmount of ours reaches the host.
            sys.mount(
                "none",
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )?;
        }
        Step::Staging => {
            let staging = Path::new(STAGING);
            sys.mount(
                "rfake-staging",
                staging,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755,size=16m"),
            )?;
            for dir in ["newroot", "lower", "oldroot"] {
                sys.mkdir(&staging.join(dir), 0o755)?;
            }
        }
        Step::PivotToStaging => {
            let staging = Path::new(STAGING);
            sys.pivot_root(staging, &staging.join("oldroot"))?;
            sys.chdir(Path::new("/"))?;
        }
        Step::ServeImage => mounter.prepare(sys).map_err(RootfsError::Image)?,
        Step::AttachImage => mounter.attach(sys, lower).map_err(RootfsError::Image)?,
        Step::BindRootDir(dir) => {
            let src = paths::under(Path::new(OLDROOT), dir);
            sys.mount(
                &src.to_string_lossy(),
                lower,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let attrs = MountAttrs {
                rdonly: true,
                nosuid: true,
                nodev: true,
            };
            sys.mount_add_attrs(lower, attrs, true)?;
        }
        Step::Root(layer) => {
            let wanted: Vec<Wanted> = all_steps.iter().flat_map(Step::wanted).collect();
            return mounts::root(sys, layer, state, &wanted);
        }
        Step::Bind(bind) => return mounts::bind(sys, bind, state),
        Step::Tmpfs(tmpfs) => return mounts::tmpfs(sys, tmpfs, state),
        Step::IdentityFiles(spec) => return mounts::identity_files(sys, spec, state),
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

/// Where a host path is, after the first pivot: resolved under
/// [`OLDROOT`] on components, so the host's own absolute symlinks
/// (`/etc/resolv.conf -> /run/...`) point into the host, not the staging
/// root. `None` when it does not exist.
pub fn host_path(path: &Path) -> Option<PathBuf> {
    match paths::resolve_in_root(Path::new(OLDROOT), path) {
        Ok(Resolved::Exists(p)) => Some(p),
        _ => None,
    }
}

/// Resolve a bind destination inside `root`, with the step's origin in errors.
fn resolve(root: &Path, dst: &Path, origin: &str) -> Result<Resolved, RootfsError> {
    paths::resolve_in_root(root, dst).map_err(|source| RootfsError::Destination {
        dst: dst.to_path_buf(),
        origin: origin.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Sys for Recorder {
        fn mount_detached(
            &self,
            fstype: &str,
            params: &[crate::sys::FsParam],
            attrs: MountAttrs,
        ) -> crate::sys::SysResult<std::os::fd::OwnedFd> {
            self.calls
                .borrow_mut()
                .push(format!("fsmount {fstype} {params:?} +{attrs}"));
            Ok(std::fs::File::open("/dev/null").unwrap().into())
        }
        fn move_mount(
            &self,
            _mount: &std::os::fd::OwnedFd,
            target: &Path,
        ) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("move_mount {}", target.display()));
            Ok(())
        }
        fn clone_mount(&self, path: &Path) -> Result<std::os::fd::OwnedFd, crate::sys::SysError> {
            self.calls
                .borrow_mut()
                .push(format!("clone_mount {}", path.display()));
            Err(crate::sys::SysError::new(
                "open_tree",
                path,
                nix::errno::Errno::ENOSYS,
            ))
        }
        fn unshare(&self, flags: nix::sched::CloneFlags) -> crate::sys::SysResult {
            self.calls.borrow_mut().push(format!("unshare {flags:?}"));
            Ok(())
        }
        fn write_file(&self, path: &Path, contents: &str) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("write {} {contents:?}", path.display()));
            Ok(())
        }
        fn mount(
            &self,
            source: &str,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> crate::sys::SysResult {
            self.calls.borrow_mut().push(format!(
                "mount {source} {} {fstype:?} {flags:?} {data:?}",
                target.display()
            ));
            Ok(())
        }
        fn mount_add_attrs(
            &self,
            target: &Path,
            attrs: MountAttrs,
            recursive: bool,
        ) -> crate::sys::SysResult {
            self.calls.borrow_mut().push(format!(
                "setattr {} +{attrs} rec={recursive}",
                target.display()
            ));
            Ok(())
        }
        fn umount_detach(&self, target: &Path) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("umount {}", target.display()));
            Ok(())
        }
        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> crate::sys::SysResult {
            self.calls.borrow_mut().push(format!(
                "pivot_root {} {}",
                new_root.display(),
                put_old.display()
            ));
            Ok(())
        }
        fn mkdir(&self, path: &Path, mode: u32) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("mkdir {} {mode:o}", path.display()));
            Ok(())
        }
        fn create_file(&self, path: &Path, mode: u32, contents: &str) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("create {} {mode:o} {contents:?}", path.display()));
            Ok(())
        }
        fn chdir(&self, path: &Path) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("chdir {}", path.display()));
            Ok(())
        }
    }

    struct FakeMounter;
    impl ImageMounter for FakeMounter {
        fn prepare(
            &mut self,
            sys: &dyn Sys,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            sys.mount_detached("fuse", &[], MountAttrs::default())?;
            Ok(())
        }
        fn attach(
            &mut self,
            sys: &dyn Sys,
            target: &Path,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let fd = std::fs::File::open("/dev/null").unwrap().into();
            sys.move_mount(&fd, target)?;
            Ok(())
        }
    }

    #[test]
    fn setup_order_for_a_single_file_image() {
        let rec = Recorder::default();
        let steps = [
            Step::MakePrivate,
            Step::ServeImage,
            Step::Staging,
            Step::PivotToStaging,
            Step::AttachImage,
            Step::SealRoot,
            Step::EnterNewRoot,
        ];
        execute(&rec, &steps, &mut FakeMounter, &mut |_, _, _| {}).unwrap();
        let calls = rec.calls.into_inner();
        assert_eq!(
            calls,
            vec![
                "mount none / None MsFlags(MS_REC | MS_PRIVATE) None",
                "fsmount fuse [] +",
                "mount rfake-staging /tmp Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"mode=0755,size=16m\")",
                "mkdir /tmp/newroot 755",
                "mkdir /tmp/lower 755",
                "mkdir /tmp/oldroot 755",
                "pivot_root /tmp /tmp/oldroot",
                "chdir /",
                "move_mount /lower",
                "chdir /newroot",
                "pivot_root . .",
                "umount .",
                "chdir /",
            ]
        );
    }

    #[test]
    fn directory_root_is_a_recursive_bind_made_read_only() {
        let rec = Recorder::default();
        let steps = [Step::BindRootDir(PathBuf::from("/data/img"))];
        execute(&rec, &steps, &mut FakeMounter, &mut |_, _, _| {}).unwrap();
        assert_eq!(
            rec.calls.into_inner(),
            vec![
                "mount /oldroot/data/img /lower None MsFlags(MS_BIND | MS_REC) None",
                "setattr /lower +ro,nosuid,nodev rec=true",
            ]
        );
    }

    #[test]
    fn steps_that_may_need_destinations() {
        let bind = |create: bool, kind| Bind {
            src: "/a".into(),
            dst: "/b".into(),
            kind,
            readonly: false,
            allow_devices: false,
            optional: !create,
            create,
            origin: "t".into(),
        };
        assert_eq!(
            Step::Bind(bind(true, BindKind::File)).wanted(),
            vec![Wanted {
                dst: Path::new("/b"),
                dir: false,
                origin: "t"
            }]
        );
        assert!(Step::Bind(bind(false, BindKind::Dir)).wanted().is_empty());
        // The source decides, and a missing source is left to the bind step.
        assert!(
            Step::Bind(bind(true, BindKind::AsSource))
                .wanted()
                .is_empty()
        );
        let files = Step::IdentityFiles(IdentitySpec {
            user: UserEntry {
                name: "root".into(),
                uid: 0,
                gid: 0,
                gecos: "root".into(),
                home: "/root".into(),
                shell: "/bin/sh".into(),
            },
            group_name: "root".into(),
        });
        let dsts: Vec<&Path> = files.wanted().iter().map(|w| w.dst).collect();
        assert_eq!(dsts, [Path::new("/etc/passwd"), Path::new("/etc/group")]);
    }

    #[test]
    fn bind_attrs_always_nosuid() {
        let mut b = Bind {
            src: "/dev".into(),
            dst: "/dev".into(),
            kind: BindKind::Dir,
            readonly: false,
            allow_devices: true,
            optional: true,
            create: false,
            origin: "default".into(),
        };
        assert_eq!(b.attrs().to_string(), "nosuid");
        b.allow_devices = false;
        b.readonly = true;
        assert_eq!(b.attrs().to_string(), "ro,nosuid,nodev");
    }
}
