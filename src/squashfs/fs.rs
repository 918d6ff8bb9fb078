//! A SquashFS served by node ID, for rfake's FUSE server
//! ([`crate::fuse::Filesystem`]).
//!
//! - **Node IDs are inode references** (the 48-bit position of an inode in
//!   the inode table), shifted by 2, and the root is 1: stable, stateless
//!   (no table to fill on lookup, nothing to forget), and hard links,
//!   which share one inode, share one node.
//! - **Decoding happens once**: inodes and whole directory listings are
//!   kept after their first use (bounded counts), so a lookup is a binary
//!   search in memory.
//! - **Decompressed data blocks and fragment blocks are cached** in a
//!   bounded LRU shared by all threads (squashfuse decompresses a block
//!   again for every read that touches it). A fragment block holds the
//!   tails of many small files, so it is cached whole, by its index in the
//!   fragment table, and decompressed once for all of them.
//! - **Decompression off the payload's path**: once the image is shared
//!   ([`ImageFs::into_shared`]), a read of block N of a file queues the
//!   next [`READ_AHEAD_BLOCKS`] for a small pool of background threads
//!   (`prefetch.rs`), and [`ImageFs::prefetch`] queues any list of blocks
//!   (a recorded profile). A block is decompressed by one thread at a time:
//!   a reader that asks for one in flight waits for it.
//! - **Threads**: libsquashfs readers have state (the current metadata
//!   block, a decompressor stream), so each request borrows a private set
//!   from a pool; the image file is only read with `pread`.
//! - **The image is untrusted**: the table indexes are checked when it is
//!   opened ([`Layout`]), each inode's sizes before it is decoded, each
//!   listing's names, each block's place (inside the data area) and size.
//!   Fragment and xattr ID entries are looked up one at a time, never
//!   read as a whole table sized by a count. A failure is EIO and one log
//!   line naming the table (the first 20; then they are counted).

use std::collections::HashMap;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use lru::LruCache;

use super::file::SqfsFile;
use super::inode::{MAX_NAME, read_inode};
use super::layout::Layout;
use super::meta::{META_BLOCK, MetaReader};
use super::obj::{Malloced, Obj, check};
use super::prefetch::{self, InFlight, Pool};
use super::read::{decompressor, kind_of, nlink_and_size, open_super, symlink_target};
use super::xattr::{self, XattrReaders};
use super::{EntryKind, SqfsError, SuperInfo, ffi};
use crate::fuse::{self, Attr, Dir, DirEntry, Errno, FsStats};

/// Inodes kept decoded (about 200 bytes each, and a file's block list);
/// past this the cache starts over. The kernel keeps what it was told for
/// the life of the mount, so these caches serve first accesses only, and
/// they stay out of the memory budget's way (16 MiB besides
/// `image_cache_size`).
const MAX_NODES: usize = 1 << 15;
/// Bytes of block lists kept in decoded inodes; past this the cache
/// starts over (a single larger one is still kept).
const MAX_NODE_BYTES: usize = 64 << 20;
/// Directory entries kept decoded, over all cached listings (about 80 bytes
/// each); past this the cache starts over.
const MAX_DIR_ENTRIES: usize = 1 << 16;
/// Errors written to the log; later ones are only counted.
const MAX_LOGGED_ERRORS: u32 = 20;
/// The "inode reference" under which fragment blocks are cached, by their
/// index (no inode has it: references are 48 bits).
pub const FRAGMENT_BLOCKS: u64 = u64::MAX;
/// Bit 24 of a block's on-disk size: stored uncompressed.
const UNCOMPRESSED: u32 = 1 << 24;
/// When a file's block is read, the kernel is told that this many of its
/// next blocks will be needed too (read-ahead of the image, which may sit
/// on a slow or distributed file system).
const READ_AHEAD_BLOCKS: usize = 8;
/// A file's block positions are kept for every this many blocks; the
/// others are summed from the sizes in between.
const CHECKPOINT: usize = 64;

/// Names a decompressed block of an image: (inode reference, block index)
/// for a file's full data block, ([`FRAGMENT_BLOCKS`], fragment index) for
/// a fragment block. Stable for an image (it names places in it), so a
/// list of them recorded on one mount can be replayed on another
/// ([`ImageFs::prefetch`]). The node ID [`ImageFs`] serves a file under is
/// its inode reference + 2 (the root's is 1).
pub type BlockKey = (u64, u32);

/// Decompressed blocks by [`BlockKey`].
type BlockCache = LruCache<BlockKey, Arc<[u8]>>;

/// Where a file's tail lives: fragment block `index`, from byte `offset`.
#[derive(Debug, Clone, Copy)]
struct Tail {
    index: u32,
    offset: u32,
}

/// A decoded inode, shared between threads.
pub(super) struct Inode {
    pub(super) inode: Malloced<ffi::sqfs_inode_generic_t>,
    pub(super) attr: Attr,
    /// A file's full data blocks: their size words (on-disk size; bit 24:
    /// stored uncompressed; 0: a hole) are the inode's own list; this is
    /// where every [`CHECKPOINT`]-th one starts in the image. The
    /// fragment tail, if any, follows them.
    checkpoints: Box<[u64]>,
    block_count: usize,
    tail: Option<Tail>,
}

