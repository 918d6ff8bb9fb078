//! What is in the cache, and taking it out: `list`, `evict` (least
//! recently used first, down to the size limit) and `clean`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::lock::{self, Lock, Try};
use super::store::RefFile;
use super::{Cache, CacheError};
use crate::digest::Digest;

/// A temporary whose lock cannot be tried (a reference or the tag being
/// written) is left alone this long: none lives more than a moment.
const STALE: Duration = Duration::from_secs(3600);

/// The lock name of temporaries written without a lock (see `Cache::temp_name`).
pub(super) const UNLOCKED: &str = "file";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A converted image (`images/`).
    Image,
    /// A verified blob (`blobs/`).
    Blob,
    /// A download not finished (`tmp/*.partial`).
    Partial,
    /// Any other temporary (`tmp/`): an image being made, a restart copy.
    Temp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Blob => "blob",
            Kind::Partial => "partial",
            Kind::Temp => "temp",
        }
    }
}

/// One file of the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    pub path: PathBuf,
    /// The blob's digest, the image's manifest digest, the digest a
    /// partial download is for.
    pub digest: Option<Digest>,
    pub size: u64,
    /// Last used (the file's mtime).
    pub last_used: SystemTime,
    /// The references (`canonical (arch)`) that resolve to it: an image's
    /// manifest, or a blob of that manifest when the manifest is cached.
    pub references: Vec<String>,
    /// A live process holds its lock (downloading, converting).
    pub busy: bool,
    lock: Option<String>,
}

/// What `clean` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clean {
    /// Partial downloads and temporaries no live process holds, and the
    /// layer blobs of images that are already converted (the manifest and
    /// config blobs stay: they are small and the config has the image's
    /// environment).
    Unneeded,
    /// Everything no live process holds, references included.
    All,
    /// Entries not used for this long.
    OlderThan(Duration),
}

/// What `evict` or `clean` removed.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<Entry>,
    /// Bytes freed.
    pub freed: u64,
    /// Entries that would have gone but a live process holds them.
    pub busy: Vec<Entry>,
    /// Reference records removed (they named nothing left in the cache).
    pub refs_removed: usize,
    /// Prefetch profiles removed (`profiles/`, kept by the image server
    /// beside the cache's entries; only `Clean::All` removes them).
    pub profiles_removed: usize,
    /// The cache's size afterwards.
    pub total: u64,
}

fn digest_of(algorithm: &str, hex: &str) -> Option<Digest> {
    Digest::parse(&format!("{algorithm}:{hex}"))
}

/// `<hex>` with the algorithm told by its length.
fn digest_of_hex(hex: &str) -> Option<Digest> {
    digest_of(if hex.len() == 128 { "sha512" } else { "sha256" }, hex)
}

fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>, CacheError> {
    match fs::read_dir(path) {
        Ok(dir) => dir
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| CacheError::io("read", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(CacheError::io("read", path, e)),
    }
}

/// The blobs an image manifest names: (config, layers).
fn manifest_parts(bytes: &[u8]) -> Option<(Option<Digest>, Vec<Digest>)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let digest = |d: &serde_json::Value| d.get("digest")?.as_str().and_then(Digest::parse);
    let config = v.get("config").and_then(digest);
    let layers = v
        .get("layers")?
        .as_array()?
        .iter()
        .filter_map(digest)
        .collect();
    Some((config, layers))
}

