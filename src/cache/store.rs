//! Putting things into the cache and finding them: blobs (downloaded,
//! resumed, checked), converted images, resolved references.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Cache, CacheError, Failure};
use crate::digest::{Digest, Hasher};

/// A registry reference as the cache files it: the registry (`docker.io`,
/// `host:port`), the repository (`library/debian`) and the tag or digest
/// that was asked for (what `Reference::reference()` gives).
#[derive(Debug, Clone, Copy)]
pub struct RefKey<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub reference: &'a str,
}

impl RefKey<'_> {
    /// `docker.io/library/debian:12`, `host:5000/demo@sha256:...`.
    pub fn canonical(&self) -> String {
        let sep = if Digest::parse(self.reference).is_some() {
            '@'
        } else {
            ':'
        };
        format!(
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }

    /// `refs/<registry>/<repository>/<tag or sha256-hex>@<arch>.json`,
    /// each part checked to be a plain name (never `..`, never empty).
    fn relative_path(&self, arch: &str) -> Result<PathBuf, CacheError> {
        let bad = |what: &str, value: &str| {
            CacheError::BadName(format!(
                "{what} {} cannot name a cache entry",
                crate::text::one_line(value)
            ))
        };
        let plain = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
        };
        if !plain(self.registry) {
            return Err(bad("registry", self.registry));
        }
        if !self.repository.split('/').all(plain) {
            return Err(bad("repository", self.repository));
        }
        let leaf = match Digest::parse(self.reference) {
            Some(d) => format!("{}-{}", d.algorithm, d.hex),
            None if plain(self.reference) && !self.reference.contains(['@', ':']) => {
                self.reference.to_string()
            }
            None => return Err(bad("tag", self.reference)),
        };
        let arch_ok = !arch.is_empty()
            && arch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_');
        if !arch_ok {
            return Err(bad("architecture", arch));
        }
        let arch = arch.replace('/', "-");
        let mut path = PathBuf::from("refs");
        path.push(self.registry);
        path.push(self.repository);
        path.push(format!("{leaf}@{arch}.json"));
        Ok(path)
    }
}

/// What a reference resolved to when it was last pulled (`--offline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRecord {
    pub manifest: Digest,
    pub index: Option<Digest>,
    pub arch: String,
    /// The canonical reference string.
    pub reference: String,
    /// When it was recorded, seconds since the epoch.
    pub pulled: u64,
}

/// The JSON of a reference file.
#[derive(Serialize, Deserialize)]
pub(super) struct RefFile {
    pub manifest: String,
    pub index: Option<String>,
    pub arch: String,
    pub reference: String,
    pub pulled: u64,
}

impl RefFile {
    pub(super) fn record(&self) -> Option<RefRecord> {
        Some(RefRecord {
            manifest: Digest::parse(&self.manifest)?,
            index: match &self.index {
                Some(i) => Some(Digest::parse(i)?),
                None => None,
            },
            arch: self.arch.clone(),
            reference: self.reference.clone(),
            pulled: self.pulled,
        })
    }
}

