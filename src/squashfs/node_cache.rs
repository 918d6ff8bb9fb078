//! The node cache: decompressed blocks of an image kept in a node-local
//! directory the site chooses (`node_cache_dir`: /dev/shm, a local disk),
//! so that they outlive the mount: the next mount of the same image by the
//! same user on the node (the next job, a launch after the warm mount has
//! gone) finds them decompressed.
//!
//! - **Layout**: `DIR/rfake-UID/IMAGE/KEY`: one directory per user (mode
//!   0700, owned by the user: checked, another user's is never used), one
//!   per image identity ([`super::cold::Identity::node`]: its content and
//!   its file's device, inode, size and times), one file per block.
//! - **An entry** is a header (magic, the block's key, its length, a CRC-32
//!   of the data) and the data. It is written to a temporary name and
//!   renamed into place, so readers see a whole entry or none; one that
//!   does not check out (a torn write after a crash, a disk error, a
//!   foreign file) is removed and never served.
//! - **Size bound**: each server counts what it adds; past `node_cache_size`
//!   it lists the user's entries and removes the oldest (by modification
//!   time: when written) until three quarters are left. Several servers
//!   may each add up to a block past the bound before they notice.
//! - Entries are written by a background thread ([`super::cold`]), never on
//!   the payload's path; reading one is an `openat`, `read` and a CRC.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::profile::Key;

/// The first bytes of an entry.
const MAGIC: &[u8; 8] = b"rfkblk1\n";
/// Bytes of an entry's header: magic, inode reference, index, length, CRC.
const HEADER: usize = 8 + 8 + 4 + 4 + 4;
/// Temporary files older than this are a crashed writer's.
const STALE_TMP_SECS: i64 = 60;

/// Where a server keeps its image's blocks.
#[derive(Debug)]
pub struct NodeCache {
    /// The user's directory.
    user: OwnedFd,
    /// The image's directory in it.
    image: OwnedFd,
    /// Its name there.
    image_name: String,
    max_bytes: u64,
    /// The largest block the image has.
    block_size: usize,
    /// Bytes added since the user's directory was last measured, plus what
    /// it held then.
    used: AtomicU64,
    counter: AtomicU64,
}

/// The entry's file name of `key`.
fn name_of(key: Key) -> String {
    format!("{:x}.{:x}", key.0, key.1)
}

/// Open (making it) directory `name` under `at`, which must be ours and
/// private.
fn private_dir(at: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(&at, name, Mode::RWXU) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::EXIST => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        &at,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{name} belongs to uid {} (as seen here), not to you",
            st.st_uid
        )));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{name} has mode {:o}: others may write to it",
            st.st_mode & 0o7777
        )));
    }
    Ok(fd)
}

impl NodeCache {
    /// The cache of image `image_name` (a hex identity) for the user's
    /// directory `user_dir` (`DIR/rfake-UID`: its parent must exist).
    pub fn open(
        user_dir: &Path,
        image_name: &str,
        max_bytes: u64,
        block_size: u32,
    ) -> io::Result<NodeCache> {
        let parent = user_dir.parent().unwrap_or(Path::new("/"));
        let name = user_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io::Error::other("no directory name"))?;
        let parent = rustix::fs::open(
            parent,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let user = private_dir(&parent, name)?;
        let image = private_dir(&user, image_name)?;
        Ok(NodeCache {
            user,
            image,
            image_name: image_name.to_string(),
            max_bytes,
            block_size: block_size as usize,
            used: AtomicU64::new(u64::MAX),
            counter: AtomicU64::new(0),
        })
    }

    /// The descriptors the server must keep.
    pub fn fds(&self) -> [std::os::fd::RawFd; 2] {
        use std::os::fd::AsRawFd;
        [self.user.as_raw_fd(), self.image.as_raw_fd()]
    }

