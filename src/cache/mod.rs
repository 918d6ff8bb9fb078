//! The image cache: blobs by digest, converted images by manifest digest,
//! and the references that were resolved to them.
//!
//! ```text
//! ROOT/CACHEDIR.TAG                 the standard tag (backup tools skip the cache)
//! ROOT/blobs/sha256/<hex>           verified blobs, 0644, never modified after rename
//! ROOT/images/sha256/<hex>.sqfs     the image converted from manifest <hex> (.sif: ORAS SIF)
//! ROOT/refs/<registry>/<repository>/<tag or sha256-hex>@<arch>.json
//! ROOT/tmp/                         every write goes here first, then rename(2)
//! ROOT/locks/<name>.lock            fcntl lock files (see `lock`)
//! ```
//!
//! The invariants, each enforced in one place:
//! - a name under `blobs/`, `images/` or `refs/` appears only by
//!   `rename(2)` from `tmp/` after the temporary was fsync'd (and, for a
//!   blob, its size and digest checked), so a reader finds a whole entry or
//!   none, and an interrupted pull leaves nothing but `tmp/` files;
//! - the locks only avoid duplicate work (see `lock` for shared file
//!   systems): correctness never depends on them;
//! - a read-only (site-curated) cache is never written: no tag, no lock
//!   files, no mtime bumps; what it lacks is exit 77.
//!
//! Least recently used: an entry's mtime is its last use (bumped by every
//! lookup that finds it); `evict` removes the oldest first.

// Until `src/pull` (the lead's) uses the download, image and reference
// side: `rfake cache` alone uses list and clean. Remove with the wiring.

mod lock;
mod manage;
mod store;

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::ExitKind;
use crate::text::shown;

pub use manage::{Clean, Entry, Removal};
pub use store::RefKey;

/// A callback's failure (the registry download, the image conversion),
/// passed through [`CacheError::Fetch`] and [`CacheError::Make`] with its
/// message and exit code.
pub trait Failure: std::error::Error + 'static {
    fn exit_kind(&self) -> ExitKind;
}

impl Failure for crate::error::Error {
    fn exit_kind(&self) -> ExitKind {
        crate::error::Error::exit_kind(self)
    }
}

impl Failure for crate::registry::RegistryError {
    fn exit_kind(&self) -> ExitKind {
        crate::registry::RegistryError::exit_kind(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache cannot be written or read (full disk, permissions).
    #[error("image cache: cannot {op} {}: {}", shown(path), errno_text(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The bytes do not hash to the digest that names them.
    #[error(
        "blob {digest} does not match its digest: the downloaded bytes hash to {algorithm}:{got}; discarded"
    )]
    Mismatch {
        digest: String,
        algorithm: &'static str,
        got: String,
    },
    /// More bytes than the descriptor says.
    #[error("blob {digest} is larger than the {size} bytes its descriptor says; discarded")]
    TooLarge { digest: String, size: u64 },
    /// The download ended early or started elsewhere than asked; what
    /// arrived is kept in tmp/ for the next pull to resume.
    #[error("blob {digest}: the download stopped at byte {got} of {size}")]
    Short { digest: String, got: u64, size: u64 },
    /// An entry of a read-only cache is not what its name says.
    #[error(
        "image cache {}: {} has {got} bytes, its descriptor says {size}",
        shown(root),
        shown(path)
    )]
    Corrupt {
        root: PathBuf,
        path: PathBuf,
        got: u64,
        size: u64,
    },
    #[error(
        "the cache {} is read-only (cache_read_only) and has no {what}",
        shown(root)
    )]
    ReadOnlyMissing { root: PathBuf, what: String },
    #[error(
        "the cache {} is read-only (cache_read_only): nothing can be removed",
        shown(root)
    )]
    ReadOnly { root: PathBuf },
    /// A name that cannot be a cache path (a caller's bug or a bad reference).
    #[error("image cache: {0}")]
    BadName(String),
    #[error(
        "no cache directory: neither RFAKE_CACHEDIR, XDG_CACHE_HOME nor HOME is set (set RFAKE_CACHEDIR)"
    )]
    NoRoot,
    #[error("{source}")]
    Fetch {
        kind: ExitKind,
        source: Box<dyn std::error::Error>,
    },
    #[error("{source}")]
    Make {
        kind: ExitKind,
        source: Box<dyn std::error::Error>,
    },
}

