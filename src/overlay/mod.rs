//! Persistent overlays: `--overlay PATH[:ro]`, as Apptainer lays them out.
//!
//! A directory overlay keeps its writable layer in `DIR/upper` and the
//! kernel's work directory in `DIR/work` (both made when missing, `work`
//! mode 0700). Read-only overlays are extra lower layers: `DIR/upper` when
//! it exists, else `DIR` itself. Layers stack as Apptainer stacks them
//! (its `overlay.Set`): the read-only ones in command-line order, the first
//! on top, above the image; at most one writable overlay, on top of all.
//!
//! An ext3 image overlay (`rfake overlay create`, Apptainer's layout: the
//! same `upper/` and `work/` inside) is served by the host's `fuse2fs`
//! inside the container's mount namespace ([`fuse`]); a writable one is
//! stacked by `fuse-overlayfs`, as the kernel's overlayfs refuses a FUSE
//! upper layer in a user namespace ("upper fs missing required features":
//! no d_type, tmpfile or RENAME_WHITEOUT from fuse2fs).
//!
//! Parsing and checking has no side effects but `stat`, `access` and
//! opening the images; the mounts are steps of the container's root
//! (`container::rootfs`).

mod create;
pub mod fuse;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::exit::ExitKind;
use crate::text::shown;

pub use create::{CreateOptions, create};

/// What an overlay is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory on a host file system.
    Dir,
    /// An ext3 (ext2/ext4) file system image, served by fuse2fs.
    Ext3,
}

/// One `--overlay` argument, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Absolute, without symlinks (it is reached from inside the mount
    /// namespace, where the host's own absolute links no longer lead home).
    pub path: PathBuf,
    pub kind: Kind,
    pub readonly: bool,
    /// What a read-only directory overlay contributes, decided on the
    /// host when the launch is planned: its `upper` when it has one (an
    /// overlay written earlier), else the directory itself.
    pub lower_dir: PathBuf,
    /// An image, opened when the launch is planned (read-write unless
    /// `:ro`): fuse2fs is handed this file, which the container's staging
    /// may hide by its path (an image under /tmp).
    pub file: Option<ImageFile>,
    /// Where the ext3 file system starts in the file: 0, or the offset of
    /// a SIF's overlay partition.
    pub offset: u64,
}

/// An open overlay image; any two compare equal (a plan compares layers by
/// their paths and modes).
#[derive(Debug, Clone)]
pub struct ImageFile(pub std::sync::Arc<std::fs::File>);

impl PartialEq for ImageFile {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ImageFile {}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Dir => "directory",
            Kind::Ext3 => "ext3 image",
        };
        if !self.readonly {
            write!(f, "{} ({kind}, rw)", self.path.display())
        } else if self.lower_dir != self.path {
            write!(f, "{} ({kind}, ro: its upper)", self.path.display())
        } else {
            write!(f, "{} ({kind}, ro)", self.path.display())
        }
    }
}

/// Every `--overlay` of a launch, in stacking order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlays {
    /// Read-only layers, the topmost first (command-line order).
    pub readonly: Vec<Layer>,
    /// The one writable layer, on top.
    pub writable: Option<Layer>,
    /// The host programs the image layers need, found when planning.
    pub tools: Tools,
}

/// The host's FUSE programs for image overlays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    /// Serves every ext3 image layer.
    pub fuse2fs: Option<PathBuf>,
    /// Stacks the layers over a writable image's `upper/`.
    pub fuse_overlayfs: Option<PathBuf>,
}

impl Overlays {
    pub fn is_empty(&self) -> bool {
        self.readonly.is_empty() && self.writable.is_none()
    }

    /// Some layer is an ext3 image: the root is built before the host's
    /// paths are pivoted away (fuse2fs runs from the host).
    pub fn has_images(&self) -> bool {
        self.layers().any(|l| l.kind == Kind::Ext3)
    }