/// The sink a download writes into: appends to the partial file, hashes
/// as it goes, refuses more than the descriptor's size, and remembers a
/// write error so it is reported as the cache's (71, path and errno) and
/// not as whatever the fetcher makes of it.
struct Sink<'a> {
    file: &'a File,
    /// The partial's bytes so far and then these: right if the server
    /// honoured the range.
    continued: Hasher,
    /// These bytes alone: right if the server sent the whole blob again.
    fresh: Option<Hasher>,
    written: u64,
    size: u64,
    failed: Option<io::Error>,
    too_large: bool,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Never more than the descriptor's size: a server cannot fill the
        // disk (new bytes may be the whole blob when the range was ignored).
        if self.written + buf.len() as u64 > self.size {
            self.too_large = true;
            return Err(io::Error::other("more bytes than the descriptor says"));
        }
        if let Err(e) = self.file.write_all(buf) {
            let again = io::Error::new(e.kind(), e.to_string());
            self.failed = Some(e);
            return Err(again);
        }
        self.continued.update(buf);
        if let Some(h) = &mut self.fresh {
            h.update(buf);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How one download attempt ended, when it did not fail outright.
enum Attempt {
    Done,
    /// The partial was resumed and the whole does not match: it is gone;
    /// try once more from byte 0 (a crash can leave garbage in a partial).
    RetryFromStart,
}

impl Cache {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.blob_path())
    }

    /// The verified blob `digest` if the cache has it (marks it used).
    pub fn has_blob(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.blob_path(digest);
        path.is_file().then(|| {
            self.touch(&path);
            path
        })
    }

    /// `dest` if present with the right size (marked used); a wrong size
    /// is corrupt in a read-only cache and replaced in a writable one.
    fn present(&self, dest: &Path, size: u64) -> Result<Option<PathBuf>, CacheError> {
        match fs::metadata(dest) {
            Ok(m) if m.len() == size => {
                self.touch(dest);
                Ok(Some(dest.to_path_buf()))
            }
            Ok(m) if self.read_only => Err(CacheError::Corrupt {
                root: self.root.clone(),
                path: dest.to_path_buf(),
                got: m.len(),
                size,
            }),
            _ => Ok(None),
        }
    }

    /// The path of the verified blob `digest` of `size` bytes, downloading
    /// it with `fetch` if absent.
    ///
    /// `fetch(offset, sink)` writes the blob from byte `offset` into
    /// `sink` and returns where what it wrote starts: `offset` when the
    /// server honoured the range, 0 when it sent the whole blob. An
    /// exclusive lock on `locks/<hex>.lock` is held meanwhile, so N
    /// processes fetch the blob once (the others wait, then find it). A
    /// partial download this host left (`tmp/<hex>@<host>.partial`: a
    /// killed pull, a network error) is resumed: its bytes are hashed and
    /// `fetch` asked for the rest. At the end the size and the digest are
    /// checked; a mismatch deletes the partial and is [`CacheError::Mismatch`]
    /// (when a resumed partial was involved, the blob is first fetched once
    /// more from byte 0). A write failure deletes the partial (71).
    pub fn blob<E: Failure>(
        &self,
        digest: &Digest,
        size: u64,
        fetch: &mut dyn FnMut(u64, &mut dyn Write) -> Result<u64, E>,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.blob_path(digest);
        if let Some(path) = self.present(&dest, size)? {
            return Ok(path);
        }
        if self.read_only {
            return Err(CacheError::ReadOnlyMissing {
                root: self.root.clone(),
                what: format!("blob {digest}"),
            });
        }
        let lock = self.lock(&digest.hex)?;
        // Another process may have fetched it while this one waited.
        if let Some(path) = self.present(&dest, size)? {
            return Ok(path);
        }
        // The host's resumable partial, when the lock keeps this host's
        // processes apart (coherent or node-local locks); without locks, a
        // partial of this process alone, removed if it fails: no resume,
        // but no two writers in one file.
        let partial = match lock {
            Some(_) => self
                .tmp()
                .join(format!("{}@{}.partial", digest.hex, self.host)),
            None => self.temp_name(&digest.hex).with_extension("partial"),
        };
        let result = loop {
            match self.download(digest, size, &partial, fetch) {
                Ok(Attempt::Done) => break self.publish(&partial, &dest),
                Ok(Attempt::RetryFromStart) => continue,
                Err(e) => break Err(e),
            }
        };
        if result.is_err() && lock.is_none() {
            let _ = fs::remove_file(&partial);
        }
        result.map(|()| dest)
    }

    fn download<E: Failure>(
        &self,
        digest: &Digest,
        size: u64,
        partial: &Path,
        fetch: &mut dyn FnMut(u64, &mut dyn Write) -> Result<u64, E>,
    ) -> Result<Attempt, CacheError> {
        let io = |op, e| CacheError::io(op, partial, e);
        let discard = |e: CacheError| {
            let _ = fs::remove_file(partial);
            e
        };
        let mut file = super::lock::open_rw(partial).map_err(|e| io("open", e))?;
        let mut have = file.metadata().map_err(|e| io("read", e))?.len();
        let mut continued = digest.hasher();
        if have > size {
            have = 0;
        } else if have > 0 {
            match hash_prefix(&mut file, have, &mut continued) {
                Ok(()) => {}
                Err(e) => {
                    log::debug!("{}: unreadable ({e}); starting over", partial.display());
                    have = 0;
                    continued = digest.hasher();
                }
            }
        }
        if have == 0 {
            file.set_len(0).map_err(|e| io("write", e))?;
        }
        file.seek(SeekFrom::Start(have))
            .map_err(|e| io("write", e))?;
        let mut sink = Sink {
            file: &file,
            continued,
            fresh: (have > 0).then(|| digest.hasher()),
            written: 0,
            size,
            failed: None,
            too_large: false,
        };
        let result = fetch(have, &mut sink);
        let Sink {
            continued,
            fresh,
            written,
            failed,
            too_large,
            ..
        } = sink;
        if let Some(e) = failed {
            return Err(discard(io("write", e)));
        }
        if too_large {
            return Err(discard(CacheError::TooLarge {
                digest: digest.to_string(),
                size,
            }));
        }
        let start = result.map_err(|e| CacheError::Fetch {
            kind: e.exit_kind(),
            source: Box::new(e),
        })?;
        let (total, hasher) = match (start, fresh) {
            (s, _) if s == have => (have + written, continued),
            (0, Some(fresh)) => {
                // The server sent the whole blob after the bytes we had:
                // keep only what it sent.
                restart(&mut file, partial, have, written).map_err(|e| discard(io("write", e)))?;
                (written, fresh)
            }
            _ => {
                return Err(discard(CacheError::Short {
                    digest: digest.to_string(),
                    got: have,
                    size,
                }));
            }
        };
        if total < size {
            return Err(CacheError::Short {
                digest: digest.to_string(),
                got: total,
                size,
            });
        }
        let resumed = start > 0;
        let got = hasher.hex();
        if got != digest.hex {
            let _ = fs::remove_file(partial);
            if resumed {
                log::debug!("{digest}: resumed download does not match; once more from byte 0");
                return Ok(Attempt::RetryFromStart);
            }
            return Err(CacheError::Mismatch {
                digest: digest.to_string(),
                algorithm: digest.algorithm,
                got,
            });
        }
        Ok(Attempt::Done)
    }

    /// Put `bytes` (a manifest, a config) into the cache as the blob
    /// `digest`, checked.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        self.blob(digest, bytes.len() as u64, &mut |_, sink| {
            sink.write_all(bytes).map(|()| 0).map_err(Unwritten)
        })
    }

    fn image_path(&self, manifest: &Digest, ext: &str) -> Result<PathBuf, CacheError> {
        if ext.is_empty() || ext.len() > 8 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CacheError::BadName(format!("image extension {ext:?}")));
        }
        Ok(self.root.join(format!(
            "images/{}/{}.{ext}",
            manifest.algorithm, manifest.hex
        )))
    }

    /// The converted image of `manifest` if the cache has it (marks it
    /// used). An image's use is recorded on its lock file, never on the
    /// image itself: a launch's warm mount is keyed by the image file's
    /// times, which must not change from one launch to the next.
    pub fn lookup_image(&self, manifest: &Digest, ext: &str) -> Option<PathBuf> {
        let path = self.image_path(manifest, ext).ok()?;
        path.is_file().then(|| {
            let lock = self.lock_path(&format!("{}.{ext}", manifest.hex));
            if !self.read_only && !lock.exists() {
                let _ = super::lock::open_rw(&lock);
            }
            self.touch(&lock);
            path
        })
    }

    /// The converted image of `manifest`, made by `make(temp)` if absent:
    /// `make` writes the file `temp` (in `tmp/`, not existing yet), which
    /// is renamed to `images/sha256/<hex>.<ext>` once it succeeded; under
    /// the exclusive lock `locks/<hex>.<ext>.lock`, so N processes make it
    /// once. A failed `make` leaves nothing (its temporary is removed).
    pub fn image<E: Failure>(
        &self,
        manifest: &Digest,
        ext: &str,
        make: &mut dyn FnMut(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, CacheError> {
        let dest = self.image_path(manifest, ext)?;
        if let Some(path) = self.lookup_image(manifest, ext) {
            return Ok(path);
        }
        if self.read_only {
            return Err(CacheError::ReadOnlyMissing {
                root: self.root.clone(),
                what: format!("image of manifest {manifest}"),
            });
        }
        let lock_name = format!("{}.{ext}", manifest.hex);
        let _lock = self.lock(&lock_name)?;
        if let Some(path) = self.lookup_image(manifest, ext) {
            return Ok(path);
        }
        let temp = self.temp_name(&lock_name);
        let remove = |temp: &Path| {
            let _ = fs::remove_file(temp).or_else(|_| fs::remove_dir_all(temp));
        };
        if let Err(e) = make(&temp) {
            remove(&temp);
            return Err(CacheError::Make {
                kind: e.exit_kind(),
                source: Box::new(e),
            });
        }
        self.publish(&temp, &dest).inspect_err(|_| remove(&temp))?;
        Ok(dest)
    }

    /// Note that `key` resolved to `manifest` (through `index`) for `arch`.
    pub fn record_ref(
        &self,
        key: &RefKey,
        arch: &str,
        manifest: &Digest,
        index: Option<&Digest>,
    ) -> Result<(), CacheError> {
        let dest = self.root.join(key.relative_path(arch)?);
        if self.read_only {
            return Err(CacheError::ReadOnlyMissing {
                root: self.root.clone(),
                what: format!("room for {}", key.canonical()),
            });
        }
        let record = RefFile {
            manifest: manifest.to_string(),
            index: index.map(Digest::to_string),
            arch: arch.to_string(),
            reference: key.canonical(),
            pulled: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| CacheError::BadName(format!("reference record: {e}")))?;
        self.write_atomically(&dest, &json)
    }

    /// What `key` resolved to for `arch` when last pulled, if recorded.
    pub fn lookup_ref(&self, key: &RefKey, arch: &str) -> Option<RefRecord> {
        let path = self.root.join(key.relative_path(arch).ok()?);
        let bytes = crate::input::read_regular(&path, 64 << 10).ok()?;
        serde_json::from_slice::<RefFile>(&bytes).ok()?.record()
    }
}

/// `put_blob`'s writer failing: the sink already kept the real error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unwritten(io::Error);

impl Failure for Unwritten {
    fn exit_kind(&self) -> crate::exit::ExitKind {
        crate::exit::ExitKind::OsError
    }
}

/// Hash the first `len` bytes of `file`.
fn hash_prefix(file: &mut File, len: u64, hasher: &mut Hasher) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Make `partial` hold only its bytes `[skip, skip + len)`: copied (with
/// copy_file_range where the kernel can) to a sibling, renamed over it.
fn restart(file: &mut File, partial: &Path, skip: u64, len: u64) -> io::Result<()> {
    let sibling = partial.with_extension("restart");
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&sibling)?;
    file.seek(SeekFrom::Start(skip))?;
    let copied = io::copy(&mut (&*file).take(len), &mut out);
    match copied {
        Ok(n) if n == len => {}
        Ok(_) => {
            let _ = fs::remove_file(&sibling);
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Err(e) => {
            let _ = fs::remove_file(&sibling);
            return Err(e);
        }
    }
    fs::rename(&sibling, partial)?;
    *file = out;
    Ok(())
}