impl CacheError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            CacheError::Io { .. } => ExitKind::OsError,
            CacheError::Mismatch { .. }
            | CacheError::TooLarge { .. }
            | CacheError::Corrupt { .. } => ExitKind::BadImage,
            CacheError::Short { .. } => ExitKind::RegistryProtocol,
            CacheError::ReadOnlyMissing { .. } | CacheError::ReadOnly { .. } => ExitKind::Refused,
            CacheError::BadName(_) => ExitKind::Usage,
            CacheError::NoRoot => ExitKind::Config,
            CacheError::Fetch { kind, .. } | CacheError::Make { kind, .. } => *kind,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> CacheError {
        CacheError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `No space left on device (ENOSPC)`: the text and the errno's name.
fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let name = format!("{:?}", nix::errno::Errno::from_raw(n));
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            format!("{text} ({name})")
        }
        None => e.to_string(),
    }
}

/// The cache root when none is configured: `$RFAKE_CACHEDIR`, else
/// `$APPTAINER_CACHEDIR/rfake` (else `$SINGULARITY_CACHEDIR/rfake`), else
/// `configured` (the config key `cache_dir`), else `$XDG_CACHE_HOME/rfake`
/// (an absolute value only, as the XDG spec says), else `~/.cache/rfake`.
/// Empty values count as unset.
pub fn root_from(
    env: &[(OsString, OsString)],
    configured: Option<&Path>,
) -> Result<PathBuf, CacheError> {
    let var = |name| crate::env::get(env, name).filter(|v| !v.is_empty());
    if let Some(dir) = var("RFAKE_CACHEDIR") {
        return Ok(PathBuf::from(dir));
    }
    // Apptainer's cache variable: rfake's cache in a directory of its own
    // there, beside Apptainer's `cache/`, never mixed with it.
    if let Some(f) = crate::env::apptainer::lookup(env, "CACHEDIR") {
        return Ok(PathBuf::from(f.value).join("rfake"));
    }
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").map(Path::new)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("rfake"));
    }
    match var("HOME") {
        Some(home) => Ok(Path::new(home).join(".cache/rfake")),
        None => Err(CacheError::NoRoot),
    }
}

/// Where the cache is and how it may be used, from the configuration and
/// the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub root: PathBuf,
    /// `cache_read_only`: it applies to the configured `cache_dir` only (a
    /// user who names their own cache with `RFAKE_CACHEDIR` writes to it).
    pub read_only: bool,
    /// `cache_max_size`; 0: no limit.
    pub max_size: u64,
}

impl Settings {
    pub fn new(
        config: &crate::config::Config,
        env: &[(OsString, OsString)],
    ) -> Result<Settings, CacheError> {
        let configured = config
            .cache_dir
            .value
            .as_ref()
            .and_then(|entry| entry.path.as_ref().ok().cloned());
        let from_env = crate::env::get(env, "RFAKE_CACHEDIR").is_some_and(|v| !v.is_empty())
            || crate::env::apptainer::lookup(env, "CACHEDIR").is_some();
        let root = root_from(env, configured.as_deref())?;
        if !root.is_absolute() {
            return Err(CacheError::BadName(format!(
                "{}: the cache directory must be an absolute path",
                shown(&root)
            )));
        }
        Ok(Settings {
            read_only: !from_env && configured.is_some() && config.cache_read_only.value,
            root,
            max_size: config.cache_max_size.value,
        })
    }

    pub fn open(&self) -> Result<Cache, CacheError> {
        Cache::open(self.root.clone(), self.read_only, self.max_size)
    }
}

/// [`root_from`] without a configured directory.
#[cfg(test)]
pub fn default_root(env: &[(OsString, OsString)]) -> Result<PathBuf, CacheError> {
    root_from(env, None)
}

/// `30d`, `12h`, `90m`, `45s`: for `rfake cache clean --older-than`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration '{text}': a whole number and a unit s, m, h or d (e.g. 30d)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by rfake.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// An open cache (see the module documentation).
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    read_only: bool,
    max_size: u64,
    /// This host's name, in the names of its temporaries.
    host: String,
    /// Take locks (false: behave as on a file system without them).
    locking: bool,
}