    /// The writable layer is an image: fuse-overlayfs stacks the root.
    pub fn writable_image(&self) -> Option<&Layer> {
        self.writable.as_ref().filter(|l| l.kind == Kind::Ext3)
    }

    /// Every layer, the writable one first.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.writable.iter().chain(self.readonly.iter())
    }
}

impl fmt::Display for Overlays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(w) = &self.writable {
            parts.push(w.to_string());
        }
        parts.extend(self.readonly.iter().map(ToString::to_string));
        write!(f, "{}", parts.join(" over "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("--overlay {}: does not exist", shown(path))]
    Missing { path: PathBuf },
    #[error("--overlay {}: {what}", shown(path))]
    Unusable { path: PathBuf, what: String },
    #[error(
        "--overlay {}: the path has a '{ch}', which the kernel's overlay options cannot carry; move or link it elsewhere",
        shown(path)
    )]
    BadPath { path: PathBuf, ch: char },
    #[error(
        "--overlay {} and {}: only one writable overlay per container (add :ro to the other)",
        shown(first),
        shown(second)
    )]
    TwoWritable { first: PathBuf, second: PathBuf },
    #[error("--overlay {spec}: unknown mode '{mode}' (use :ro or :rw)")]
    BadMode { spec: String, mode: String },
    #[error(
        "--overlay {}: not writable by you ({}); add :ro to use it read-only",
        shown(path),
        errno.desc()
    )]
    NotWritable {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error(
        "--overlay {}: {what} is not a file system rfake can use as an overlay (a directory or an ext3 image from `rfake overlay create`)",
        shown(path)
    )]
    NotAnOverlay { path: PathBuf, what: String },
    #[error(
        "--overlay {}: {tool} not found in PATH, /usr/sbin or /sbin ({why}; install the Debian package {tool})",
        shown(path)
    )]
    NoTool {
        path: PathBuf,
        tool: &'static str,
        why: &'static str,
    },
    #[error(
        "--overlay {}: in use as the writable overlay of another container (one container at a time may write to it; add :ro for the others)",
        shown(path)
    )]
    InUse { path: PathBuf },
    #[error(
        "--overlay {}: another container writes to this image; it can be read (:ro) only when none does",
        shown(path)
    )]
    InUseByWriter { path: PathBuf },
    #[error("--overlay {}: {tool} failed: {message}", shown(path))]
    Server {
        path: PathBuf,
        tool: &'static str,
        message: String,
    },
    #[error(
        "--overlay {}: its {dir} is not owned by uid 0 inside the image (rfake's user there; it shows as uid {uid}, an id the namespace cannot map): made by `apptainer overlay create` or an older rfake? make a new one with `rfake overlay create`, or add :ro",
        shown(path)
    )]
    NotOurs {
        path: PathBuf,
        dir: &'static str,
        uid: u32,
    },
    #[error(transparent)]
    Create(#[from] create::CreateError),
}

impl OverlayError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            OverlayError::Missing { .. } => ExitKind::NoInput,
            OverlayError::Unusable { .. } => ExitKind::NoInput,
            OverlayError::BadPath { .. }
            | OverlayError::TwoWritable { .. }
            | OverlayError::BadMode { .. } => ExitKind::Usage,
            OverlayError::NotWritable { .. } => ExitKind::CannotCreate,
            OverlayError::NotAnOverlay { .. } => ExitKind::BadImage,
            OverlayError::NoTool { .. } => ExitKind::HostUnavailable,
            OverlayError::InUse { .. } | OverlayError::InUseByWriter { .. } => ExitKind::Refused,
            // fuse2fs refusing the image (a file system it cannot
            // mount); fuse-overlayfs failing is the host's.
            OverlayError::Server {
                tool: "fuse2fs", ..
            } => ExitKind::BadImage,
            OverlayError::Server { .. } => ExitKind::HostUnavailable,
            OverlayError::NotOurs { .. } => ExitKind::Refused,
            OverlayError::Create(e) => e.exit_kind(),
        }
    }
}

