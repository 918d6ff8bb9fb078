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
//! - **Threads**: libsquashfs readers have state (the current metadata
//!   block, a decompressor stream), so each request borrows a private set
//!   from a pool; the image file is only read with `pread`.

use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use super::file::SqfsFile;
use super::obj::{Malloced, Obj, check};
use super::read::{
    decompressor, kind_of, nlink_and_size, open_super, read_ids, read_xattrs, symlink_target,
    xattr_reader,
};
use super::{EntryKind, SqfsError, ffi};
use crate::fuse::{self, Attr, Dir, DirEntry, Errno, FsStats};

/// Inodes kept decoded (about 200 bytes each); past this the cache starts
/// over. The kernel keeps what it was told for the life of the mount, so
/// these caches serve first accesses only, and they stay out of the memory
/// budget's way (16 MiB besides `image_cache_size`).
const MAX_NODES: usize = 1 << 15;
/// Directory entries kept decoded, over all cached listings (about 80 bytes
/// each); past this the cache starts over.
const MAX_DIR_ENTRIES: usize = 1 << 16;
/// Errors written to the log; later ones are only counted.
const MAX_LOGGED_ERRORS: u32 = 20;
/// The "inode reference" under which fragment blocks are cached, by their
/// index (no inode has it: references are 48 bits).
const FRAGMENT_BLOCKS: u64 = u64::MAX;
/// Bit 24 of a block's on-disk size: stored uncompressed.
const UNCOMPRESSED: u32 = 1 << 24;
/// When a file's block is read, the kernel is told that this many of its
/// next blocks will be needed too (read-ahead of the image, which may sit
/// on a slow or distributed file system).
const READ_AHEAD_BLOCKS: usize = 8;

/// Decompressed blocks by (inode reference, block index), and fragment
/// blocks by ([`FRAGMENT_BLOCKS`], fragment index).
type BlockCache = LruCache<(u64, u32), Arc<[u8]>>;

/// Where a file's tail lives: fragment block `index`, from byte `offset`.
#[derive(Debug, Clone, Copy)]
struct Tail {
    index: u32,
    offset: u32,
}

/// A decoded inode, shared between threads.
struct Node {
    inode: Malloced<ffi::sqfs_inode_generic_t>,
    attr: Attr,
    /// A file's full data blocks: where each starts in the image, and its
    /// size word (on-disk size; bit 24: stored uncompressed; 0: a hole).
    /// The fragment tail, if any, follows them.
    blocks: Box<[(u64, u32)]>,
    tail: Option<Tail>,
}

// SAFETY: the inode memory is written once by libsquashfs when decoded and
// only read afterwards; nothing in it is tied to a thread.
unsafe impl Send for Node {}
// SAFETY: as above: shared, read-only.
unsafe impl Sync for Node {}

/// One thread's readers and decompressors. Fields drop in declaration
/// order: the readers before the decompressor they use.
struct Readers {
    inodes: Obj<ffi::sqfs_meta_reader_t>,
    dirs: Obj<ffi::sqfs_meta_reader_t>,
    xattrs: Option<Obj<ffi::sqfs_xattr_reader_t>>,
    cmp: Obj<ffi::sqfs_compressor_t>,
    /// For gzip images: data and fragment blocks are zlib streams, which
    /// libdeflate inflates about 2.5 times as fast as zlib (measured on
    /// 128 KiB blocks of a python binary; docs/launch.md).
    inflate: Option<libdeflater::Decompressor>,
}

// SAFETY: libsquashfs objects hold no thread-affine state; a `Readers` is
// used by one thread at a time (taken out of the pool).
unsafe impl Send for Readers {}

