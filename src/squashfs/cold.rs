//! What makes a cold mount less cold: the image's prefetch profile
//! ([`super::profile`]), replayed in the background, and the node cache
//! ([`super::node_cache`]) of decompressed blocks that outlives the mount.
//!
//! [`Cold`] is made in rfake before the server is forked (files and
//! directories are opened there, while the host's paths are still in view)
//! and attached to the [`ImageFs`]; the server then starts its background
//! thread ([`ImageFs::start_cold`]). The block cache's path
//! (`ImageFs::cached`) asks it for a block before decompressing one, and
//! tells it which blocks were used and which were decompressed; the
//! background thread appends to the profile and writes node cache entries,
//! so the payload never waits for either.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::fs::ImageFs;
use super::node_cache::NodeCache;
use super::profile::{self, Key, Recorder};

/// What a launch asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColdSettings {
    /// Where profiles are kept (rfake's per-user cache); `None`: no
    /// profiles.
    pub profile_dir: Option<PathBuf>,
    /// The user's node cache directory (`node_cache_dir/rfake-UID`) and its
    /// bound; `None`: no node cache.
    pub node_cache: Option<(PathBuf, u64)>,
}

/// Bytes hashed from the end of the image (the ends of its tables).
const TAIL: u64 = 4096;
/// Messages waiting for the background thread; past this they are dropped
/// (the payload never waits for it).
const QUEUE: usize = 1024;

/// Who an image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its content: the super block and the last [`TAIL`] bytes of the
    /// file system (where its tables end). The same image copied to another
    /// path or node has the same one: profiles are found by it.
    pub content: [u8; 32],
    /// Its content and its file (device, inode, size, modification and
    /// change times): what node cache entries are kept under, as a block
    /// served from there must be the very image's.
    pub node: [u8; 32],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Identity {
    /// The identity of the SquashFS at `offset` in `file`, `bytes_used`
    /// long.
    pub fn of(file: &File, offset: u64, bytes_used: u64) -> std::io::Result<Identity> {
        let mut sb = [0u8; 96];
        file.read_exact_at(&mut sb, offset)?;
        let tail_len = bytes_used.min(TAIL);
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact_at(&mut tail, offset + bytes_used - tail_len)?;
        let mut h = Sha256::new();
        h.update(b"rfake image identity 1\n");
        h.update(sb);
        h.update(&tail);
        let content: [u8; 32] = h.finalize().into();
        let st = file.metadata()?;
        let mut h = Sha256::new();
        h.update(content);
        for n in [
            st.dev(),
            st.ino(),
            st.size(),
            st.mtime() as u64,
            st.mtime_nsec() as u64,
            st.ctime() as u64,
            st.ctime_nsec() as u64,
            offset,
        ] {
            h.update(n.to_le_bytes());
        }
        Ok(Identity {
            content,
            node: h.finalize().into(),
        })
    }

    /// The profile's file name.
    pub fn profile_name(&self) -> String {
        format!("{}.profile", hex(&self.content[..16]))
    }

    /// The node cache directory's name.
    pub fn node_name(&self) -> String {
        hex(&self.node[..16])
    }
}

enum Msg {
    /// A record to append to the profile.
    Seen([u8; profile::RECORD]),
    /// A block decompressed: store it in the node cache.
    Block(Key, Arc<[u8]>),
}

/// The cold-start helpers of one mount.
pub struct Cold {
    /// The profile's keys to replay, first seen first.
    replay: Mutex<Vec<Key>>,
    /// How many of them fit in the block cache (replaying more would evict
    /// the first ones).
    replay_max: usize,
    recorder: Option<Mutex<Recorder>>,
    profile: Option<File>,
    node: Option<NodeCache>,
    tx: SyncSender<Msg>,
    rx: Mutex<Option<Receiver<Msg>>>,
}