impl Cache {
    /// Every reference record: (path, contents).
    fn refs(&self) -> Result<Vec<(PathBuf, RefFile)>, CacheError> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join("refs")];
        while let Some(dir) = dirs.pop() {
            for e in read_dir(&dir)? {
                let path = e.path();
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() {
                    dirs.push(path);
                } else if t.is_file()
                    && let Ok(bytes) = crate::input::read_regular(&path, 64 << 10)
                    && let Ok(r) = serde_json::from_slice::<RefFile>(&bytes)
                {
                    out.push((path, r));
                }
            }
        }
        Ok(out)
    }

    /// The blobs of a cached manifest, if its manifest blob is cached.
    fn manifest_blobs(&self, manifest: &Digest) -> Option<(Option<Digest>, Vec<Digest>)> {
        let bytes =
            crate::input::read_regular(&self.root.join(manifest.blob_path()), 4 << 20).ok()?;
        manifest_parts(&bytes)
    }

    /// Everything in the cache, most recently used first.
    pub fn list(&self) -> Result<Vec<Entry>, CacheError> {
        let mut entries = Vec::new();
        let mut add = |kind, path: PathBuf, digest, lock: Option<String>| {
            let Ok(m) = fs::symlink_metadata(&path) else {
                return;
            };
            if !m.is_file() && kind != Kind::Temp {
                return;
            }
            let busy = lock
                .as_deref()
                .is_some_and(|l| l != UNLOCKED && lock::is_held(&self.lock_path(l)));
            // An image's use is recorded on its lock file (see
            // `lookup_image`): its last use is the later of the two times.
            let used_lock = match (kind, lock.as_deref()) {
                (Kind::Image, Some(l)) if l != UNLOCKED => fs::metadata(self.lock_path(l))
                    .and_then(|l| l.modified())
                    .ok(),
                _ => None,
            };
            entries.push(Entry {
                kind,
                path,
                digest,
                size: m.len(),
                last_used: m
                    .modified()
                    .unwrap_or(SystemTime::UNIX_EPOCH)
                    .max(used_lock.unwrap_or(SystemTime::UNIX_EPOCH)),
                references: Vec::new(),
                busy,
                lock,
            });
        };
        for algorithm in ["sha256", "sha512"] {
            for e in read_dir(&self.root.join("blobs").join(algorithm))? {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(d) = digest_of(algorithm, &name) {
                    add(Kind::Blob, e.path(), Some(d), Some(name));
                }
            }
            for e in read_dir(&self.root.join("images").join(algorithm))? {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some((hex, _ext)) = name.split_once('.')
                    && let Some(d) = digest_of(algorithm, hex)
                {
                    add(Kind::Image, e.path(), Some(d), Some(name));
                }
            }
        }
        for e in read_dir(&self.tmp())? {
            let name = e.file_name().to_string_lossy().into_owned();
            let owner = name.split_once('@').map(|(l, _)| l.to_string());
            if name.ends_with(".partial") {
                let digest = owner.as_deref().and_then(digest_of_hex);
                add(Kind::Partial, e.path(), digest, owner);
            } else {
                add(Kind::Temp, e.path(), None, owner);
            }
        }
        // Which references lead to what.
        let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (_, r) in self.refs()? {
            let Some(manifest) = Digest::parse(&r.manifest) else {
                continue;
            };
            let name = format!("{} ({})", r.reference, r.arch);
            if let Some((config, layers)) = self.manifest_blobs(&manifest) {
                for d in config.into_iter().chain(layers) {
                    by_digest.entry(d).or_default().push(name.clone());
                }
            }
            by_digest.entry(manifest).or_default().push(name);
        }
        for e in &mut entries {
            if let Some(d) = &e.digest
                && matches!(e.kind, Kind::Image | Kind::Blob)
                && let Some(names) = by_digest.get(d)
            {
                e.references = names.clone();
                e.references.sort();
                e.references.dedup();
            }
        }
        entries.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.kind.cmp(&b.kind)));
        Ok(entries)
    }

    /// Remove `entry` unless a live process holds its lock (tried, never
    /// waited for; held while unlinking). Where locks cannot be tried,
    /// only an entry unused for an hour goes.
    fn remove(&self, entry: &Entry) -> Result<bool, CacheError> {
        let stale = || entry.last_used.elapsed().is_ok_and(|age| age >= STALE);
        let _held: Option<Lock> = match entry.lock.as_deref() {
            Some(name) if name != UNLOCKED => {
                let path = self.lock_path(name);
                match Lock::try_exclusive(&path).map_err(|e| CacheError::io("lock", &path, e))? {
                    Try::Locked(l) => Some(l),
                    Try::Busy => return Ok(false),
                    Try::Unsupported if stale() => None,
                    Try::Unsupported => return Ok(false),
                }
            }
            _ if stale() => None,
            _ => return Ok(false),
        };
        let removed = if entry.kind == Kind::Temp && entry.path.is_dir() {
            fs::remove_dir_all(&entry.path)
        } else {
            fs::remove_file(&entry.path)
        };
        match removed {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CacheError::io("remove", &entry.path, e)),
        }
    }

    /// Remove `candidates` (not busy) into a report.
    fn remove_all(&self, candidates: Vec<Entry>, report: &mut Removal) -> Result<(), CacheError> {
        for e in candidates {
            if self.remove(&e)? {
                report.freed += e.size;
                report.removed.push(e);
            } else {
                report.busy.push(e);
            }
        }
        Ok(())
    }

    /// Remove reference records whose manifest has neither an image nor
    /// its manifest blob left (`all`: every record).
    fn prune_refs(&self, all: bool) -> Result<usize, CacheError> {
        let mut removed = 0;
        for (path, r) in self.refs()? {
            let gone = all
                || Digest::parse(&r.manifest).is_none_or(|m| {
                    let images = self.root.join("images").join(m.algorithm);
                    let image_left = read_dir(&images).is_ok_and(|d| {
                        d.iter().any(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .split_once('.')
                                .is_some_and(|(hex, _)| hex == m.hex)
                        })
                    });
                    !image_left && !self.root.join(m.blob_path()).is_file()
                });
            if gone {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CacheError::io("remove", &path, e)),
                }
            }
        }
        Ok(removed)
    }

    fn total(&self) -> Result<u64, CacheError> {
        Ok(self.list()?.iter().map(|e| e.size).sum())
    }

    /// Remove the least recently used entries until the cache is no larger
    /// than its `max_size`, skipping those a live process holds. Nothing
    /// in a read-only cache or without a limit.
    pub fn evict(&self) -> Result<Removal, CacheError> {
        if self.read_only || self.max_size == 0 {
            return Ok(Removal::default());
        }
        let mut entries = self.list()?;
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut report = Removal::default();
        entries.sort_by_key(|e| e.last_used);
        for e in entries {
            if total <= self.max_size {
                break;
            }
            if self.remove(&e)? {
                total -= e.size;
                report.freed += e.size;
                report.removed.push(e);
            } else {
                report.busy.push(e);
            }
        }
        report.refs_removed = self.prune_refs(false)?;
        report.total = total;
        Ok(report)
    }

    /// Remove the image server's prefetch profiles (`profiles/*.profile`:
    /// hints only, rebuilt by the next launches); how many.
    fn remove_profiles(&self) -> Result<usize, CacheError> {
        let dir = self.root.join("profiles");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(CacheError::io("read", &dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| CacheError::io("read", &dir, e))?;
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "profile") {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(CacheError::io("remove", &path, e)),
                }
            }
        }
        Ok(removed)
    }

    /// Remove what `what` says (see [`Clean`]); refused in a read-only cache.
    pub fn clean(&self, what: Clean) -> Result<Removal, CacheError> {
        if self.read_only {
            return Err(CacheError::ReadOnly {
                root: self.root.clone(),
            });
        }
        let entries = self.list()?;
        let candidates: Vec<Entry> = match what {
            Clean::All => entries,
            Clean::OlderThan(age) => {
                let cutoff = SystemTime::now()
                    .checked_sub(age)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                entries
                    .into_iter()
                    .filter(|e| e.last_used <= cutoff)
                    .collect()
            }
            Clean::Unneeded => {
                let mut layers = std::collections::BTreeSet::new();
                for e in &entries {
                    if e.kind == Kind::Image
                        && let Some(m) = &e.digest
                        && let Some((_, l)) = self.manifest_blobs(m)
                    {
                        layers.extend(l);
                    }
                }
                entries
                    .into_iter()
                    .filter(|e| match e.kind {
                        Kind::Partial | Kind::Temp => true,
                        Kind::Blob => e.digest.as_ref().is_some_and(|d| layers.contains(d)),
                        Kind::Image => false,
                    })
                    .collect()
            }
        };
        let mut report = Removal::default();
        self.remove_all(candidates, &mut report)?;
        report.refs_removed = self.prune_refs(what == Clean::All)?;
        if what == Clean::All {
            report.profiles_removed = self.remove_profiles()?;
        }
        report.total = self.total()?;
        Ok(report)
    }
}
