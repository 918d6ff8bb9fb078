//! The container's mount tree: an ordered list of steps and the one loop
//! that carries them out.
//!
//! Order, and why (see `docs/launch.md`):
//! 1. `MakePrivate`: nothing rfake mounts may propagate back to the host.
//! 2. `Staging`: a tmpfs at `/tmp` of *this* namespace holds `newroot` (where
//!    the image goes) and `oldroot` (where the host goes).
//! 3. `PivotToStaging`: the host is now only at `/oldroot` (its `/tmp` no
//!    longer hidden by the staging tmpfs); every bind source is taken from
//!    there and every destination is resolved inside `/newroot`.
//! 4. `MountImage`: the image is mounted at `/newroot` (the FUSE server is
//!    started chrooted into `/oldroot`, so it sees the host as it is).
//! 5. `BindRootDir` / `Bind`: recursive binds, then flags only ever *added*.
//! 6. `EnterNewRoot`: `pivot_root` (not `chroot`) into the image, then the
//!    old root is detached, so no host path remains reachable except binds.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::paths::{self, PathError, Resolved};
use crate::sys::{MountAttrs, Sys, SysError};

/// Where the staging tmpfs is mounted in the new mount namespace.
pub const STAGING: &str = "/tmp";
/// The image root, as created in the staging tmpfs, and after the first pivot.
pub const NEWROOT_IN_STAGING: &str = "/tmp/newroot";
pub const NEWROOT: &str = "/newroot";
/// The host root after the first pivot.
pub const OLDROOT: &str = "/oldroot";

/// What a bind destination must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    Dir,
    File,
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

/// One step of building the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    MakePrivate,
    Staging,
    /// Mount the single-file image at [`NEWROOT`].
    MountImage,
    PivotToStaging,
    /// Bind an unpacked directory image (host path) read-only as the root.
    BindRootDir(PathBuf),
    Bind(Bind),
    EnterNewRoot,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::MakePrivate => write!(f, "make / rprivate in the new mount namespace"),
            Step::Staging => write!(f, "mount staging tmpfs at {STAGING}"),
            Step::MountImage => write!(f, "mount image at {NEWROOT}"),
            Step::PivotToStaging => write!(f, "pivot_root to staging, host at {OLDROOT}"),
            Step::BindRootDir(dir) => write!(f, "bind directory {} as root (ro)", dir.display()),
            Step::Bind(b) => write!(
                f,
                "bind {} -> {} ({}{}) [{}]",
                b.src.display(),
                b.dst.display(),
                b.attrs(),
                if b.optional { ", optional" } else { "" },
                b.origin
            ),
            Step::EnterNewRoot => write!(f, "pivot_root into the image, detach the host"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error("bind {dst} (from {origin}): {source}")]
    Destination {
        dst: PathBuf,
        origin: String,
        source: PathError,
    },
    #[error("bind source {} (from {origin}) does not exist on the host", src.display())]
    MissingSource { src: PathBuf, origin: String },
    #[error("bind destination {} (from {origin}) does not exist in the image", dst.display())]
    MissingDestination { dst: PathBuf, origin: String },
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