/// Split `PATH[:ro|:rw]`: a final `:ro` or `:rw` is the mode; any other
/// colon is part of the path (then refused by [`check_path`]).
fn split_mode(spec: &str) -> Result<(&str, bool), OverlayError> {
    match spec.rsplit_once(':') {
        Some((path, "ro")) => Ok((path, true)),
        Some((path, "rw")) => Ok((path, false)),
        Some((path, mode)) if !mode.contains('/') && !path.is_empty() => {
            Err(OverlayError::BadMode {
                spec: spec.to_string(),
                mode: mode.to_string(),
            })
        }
        _ => Ok((spec, false)),
    }
}

/// The characters the overlay mount options cannot carry unescaped.
fn check_path(path: &Path) -> Result<(), OverlayError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    for ch in [':', ',', '\\', '\n'] {
        if bytes.contains(&(ch as u8)) {
            return Err(OverlayError::BadPath {
                path: path.to_path_buf(),
                ch,
            });
        }
    }
    Ok(())
}

/// The magic of ext2/3/4 at 1024 + 56 (`s_magic`, little-endian).
const EXT_MAGIC: [u8; 2] = [0x53, 0xEF];

/// Whether the file at `path` starts with an ext2/3/4 superblock.
fn is_ext_image(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1024 + 56))?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == EXT_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The offset of the ext3 overlay partition of the SIF file at `path`;
/// a file that is neither an ext3 image nor a SIF with one is refused.
fn sif_overlay(path: &Path) -> Result<u64, OverlayError> {
    use crate::image::sif::Sif;
    use std::io::Read;
    let unusable = |e: std::io::Error| OverlayError::Unusable {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(unusable)?;
    let mut head = [0u8; 64];
    let n = file.read(&mut head).map_err(unusable)?;
    if !crate::image::sif::is_sif(&head[..n]) {
        return Err(OverlayError::NotAnOverlay {
            path: path.to_path_buf(),
            what: "the file".into(),
        });
    }
    let sif = Sif::read(&mut file).map_err(|e| OverlayError::NotAnOverlay {
        path: path.to_path_buf(),
        what: format!("the SIF file ({e})"),
    })?;
    sif.overlay_partition()
        .ok_or_else(|| OverlayError::NotAnOverlay {
            path: path.to_path_buf(),
            what: "the SIF file has no ext3 overlay partition, so it".into(),
        })
}

/// Check one `--overlay` argument (relative paths from `cwd`).
pub fn parse(spec: &str, cwd: &Path) -> Result<Layer, OverlayError> {
    let (raw, readonly) = split_mode(spec)?;
    let given = cwd.join(raw);
    let path = match std::fs::canonicalize(&given) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OverlayError::Missing { path: given });
        }
        Err(e) => {
            return Err(OverlayError::Unusable {
                path: given,
                what: e.to_string(),
            });
        }
    };
    check_path(&path)?;
    let meta = std::fs::metadata(&path).map_err(|e| OverlayError::Unusable {
        path: path.clone(),
        what: e.to_string(),
    })?;
    let mut offset = 0;
    let kind = if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        match is_ext_image(&path) {
            Ok(true) => Kind::Ext3,
            Ok(false) => {
                // A SIF file: its ext3 overlay partition (Apptainer's
                // `overlay create` on a SIF, or `sif add --parttype 4`).
                offset = sif_overlay(&path)?;
                Kind::Ext3
            }
            Err(e) => {
                return Err(OverlayError::Unusable {
                    path,
                    what: e.to_string(),
                });
            }
        }
    } else {
        return Err(OverlayError::NotAnOverlay {
            path,
            what: "a special file".into(),
        });
    };
    let access = if readonly {
        nix::unistd::AccessFlags::R_OK
    } else {
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK
    };
    let upper = path.join("upper");
    let lower_dir = if kind == Kind::Dir && readonly && upper.is_dir() {
        upper
    } else {
        path.clone()
    };
    let file = if kind == Kind::Ext3 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(code) if !readonly && (code == libc::EACCES || code == libc::EROFS) => {
                    OverlayError::NotWritable {
                        path: path.clone(),
                        errno: nix::errno::Errno::from_raw(code),
                    }
                }
                _ => OverlayError::Unusable {
                    path: path.clone(),
                    what: e.to_string(),
                },
            })?;
        Some(ImageFile(std::sync::Arc::new(file)))
    } else {
        None
    };
    let layer = Layer {
        path,
        kind,
        readonly,
        lower_dir,
        file,
        offset,
    };
    // Writable: the directory (and its upper and work when present) or
    // the image file must be writable by the user, checked before anything
    // is mounted.
    let mut check = vec![layer.path.clone()];
    if kind == Kind::Dir && !readonly {
        check.extend(
            ["upper", "work"]
                .iter()
                .map(|d| layer.path.join(d))
                .filter(|p| p.exists()),
        );
    }
    for p in check {
        nix::unistd::access(&p, access).map_err(|errno| {
            if readonly {
                OverlayError::Unusable {
                    path: p.clone(),
                    what: format!("not readable by you ({})", errno.desc()),
                }
            } else {
                OverlayError::NotWritable { path: p, errno }
            }
        })?;
    }
    Ok(layer)
}

