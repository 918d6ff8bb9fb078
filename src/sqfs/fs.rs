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
//! - **Decompressed data blocks and fragment tails are cached** in a
//!   bounded LRU shared by all threads (squashfuse decompresses a block
//!   again for every read that touches it).
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
    data_and_xattr_readers, decompressor, kind_of, nlink_and_size, open_super, read_xattrs,
    symlink_target,
};
use super::{EntryKind, SqfsError, ffi};
use crate::fuse::{self, Attr, Dir, DirEntry, Errno, FsStats};

/// Inodes kept decoded; past this the cache starts over.
const MAX_NODES: usize = 1 << 18;
/// Directory listings kept decoded; past this the cache starts over.
const MAX_DIRS: usize = 1 << 14;
/// Errors written to the log; later ones are only counted.
const MAX_LOGGED_ERRORS: u32 = 20;
/// The block index under which a file's fragment tail is cached.
const TAIL: u32 = u32::MAX;

/// Decompressed blocks by (inode reference, block index).
type BlockCache = LruCache<(u64, u32), Arc<[u8]>>;

/// A decoded inode, shared between threads.
struct Node {
    inode: Malloced<ffi::sqfs_inode_generic_t>,
    attr: Attr,
    /// Full data blocks (a fragment tail follows them if `tail`).
    blocks: u32,
    tail: bool,
}

// SAFETY: the inode memory is written once by libsquashfs when decoded and
// only read afterwards; nothing in it is tied to a thread.
unsafe impl Send for Node {}
// SAFETY: as above: shared, read-only.
unsafe impl Sync for Node {}

