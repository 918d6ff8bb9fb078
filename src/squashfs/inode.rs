//! Reading an inode, its sizes checked before libsquashfs reads it.
//!
//! `sqfs_meta_reader_read_inode` allocates what the inode's fields ask
//! for: a file's list of block sizes (from its size), a symlink's target,
//! an extended directory's index. So the fixed part of the inode is read
//! first and every such field is held against the inode table's extent
//! and the format's limits; only then does libsquashfs decode it.

use super::layout::Layout;
use super::meta::{META_BLOCK, MetaReader, max_decoded};
use super::obj::Malloced;
use super::{SqfsError, ffi};

/// The longest symlink target: Linux's `PATH_MAX` (the kernel's SquashFS
/// driver refuses longer ones as corrupt).
pub(super) const MAX_SYMLINK: u32 = 4096;
/// The longest name in a directory (SquashFS stores `size - 1` in a byte).
pub(super) const MAX_NAME: u64 = 256;
/// A listing this short (the 3 bytes SquashFS adds for "." and "..", up
/// to a directory header) has no entries and is never read.
const EMPTY_LISTING: u64 = 12;

type Inode = Malloced<ffi::sqfs_inode_generic_t>;

/// The inode at reference `iref` (block relative to the inode table in
/// the upper 48 bits, offset in the lower 16), read with `m`, the inode
/// table's reader.
pub(super) fn read_inode(
    m: &mut MetaReader,
    sb: &ffi::sqfs_super_t,
    layout: &Layout,
    iref: u64,
) -> Result<Inode, SqfsError> {
    let what = || format!("the inode at {iref:#x}");
    check(m, layout, iref).map_err(|e| e.about(what()))?;
    let mut out = std::ptr::null_mut();
    // SAFETY: a live inode table reader and super block; `out` receives a
    // fresh inode.
    let ret = unsafe {
        ffi::lib().sqfs_meta_reader_read_inode(
            m.as_ptr(),
            sb,
            iref >> 16,
            (iref & 0xffff) as usize,
            &mut out,
        )
    };
    if ret < 0 {
        return Err(m.fail(ret, what));
    }
    // SAFETY: on success `out` is ours to free.
    unsafe { Malloced::from_raw(out) }.ok_or_else(|| m.fail(ffi::SQFS_ERROR_ALLOC, what))
}

/// Read the fixed part of the inode at `iref` and check its sizes.
fn check(m: &mut MetaReader, layout: &Layout, iref: u64) -> Result<(), SqfsError> {
    let block = layout.inodes.start.saturating_add(iref >> 16);
    m.seek(block, iref & 0xffff)?;
    let kind = m.u16()?;
    // mode, uid index, gid index, mtime, inode number
    m.skip(2 + 2 + 2 + 4 + 4)?;
    match u32::from(kind) {
        ffi::SQFS_INODE_DIR => {
            let start = m.u32()?;
            let _nlink = m.u32()?;
            let size = m.u16()?;
            let offset = m.u16()?;
            listing(layout, start, offset, u64::from(size))
        }
        ffi::SQFS_INODE_EXT_DIR => {
            let _nlink = m.u32()?;
            let size = m.u32()?;
            let start = m.u32()?;
            let _parent = m.u32()?;
            let index_count = m.u16()?;
            let offset = m.u16()?;
            let _xattr = m.u32()?;
            listing(layout, start, offset, u64::from(size))?;
            // libsquashfs reads the index only for a listing with entries.
            if size == 0 {
                return Ok(());
            }
            for n in 0..index_count {
                let _index = m.u32()?;
                let _start = m.u32()?;
                let name = u64::from(m.u32()?) + 1;
                if name > MAX_NAME {
                    return Err(m.corrupt(format!(
                        "directory index entry {n} has a name of {name} bytes (at most {MAX_NAME})"
                    )));
                }
                m.skip(name)?;
            }
            Ok(())
        }
        ffi::SQFS_INODE_FILE => {
            let _blocks_start = m.u32()?;
            let fragment = m.u32()?;
            let offset = m.u32()?;
            let size = m.u32()?;
            file(m, layout, u64::from(size), fragment, offset)
        }
        ffi::SQFS_INODE_EXT_FILE => {
            let _blocks_start = m.u64()?;
            let size = m.u64()?;
            let _sparse = m.u64()?;
            let _nlink = m.u32()?;
            let fragment = m.u32()?;
            let offset = m.u32()?;
            file(m, layout, size, fragment, offset)
        }
        ffi::SQFS_INODE_SLINK | ffi::SQFS_INODE_EXT_SLINK => {
            let _nlink = m.u32()?;
            let target = m.u32()?;
            if target > MAX_SYMLINK {
                return Err(m.corrupt(format!(
                    "a symlink target of {target} bytes (at most {MAX_SYMLINK})"
                )));
            }
            Ok(())
        }
        ffi::SQFS_INODE_BDEV..=ffi::SQFS_INODE_SOCKET
        | ffi::SQFS_INODE_EXT_BDEV..=ffi::SQFS_INODE_EXT_SOCKET => Ok(()),
        other => Err(m.corrupt(format!("unknown inode type {other}"))),
    }
}

/// A file of `size` bytes: its list of block sizes must fit in the rest of
/// the inode table, its tail refer to an entry of the fragment table.
/// (Where its blocks are is checked as they are read: a file of holes
/// has none.)
fn file(
    m: &mut MetaReader,
    layout: &Layout,
    size: u64,
    fragment: u32,
    offset: u32,
) -> Result<(), SqfsError> {
    let block_size = u64::from(layout.block_size);
    let tail = size % block_size != 0;
    // libsquashfs's rule: the tail has a block of its own unless both
    // fragment fields are set.
    let in_fragment = fragment != u32::MAX && offset != u32::MAX;
    let blocks = size / block_size + u64::from(tail && !in_fragment);
    let room = max_decoded(m.position().0, m.extent.end);
    if blocks * 4 > room {
        return Err(m.corrupt(format!(
            "a file of {size} bytes needs {blocks} block sizes, more than the rest of the table can hold"
        )));
    }
    if tail && in_fragment {
        let count = layout.fragment_count();
        if u64::from(fragment) >= count {
            return Err(m.corrupt(format!(
                "the file's tail is in fragment {fragment}, the fragment table has {count} entries"
            )));
        }
        if offset >= layout.block_size {
            return Err(m.corrupt(format!(
                "the file's tail starts at {offset} in its fragment block, past the block size {block_size}"
            )));
        }
    }
    Ok(())
}

/// A directory listing of `size` bytes at `start`:`offset` in the
/// directory table must lie in it.
fn listing(layout: &Layout, start: u32, offset: u16, size: u64) -> Result<(), SqfsError> {
    if size <= EMPTY_LISTING {
        return Ok(());
    }
    let at = layout.dirs.start.saturating_add(u64::from(start));
    let corrupt = |detail: String| SqfsError::corrupt("directory table", detail);
    if at >= layout.dirs.end || u64::from(offset) >= META_BLOCK {
        return Err(corrupt(format!(
            "a listing at {start}:{offset} is outside the table ({} bytes)",
            layout.dirs.end - layout.dirs.start
        )));
    }
    if size > max_decoded(at, layout.dirs.end) {
        return Err(corrupt(format!(
            "a listing of {size} bytes at {start}:{offset}, more than the rest of the table can hold"
        )));
    }
    Ok(())
}
