//! `rfake overlay create`: an ext3 overlay image as `apptainer overlay
//! create` makes one: `mkfs.ext3 -d` of a directory holding `upper/` (mode
//! 0755, with the `--create-dir` directories in it) and `work/` (0700),
//! owned by the user, so the image is ready for `--overlay IMG`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::exit::ExitKind;
use crate::text::shown;

/// What to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOptions {
    pub image: PathBuf,
    /// In MiB, as Apptainer's `--size`.
    pub size_mib: u64,
    /// Leave the file sparse instead of allocating every block.
    pub sparse: bool,
    /// Directories made inside the overlay (container paths).
    pub create_dirs: Vec<PathBuf>,
    /// The `PATH` to look for mkfs.ext3 in (the sbin directories are
    /// searched after it).
    pub path_env: Option<OsString>,
}

/// The smallest image mkfs.ext3 makes with a journal.
const MIN_SIZE_MIB: u64 = 64;
/// The largest rfake makes in one go (1 TiB).
const MAX_SIZE_MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("overlay create {}: exists already (remove it first)", shown(path))]
    Exists { path: PathBuf },
    #[error("overlay create {}: --size {size}: {why}", shown(path))]
    BadSize {
        path: PathBuf,
        size: u64,
        why: String,
    },
    #[error(
        "overlay create {}: --create-dir {}: must be an absolute path without '..'",
        shown(path),
        shown(dir)
    )]
    BadDir { path: PathBuf, dir: PathBuf },
    #[error("overlay create {}: {op}: {source}", shown(path))]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("overlay create: mkfs.ext3 not found in PATH, /usr/sbin or /sbin (install e2fsprogs)")]
    NoMkfs,
    #[error(
        "overlay create {}: mkfs.ext3 failed ({status}): {stderr}",
        shown(path)
    )]
    Mkfs {
        path: PathBuf,
        status: String,
        stderr: String,
    },
}

impl CreateError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            CreateError::Exists { .. } => ExitKind::CannotCreate,
            CreateError::BadSize { .. } | CreateError::BadDir { .. } => ExitKind::Usage,
            CreateError::Io { .. } => ExitKind::CannotCreate,
            CreateError::NoMkfs => ExitKind::HostUnavailable,
            CreateError::Mkfs { .. } => ExitKind::OsError,
        }
    }
}

/// mkfs.ext3 from `PATH`, else the sbin directories (a user's PATH often
/// lacks them).
fn find_mkfs(path_env: Option<&OsString>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_env
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("mkfs.ext3"))
        .find(|p| p.is_file())
}

/// Check the options before anything is written.
fn check(opts: &CreateOptions) -> Result<(), CreateError> {
    let path = &opts.image;
    if !(MIN_SIZE_MIB..=MAX_SIZE_MIB).contains(&opts.size_mib) {
        return Err(CreateError::BadSize {
            path: path.clone(),
            size: opts.size_mib,
            why: format!("must be from {MIN_SIZE_MIB} to {MAX_SIZE_MIB} MiB"),
        });
    }
    for dir in &opts.create_dirs {
        let ok = dir.is_absolute()
            && dir
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if !ok {
            return Err(CreateError::BadDir {
                path: path.clone(),
                dir: dir.clone(),
            });
        }
    }
    if path.symlink_metadata().is_ok() {
        return Err(CreateError::Exists { path: path.clone() });
    }
    Ok(())
}