/// One thread's libsquashfs readers. Fields drop in declaration order:
/// the readers before the decompressor they use.
struct Readers {
    inodes: Obj<ffi::sqfs_meta_reader_t>,
    dirs: Obj<ffi::sqfs_meta_reader_t>,
    data: Obj<ffi::sqfs_data_reader_t>,
    xattrs: Option<Obj<ffi::sqfs_xattr_reader_t>>,
    _cmp: Obj<ffi::sqfs_compressor_t>,
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
    dirs: Mutex<HashMap<u64, Arc<Dir>>>,
    /// Decompressed blocks by (inode reference, block index).
    blocks: Option<Mutex<BlockCache>>,
    ids: Vec<u32>,
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
        let ids = read_ids(&sb, file.as_ptr()).map_err(|e| file.explain(e))?;
        let block_size = u64::from(sb.block_size.max(1));
        let blocks = NonZeroUsize::new((cache_bytes / block_size) as usize)
            .map(|n| Mutex::new(LruCache::new(n)));
        let fs = ImageFs {
            pool: Mutex::new(Vec::new()),
            nodes: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            blocks,
            ids,
            root_ref: sb.root_inode_ref,
            sb,
            file,
            name: name.to_owned(),
            errors: AtomicU32::new(0),
        };
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
            let (data, xattrs) = data_and_xattr_readers(sb, fp, &cmp)?;
            Ok(Readers {
                inodes,
                dirs,
                data,
                xattrs,
                _cmp: cmp,
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
            // SAFETY: a file inode; the outputs are plain integers.
            let ret = unsafe {
                ffi::sqfs_inode_get_frag_location(&*inode, &mut frag_index, &mut frag_offset)
            };
            check(ret, || format!("reading the inode at {iref:#x}"))?;
            let tail = frag_index != u32::MAX && size % u64::from(self.sb.block_size) != 0;
            (inode.payload_bytes_used / 4, tail)
        } else {
            (0, false)
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
        if let Some(d) = lock(&self.dirs).get(&iref) {
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
        let mut dirs = lock(&self.dirs);
        if dirs.len() >= MAX_DIRS {
            dirs.clear();
        }
        dirs.insert(iref, dir.clone());
        Ok(dir)
    }

    /// Block `index` of a file (`TAIL`: its fragment tail), decompressed.
    fn block(&self, iref: u64, node: &Node, index: u32) -> Result<Arc<[u8]>, SqfsError> {
        let key = (iref, index);
        if let Some(cache) = &self.blocks
            && let Some(b) = lock(cache).get(&key)
        {
            return Ok(b.clone());
        }
        let data: Arc<[u8]> = self.with_readers(|r| {
            let mut size = 0;
            let mut out = std::ptr::null_mut();
            // SAFETY: a live data reader and a file inode; `out` receives
            // `size` fresh bytes that we free.
            let ret = unsafe {
                if index == TAIL {
                    ffi::sqfs_data_reader_get_fragment(
                        r.data.as_ptr(),
                        &*node.inode,
                        &mut size,
                        &mut out,
                    )
                } else {
                    ffi::sqfs_data_reader_get_block(
                        r.data.as_ptr(),
                        &*node.inode,
                        index as usize,
                        &mut size,
                        &mut out,
                    )
                }
            };
            check(ret, || {
                format!("reading block {index} of inode {}", node.attr.ino)
            })?;
            // SAFETY: on success `out` holds `size` bytes that are ours.
            Ok(match unsafe { Malloced::from_raw(out) } {
                Some(bytes) => {
                    // SAFETY: as above.
                    Arc::from(unsafe { std::slice::from_raw_parts(bytes.as_ptr(), size) })
                }
                None => Arc::from(vec![0u8; size]),
            })
        })?;
        if let Some(cache) = &self.blocks {
            lock(cache).put(key, data.clone());
        }
        Ok(data)
    }

    fn lookup_node(&self, node: u64) -> Result<(u64, Arc<Node>), Errno> {
        let iref = self.inode_ref(node)?;
        let n = self.node(iref).map_err(|e| self.failed(e))?;
        Ok((iref, n))
    }
}

/// The ID table: index → uid/gid.
fn read_ids(sb: &ffi::sqfs_super_t, fp: *mut ffi::sqfs_file_t) -> Result<Vec<u32>, SqfsError> {
    let cmp = decompressor(sb, fp)?;
    // SAFETY: constructor and loader calls with live arguments; the table
    // is dropped before the decompressor.
    unsafe {
        let ids = Obj::from_raw(ffi::sqfs_id_table_create(0), "creating the ID table")?;
        let ret = ffi::sqfs_id_table_read(ids.as_ptr(), fp, sb, cmp.as_ptr());
        check(ret, || "reading the ID table".into())?;
        let mut out = Vec::with_capacity(usize::from(sb.id_count));
        for i in 0..sb.id_count {
            let mut id = 0;
            let ret = ffi::sqfs_id_table_index_to_id(ids.as_ptr(), i, &mut id);
            check(ret, || format!("reading ID {i}"))?;
            out.push(id);
        }
        Ok(out)
    }
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
        while pos < end {
            let index = pos / block_size;
            let (data, start) = if index < u64::from(n.blocks) {
                (self.block(iref, &n, index as u32), index * block_size)
            } else if n.tail {
                (self.block(iref, &n, TAIL), u64::from(n.blocks) * block_size)
            } else {
                return Err(self.failed(SqfsError::Lib {
                    what: format!("reading inode {} at {pos}", n.attr.ino),
                    code: ffi::SQFS_ERROR_CORRUPTED,
                    detail: Some("no block holds this offset".into()),
                }));
            };
            let data = data.map_err(|e| self.failed(e))?;
            let within = (pos - start) as usize;
            let take = ((end - pos) as usize).min(data.len().saturating_sub(within));
            if take == 0 {
                return Err(self.failed(SqfsError::Lib {
                    what: format!("reading inode {} at {pos}", n.attr.ino),
                    code: ffi::SQFS_ERROR_CORRUPTED,
                    detail: Some(format!("block {index} is short ({} bytes)", data.len())),
                }));
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