    /// The block under `key`, if a good entry holds it.
    pub fn get(&self, key: Key) -> Option<Arc<[u8]>> {
        let name = name_of(key);
        let fd = rustix::fs::openat(
            &self.image,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut buf = vec![0u8; HEADER + self.block_size + 1];
        let mut n = 0;
        while n < buf.len() {
            match rustix::io::read(&fd, &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(_) => return None,
            }
        }
        buf.truncate(n);
        match decode(&buf, key) {
            Some(()) => Some(Arc::from(&buf[HEADER..])),
            None => {
                log::debug!("node cache entry {} is bad: removed", name);
                let _ = rustix::fs::unlinkat(&self.image, name.as_str(), AtFlags::empty());
                None
            }
        }
    }

    /// Store `data` under `key` (called from the background thread).
    pub fn put(&self, key: Key, data: &[u8]) -> io::Result<()> {
        let name = name_of(key);
        let tmp = format!(
            ".{name}.{}.{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let fd = rustix::fs::openat(
            &self.image,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )?;
        let entry = encode(key, data);
        let written = write_all(&fd, &entry).and_then(|()| {
            rustix::fs::renameat(&self.image, tmp.as_str(), &self.image, name.as_str())
                .map_err(io::Error::from)
        });
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.image, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        let mut used = self.used.load(Ordering::Relaxed);
        if used == u64::MAX {
            // What is there, this entry included.
            used = self.measure();
        } else {
            used += entry.len() as u64;
        }
        if used > self.max_bytes {
            used = self.evict(self.max_bytes / 4 * 3);
        }
        self.used.store(used, Ordering::Relaxed);
        Ok(())
    }

    /// Every entry of the user's: (modification time, image dir, name,
    /// bytes). Stale temporary files are removed on the way.
    fn entries(&self) -> Vec<(i64, String, String, u64)> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for image in list(&self.user) {
            let Ok(dir) = rustix::fs::openat(
                &self.user,
                image.as_str(),
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            for name in list(&dir) {
                let Ok(st) = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                if name.starts_with('.') {
                    if now - st.st_mtime > STALE_TMP_SECS {
                        let _ = rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty());
                    }
                    continue;
                }
                out.push((st.st_mtime, image.clone(), name, st.st_size as u64));
            }
        }
        out
    }

    /// Bytes the user's entries take.
    fn measure(&self) -> u64 {
        self.entries().iter().map(|e| e.3).sum()
    }

    /// Remove the oldest entries until at most `keep` bytes are left;
    /// returns what is left.
    fn evict(&self, keep: u64) -> u64 {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.3).sum();
        entries.sort();
        for (_, image, name, bytes) in entries {
            if total <= keep {
                break;
            }
            let Ok(dir) = rustix::fs::openat(
                &self.user,
                image.as_str(),
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            if rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()).is_ok() {
                total = total.saturating_sub(bytes);
            }
        }
        // Directories of other images left empty go (a full one stays).
        for image in list(&self.user) {
            if image != self.image_name {
                let _ = rustix::fs::unlinkat(&self.user, image.as_str(), AtFlags::REMOVEDIR);
            }
        }
        total
    }

    /// Where the user's entries are, for messages.
    pub fn describe(user_dir: &Path, image_name: &str) -> PathBuf {
        user_dir.join(image_name)
    }
}