// SAFETY: the inode memory is written once by libsquashfs when decoded and
// only read afterwards; nothing in it is tied to a thread.
unsafe impl Send for Inode {}
// SAFETY: as above: shared, read-only.
unsafe impl Sync for Inode {}

impl Inode {
    /// The size words of the file's blocks.
    fn sizes(&self) -> &[u32] {
        // SAFETY: `decode` checked that libsquashfs decoded `block_count`
        // size words after the inode (payload_bytes_used).
        unsafe { self.inode.extra.as_slice(self.block_count) }
    }

    /// Where block `index` (< `block_count`) starts, and its size word.
    fn block_at(&self, index: usize) -> (u64, u32) {
        let sizes = self.sizes();
        let first = index / CHECKPOINT * CHECKPOINT;
        let at = sizes[first..index]
            .iter()
            .fold(self.checkpoints[index / CHECKPOINT], |at, &w| {
                at.saturating_add(u64::from(w & (UNCOMPRESSED - 1)))
            });
        (at, sizes[index])
    }

    /// Bytes the node holds besides its fixed part.
    fn weight(&self) -> usize {
        self.inode.payload_bytes_used as usize + self.checkpoints.len() * 8
    }
}

/// One thread's metadata readers: each holds raw pointers to the image
/// file and to the decompressor of its [`Readers`].
struct MetaReaders {
    inodes: MetaReader,
    dirs: MetaReader,
    fragments: Option<MetaReader>,
    xattrs: Option<XattrReaders>,
}

/// One thread's readers and decompressors. The readers use `cmp`: they are
/// dropped first, by [`Drop`], whatever the order of the fields.
struct Readers {
    meta: ManuallyDrop<MetaReaders>,
    cmp: Obj<ffi::sqfs_compressor_t>,
    /// For gzip images: data and fragment blocks are zlib streams, which
    /// libdeflate inflates about 2.5 times as fast as zlib (measured on
    /// 128 KiB blocks of a python binary; docs/launch.md).
    inflate: Option<libdeflater::Decompressor>,
}

impl Drop for Readers {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before `cmp` (dropped after this
        // returns), which the readers point to.
        unsafe { ManuallyDrop::drop(&mut self.meta) };
    }
}

// SAFETY: libsquashfs objects hold no thread-affine state; a `Readers` is
// used by one thread at a time (taken out of the pool).
unsafe impl Send for Readers {}

/// Lock a mutex even if a panicking thread poisoned it (the caches stay
/// consistent: every update is a single insert).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A name a directory listing may hold: not empty, not "." or "..", no
/// "/" or NUL, at most 256 bytes (what a path component can be, and what
/// SquashFS can store).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() as u64 <= MAX_NAME
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// A SquashFS image (at an offset in its file) served by node ID.
pub struct ImageFs {
    /// The readers use the super block and the file: dropped first, by
    /// [`Drop`], whatever the order of the fields.
    pool: ManuallyDrop<Mutex<Vec<Readers>>>,
    /// Decoded inodes, and the bytes their block lists take.
    nodes: Mutex<(HashMap<u64, Arc<Inode>>, usize)>,
    /// Decoded listings, and how many entries they hold in all.
    dirs: Mutex<(HashMap<u64, Arc<Dir>>, usize)>,
    /// Decompressed blocks by (inode reference, block index).
    blocks: Option<Mutex<BlockCache>>,
    ids: Vec<u32>,
    layout: Layout,
    root_ref: u64,
    sb: Box<ffi::sqfs_super_t>,
    file: SqfsFile,
    /// For log messages.
    name: String,
    errors: AtomicU32,
    /// Blocks being decompressed.
    flight: InFlight,
    /// The background threads' queue.
    prefetcher: Arc<Pool>,
    /// This image as the background threads hold it: set by
    /// [`ImageFs::into_shared`] (and [`ImageFs::prefetch`]); until then,
    /// reads do not queue read-ahead.
    me: OnceLock<Weak<ImageFs>>,
    /// Background threads at most.
    threads: usize,
    /// Prefetch profile and node cache ([`super::cold`]).
    pub(super) cold: Option<super::cold::Cold>,
}

impl Drop for ImageFs {
    fn drop(&mut self) {
        // The background threads see it and end (they only hold a weak
        // reference between keys, so none is using this image now).
        self.prefetcher.close();
        // SAFETY: dropped once, here, before the super block and the file
        // (dropped after this returns), which the readers point to.
        unsafe { ManuallyDrop::drop(&mut self.pool) };
    }
}

// SAFETY: the super block is read-only after `open`; the file object is
// used only through `pread` callbacks and an error slot behind a mutex;
// everything else is behind mutexes or immutable.
unsafe impl Sync for ImageFs {}
// SAFETY: as above.
unsafe impl Send for ImageFs {}

