//! Read-only access to a SquashFS image by path, possibly at an offset in
//! a file: what `rfake inspect` and the tests use. It is [`ImageFs`], the
//! FUSE server's reader, seen through paths, so both read an image with
//! the same code and the same checks (see `layout.rs`, `inode.rs`,
//! `xattr.rs`: every length, count and offset taken from the image is
//! checked before it sizes an allocation or a loop).

use std::collections::{HashSet, VecDeque};
use std::ffi::CStr;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use super::file::SqfsFile;
use super::fs::{ImageFs, Inode};
use super::layout::Layout;
use super::obj::{Obj, check};
use super::{EntryInfo, EntryKind, SqfsError, SuperInfo, ffi};
use crate::fuse;
use crate::squashfs::superblock::{SUPERBLOCK_LEN, Superblock};

/// Symbolic links followed in one lookup before giving up (Linux's limit).
const MAX_SYMLINKS: usize = 40;
/// Blocks cached while reading (a fragment block holds the tails of many
/// small files, read one after the other).
const CACHE_BYTES: u64 = 4 << 20;
/// Bytes read from a file at a time.
const CHUNK: usize = 1 << 20;

/// Read-only access to a SquashFS that starts at `offset` inside `file`
/// (0 for a bare SquashFS; the SIF partition offset otherwise).
///
/// Paths are inside the image: "/" or "" is the root, "." and ".." work,
/// symbolic links are followed inside the image (absolute ones from the
/// image root), never out of it. A `Reader` can be shared between threads.
pub struct Reader {
    fs: ImageFs,
    info: SuperInfo,
}