/// Check every `--overlay` and stack them.
pub fn plan(specs: &[String], cwd: &Path) -> Result<Overlays, OverlayError> {
    let mut overlays = Overlays::default();
    for spec in specs {
        let layer = parse(spec, cwd)?;
        if layer.readonly {
            overlays.readonly.push(layer);
        } else if let Some(first) = &overlays.writable {
            return Err(OverlayError::TwoWritable {
                first: first.path.clone(),
                second: layer.path,
            });
        } else {
            overlays.writable = Some(layer);
        }
    }
    let path_env = std::env::var_os("PATH");
    let first_image = overlays
        .layers()
        .find(|l| l.kind == Kind::Ext3)
        .map(|l| l.path.clone());
    if let Some(path) = first_image {
        let tool = find_tool("fuse2fs", path_env.as_ref()).ok_or(OverlayError::NoTool {
            path,
            tool: "fuse2fs",
            why: "it serves ext3 overlay images",
        })?;
        overlays.tools.fuse2fs = Some(tool);
    }
    if let Some(path) = overlays.writable_image().map(|l| l.path.clone()) {
        let tool = find_tool("fuse-overlayfs", path_env.as_ref()).ok_or(OverlayError::NoTool {
            path,
            tool: "fuse-overlayfs",
            why: "the kernel's overlayfs cannot write to a fuse2fs upper layer",
        })?;
        overlays.tools.fuse_overlayfs = Some(tool);
    }
    Ok(overlays)
}

/// The image being run is a SIF file: its own ext3 overlay partition, if
/// it has one, goes read-only under the other overlays, just above the
/// image, as Apptainer mounts it (unless it is an `--overlay` already).
/// `offset` is the partition's (found when the image was validated) and
/// `file` the image file rfake validated and serves.
pub fn add_sif_own(
    overlays: &mut Overlays,
    image: &Path,
    offset: u64,
    file: &std::sync::Arc<std::fs::File>,
) -> Result<(), OverlayError> {
    if overlays.layers().any(|l| l.path == image) {
        return Ok(());
    }
    if overlays.tools.fuse2fs.is_none() {
        let path_env = std::env::var_os("PATH");
        let tool = find_tool("fuse2fs", path_env.as_ref()).ok_or(OverlayError::NoTool {
            path: image.to_path_buf(),
            tool: "fuse2fs",
            why: "it serves the SIF file's overlay partition",
        })?;
        overlays.tools.fuse2fs = Some(tool);
    }
    overlays.readonly.push(Layer {
        path: image.to_path_buf(),
        kind: Kind::Ext3,
        readonly: true,
        lower_dir: image.to_path_buf(),
        file: Some(ImageFile(file.clone())),
        offset,
    });
    Ok(())
}