/// The names in directory `dir`, but `.` and `..`.
fn list(dir: &OwnedFd) -> Vec<String> {
    let Ok(fd) = rustix::fs::openat(
        dir,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| CString::from(e.file_name()).into_string().ok())
        .filter(|n| n != "." && n != "..")
        .collect()
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The entry of `data` under `key`.
fn encode(key: Key, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.0.to_le_bytes());
    out.extend_from_slice(&key.1.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Whether `entry` is a whole, good entry of `key`.
fn decode(entry: &[u8], key: Key) -> Option<()> {
    let header = entry.get(..HEADER)?;
    let data = &entry[HEADER..];
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let good = &header[..8] == MAGIC
        && u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")) == key.0
        && u32_at(16) == key.1
        && u32_at(20) as usize == data.len()
        && !data.is_empty()
        && u32_at(24) == libdeflater::crc32(data);
    good.then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, image: &str, max: u64) -> NodeCache {
        NodeCache::open(&dir.join("rfake-1"), image, max, 4096).unwrap()
    }

    #[test]
    fn a_block_stored_by_one_server_is_read_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let a = cache(dir.path(), "img", 1 << 20);
        let b = cache(dir.path(), "img", 1 << 20);
        assert!(b.get((5, 0)).is_none());
        a.put((5, 0), b"hello").unwrap();
        a.put((u64::MAX, 2), &[1; 4096]).unwrap();
        assert_eq!(&*b.get((5, 0)).unwrap(), b"hello");
        assert_eq!(&*b.get((u64::MAX, 2)).unwrap(), &[1; 4096][..]);
        // Another image's directory does not serve it.
        assert!(cache(dir.path(), "other", 1 << 20).get((5, 0)).is_none());
        let mode = std::fs::metadata(dir.path().join("rfake-1/img")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o700);
    }

    /// Torn, corrupt, misplaced or foreign entries are never served, and go.
    #[test]
    fn a_torn_or_corrupt_entry_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), "img", 1 << 20);
        let path = dir.path().join("rfake-1/img").join(name_of((5, 0)));
        let good = encode((5, 0), &[3; 1000]);
        let mut bad: Vec<Vec<u8>> = vec![
            good[..good.len() - 1].to_vec(),
            good[..10].to_vec(),
            Vec::new(),
            encode((6, 0), &[3; 1000]),
            b"some other file".to_vec(),
        ];
        let mut flipped = good.clone();
        flipped[HEADER + 500] ^= 0x10;
        bad.push(flipped);
        let mut longer = good.clone();
        longer.push(0);
        bad.push(longer);
        for entry in bad {
            std::fs::write(&path, &entry).unwrap();
            assert!(c.get((5, 0)).is_none(), "{entry:?}");
            assert!(!path.exists());
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(&*c.get((5, 0)).unwrap(), &[3; 1000][..]);
    }

    /// Another user's directory (or one others may write to) is not used.
    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("rfake-1");
        std::fs::create_dir(&user).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = NodeCache::open(&user, "img", 1 << 20, 4096).unwrap_err();
        assert!(e.to_string().contains("others may write"), "{e}");
        std::fs::remove_dir(&user).unwrap();
        std::os::unix::fs::symlink("/tmp", &user).unwrap();
        assert!(NodeCache::open(&user, "img", 1 << 20, 4096).is_err());
    }

    /// Past the bound, the oldest entries (of any image) go until three
    /// quarters are left; stale temporary files go too.
    #[test]
    fn the_oldest_entries_are_evicted_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let entry = (HEADER + 4096) as u64;
        let old = cache(dir.path(), "old", 100 * entry);
        for i in 0..4 {
            old.put((1, i), &[i as u8 + 1; 4096]).unwrap();
        }
        let stale = dir.path().join("rfake-1/old/.1.0.99.0");
        std::fs::write(&stale, b"x").unwrap();
        // Age the first image's entries.
        for name in std::fs::read_dir(dir.path().join("rfake-1/old")).unwrap() {
            let f = std::fs::File::options()
                .write(true)
                .open(name.unwrap().path())
                .unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
                .unwrap();
        }
        let new = cache(dir.path(), "new", 8 * entry);
        for i in 0..8 {
            new.put((2, i), &[9; 4096]).unwrap();
        }
        // 4 old + 8 new > 8: down to 6, the old ones first.
        let left = |img: &str| {
            std::fs::read_dir(dir.path().join("rfake-1").join(img)).map_or(0, |d| d.count())
        };
        assert_eq!(left("old"), 0);
        assert!(!stale.exists());
        assert_eq!(left("new"), 6);
        assert!(new.get((2, 7)).is_some());
        assert!(new.get((2, 0)).is_none());
    }
}