impl Cache {
    /// Open the cache at `root`. Writable: `root` is created 0700 if
    /// missing (a user's cache is private; an existing directory keeps its
    /// mode, so a site can share a group-writable one), with its
    /// `CACHEDIR.TAG` and subdirectories. Read-only: nothing is created;
    /// a missing root is an empty cache. `max_size` 0: no limit.
    pub fn open(root: PathBuf, read_only: bool, max_size: u64) -> Result<Cache, CacheError> {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| {
                h.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                    .take(64)
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_string());
        let cache = Cache {
            root,
            read_only,
            max_size,
            host,
            locking: true,
        };
        if !read_only {
            cache.create()?;
        }
        Ok(cache)
    }

    fn create(&self) -> Result<(), CacheError> {
        match fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(CacheError::io(
                    "use",
                    &self.root,
                    io::Error::from_raw_os_error(libc::ENOTDIR),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.root)
                    .map_err(|e| CacheError::io("create", &self.root, e))?;
                // The umask may have taken bits off: 0700 exactly.
                fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                    .map_err(|e| CacheError::io("chmod", &self.root, e))?;
            }
            Err(e) => return Err(CacheError::io("use", &self.root, e)),
        }
        for dir in ["blobs/sha256", "images/sha256", "refs", "tmp", "locks"] {
            let path = self.root.join(dir);
            DirBuilder::new()
                .recursive(true)
                .create(&path)
                .map_err(|e| CacheError::io("create", &path, e))?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            self.write_atomically(&tag, CACHEDIR_TAG.as_bytes())?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    /// As on a file system without locks (tests of that path).
    #[cfg(test)]
    fn without_locks(mut self) -> Cache {
        self.locking = false;
        self
    }

    /// Wait for the lock `name`; `None` where the file system has no locks.
    fn lock(&self, name: &str) -> Result<Option<lock::Lock>, CacheError> {
        if !self.locking {
            return Ok(None);
        }
        let path = self.lock_path(name);
        lock::Lock::exclusive(&path).map_err(|e| CacheError::io("lock", &path, e))
    }

    /// A temporary name of this process in `tmp/`: `<lock>@<host>.<pid>.<n>.tmp`.
    fn temp_name(&self, lock: &str) -> PathBuf {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tmp().join(format!(
            "{lock}@{}.{}.{n}.tmp",
            self.host,
            std::process::id()
        ))
    }

    /// Mark `path` used now (its mtime); never in a read-only cache. A
    /// failure only makes the entry look older: not worth failing a pull.
    fn touch(&self, path: &Path) {
        if self.read_only {
            return;
        }
        let now = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
        };
        if let Err(e) =
            rustix::fs::utimensat(rustix::fs::CWD, path, &now, rustix::fs::AtFlags::empty())
        {
            log::debug!("{}: cannot mark used: {e}", path.display());
        }
    }

    /// Make `temp` (a file, written and closed) the entry `dest`: fsync,
    /// 0644, rename, fsync the directory so the rename survives a crash.
    fn publish(&self, temp: &Path, dest: &Path) -> Result<(), CacheError> {
        let file = File::open(temp).map_err(|e| CacheError::io("open", temp, e))?;
        file.sync_all()
            .map_err(|e| CacheError::io("write", temp, e))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| CacheError::io("chmod", temp, e))?;
        drop(file);
        let parent = dest.parent().unwrap_or(&self.root);
        DirBuilder::new()
            .recursive(true)
            .create(parent)
            .map_err(|e| CacheError::io("create", parent, e))?;
        fs::rename(temp, dest).map_err(|e| CacheError::io("rename into", dest, e))?;
        if let Ok(dir) = File::open(parent) {
            dir.sync_all()
                .map_err(|e| CacheError::io("write", parent, e))?;
        }
        Ok(())
    }

    /// Write `bytes` to `dest` through a temporary (small files: the tag,
    /// references).
    fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        let temp = self.temp_name("file");
        let written = File::create(&temp).and_then(|mut f| f.write_all(bytes));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(CacheError::io("write", &temp, e));
        }
        self.publish(&temp, dest).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