/// Lock a mutex even if a panicking thread poisoned it (the caches stay
/// consistent: every update is a single insert).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A SquashFS image (at an offset in its file) served by node ID.
pub struct ImageFs {
    /// Drops first: the readers use the super block and the file.
    pool: Mutex<Vec<Readers>>,
    nodes: Mutex<HashMap<u64, Arc<Node>>>,
    /// Decoded listings, and how many entries they hold in all.
    dirs: Mutex<(HashMap<u64, Arc<Dir>>, usize)>,
    /// Decompressed blocks by (inode reference, block index).
    blocks: Option<Mutex<BlockCache>>,
    ids: Vec<u32>,
    /// The fragment table: where each fragment block is, and its size.
    fragments: Vec<ffi::sqfs_fragment_t>,
    root_ref: u64,
    sb: Box<ffi::sqfs_super_t>,
    file: SqfsFile,
    /// For log messages.
    name: String,
    errors: AtomicU32,
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
        let (file, sb) = open_super(file, offset)?;
        let (fp, with_io) = (file.as_ptr(), |e| file.explain(e));
        let cmp = decompressor(&sb, fp).map_err(with_io)?;
        let ids = read_ids(&sb, fp, &cmp).map_err(with_io)?;
        let fragments = read_fragment_table(&sb, fp, &cmp).map_err(with_io)?;
        let block_size = u64::from(sb.block_size.max(1));
        let blocks = NonZeroUsize::new((cache_bytes / block_size) as usize)
            .map(|n| Mutex::new(LruCache::new(n)));
        let fs = ImageFs {
            pool: Mutex::new(Vec::new()),
            nodes: Mutex::new(HashMap::new()),
            dirs: Mutex::new((HashMap::new(), 0)),
            blocks,
            ids,
            fragments,
            root_ref: sb.root_inode_ref,
            sb,
            file,
            name: name.to_owned(),
            errors: AtomicU32::new(0),
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

    /// The descriptor the image is read through.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.raw_fd()
    }