/// A host program from `PATH`, else the sbin directories.
fn find_tool(name: &str, path_env: Option<&std::ffi::OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> = path_env
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A writable overlay, held for the container's life: an exclusive
/// `flock(2)` on its directory. The kernel lets two overlays share an upper
/// and work directory, with only a warning in its log ("accessing files
/// from both mounts will result in undefined behavior"), and the second
/// mount empties the work directory under the first. An image overlay is
/// locked on the image file: exclusively when writable, shared when `:ro`
/// (fuse2fs reading an ext3 file system another one writes to would read
/// it half-written).
#[derive(Debug)]
pub struct Lock {
    _held: Vec<std::os::fd::OwnedFd>,
}

/// Take the overlays' locks (`None` without any). Close-on-exec: the
/// payload never holds them; forked helpers (the keeper) do.
pub fn lock(overlays: &Overlays) -> Result<Option<Lock>, OverlayError> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let mut held = Vec::new();
    for layer in overlays.layers() {
        let (fd, op) = match (layer.kind, &layer.file) {
            (Kind::Dir, _) if layer.readonly => continue,
            (Kind::Dir, _) => (
                rustix::fs::open(
                    &layer.path,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| OverlayError::Unusable {
                    path: layer.path.clone(),
                    what: std::io::Error::from(e).to_string(),
                })?,
                FlockOperation::NonBlockingLockExclusive,
            ),
            (Kind::Ext3, Some(file)) => (
                // Its own open file description: flock(2) locks belong to
                // one, and the plan's file is shared.
                rustix::fs::open(
                    format!(
                        "/proc/self/fd/{}",
                        std::os::fd::AsRawFd::as_raw_fd(&*file.0)
                    ),
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| OverlayError::Unusable {
                    path: layer.path.clone(),
                    what: std::io::Error::from(e).to_string(),
                })?,
                if layer.readonly {
                    FlockOperation::NonBlockingLockShared
                } else {
                    FlockOperation::NonBlockingLockExclusive
                },
            ),
            (Kind::Ext3, None) => continue,
        };
        match rustix::fs::flock(&fd, op) {
            Ok(()) => held.push(fd),
            Err(rustix::io::Errno::WOULDBLOCK) if layer.readonly => {
                return Err(OverlayError::InUseByWriter {
                    path: layer.path.clone(),
                });
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(OverlayError::InUse {
                    path: layer.path.clone(),
                });
            }
            // A file system without locks (some network mounts): nothing
            // to hold, said once.
            Err(e) => {
                log::warn!(
                    "--overlay {}: cannot lock it ({e}); make sure no other container writes to it",
                    layer.path.display()
                );
            }
        }
    }
    Ok((!held.is_empty()).then_some(Lock { _held: held }))
}

/// The name of the file system at `path`, for messages about an upper
/// layer the kernel refused (`statfs(2)`'s `f_type`).
pub fn fs_name(path: &Path) -> String {
    let Ok(st) = rustix::fs::statfs(path) else {
        return "an unknown file system".into();
    };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64;
    let name = match magic {
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x6969 => "NFS",
        0x0BD0_0BD0 => "Lustre",
        0x4750_4653 => "GPFS",
        0x1983_0326 => "BeeGFS",
        0x00C3_6400 => "CephFS",
        0x2FC1_2FC1 => "ZFS",
        0x6573_5546 => "FUSE",
        0x794C_7630 => "overlayfs",
        0x7371_7368 => "squashfs",
        _ => return format!("a file system of type {magic:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests;