pub(super) fn compression_name(id: u16) -> String {
    // SAFETY: returns a static string or NULL for unknown IDs.
    let name = unsafe { ffi::lib().sqfs_compressor_name_from_id(u32::from(id)) };
    if name.is_null() {
        format!("unknown ({id})")
    } else {
        // SAFETY: a NUL-terminated static string.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A decompressor for the image whose super block is `sb` in `fp`, with
/// the image's compressor options read.
pub(super) fn decompressor(
    sb: &ffi::sqfs_super_t,
    fp: *mut ffi::sqfs_file_t,
) -> Result<Obj<ffi::sqfs_compressor_t>, SqfsError> {
    let comp = compression_name(sb.compression_id);
    // SAFETY: plain integers and a union of them; all-zero is valid (and
    // what compressor.h asks for before filling it in).
    let mut cfg: ffi::sqfs_compressor_config_t = unsafe { std::mem::zeroed() };
    let what = || format!("creating the {comp} decompressor");
    // SAFETY: `cfg` is a valid struct to fill in.
    let ret = unsafe {
        ffi::lib().sqfs_compressor_config_init(
            &mut cfg,
            u32::from(sb.compression_id),
            sb.block_size as usize,
            ffi::SQFS_COMP_FLAG_UNCOMPRESS as u16,
        )
    };
    check(ret, what)?;
    let mut cmp = std::ptr::null_mut();
    // SAFETY: `cfg` is initialized; `cmp` receives the new object.
    let ret = unsafe { ffi::lib().sqfs_compressor_create(&cfg, &mut cmp) };
    check(ret, what)?;
    // SAFETY: a fresh object with one owner.
    let cmp = unsafe { Obj::from_raw(cmp, &what())? };
    if u32::from(sb.flags) & ffi::SQFS_FLAG_COMPRESSOR_OPTIONS != 0 {
        // SAFETY: `read_options` is a method of the live compressor; `fp`
        // is a live file.
        let ret = unsafe {
            let c = cmp.as_ptr();
            match (*c).read_options {
                Some(read_options) => read_options(c, fp),
                None => 0,
            }
        };
        check(ret, || "reading the compressor options".into())?;
    }
    Ok(cmp)
}

/// The file object for the SquashFS at `offset` in `file` (at most `len`
/// bytes from there, if given), its super block (boxed: readers keep a
/// pointer to it) and its checked layout.
pub(super) fn open_super(
    file: File,
    offset: u64,
    len: Option<u64>,
) -> Result<(SqfsFile, Box<ffi::sqfs_super_t>, Layout), SqfsError> {
    let file = SqfsFile::reader(file, offset, len).map_err(|source| SqfsError::Io {
        what: format!("opening the SquashFS at offset {offset}"),
        source,
    })?;
    // The super block is checked first by rfake's own parser (magic,
    // version, block size, compressor, sizes and table positions against
    // the file); libsquashfs then reads the same 96 bytes.
    let mut raw = [0u8; SUPERBLOCK_LEN];
    let fp = file.as_ptr();
    let available = file.size().min(SUPERBLOCK_LEN as u64) as usize;
    // SAFETY: the file object's own read callback, with a buffer of
    // `available` writable bytes.
    let ret = unsafe {
        let read_at = (*fp).read_at.expect("the file object reads");
        read_at(fp, 0, raw.as_mut_ptr().cast(), available)
    };
    check(ret, || {
        format!("reading the super block at offset {offset}")
    })
    .map_err(|e| file.explain(e))?;
    Superblock::parse(&raw[..available])?.validate(file.size())?;
    // SAFETY: the super block struct is plain integers; all-zero is valid.
    let mut sb: Box<ffi::sqfs_super_t> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: `sb` is a valid struct to fill in, the file a live one.
    let ret = unsafe { ffi::lib().sqfs_super_read(&mut *sb, file.as_ptr()) };
    check(ret, || {
        format!("reading the super block at offset {offset}")
    })
    .map_err(|e| file.explain(e))?;
    let layout = Layout::check(&sb, &file).map_err(|e| file.explain(e))?;
    Ok((file, sb, layout))
}

impl Reader {
    /// Open the SquashFS at `offset` in `file`: check the super block and
    /// the table indexes, read the ID table and the root directory.
    pub fn open(file: File, offset: u64) -> Result<Reader, SqfsError> {
        Self::open_within(file, offset, None)
    }

    /// [`Reader::open`] for a SquashFS that must fit in `len` bytes from
    /// `offset` (a SIF partition).
    pub fn open_partition(file: File, offset: u64, len: u64) -> Result<Reader, SqfsError> {
        Self::open_within(file, offset, Some(len))
    }

    fn open_within(file: File, offset: u64, len: Option<u64>) -> Result<Reader, SqfsError> {
        let fs = ImageFs::open_within(file, offset, len, CACHE_BYTES, "")?;
        let info = fs.super_info();
        Ok(Reader { fs, info })
    }

    /// Facts from the super block.
    pub fn info(&self) -> SuperInfo {
        self.info.clone()
    }

    /// The entry at `path`; a symlink as the last component is not followed.
    pub fn stat(&self, path: &str) -> Result<EntryInfo, SqfsError> {
        let (name, node, shown) = self.resolve(path, false)?;
        self.entry_info(name, node, &shown)
    }

    /// The entries of directory `dir` (following symlinks), sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<EntryInfo>, SqfsError> {
        let (_, node, shown) = self.resolve(dir, true)?;
        let listing = self.listing(node, &shown)?;
        let mut out = Vec::with_capacity(listing.entries.len());
        for e in &listing.entries {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let child_path = join(&shown, &name);
            out.push(self.entry_info(name, e.node, &child_path)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Call `f` for everything below directory `dir` (following symlinks
    /// for `dir` itself, not below), parents before children, in name
    /// order. Paths are absolute in the image ("/etc/passwd"). A directory
    /// met twice (the image's tree has a loop, or a directory with two
    /// names) is an error: the walk visits each directory once.
    pub fn walk(&self, dir: &str, f: &mut dyn FnMut(&str, &EntryInfo)) -> Result<(), SqfsError> {
        let (_, node, shown) = self.resolve(dir, true)?;
        let mut seen = HashSet::from([self.fs.node_of(node)?.0]);
        // Directories whose listing is still to be walked, with the entries
        // left; the last is the one being walked.
        let mut stack = vec![(shown.clone(), self.listing(node, &shown)?, 0)];
        while let Some((path, listing, next)) = stack.last_mut() {
            let Some(e) = listing.entries.get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let child = join(path, &name);
            let info = self.entry_info(name, e.node, &child)?;
            f(&child, &info);
            if info.kind == EntryKind::Dir {
                let (iref, _) = self.fs.node_of(e.node)?;
                if !seen.insert(iref) {
                    return Err(SqfsError::corrupt(
                        "directory table",
                        format!("{child}: directory inode {} is met twice", info.inode),
                    ));
                }
                let listing = self.listing(e.node, &child)?;
                stack.push((child, listing, 0));
            }
        }
        Ok(())
    }

    /// The contents of the regular file at `path`, following symlinks
    /// inside the image; fails if it is bigger than `max` bytes.
    pub fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, SqfsError> {
        let (_, node, shown) = self.resolve(path, true)?;
        let (iref, n) = self.file_node(node, &shown)?;
        if n.attr.size > max {
            return Err(SqfsError::TooLarge {
                path: shown,
                size: n.attr.size,
                max,
            });
        }
        // Grown as the data comes: the size is the image's word.
        let mut out = Vec::new();
        while (out.len() as u64) < n.attr.size {
            let before = out.len();
            self.fs
                .read_file(iref, &n, before as u64, CHUNK, &mut out)
                .map_err(|e| e.about(&shown))?;
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// Write the contents of the regular file at `path` (following
    /// symlinks inside the image) to `to`, a piece at a time; returns the
    /// bytes written. A write error is an `Io` error naming `what`.
    pub fn copy_file(&self, path: &str, to: &mut dyn Write, what: &str) -> Result<u64, SqfsError> {
        let (_, node, shown) = self.resolve(path, true)?;
        let (iref, n) = self.file_node(node, &shown)?;
        let mut done = 0;
        let mut buf = Vec::with_capacity(CHUNK);
        while done < n.attr.size {
            buf.clear();
            self.fs
                .read_file(iref, &n, done, CHUNK, &mut buf)
                .map_err(|e| e.about(&shown))?;
            if buf.is_empty() {
                break;
            }
            to.write_all(&buf).map_err(|source| SqfsError::Io {
                what: what.to_owned(),
                source,
            })?;
            done += buf.len() as u64;
        }
        Ok(done)
    }

    /// The regular file behind node `node`.
    fn file_node(&self, node: u64, shown: &str) -> Result<(u64, Arc<Inode>), SqfsError> {
        let (iref, n) = self.fs.node_of(node)?;
        if n.attr.mode & libc::S_IFMT != libc::S_IFREG {
            return Err(SqfsError::NotFile { path: shown.into() });
        }
        Ok((iref, n))
    }

    /// The listing of the directory `node`.
    fn listing(&self, node: u64, shown: &str) -> Result<Arc<fuse::Dir>, SqfsError> {
        let (iref, n) = self.fs.node_of(node)?;
        if n.attr.mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(SqfsError::NotDir { path: shown.into() });
        }
        self.fs.dir_of(iref, &n)
    }

    /// Resolve `path` to (name, node ID, normalized path).
    fn resolve(&self, path: &str, follow_last: bool) -> Result<(String, u64, String), SqfsError> {
        // The directories walked into, with their names; empty = root.
        let mut stack: Vec<(String, u64)> = Vec::new();
        let mut pending: VecDeque<String> = components(path).collect();
        let mut links = 0;
        let shown = |stack: &[(String, u64)]| {
            let mut s = String::new();
            for (name, _) in stack {
                s.push('/');
                s.push_str(name);
            }
            if s.is_empty() { "/".to_owned() } else { s }
        };
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                stack.pop();
                continue;
            }
            let here = shown(&stack);
            let dir = stack.last().map_or(fuse::ROOT, |(_, n)| *n);
            let listing = self.listing(dir, &here)?;
            let Some(entry) = listing.find(name.as_bytes()) else {
                return Err(SqfsError::NotFound {
                    path: join(&here, &name),
                });
            };
            let child = entry.node;
            let (_, n) = self.fs.node_of(child)?;
            let last = pending.is_empty();
            if n.attr.mode & libc::S_IFMT == libc::S_IFLNK && (follow_last || !last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(SqfsError::SymlinkLoop { path: path.into() });
                }
                let target = String::from_utf8_lossy(self.fs.link_target(&n)).into_owned();
                if target.starts_with('/') {
                    stack.clear();
                }
                for (i, c) in components(&target).enumerate() {
                    pending.insert(i, c);
                }
                continue;
            }
            stack.push((name, child));
        }
        let shown = shown(&stack);
        Ok(match stack.pop() {
            Some((name, node)) => (name, node, shown),
            None => ("/".to_owned(), fuse::ROOT, shown),
        })
    }

    fn entry_info(&self, name: String, node: u64, shown: &str) -> Result<EntryInfo, SqfsError> {
        let (_, n) = self.fs.node_of(node).map_err(|e| e.about(shown))?;
        let kind = kind_of(&n.inode).expect("decoded inodes have a known type");
        let symlink_target = (kind == EntryKind::Symlink)
            .then(|| String::from_utf8_lossy(self.fs.link_target(&n)).into_owned());
        let xattrs = self
            .fs
            .xattrs_of(&n)
            .map_err(|e| e.about(shown))?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect();
        Ok(EntryInfo {
            name,
            kind,
            mode: (n.attr.mode & 0o7777) as u16,
            uid: n.attr.uid,
            gid: n.attr.gid,
            size: n.attr.size,
            mtime: n.attr.mtime as u32,
            nlink: n.attr.nlink,
            inode: n.attr.ino as u32,
            symlink_target,
            xattrs,
        })
    }
}

/// "/a" + "b" = "/a/b".
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn kind_of(inode: &ffi::sqfs_inode_generic_t) -> Option<EntryKind> {
    Some(match u32::from(inode.base.type_) {
        ffi::SQFS_INODE_DIR | ffi::SQFS_INODE_EXT_DIR => EntryKind::Dir,
        ffi::SQFS_INODE_FILE | ffi::SQFS_INODE_EXT_FILE => EntryKind::File,
        ffi::SQFS_INODE_SLINK | ffi::SQFS_INODE_EXT_SLINK => EntryKind::Symlink,
        ffi::SQFS_INODE_BDEV | ffi::SQFS_INODE_EXT_BDEV => EntryKind::BlockDev,
        ffi::SQFS_INODE_CDEV | ffi::SQFS_INODE_EXT_CDEV => EntryKind::CharDev,
        ffi::SQFS_INODE_FIFO | ffi::SQFS_INODE_EXT_FIFO => EntryKind::Fifo,
        ffi::SQFS_INODE_SOCKET | ffi::SQFS_INODE_EXT_SOCKET => EntryKind::Socket,
        _ => return None,
    })
}

/// The target of a symlink inode (raw bytes).
pub(super) fn symlink_target(inode: &ffi::sqfs_inode_generic_t) -> &[u8] {
    // SAFETY: for symlink inodes, `slink` and `slink_ext` share their
    // first fields, and the target (`target_size` bytes, checked against
    // the payload size) follows the struct in `extra` (inode.h).
    unsafe {
        let len = (inode.data.slink.target_size as usize).min(inode.payload_bytes_used as usize);
        std::slice::from_raw_parts(inode.extra.as_ptr().cast::<u8>(), len)
    }
}

/// The link count and the size `stat` shows of an inode.
pub(super) fn nlink_and_size(inode: &ffi::sqfs_inode_generic_t) -> (u32, u64) {
    let d = &inode.data;
    // SAFETY: each arm reads the union member that the inode type
    // selects (inode.h).
    unsafe {
        match u32::from(inode.base.type_) {
            ffi::SQFS_INODE_DIR => (d.dir.nlink, u64::from(d.dir.size)),
            ffi::SQFS_INODE_EXT_DIR => (d.dir_ext.nlink, u64::from(d.dir_ext.size)),
            ffi::SQFS_INODE_FILE => (1, u64::from(d.file.file_size)),
            ffi::SQFS_INODE_EXT_FILE => (d.file_ext.nlink, d.file_ext.file_size),
            ffi::SQFS_INODE_SLINK => (d.slink.nlink, u64::from(d.slink.target_size)),
            ffi::SQFS_INODE_EXT_SLINK => (d.slink_ext.nlink, u64::from(d.slink_ext.target_size)),
            ffi::SQFS_INODE_BDEV | ffi::SQFS_INODE_CDEV => (d.dev.nlink, 0),
            ffi::SQFS_INODE_EXT_BDEV | ffi::SQFS_INODE_EXT_CDEV => (d.dev_ext.nlink, 0),
            ffi::SQFS_INODE_FIFO | ffi::SQFS_INODE_SOCKET => (d.ipc.nlink, 0),
            _ => (d.ipc_ext.nlink, 0),
        }
    }
}

/// The names in a path inside the image, "." and empty parts dropped.
fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
}