    fn new_readers(&self) -> Result<Readers, SqfsError> {
        let sb = &*self.sb;
        let fp = self.file.as_ptr();
        let cmp = decompressor(sb, fp)?;
        // SAFETY: constructor calls with live arguments (the file, the
        // super block and the decompressor outlive the readers: field
        // order here and in `ImageFs`); each result gets one owner.
        unsafe {
            let inodes = Obj::from_raw(
                ffi::sqfs_meta_reader_create(
                    fp,
                    cmp.as_ptr(),
                    sb.inode_table_start,
                    sb.directory_table_start,
                ),
                "creating the inode table reader",
            )?;
            let dirs = Obj::from_raw(
                ffi::sqfs_meta_reader_create(
                    fp,
                    cmp.as_ptr(),
                    sb.directory_table_start,
                    sb.bytes_used,
                ),
                "creating the directory table reader",
            )?;
            let xattrs = xattr_reader(sb, fp, &cmp)?;
            let inflate = (sb.compression_id == ffi::SQFS_COMP_GZIP as u16)
                .then(libdeflater::Decompressor::new);
            Ok(Readers {
                inodes,
                dirs,
                xattrs,
                cmp,
                inflate,
            })
        }
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
    fn node(&self, iref: u64) -> Result<Arc<Node>, SqfsError> {
        if let Some(n) = lock(&self.nodes).get(&iref) {
            return Ok(n.clone());
        }
        let inode = self.with_readers(|r| {
            let mut out = std::ptr::null_mut();
            // SAFETY: a live inode table reader; the block is relative to
            // the inode table, as the reference stores it; `out` receives a
            // fresh inode.
            let ret = unsafe {
                ffi::sqfs_meta_reader_read_inode(
                    r.inodes.as_ptr(),
                    &*self.sb,
                    iref >> 16,
                    (iref & 0xffff) as usize,
                    &mut out,
                )
            };
            check(ret, || format!("reading the inode at {iref:#x}"))?;
            // SAFETY: on success `out` is ours to free.
            unsafe { Malloced::from_raw(out) }.ok_or_else(|| SqfsError::Lib {
                what: format!("reading the inode at {iref:#x}"),
                code: ffi::SQFS_ERROR_ALLOC,
                detail: None,
            })
        })?;
        let node = Arc::new(self.decode(inode, iref)?);
        let mut nodes = lock(&self.nodes);
        if nodes.len() >= MAX_NODES {
            nodes.clear();
        }
        nodes.insert(iref, node.clone());
        Ok(node)
    }

    fn decode(
        &self,
        inode: Malloced<ffi::sqfs_inode_generic_t>,
        iref: u64,
    ) -> Result<Node, SqfsError> {
        let corrupt = |detail: String| SqfsError::Lib {
            what: format!("reading the inode at {iref:#x}"),
            code: ffi::SQFS_ERROR_CORRUPTED,
            detail: Some(detail),
        };
        let kind = kind_of(&inode)
            .ok_or_else(|| corrupt(format!("unknown inode type {}", inode.base.type_)))?;
        let id = |idx: u16| {
            self.ids
                .get(usize::from(idx))
                .copied()
                .ok_or_else(|| corrupt(format!("ID index {idx} out of range")))
        };
        let (nlink, size) = nlink_and_size(&inode);
        let rdev = match kind {
            // SAFETY: device inodes use the `dev`/`dev_ext` member; both
            // start with nlink, devno.
            EntryKind::CharDev | EntryKind::BlockDev => {
                let devno = unsafe { inode.data.dev.devno };
                // The kernel's "new" encoding: 12 bits major, 20 minor.
                let major = (devno >> 8) & 0xfff;
                let minor = (devno & 0xff) | ((devno >> 12) & 0xfff00);
                libc::makedev(major, minor)
            }
            _ => 0,
        };
        let (blocks, tail) = if kind == EntryKind::File {
            let mut frag_index = 0;
            let mut frag_offset = 0;
            let mut location = 0;
            // SAFETY: a file inode; the outputs are plain integers.
            let ret = unsafe {
                match ffi::sqfs_inode_get_frag_location(&*inode, &mut frag_index, &mut frag_offset)
                {
                    0 => ffi::sqfs_inode_get_file_block_start(&*inode, &mut location),
                    err => err,
                }
            };
            check(ret, || format!("reading the inode at {iref:#x}"))?;
            let count = inode.payload_bytes_used as usize / 4;
            // SAFETY: libsquashfs decoded `count` block sizes after the
            // inode (payload_bytes_used is what it filled in).
            let sizes = unsafe { inode.extra.as_slice(count) };
            let blocks = sizes
                .iter()
                .map(|&word| {
                    let at = location;
                    location = location.saturating_add(u64::from(word & (UNCOMPRESSED - 1)));
                    (at, word)
                })
                .collect();
            let tail = (frag_index != u32::MAX && size % u64::from(self.sb.block_size) != 0)
                .then_some(Tail {
                    index: frag_index,
                    offset: frag_offset,
                });
            (blocks, tail)
        } else {
            (Box::default(), None)
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
        Ok(Node {
            inode,
            attr,
            blocks,
            tail,
        })
    }

    /// The listing of the directory `node` (at reference `iref`).
    fn dir_of(&self, iref: u64, node: &Node) -> Result<Arc<Dir>, SqfsError> {
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
        let mut entries = self.with_readers(|r| {
            // SAFETY: all-zero is a valid state to initialize.
            let mut state: ffi::sqfs_readdir_state_t = unsafe { std::mem::zeroed() };
            // SAFETY: a directory inode and the live super block.
            let ret = unsafe { ffi::sqfs_readdir_state_init(&mut state, &*self.sb, inode) };
            check(ret, || format!("opening the directory at {iref:#x}"))?;
            let mut entries = Vec::new();
            loop {
                let mut ent = std::ptr::null_mut();
                let mut inum = 0;
                let mut child = 0;
                // SAFETY: a live reader and state; `ent` receives a fresh
                // entry that we free.
                let ret = unsafe {
                    ffi::sqfs_meta_reader_readdir(
                        r.dirs.as_ptr(),
                        &mut state,
                        &mut ent,
                        &mut inum,
                        &mut child,
                    )
                };
                if check(ret, || format!("reading the directory at {iref:#x}"))? > 0 {
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
                let kind = match u32::from(ent.type_) {
                    ffi::SQFS_INODE_DIR => libc::S_IFDIR,
                    ffi::SQFS_INODE_FILE => libc::S_IFREG,
                    ffi::SQFS_INODE_SLINK => libc::S_IFLNK,
                    ffi::SQFS_INODE_BDEV => libc::S_IFBLK,
                    ffi::SQFS_INODE_CDEV => libc::S_IFCHR,
                    ffi::SQFS_INODE_FIFO => libc::S_IFIFO,
                    _ => libc::S_IFSOCK,
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

    /// The cached block under `key`, or `load`'s, which is then cached.
    fn cached(
        &self,
        key: (u64, u32),
        load: impl FnOnce() -> Result<Arc<[u8]>, SqfsError>,
    ) -> Result<Arc<[u8]>, SqfsError> {
        if let Some(cache) = &self.blocks
            && let Some(b) = lock(cache).get(&key)
        {
            return Ok(b.clone());
        }
        let data = load()?;
        if let Some(cache) = &self.blocks {
            lock(cache).put(key, data.clone());
        }
        Ok(data)
    }

    /// Full data block `index` of a file, decompressed.
    fn block(&self, iref: u64, node: &Node, index: u32) -> Result<Arc<[u8]>, SqfsError> {
        self.cached((iref, index), || {
            let (at, word) = node.blocks[index as usize];
            // A file's blocks are stored one after the other: the next
            // ones are likely wanted soon.
            let ahead = &node.blocks[index as usize + 1..];
            let ahead = &ahead[..ahead.len().min(READ_AHEAD_BLOCKS)];
            if let (Some(&(first, _)), Some(&(last, last_word))) = (ahead.first(), ahead.last()) {
                let end = last.saturating_add(u64::from(last_word & (UNCOMPRESSED - 1)));
                self.file.will_need(first, end.saturating_sub(first));
            }
            let block_size = u64::from(self.sb.block_size);
            // Only the last block of a file without a tail is short.
            let len =
                (node.attr.size.saturating_sub(u64::from(index) * block_size)).min(block_size);
            let what = || format!("reading block {index} of inode {}", node.attr.ino);
            self.read_block(at, word, Some(len as usize), &what)
        })
    }

    /// Fragment block `index`, decompressed: the tails of the files in it.
    fn fragment_block(&self, index: u32) -> Result<Arc<[u8]>, SqfsError> {
        self.cached((FRAGMENT_BLOCKS, index), || {
            let what = || format!("reading fragment block {index}");
            let corrupt = |detail: String| SqfsError::Lib {
                what: what(),
                code: ffi::SQFS_ERROR_CORRUPTED,
                detail: Some(detail),
            };
            let entry = self.fragments.get(index as usize).ok_or_else(|| {
                corrupt(format!("the table has {} entries", self.fragments.len()))
            })?;
            self.read_block(entry.start_offset, entry.size, None, &what)
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
        let corrupt = |detail: String| SqfsError::Lib {
            what: what(),
            code: ffi::SQFS_ERROR_CORRUPTED,
            detail: Some(detail),
        };
        let stored = word & (UNCOMPRESSED - 1);
        let block_size = self.sb.block_size as usize;
        if stored == 0 {
            // A hole: a block of zeros that takes no space.
            return Ok(Arc::from(vec![0u8; len.unwrap_or(block_size)]));
        }
        if stored as usize > block_size {
            return Err(corrupt(format!("{stored} bytes on disk")));
        }
        let mut raw = vec![0u8; stored as usize];
        let fp = self.file.as_ptr();
        // SAFETY: the file object's own read callback, with a buffer of
        // `stored` writable bytes.
        let ret = unsafe {
            let read_at = (*fp).read_at.expect("the file object reads");
            read_at(fp, at, raw.as_mut_ptr().cast(), raw.len())
        };
        check(ret, what).map_err(|e| self.file.explain(e))?;
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
                        usize::try_from(n).map_err(|_| SqfsError::Lib {
                            what: what(),
                            code: n,
                            detail: None,
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

    fn lookup_node(&self, node: u64) -> Result<(u64, Arc<Node>), Errno> {
        let iref = self.inode_ref(node)?;
        let n = self.node(iref).map_err(|e| self.failed(e))?;
        Ok((iref, n))
    }
}

/// The ID table: index → uid/gid.
/// The fragment table: where each fragment block is, and its size.
fn read_fragment_table(
    sb: &ffi::sqfs_super_t,
    fp: *mut ffi::sqfs_file_t,
    cmp: &Obj<ffi::sqfs_compressor_t>,
) -> Result<Vec<ffi::sqfs_fragment_t>, SqfsError> {
    let mut fragments = Vec::new();
    if sb.fragment_entry_count == 0 {
        return Ok(fragments);
    }
    // SAFETY: constructor and loader calls with live arguments; the table
    // is dropped before `cmp`; the entries are plain integers.
    unsafe {
        let table = Obj::from_raw(
            ffi::sqfs_frag_table_create(0),
            "creating the fragment table",
        )?;
        let ret = ffi::sqfs_frag_table_read(table.as_ptr(), fp, sb, cmp.as_ptr());
        check(ret, || "reading the fragment table".into())?;
        let count = ffi::sqfs_frag_table_get_size(table.as_ptr());
        fragments.reserve(count);
        for i in 0..count as u32 {
            let mut entry = std::mem::zeroed();
            let ret = ffi::sqfs_frag_table_lookup(table.as_ptr(), i, &mut entry);
            check(ret, || format!("reading fragment table entry {i}"))?;
            fragments.push(entry);
        }
    }
    Ok(fragments)
}

impl fuse::Filesystem for ImageFs {
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Attr)>, Errno> {
        let dir = self.dir(parent)?;
        let Some(entry) = dir.find(name) else {
            return Ok(None);
        };
        let node = entry.node;
        Ok(Some((node, self.getattr(node)?)))
    }

    fn getattr(&self, node: u64) -> Result<Attr, Errno> {
        Ok(self.lookup_node(node)?.1.attr)
    }

    fn readlink(&self, node: u64) -> Result<Vec<u8>, Errno> {
        let (_, n) = self.lookup_node(node)?;
        if n.attr.mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(libc::EINVAL);
        }
        Ok(symlink_target(&n.inode).to_vec())
    }

    fn read(&self, node: u64, offset: u64, size: usize, out: &mut Vec<u8>) -> Result<(), Errno> {
        let (iref, n) = self.lookup_node(node)?;
        match n.attr.mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(libc::EISDIR),
            _ => return Err(libc::EINVAL),
        }
        let block_size = u64::from(self.sb.block_size);
        let end = n.attr.size.min(offset.saturating_add(size as u64));
        let mut pos = offset;
        let corrupt = |pos: u64, detail: String| SqfsError::Lib {
            what: format!("reading inode {} at {pos}", n.attr.ino),
            code: ffi::SQFS_ERROR_CORRUPTED,
            detail: Some(detail),
        };
        while pos < end {
            let index = pos / block_size;
            // The bytes from file offset `start` are `data[skip..limit]`.
            let (data, start, skip, limit) = if index < n.blocks.len() as u64 {
                let data = self
                    .block(iref, &n, index as u32)
                    .map_err(|e| self.failed(e))?;
                let limit = data.len();
                (data, index * block_size, 0, limit)
            } else if let Some(tail) = n.tail {
                let data = self
                    .fragment_block(tail.index)
                    .map_err(|e| self.failed(e))?;
                let start = n.blocks.len() as u64 * block_size;
                let skip = tail.offset as usize;
                let limit = skip.saturating_add((n.attr.size - start) as usize);
                if limit > data.len() {
                    return Err(self.failed(corrupt(
                        pos,
                        format!(
                            "fragment block {} is short ({} bytes)",
                            tail.index,
                            data.len()
                        ),
                    )));
                }
                (data, start, skip, limit)
            } else {
                return Err(self.failed(corrupt(pos, "no block holds this offset".into())));
            };
            let within = skip + (pos - start) as usize;
            let take = ((end - pos) as usize).min(limit.saturating_sub(within));
            if take == 0 {
                return Err(self.failed(corrupt(
                    pos,
                    format!("block {index} is short ({} bytes)", data.len()),
                )));
            }
            out.extend_from_slice(&data[within..within + take]);
            pos += take as u64;
        }
        Ok(())
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
        let all = self
            .with_readers(|r| {
                let xr = r.xattrs.as_ref().map(|x| x.as_ptr());
                read_xattrs(xr, &n.inode, &|| {
                    format!("reading the xattrs of inode {}", n.attr.ino)
                })
            })
            .map_err(|e| self.failed(e))?;
        Ok(all.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect())
    }

    fn has_xattrs(&self) -> bool {
        u32::from(self.sb.flags) & ffi::SQFS_FLAG_NO_XATTRS == 0
            && self.sb.xattr_id_table_start != u64::MAX
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