impl ImageFs {
    /// Open the SquashFS at `offset` in `file` and check that its root
    /// directory can be read. `cache_bytes` bounds the block cache (0: no
    /// cache). `name` is used in log messages.
    pub fn open(file: File, offset: u64, cache_bytes: u64, name: &str) -> Result<Self, SqfsError> {
        Self::open_within(file, offset, None, cache_bytes, name)
    }

    /// [`ImageFs::open`] for a SquashFS that must fit in `len` bytes from
    /// `offset` (a SIF partition), if given.
    pub(super) fn open_within(
        file: File,
        offset: u64,
        len: Option<u64>,
        cache_bytes: u64,
        name: &str,
    ) -> Result<Self, SqfsError> {
        // The first libsquashfs call of a reader: load the library here, so
        // that a missing one is an error and not a panic behind.
        ffi::load()?;
        let (file, sb, layout) = open_super(file, offset, len)?;
        let ids = {
            let cmp = decompressor(&sb, file.as_ptr()).map_err(|e| file.explain(e))?;
            read_ids(&layout, file.as_ptr(), &cmp).map_err(|e| file.explain(e))?
        };
        let block_size = u64::from(sb.block_size.max(1));
        let blocks = NonZeroUsize::new((cache_bytes / block_size) as usize)
            .map(|n| Mutex::new(LruCache::new(n)));
        let fs = ImageFs {
            pool: ManuallyDrop::new(Mutex::new(Vec::new())),
            nodes: Mutex::new((HashMap::new(), 0)),
            dirs: Mutex::new((HashMap::new(), 0)),
            blocks,
            ids,
            layout,
            root_ref: sb.root_inode_ref,
            sb,
            file,
            name: name.to_owned(),
            errors: AtomicU32::new(0),
            flight: InFlight::default(),
            prefetcher: Arc::default(),
            me: OnceLock::new(),
            threads: prefetch::default_threads(),
            cold: None,
        };
        // The metadata (inode, directory, fragment, ID and xattr tables)
        // follows the data; every lookup reads it.
        fs.file.will_need(
            fs.sb.inode_table_start,
            fs.sb.bytes_used.saturating_sub(fs.sb.inode_table_start),
        );
        let root = fs.node(fs.root_ref)?;
        if root.attr.mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(SqfsError::NotDir { path: "/".into() });
        }
        fs.dir_of(fs.root_ref, &root)?;
        Ok(fs)
    }

    /// This image, shared, with read-ahead on background threads: a read
    /// of block N of a file queues blocks N+1.. (up to
    /// [`READ_AHEAD_BLOCKS`]) for them. The threads start at the first
    /// read or [`ImageFs::prefetch`], never before (call this after any
    /// fork).
    pub fn into_shared(self) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let _ = self.me.set(me.clone());
            self
        })
    }

    /// Decompress the blocks `keys` names into the block cache, in this
    /// order, on background threads (at most one fewer than the cores, 1
    /// to 4), and return at once. A hint: keys that name no block, or
    /// blocks that fail, are dropped silently (a read of them reports
    /// it); keys already waiting are not queued again; past
    /// 131,072 waiting keys the rest are dropped; blocks cached already
    /// cost a lookup. A payload's read of a block being decompressed
    /// waits for it rather than decompressing it twice. Read-ahead keys
    /// go before these. Nothing happens without a block cache.
    pub fn prefetch(self: &Arc<Self>, keys: impl IntoIterator<Item = BlockKey>) {
        if self.blocks.is_none() {
            return;
        }
        let me = self.me.get_or_init(|| Arc::downgrade(self));
        self.prefetcher.push(me, self.threads, keys, false);
    }

    /// Whether `key` is in the block cache (no LRU update).
    pub fn is_cached(&self, key: BlockKey) -> bool {
        self.blocks.as_ref().is_some_and(|c| lock(c).contains(&key))
    }

    /// Decompress `key`'s block into the cache (a background thread's
    /// work): nothing if it is there already or names no block.
    pub(super) fn warm(&self, key: BlockKey) {
        if self.blocks.is_none() || self.is_cached(key) {
            return;
        }
        let (iref, index) = key;
        if iref == FRAGMENT_BLOCKS {
            if u64::from(index) < self.layout.fragment_count() {
                let _ = self.fragment_block(index);
            }
            return;
        }
        // A key from a profile may name anything: only a file's full
        // blocks are read.
        if let Ok(node) = self.node(iref)
            && node.attr.mode & libc::S_IFMT == libc::S_IFREG
            && (index as usize) < node.block_count
        {
            let _ = self.block(iref, &node, index);
        }
    }

    /// Queue the blocks after `index` of the file `node` for the background
    /// threads, if the image is shared.
    fn read_ahead(&self, iref: u64, node: &Inode, index: usize) {
        let Some(me) = self.me.get() else { return };
        if self.blocks.is_none() {
            return;
        }
        let ahead = index + 1..(index + 1 + READ_AHEAD_BLOCKS).min(node.block_count);
        let keys = ahead
            .map(|i| (iref, i as u32))
            .filter(|&k| !self.is_cached(k));
        self.prefetcher.push(me, self.threads, keys, true);
    }

    /// Queue a file's first block, or the fragment block holding its
    /// tail, for the background threads, if the image is shared: a file
    /// looked up is nearly always opened and read next (an exec, a
    /// library, a Python module), and the lookup comes a few system calls
    /// before the first read.
    fn read_ahead_file(&self, iref: u64, node: &Inode) {
        let Some(me) = self.me.get() else { return };
        if self.blocks.is_none() {
            return;
        }
        let key = if node.block_count > 0 {
            (iref, 0)
        } else if let Some(tail) = node.tail {
            (FRAGMENT_BLOCKS, tail.index)
        } else {
            return;
        };
        if !self.is_cached(key) {
            self.prefetcher.push(me, self.threads, [key], true);
        }
    }

    /// The descriptor the image is read through.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.raw_fd()
    }

    /// Facts from the super block.
    pub(super) fn super_info(&self) -> SuperInfo {
        let sb = &self.sb;
        SuperInfo {
            compression: super::read::compression_name(sb.compression_id),
            block_size: sb.block_size,
            inode_count: sb.inode_count,
            bytes_used: sb.bytes_used,
            mtime: sb.modification_time,
            flags: sb.flags,
            fragment_count: sb.fragment_entry_count,
            id_count: sb.id_count,
        }
    }

    fn new_readers(&self) -> Result<Readers, SqfsError> {
        let sb = &*self.sb;
        let fp = self.file.as_ptr();
        let layout = &self.layout;
        let cmp = decompressor(sb, fp)?;
        // The readers keep `fp` and `cmp`, which outlive them (field order
        // here and in `ImageFs`).
        let inodes = MetaReader::new(fp, &cmp, layout.inodes.clone(), "inode table")?;
        let dirs = MetaReader::new(fp, &cmp, layout.dirs.clone(), "directory table")?;
        let fragments = match &layout.fragments {
            Some(t) => Some(MetaReader::new(
                fp,
                &cmp,
                t.extent.clone(),
                "fragment table",
            )?),
            None => None,
        };
        let xattrs = match &layout.xattrs {
            Some(x) => Some(XattrReaders::new(fp, &cmp, x)?),
            None => None,
        };
        let inflate =
            (sb.compression_id == ffi::SQFS_COMP_GZIP as u16).then(libdeflater::Decompressor::new);
        Ok(Readers {
            meta: ManuallyDrop::new(MetaReaders {
                inodes,
                dirs,
                fragments,
                xattrs,
            }),
            cmp,
            inflate,
        })
    }

    /// Run `f` with a set of readers of this thread's own.
    fn with_readers<T>(
        &self,
        f: impl FnOnce(&mut Readers) -> Result<T, SqfsError>,
    ) -> Result<T, SqfsError> {
        let taken = lock(&self.pool).pop();
        let mut readers = match taken {
            Some(r) => r,
            None => self.new_readers().map_err(|e| self.file.explain(e))?,
        };
        let result = f(&mut readers).map_err(|e| self.file.explain(e));
        lock(&self.pool).push(readers);
        result
    }

    fn node_id(&self, iref: u64) -> u64 {
        if iref == self.root_ref {
            fuse::ROOT
        } else {
            iref + 2
        }
    }

    fn inode_ref(&self, node: u64) -> Result<u64, Errno> {
        match node {
            fuse::ROOT => Ok(self.root_ref),
            0 => Err(libc::EINVAL),
            n => Ok(n - 2),
        }
    }

    /// Report a failure once in the log (up to a limit) and turn it into
    /// the errno the caller sees.
    fn failed(&self, e: SqfsError) -> Errno {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < MAX_LOGGED_ERRORS {
            log::error!("image {}: {e}", self.name);
        } else if n == MAX_LOGGED_ERRORS {
            log::error!("image {}: more errors; not showing them", self.name);
        }
        libc::EIO
    }

    /// The decoded inode at reference `iref`.
    pub(super) fn node(&self, iref: u64) -> Result<Arc<Inode>, SqfsError> {
        if let Some(n) = lock(&self.nodes).0.get(&iref) {
            return Ok(n.clone());
        }
        let inode =
            self.with_readers(|r| read_inode(&mut r.meta.inodes, &self.sb, &self.layout, iref))?;
        let node = Arc::new(self.decode(inode, iref)?);
        let mut cache = lock(&self.nodes);
        let (nodes, bytes) = &mut *cache;
        if nodes.len() >= MAX_NODES || *bytes + node.weight() > MAX_NODE_BYTES {
            nodes.clear();
            *bytes = 0;
        }
        if nodes.insert(iref, node.clone()).is_none() {
            *bytes += node.weight();
        }
        Ok(node)
    }

    fn decode(
        &self,
        inode: Malloced<ffi::sqfs_inode_generic_t>,
        iref: u64,
    ) -> Result<Inode, SqfsError> {
        let corrupt = |detail: String| {
            SqfsError::corrupt("inode table", format!("the inode at {iref:#x}: {detail}"))
        };
        let kind = kind_of(&inode)
            .ok_or_else(|| corrupt(format!("unknown inode type {}", inode.base.type_)))?;
        let id = |idx: u16| {
            self.ids.get(usize::from(idx)).copied().ok_or_else(|| {
                corrupt(format!(
                    "ID index {idx}, the ID table has {} entries",
                    self.ids.len()
                ))
            })
        };
        let (nlink, size) = nlink_and_size(&inode);
        let rdev = match kind {
            // SAFETY: device inodes use the `dev`/`dev_ext` member; both
            // start with nlink, devno.
            EntryKind::CharDev | EntryKind::BlockDev => {
                // SAFETY: as above: the member of this inode's kind.
                let devno = unsafe { inode.data.dev.devno };
                // The kernel's "new" encoding: 12 bits major, 20 minor.
                let major = (devno >> 8) & 0xfff;
                let minor = (devno & 0xff) | ((devno >> 12) & 0xfff00);
                libc::makedev(major, minor)
            }
            _ => 0,
        };
        let (checkpoints, block_count, tail) = if kind == EntryKind::File {
            let mut frag_index = 0;
            let mut frag_offset = 0;
            let mut location = 0;
            // SAFETY: a file inode; the outputs are plain integers.
            let ret = unsafe {
                match ffi::lib().sqfs_inode_get_frag_location(
                    &*inode,
                    &mut frag_index,
                    &mut frag_offset,
                ) {
                    0 => ffi::lib().sqfs_inode_get_file_block_start(&*inode, &mut location),
                    err => err,
                }
            };
            check(ret, || format!("reading the inode at {iref:#x}"))?;
            // libsquashfs decoded this many size words after the inode, as
            // many as the file size asks for (checked against the inode
            // table before it read them).
            let count = inode.payload_bytes_used as usize / 4;
            // SAFETY: as above.
            let sizes = unsafe { inode.extra.as_slice(count) };
            let mut checkpoints = Vec::with_capacity(count.div_ceil(CHECKPOINT));
            for (n, &word) in sizes.iter().enumerate() {
                if n % CHECKPOINT == 0 {
                    checkpoints.push(location);
                }
                location = location.saturating_add(u64::from(word & (UNCOMPRESSED - 1)));
            }
            let tail = (frag_index != u32::MAX && size % u64::from(self.sb.block_size) != 0)
                .then_some(Tail {
                    index: frag_index,
                    offset: frag_offset,
                });
            (checkpoints.into_boxed_slice(), count, tail)
        } else {
            (Box::default(), 0, None)
        };
        let attr = Attr {
            ino: u64::from(inode.base.inode_number),
            mode: u32::from(inode.base.mode & 0o7777) | kind.type_bits(),
            nlink,
            uid: id(inode.base.uid_idx)?,
            gid: id(inode.base.gid_idx)?,
            size,
            mtime: i64::from(inode.base.mod_time),
            rdev,
        };
        Ok(Inode {
            inode,
            attr,
            checkpoints,
            block_count,
            tail,
        })
    }

    /// The listing of the directory `node` (at reference `iref`).
    pub(super) fn dir_of(&self, iref: u64, node: &Inode) -> Result<Arc<Dir>, SqfsError> {
        if let Some(d) = lock(&self.dirs).0.get(&iref) {
            return Ok(d.clone());
        }
        let inode = &*node.inode;
        // SAFETY: the directory members share their `parent_inode` field
        // meaning; the type picks the member (inode.h).
        let parent_ino = unsafe {
            if u32::from(inode.base.type_) == ffi::SQFS_INODE_EXT_DIR {
                inode.data.dir_ext.parent_inode
            } else {
                inode.data.dir.parent_inode
            }
        };
        let what = || format!("the directory at {iref:#x}");
        let mut entries = self.with_readers(|r| {
            // SAFETY: all-zero is a valid state to initialize.
            let mut state: ffi::sqfs_readdir_state_t = unsafe { std::mem::zeroed() };
            // SAFETY: a directory inode and the live super block.
            let ret = unsafe { ffi::lib().sqfs_readdir_state_init(&mut state, &*self.sb, inode) };
            check(ret, || format!("opening {}", what()))?;
            // The inode's listing size (checked against the directory table
            // when the inode was read) bounds this loop: each entry takes
            // at least 9 bytes of it.
            let mut entries = Vec::new();
            loop {
                let mut ent = std::ptr::null_mut();
                let mut inum = 0;
                let mut child = 0;
                // SAFETY: a live reader and state; `ent` receives a fresh
                // entry that we free.
                let ret = unsafe {
                    ffi::lib().sqfs_meta_reader_readdir(
                        r.meta.dirs.as_ptr(),
                        &mut state,
                        &mut ent,
                        &mut inum,
                        &mut child,
                    )
                };
                if ret < 0 {
                    return Err(r.meta.dirs.fail(ret, what));
                }
                if ret > 0 {
                    break;
                }
                // SAFETY: on success `ent` is ours to free.
                let Some(ent) = (unsafe { Malloced::from_raw(ent) }) else {
                    break;
                };
                // SAFETY: a decoded entry has `size + 1` name bytes.
                let name = unsafe {
                    std::slice::from_raw_parts(ent.name.as_ptr(), usize::from(ent.size) + 1)
                };
                if !valid_name(name) {
                    return Err(r.meta.dirs.corrupt(format!(
                        "{}: an entry named {:?}",
                        what(),
                        String::from_utf8_lossy(name)
                    )));
                }
                let kind = match u32::from(ent.type_) {
                    ffi::SQFS_INODE_DIR => libc::S_IFDIR,
                    ffi::SQFS_INODE_FILE => libc::S_IFREG,
                    ffi::SQFS_INODE_SLINK => libc::S_IFLNK,
                    ffi::SQFS_INODE_BDEV => libc::S_IFBLK,
                    ffi::SQFS_INODE_CDEV => libc::S_IFCHR,
                    ffi::SQFS_INODE_FIFO => libc::S_IFIFO,
                    ffi::SQFS_INODE_SOCKET => libc::S_IFSOCK,
                    other => {
                        return Err(r.meta.dirs.corrupt(format!(
                            "{}: entry {:?} has type {other}",
                            what(),
                            String::from_utf8_lossy(name)
                        )));
                    }
                };
                entries.push(DirEntry {
                    name: name.into(),
                    node: self.node_id(child),
                    attr_ino: u64::from(inum),
                    kind,
                });
            }
            Ok(entries)
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let dir = Arc::new(Dir {
            ino: node.attr.ino,
            parent_ino: u64::from(parent_ino),
            entries,
        });
        let mut cache = lock(&self.dirs);
        let (dirs, entries) = &mut *cache;
        if *entries + dir.entries.len() > MAX_DIR_ENTRIES {
            dirs.clear();
            *entries = 0;
        }
        if dirs.insert(iref, dir.clone()).is_none() {
            *entries += dir.entries.len();
        }
        Ok(dir)
    }

    /// The cached block under `key`, or `load`'s, which is then cached. If
    /// another thread is loading it, wait for that and look again.
    fn cached(
        &self,
        key: BlockKey,
        load: impl FnOnce() -> Result<Arc<[u8]>, SqfsError>,
    ) -> Result<Arc<[u8]>, SqfsError> {
        let cold = self.cold.as_ref();
        cold.inspect(|c| c.seen(key));
        let _claim = loop {
            if let Some(cache) = &self.blocks
                && let Some(b) = lock(cache).get(&key)
            {
                return Ok(b.clone());
            }
            if self.blocks.is_none() {
                break None;
            }
            if let Some(claim) = self.flight.claim(key) {
                break Some(claim);
            }
        };
        let data = match cold.and_then(|c| c.get(key)) {
            Some(data) => data,
            None => load()?,
        };
        cold.inspect(|c| c.decompressed(key, &data));
        if let Some(cache) = &self.blocks {
            lock(cache).put(key, data.clone());
        }
        Ok(data)
    }

    /// Full data block `index` of a file, decompressed.
    fn block(&self, iref: u64, node: &Inode, index: u32) -> Result<Arc<[u8]>, SqfsError> {
        self.cached((iref, index), || {
            let index = index as usize;
            let (at, word) = node.block_at(index);
            // A file's blocks are stored one after the other: the next
            // ones are likely wanted soon.
            let ahead = index + 1..(index + 1 + READ_AHEAD_BLOCKS).min(node.block_count);
            if !ahead.is_empty() {
                let (first, _) = node.block_at(ahead.start);
                let (last, last_word) = node.block_at(ahead.end - 1);
                let end = last.saturating_add(u64::from(last_word & (UNCOMPRESSED - 1)));
                self.file.will_need(first, end.saturating_sub(first));
            }
            let block_size = u64::from(self.sb.block_size);
            // Only the last block of a file without a tail is short.
            let len = (node.attr.size.saturating_sub(index as u64 * block_size)).min(block_size);
            let what = || format!("block {index} of inode {}", node.attr.ino);
            self.read_block(at, word, Some(len as usize), &what)
        })
    }

    /// Entry `index` of the fragment table: where the fragment block is,
    /// and its size word.
    fn fragment(&self, index: u32) -> Result<(u64, u32), SqfsError> {
        let table = "fragment table";
        let located = self
            .layout
            .fragments
            .as_ref()
            .and_then(|t| t.locate(u64::from(index)));
        let Some((block, offset)) = located else {
            return Err(SqfsError::corrupt(
                table,
                format!(
                    "fragment {index} is asked for, the table has {} entries",
                    self.layout.fragment_count()
                ),
            ));
        };
        self.with_readers(|r| {
            let m = r
                .meta
                .fragments
                .as_mut()
                .expect("a fragment table has a reader");
            m.seek(block, offset)?;
            let start = m.u64()?;
            let size = m.u32()?;
            Ok((start, size))
        })
        .map_err(|e| e.about(format!("entry {index}")))
    }

    /// Fragment block `index`, decompressed: the tails of the files in it.
    fn fragment_block(&self, index: u32) -> Result<Arc<[u8]>, SqfsError> {
        self.cached((FRAGMENT_BLOCKS, index), || {
            let (at, word) = self.fragment(index)?;
            let what = || format!("fragment block {index}");
            self.read_block(at, word, None, &what)
        })
    }

    /// The block stored at `at` with size word `word`, decompressed;
    /// `len`: the size it must have (a fragment block's is not known).
    fn read_block(
        &self,
        at: u64,
        word: u32,
        len: Option<usize>,
        what: &dyn Fn() -> String,
    ) -> Result<Arc<[u8]>, SqfsError> {
        let corrupt =
            |detail: String| SqfsError::corrupt("file data", format!("{}: {detail}", what()));
        let stored = word & (UNCOMPRESSED - 1);
        let block_size = self.sb.block_size as usize;
        if stored == 0 {
            // A hole: a block of zeros that takes no space.
            return Ok(Arc::from(vec![0u8; len.unwrap_or(block_size)]));
        }
        if stored as usize > block_size {
            return Err(corrupt(format!("{stored} bytes on disk")));
        }
        let end = at.saturating_add(u64::from(stored));
        if at < self.layout.data.start || end > self.layout.data.end {
            return Err(corrupt(format!(
                "it spans {at}..{end}, outside the data area ({}..{})",
                self.layout.data.start, self.layout.data.end
            )));
        }
        let mut raw = vec![0u8; stored as usize];
        let fp = self.file.as_ptr();
        // SAFETY: the file object's own read callback, with a buffer of
        // `stored` writable bytes.
        let ret = unsafe {
            let read_at = (*fp).read_at.expect("the file object reads");
            read_at(fp, at, raw.as_mut_ptr().cast(), raw.len())
        };
        check(ret, || format!("reading {}", what())).map_err(|e| self.file.explain(e))?;
        let data = if word & UNCOMPRESSED != 0 {
            raw
        } else {
            self.with_readers(|r| {
                let mut out = vec![0u8; block_size];
                let n = match &mut r.inflate {
                    Some(inflate) => inflate
                        .zlib_decompress(&raw, &mut out)
                        .map_err(|e| corrupt(format!("inflating: {e}")))?,
                    None => {
                        let cmp = r.cmp.as_ptr();
                        // SAFETY: the thread's own decompressor; `raw` and
                        // `out` are valid for the lengths given.
                        let n = unsafe {
                            let do_block = (*cmp).do_block.expect("a compressor decompresses");
                            do_block(
                                cmp,
                                raw.as_ptr(),
                                stored,
                                out.as_mut_ptr(),
                                out.len() as u32,
                            )
                        };
                        usize::try_from(n).map_err(|_| {
                            corrupt(format!("decompressing: {}", super::code_name(n)))
                        })?
                    }
                };
                out.truncate(n);
                Ok(out)
            })?
        };
        match len {
            Some(len) if data.len() != len => {
                Err(corrupt(format!("{} bytes, not {len}", data.len())))
            }
            _ if data.is_empty() => Err(corrupt("empty".into())),
            _ => Ok(Arc::from(data)),
        }
    }

    /// The node for a node ID.
    pub(super) fn node_of(&self, node: u64) -> Result<(u64, Arc<Inode>), SqfsError> {
        let iref = self.inode_ref(node).map_err(|_| {
            SqfsError::corrupt("directory table", format!("node {node} does not exist"))
        })?;
        Ok((iref, self.node(iref)?))
    }

    fn lookup_node(&self, node: u64) -> Result<(u64, Arc<Inode>), Errno> {
        let iref = self.inode_ref(node)?;
        let n = self.node(iref).map_err(|e| self.failed(e))?;
        Ok((iref, n))
    }

    /// The extended attributes of `node`.
    pub(super) fn xattrs_of(&self, node: &Inode) -> Result<Vec<fuse::Xattr>, SqfsError> {
        let mut index = u32::MAX;
        // SAFETY: a complete inode; `index` receives its xattr index.
        let ret = unsafe { ffi::lib().sqfs_inode_get_xattr_index(&*node.inode, &mut index) };
        check(ret, || {
            format!("reading the xattr index of inode {}", node.attr.ino)
        })?;
        let Some(layout) = &self.layout.xattrs else {
            return Ok(Vec::new());
        };
        if index == u32::MAX {
            return Ok(Vec::new());
        }
        self.with_readers(|r| {
            let x = r.meta.xattrs.as_mut().expect("xattr tables have readers");
            xattr::read(x, layout, index)
        })
        .map_err(|e| e.about(format!("the xattrs of inode {}", node.attr.ino)))
    }

    /// Append up to `size` bytes of the file `node` (at reference `iref`)
    /// from `offset` on to `out`.
    pub(super) fn read_file(
        &self,
        iref: u64,
        n: &Inode,
        offset: u64,
        size: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SqfsError> {
        let block_size = u64::from(self.sb.block_size);
        let end = n.attr.size.min(offset.saturating_add(size as u64));
        let mut pos = offset;
        let corrupt = |pos: u64, detail: String| {
            SqfsError::corrupt(
                "file data",
                format!("inode {} at {pos}: {detail}", n.attr.ino),
            )
        };
        while pos < end {
            let index = pos / block_size;
            // The bytes from file offset `start` are `data[skip..limit]`.
            let (data, start, skip, limit) = if index < n.block_count as u64 {
                // Queued first, so the background threads work on the
                // next blocks while this thread decompresses this one.
                self.read_ahead(iref, n, index as usize);
                let data = self.block(iref, n, index as u32)?;
                let limit = data.len();
                (data, index * block_size, 0, limit)
            } else if let Some(tail) = n.tail {
                let data = self.fragment_block(tail.index)?;
                let start = n.block_count as u64 * block_size;
                let skip = tail.offset as usize;
                let limit = skip.saturating_add((n.attr.size - start) as usize);
                if limit > data.len() {
                    return Err(corrupt(
                        pos,
                        format!(
                            "fragment block {} is short ({} bytes)",
                            tail.index,
                            data.len()
                        ),
                    ));
                }
                (data, start, skip, limit)
            } else {
                return Err(corrupt(pos, "no block holds this offset".into()));
            };
            let within = skip + (pos - start) as usize;
            let take = ((end - pos) as usize).min(limit.saturating_sub(within));
            if take == 0 {
                return Err(corrupt(
                    pos,
                    format!("block {index} is short ({} bytes)", data.len()),
                ));
            }
            out.extend_from_slice(&data[within..within + take]);
            pos += take as u64;
        }
        Ok(())
    }

    /// The target of the symlink `node`.
    pub(super) fn link_target<'a>(&self, node: &'a Inode) -> &'a [u8] {
        symlink_target(&node.inode)
    }
}