impl std::fmt::Debug for Cold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cold")
            .field("replay", &lock(&self.replay).len())
            .field("node", &self.node)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cold {
    /// The helpers `settings` ask for, for an image of `identity` with
    /// blocks of `block_size` and a block cache of `cache_bytes`. What
    /// cannot be had (a directory that cannot be made, another user's) is
    /// left out with a line in the log: it is only an optimisation.
    pub fn open(
        settings: &ColdSettings,
        identity: &Identity,
        block_size: u32,
        cache_bytes: u64,
    ) -> Option<Cold> {
        let mut replay = Vec::new();
        let mut recorder = None;
        let mut profile_file = None;
        if let Some(dir) = &settings.profile_dir {
            // Private, as rfake's cache is (the warm mounts' secret is
            // refused in a directory others may enter).
            let made = {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
            };
            if let Err(e) = made {
                log::debug!("prefetch profiles: {}: {e}", dir.display());
            } else if let Some((keys, file)) =
                profile::open(&dir.join(identity.profile_name()), &identity.content)
            {
                recorder = Some(Mutex::new(Recorder::new(identity.content, &keys)));
                replay = keys;
                profile_file = Some(file);
            }
        }
        let node = settings.node_cache.as_ref().and_then(|(dir, max)| {
            match NodeCache::open(dir, &identity.node_name(), *max, block_size) {
                Ok(c) => Some(c),
                Err(e) => {
                    log::warn!(
                        "node cache {}: {e}; not used",
                        NodeCache::describe(dir, &identity.node_name()).display()
                    );
                    None
                }
            }
        });
        if recorder.is_none() && node.is_none() {
            return None;
        }
        let (tx, rx) = sync_channel(QUEUE);
        Some(Cold {
            replay: Mutex::new(replay),
            replay_max: (cache_bytes / u64::from(block_size.max(1))) as usize / 4 * 3,
            recorder,
            profile: profile_file,
            node,
            tx,
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Attach to `fs` (the image at `offset` in `file`) what `settings`
    /// ask for and can be had.
    pub fn attach(
        fs: &mut ImageFs,
        file: &File,
        offset: u64,
        settings: &ColdSettings,
        cache_bytes: u64,
    ) {
        let info = fs.super_info();
        let identity = match Identity::of(file, offset, info.bytes_used) {
            Ok(id) => id,
            Err(e) => {
                log::debug!("image identity: {e}; no prefetch profile or node cache");
                return;
            }
        };
        if let Some(cold) = Cold::open(settings, &identity, info.block_size, cache_bytes) {
            fs.set_cold(cold);
        }
    }

    /// The descriptors the server must keep.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut out: Vec<RawFd> = self.profile.iter().map(|f| f.as_raw_fd()).collect();
        if let Some(n) = &self.node {
            out.extend(n.fds());
        }
        out
    }

    /// Block `key` was used (from the block cache or not). Only a
    /// payload's reads are recorded: not the read-ahead's or the replay's
    /// (the prefetch threads', [`ImageFs::prefetch`]).
    pub fn seen(&self, key: Key) {
        if let Some(r) = &self.recorder
            && std::thread::current().name() != Some(super::prefetch::THREAD_NAME)
            && let Some(record) = lock(r).note(key)
        {
            self.send(Msg::Seen(record));
        }
    }

    /// Block `key` from the node cache, if it holds it.
    pub fn get(&self, key: Key) -> Option<Arc<[u8]>> {
        self.node.as_ref()?.get(key)
    }

    /// Block `key` was decompressed: to be kept in the node cache.
    pub fn decompressed(&self, key: Key, data: &Arc<[u8]>) {
        if self.node.is_some() {
            self.send(Msg::Block(key, data.clone()));
        }
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => log::debug!("cold-start queue full: dropped"),
        }
    }

    /// The background thread's work: write what the queue brings.
    fn drain(&self, rx: Receiver<Msg>) {
        let mut records = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(msg) = next {
                match msg {
                    Msg::Seen(r) => records.extend_from_slice(&r),
                    Msg::Block(key, data) => {
                        if let Some(n) = &self.node
                            && let Err(e) = n.put(key, &data)
                        {
                            log::debug!("node cache: storing a block: {e}");
                        }
                    }
                }
                next = rx.try_recv().ok();
            }
            if let Some(mut f) = self.profile.as_ref()
                && !records.is_empty()
            {
                // One write per batch: appends of servers at once do not
                // interleave within it.
                if let Err(e) = f.write_all(&records) {
                    log::debug!("prefetch profile: {e}");
                }
                records.clear();
            }
        }
    }
}

impl ImageFs {
    /// Attach the cold-start helpers (before the server starts).
    pub fn set_cold(&mut self, cold: Cold) {
        self.cold = Some(cold);
    }

    /// The descriptors the cold-start helpers need kept open.
    pub fn cold_fds(&self) -> Vec<RawFd> {
        self.cold.as_ref().map(Cold::fds).unwrap_or_default()
    }