/// Mounts the image for [`Step::MountImage`]; the mount layer implements it.
pub trait ImageMounter {
    fn mount_image(
        &mut self,
        sys: &dyn Sys,
        target: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Carry out `steps` in order. `on_step` is told each step and its duration.
pub fn execute(
    sys: &dyn Sys,
    steps: &[Step],
    mounter: &mut dyn ImageMounter,
    on_step: &mut dyn FnMut(&Step, std::time::Duration, Option<&str>),
) -> Result<(), RootfsError> {
    for step in steps {
        let start = std::time::Instant::now();
        let note = run_step(sys, step, mounter)?;
        on_step(step, start.elapsed(), note.as_deref());
    }
    Ok(())
}

fn run_step(
    sys: &dyn Sys,
    step: &Step,
    mounter: &mut dyn ImageMounter,
) -> Result<Option<String>, RootfsError> {
    let newroot = Path::new(NEWROOT);
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
                Some("mode=0755,size=1m"),
            )?;
            sys.mkdir(Path::new(NEWROOT_IN_STAGING), 0o755)?;
            sys.mkdir(&staging.join("oldroot"), 0o755)?;
        }
        Step::MountImage => {
            mounter
                .mount_image(sys, newroot)
                .map_err(RootfsError::Image)?;
        }
        Step::PivotToStaging => {
            let staging = Path::new(STAGING);
            sys.pivot_root(staging, &staging.join("oldroot"))?;
            sys.chdir(Path::new("/"))?;
        }
        Step::BindRootDir(dir) => {
            let src = paths::under(Path::new(OLDROOT), dir);
            sys.mount(
                &src.to_string_lossy(),
                newroot,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let attrs = MountAttrs {
                rdonly: true,
                nosuid: true,
                nodev: true,
            };
            sys.mount_add_attrs(newroot, attrs, true)?;
        }
        Step::Bind(bind) => return bind_one(sys, bind),
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

fn bind_one(sys: &dyn Sys, bind: &Bind) -> Result<Option<String>, RootfsError> {
    let src = paths::under(Path::new(OLDROOT), &bind.src);
    let src_meta = match std::fs::metadata(&src) {
        Ok(m) => m,
        Err(_) if bind.optional => return Ok(Some("skipped: no such source on the host".into())),
        Err(_) => {
            return Err(RootfsError::MissingSource {
                src: bind.src.clone(),
                origin: bind.origin.clone(),
            });
        }
    };
    let dst = match paths::resolve_in_root(Path::new(NEWROOT), &bind.dst) {
        Ok(Resolved::Exists(p)) => p,
        Ok(Resolved::Missing(_)) if bind.optional => {
            return Ok(Some("skipped: the image has no such destination".into()));
        }
        Ok(Resolved::Missing(_)) => {
            return Err(RootfsError::MissingDestination {
                dst: bind.dst.clone(),
                origin: bind.origin.clone(),
            });
        }
        Err(source) => {
            return Err(RootfsError::Destination {
                dst: bind.dst.clone(),
                origin: bind.origin.clone(),
                source,
            });
        }
    };
    let dst_is_dir = std::fs::metadata(&dst).map(|m| m.is_dir()).unwrap_or(false);
    let want_dir = bind.kind == BindKind::Dir;
    if src_meta.is_dir() != want_dir || dst_is_dir != want_dir {
        if bind.optional {
            return Ok(Some("skipped: file/directory mismatch".into()));
        }
        return Err(RootfsError::KindMismatch {
            src: bind.src.clone(),
            dst: bind.dst.clone(),
            origin: bind.origin.clone(),
            what: "one side is a directory, the other is not",
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Sys for Recorder {
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
        fn chdir(&self, path: &Path) -> crate::sys::SysResult {
            self.calls
                .borrow_mut()
                .push(format!("chdir {}", path.display()));
            Ok(())
        }
    }

    struct FakeMounter;
    impl ImageMounter for FakeMounter {
        fn mount_image(
            &mut self,
            sys: &dyn Sys,
            target: &Path,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            sys.mount("image", target, Some("fuse"), MsFlags::MS_RDONLY, None)?;
            Ok(())
        }
    }

    #[test]
    fn setup_order_for_a_single_file_image() {
        let rec = Recorder::default();
        let steps = [
            Step::MakePrivate,
            Step::Staging,
            Step::PivotToStaging,
            Step::MountImage,
            Step::EnterNewRoot,
        ];
        execute(&rec, &steps, &mut FakeMounter, &mut |_, _, _| {}).unwrap();
        let calls = rec.calls.into_inner();
        assert_eq!(
            calls,
            vec![
                "mount none / None MsFlags(MS_REC | MS_PRIVATE) None",
                "mount rfake-staging /tmp Some(\"tmpfs\") MsFlags(MS_NOSUID | MS_NODEV) Some(\"mode=0755,size=1m\")",
                "mkdir /tmp/newroot 755",
                "mkdir /tmp/oldroot 755",
                "pivot_root /tmp /tmp/oldroot",
                "chdir /",
                "mount image /newroot Some(\"fuse\") MsFlags(MS_RDONLY) None",
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
                "mount /oldroot/data/img /newroot None MsFlags(MS_BIND | MS_REC) None",
                "setattr /newroot +ro,nosuid,nodev rec=true",
            ]
        );
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
            origin: "default".into(),
        };
        assert_eq!(b.attrs().to_string(), "nosuid");
        b.allow_devices = false;
        b.readonly = true;
        assert_eq!(b.attrs().to_string(), "ro,nosuid,nodev");
    }
}