/// The ID table: index → uid/gid (at most 65535 entries, in the blocks the
/// checked index lists).
fn read_ids(
    layout: &Layout,
    fp: *mut ffi::sqfs_file_t,
    cmp: &Obj<ffi::sqfs_compressor_t>,
) -> Result<Vec<u32>, SqfsError> {
    let table = &layout.ids;
    let mut m = MetaReader::new(fp, cmp, table.extent.clone(), "ID table")?;
    let mut raw = vec![0u8; (table.count * table.entry) as usize];
    for (chunk, &block) in raw.chunks_mut(META_BLOCK as usize).zip(&table.blocks) {
        m.seek(block, 0)?;
        m.read(chunk)?;
    }
    Ok(raw
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect())
}

impl fuse::Filesystem for ImageFs {
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Attr)>, Errno> {
        let dir = self.dir(parent)?;
        let Some(entry) = dir.find(name) else {
            return Ok(None);
        };
        let node = entry.node;
        let (iref, n) = self.lookup_node(node)?;
        if entry.kind == libc::S_IFREG {
            self.read_ahead_file(iref, &n);
        }
        Ok(Some((node, n.attr)))
    }

    fn getattr(&self, node: u64) -> Result<Attr, Errno> {
        Ok(self.lookup_node(node)?.1.attr)
    }

    fn readlink(&self, node: u64) -> Result<Vec<u8>, Errno> {
        let (_, n) = self.lookup_node(node)?;
        if n.attr.mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(libc::EINVAL);
        }
        Ok(self.link_target(&n).to_vec())
    }

    fn read(&self, node: u64, offset: u64, size: usize, out: &mut Vec<u8>) -> Result<(), Errno> {
        let (iref, n) = self.lookup_node(node)?;
        match n.attr.mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(libc::EISDIR),
            _ => return Err(libc::EINVAL),
        }
        self.read_file(iref, &n, offset, size, out)
            .map_err(|e| self.failed(e))
    }

    fn dir(&self, node: u64) -> Result<Arc<Dir>, Errno> {
        let (iref, n) = self.lookup_node(node)?;
        if n.attr.mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        self.dir_of(iref, &n).map_err(|e| self.failed(e))
    }

    fn xattrs(&self, node: u64) -> Result<Vec<fuse::Xattr>, Errno> {
        let (_, n) = self.lookup_node(node)?;
        self.xattrs_of(&n).map_err(|e| self.failed(e))
    }

    fn has_xattrs(&self) -> bool {
        self.layout.has_xattrs()
    }

    fn stats(&self) -> FsStats {
        FsStats {
            block_size: self.sb.block_size,
            blocks: self
                .sb
                .bytes_used
                .div_ceil(u64::from(self.sb.block_size.max(1))),
            files: u64::from(self.sb.inode_count),
        }
    }
}