    /// In the server: start the helpers' threads: the writer, and the
    /// replay of the profile.
    pub fn start_cold(fs: &Arc<ImageFs>) {
        let Some(cold) = &fs.cold else {
            return;
        };
        if let Some(rx) = lock(&cold.rx).take() {
            let fs = fs.clone();
            let _ = std::thread::Builder::new()
                .name("rfake-cold-write".into())
                .spawn(move || {
                    if let Some(c) = &fs.cold {
                        c.drain(rx)
                    }
                });
        }
        let mut keys = std::mem::take(&mut *lock(&cold.replay));
        keys.truncate(cold.replay_max);
        if !keys.is_empty() {
            log::debug!("prefetch profile: replaying {} blocks", keys.len());
            fs.prefetch(keys);
        }
    }

    /// Whether cold-start helpers are attached.
    pub fn has_cold(&self) -> bool {
        self.cold.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::{self, Filesystem};
    use crate::squashfs::{Compression, test_image};

    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < until, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn identity(path: &std::path::Path) -> Identity {
        let file = File::open(path).unwrap();
        let fs = ImageFs::open(file.try_clone().unwrap(), 0, 0, "test").unwrap();
        Identity::of(&file, 0, fs.super_info().bytes_used).unwrap()
    }

    /// A copy has the same content identity (its profile is found) but not
    /// the same node cache; another image has neither.
    #[test]
    fn a_copy_shares_the_profile_not_the_node_cache() {
        let dir = tempfile::tempdir().unwrap();
        let img = test_image::fixture_with(dir.path(), Compression::Gzip);
        let copy = dir.path().join("copy.sqfs");
        std::fs::copy(&img, &copy).unwrap();
        let (a, b) = (identity(&img), identity(&copy));
        assert_eq!(a, identity(&img));
        assert_eq!(a.content, b.content);
        assert_ne!(a.node, b.node);
        let other = tempfile::tempdir().unwrap();
        let zstd = test_image::fixture_with(other.path(), Compression::Zstd);
        assert_ne!(identity(&zstd).content, a.content);
    }

    /// Open the fixture with the cold-start helpers, as the server does.
    fn open(img: &std::path::Path, settings: &ColdSettings) -> Arc<ImageFs> {
        let file = File::open(img).unwrap();
        let mut fs = ImageFs::open(file.try_clone().unwrap(), 0, 1 << 20, "test").unwrap();
        Cold::attach(&mut fs, &file, 0, settings, 1 << 20);
        assert!(fs.has_cold());
        let fs = fs.into_shared();
        ImageFs::start_cold(&fs);
        fs
    }

    fn read(fs: &ImageFs, name: &[u8]) -> (u64, Vec<u8>) {
        let (node, attr) = fs.lookup(fuse::ROOT, name).unwrap().unwrap();
        let mut out = Vec::new();
        fs.read(node, 0, attr.size as usize, &mut out).unwrap();
        (node - 2, out)
    }

    /// The first mount records its reads and fills the node cache; the
    /// next replays the profile (blocks cached before any read) and reads
    /// the same bytes from the node cache.
    #[test]
    fn the_next_mount_replays_the_profile_and_reads_the_node_cache() {
        let dir = tempfile::tempdir().unwrap();
        let img = test_image::fixture_with(dir.path(), Compression::Gzip);
        let settings = ColdSettings {
            profile_dir: Some(dir.path().join("profiles")),
            node_cache: Some((dir.path().join("shm/rfake-1"), 1 << 30)),
        };
        std::fs::create_dir(dir.path().join("shm")).unwrap();
        let first = open(&img, &settings);
        let (iref, whole) = read(&first, b"big.bin");
        let id = identity(&img);
        let profile = dir.path().join("profiles").join(id.profile_name());
        let node_dir = dir.path().join("shm/rfake-1").join(id.node_name());
        let full = |iref| (0..3).map(move |i| (iref, i));
        eventually("the profile holds the blocks read", || {
            let bytes = std::fs::read(&profile).unwrap();
            match profile::parse(&bytes, &id.content) {
                profile::Parsed::Keys(keys) => full(iref).all(|k| keys.contains(&k)),
                profile::Parsed::Foreign => false,
            }
        });
        eventually("the node cache holds them", || {
            std::fs::read_dir(&node_dir).map_or(0, |d| d.count()) >= 3
        });
        drop(first);
        // A fresh mount: its block cache is empty until the replay.
        let second = open(&img, &settings);
        eventually("the profile's blocks are replayed", || {
            full(iref).all(|k| second.is_cached(k))
        });
        assert!(read(&second, b"big.bin").1 == whole);
    }
}