/// Make the overlay image; nothing is left behind on failure.
pub fn create(opts: &CreateOptions) -> Result<(), CreateError> {
    check(opts)?;
    let mkfs = find_mkfs(opts.path_env.as_ref()).ok_or(CreateError::NoMkfs)?;
    let tools_dir = mkfs_dir(&mkfs);
    let path = &opts.image;
    let io = |op: &'static str| {
        move |source: std::io::Error| CreateError::Io {
            path: path.clone(),
            op,
            source,
        }
    };
    // The tree mkfs copies, beside the image (same file system, removed
    // when this returns).
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tree = tempfile::Builder::new()
        .prefix(".rfake-overlay-")
        .tempdir_in(&parent)
        .map_err(io("make a temporary directory beside it"))?;
    make_tree(tree.path(), &opts.create_dirs).map_err(io("prepare upper and work"))?;
    // create_new: a file made by someone else in the meantime is theirs.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CreateError::Exists { path: path.clone() }
            } else {
                io("create")(e)
            }
        })?;
    let made = (|| {
        let bytes = opts.size_mib << 20;
        file.set_len(bytes).map_err(io("size"))?;
        if !opts.sparse {
            // Every block allocated now: a full disk shows here, not as
            // an I/O error inside a job.
            nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, bytes as i64)
                .map_err(|e| io("allocate")(std::io::Error::from(e)))?;
        }
        drop(file);
        let mut mkfs = Command::new(&mkfs);
        mkfs.args(["-q", "-F", "-t", "ext3"]);
        if !opts.sparse {
            // mke2fs discards (punches out) the blocks allocated above.
            mkfs.args(["-E", "nodiscard"]);
        }
        let out = mkfs
            .arg("-d")
            .arg(tree.path())
            .arg(path)
            .output()
            .map_err(io("run mkfs.ext3"))?;
        if !out.status.success() {
            return Err(CreateError::Mkfs {
                path: path.clone(),
                status: out.status.to_string(),
                stderr: crate::text::one_line(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        owned_by_root(&tools_dir, path, &opts.create_dirs)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// The directory mkfs.ext3 was found in (debugfs is beside it).
fn mkfs_dir(mkfs: &Path) -> PathBuf {
    mkfs.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `upper/`, `work/` and the `--create-dir` directories owned by uid and
/// gid 0 inside the image, as seen by the container's user (rfake's user
/// is root of the namespace fuse2fs serves the image in; mkfs.ext3 -d
/// copied the host's uid, which that namespace cannot map, and the kernel
/// refuses writes to such a directory). With debugfs, beside mkfs.ext3.
fn owned_by_root(dir: &Path, image: &Path, create_dirs: &[PathBuf]) -> Result<(), CreateError> {
    use std::io::Write;
    let mut paths = vec![PathBuf::from("/upper"), PathBuf::from("/work")];
    for d in create_dirs {
        let rel = d.strip_prefix("/").unwrap_or(d);
        let mut p = PathBuf::from("/upper");
        for c in rel.components() {
            p.push(c);
            if !paths.contains(&p) {
                paths.push(p.clone());
            }
        }
    }
    let mut script = String::new();
    for p in &paths {
        for field in ["uid", "gid"] {
            // debugfs quotes a path with spaces in double quotes.
            script.push_str(&format!("sif \"{}\" {field} 0\n", p.display()));
        }
    }
    let debugfs = [
        dir.join("debugfs"),
        PathBuf::from("/usr/sbin/debugfs"),
        PathBuf::from("/sbin/debugfs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or(CreateError::NoMkfs)?;
    let io = |op: &'static str| {
        move |source: std::io::Error| CreateError::Io {
            path: image.to_path_buf(),
            op,
            source,
        }
    };
    let mut child = Command::new(&debugfs)
        .args(["-w", "-f", "-"])
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io("run debugfs"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(io("run debugfs"))?;
    let out = child.wait_with_output().map_err(io("run debugfs"))?;
    // debugfs exits 0 after a failed command: its complaints are on
    // stderr, after its version banner.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaint = stderr
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty());
    if !out.status.success() || complaint.is_some() {
        return Err(CreateError::Mkfs {
            path: image.to_path_buf(),
            status: format!("debugfs: {}", out.status),
            stderr: crate::text::one_line(complaint.unwrap_or(&stderr)),
        });
    }
    Ok(())
}

/// `upper/` (with the wanted directories) and `work/` in `root`.
fn make_tree(root: &Path, create_dirs: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let upper = root.join("upper");
    std::fs::DirBuilder::new().mode(0o755).create(&upper)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(root.join("work"))?;
    for dir in create_dirs {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(upper.join(rel))?;
    }
    // The umask does not decide what the overlay's root looks like.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
