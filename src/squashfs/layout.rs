//! Where an image's parts are, checked before anything is read from them.
//!
//! A SquashFS names its tables by absolute positions in the super block,
//! and the tables with entries of a fixed size (fragments, export, IDs,
//! xattr IDs) have an index: one 8-byte position per metadata block,
//! stored after the blocks. The counts in the super block (and the xattr
//! ID count in its table's header) size those indexes, so they are
//! checked first: every index must fit between its table's start and the
//! next table, and its blocks must form a chain of metadata blocks ending
//! right before it. The Linux kernel requires the same order when it
//! mounts an image (`fs/squashfs/super.c`): data, inode table, directory
//! table, fragment table, export table, ID table, xattr tables, each
//! table's blocks before its index. mksquashfs and libsquashfs write it.
//!
//! After [`Layout::check`], an index costs at most what it occupies in
//! the file, and each metadata reader is bounded to its table's extent.

use std::ops::Range;

use super::file::SqfsFile;
use super::meta::{MAX_META_DISK, META_BLOCK, MIN_META_DISK};
use super::{SqfsError, ffi};
use crate::squashfs::superblock::{NO_TABLE, SUPERBLOCK_LEN, Superblock};

/// A table with an index of metadata blocks.
#[derive(Debug, Clone)]
pub(super) struct Indexed {
    /// Its entries (their count is taken from the image; each lies in a
    /// block the index lists).
    pub count: u64,
    /// Bytes per entry.
    pub entry: u64,
    /// Where each metadata block starts.
    pub blocks: Vec<u64>,
    /// Where the blocks lie: from the first to the index.
    pub extent: Range<u64>,
}

impl Indexed {
    /// The position (block, offset) of entry `n`, which must be < `count`
    /// (entries never straddle blocks: their sizes divide 8 KiB).
    pub fn locate(&self, n: u64) -> Option<(u64, u64)> {
        if n >= self.count {
            return None;
        }
        let at = n * self.entry;
        let block = *self.blocks.get((at / META_BLOCK) as usize)?;
        Some((block, at % META_BLOCK))
    }
}

/// The xattr tables: key/value pairs, then the ID table that points into
/// them.
#[derive(Debug, Clone)]
pub(super) struct XattrLayout {
    /// The key/value table: from its start to the xattr ID blocks.
    pub kv: Range<u64>,
    pub ids: Indexed,
}

/// An image's parts, in file order.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub block_size: u32,
    /// File data and fragment blocks (after the super block and the
    /// compressor options, before the inode table).
    pub data: Range<u64>,
    pub inodes: Range<u64>,
    pub dirs: Range<u64>,
    pub fragments: Option<Indexed>,
    pub ids: Indexed,
    pub xattrs: Option<XattrLayout>,
}

/// The fields of libsquashfs's super block struct.
pub(super) fn superblock_of(sb: &ffi::sqfs_super_t) -> Superblock {
    Superblock {
        inode_count: sb.inode_count,
        modification_time: sb.modification_time,
        block_size: sb.block_size,
        fragment_entry_count: sb.fragment_entry_count,
        compression_id: sb.compression_id,
        block_log: sb.block_log,
        flags: sb.flags,
        id_count: sb.id_count,
        version_major: sb.version_major,
        version_minor: sb.version_minor,
        root_inode_ref: sb.root_inode_ref,
        bytes_used: sb.bytes_used,
        id_table_start: sb.id_table_start,
        xattr_id_table_start: sb.xattr_id_table_start,
        inode_table_start: sb.inode_table_start,
        directory_table_start: sb.directory_table_start,
        fragment_table_start: sb.fragment_table_start,
        export_table_start: sb.export_table_start,
    }
}

/// Read `len` bytes at `at` (inside the SquashFS) straight from the file.
fn read_raw(file: &SqfsFile, at: u64, len: usize) -> Result<Vec<u8>, SqfsError> {
    let fp = file.as_ptr();
    let mut buf = vec![0u8; len];
    // SAFETY: the file object's own read callback, with a buffer of `len`
    // writable bytes.
    let ret = unsafe {
        let read_at = (*fp).read_at.expect("the file object reads");
        read_at(fp, at, buf.as_mut_ptr().cast(), len)
    };
    if ret < 0 {
        return Err(file.explain(SqfsError::Lib {
            what: format!("reading {len} bytes at {at}"),
            code: ret,
            detail: None,
        }));
    }
    Ok(buf)
}

impl Layout {
    /// Check the super block `sb` of the SquashFS in `file` (whose size
    /// is what follows the SquashFS's start) and the table indexes.
    pub fn check(sb: &ffi::sqfs_super_t, file: &SqfsFile) -> Result<Layout, SqfsError> {
        let s = superblock_of(sb);
        s.validate(file.size())?;
        if s.id_count == 0 {
            return Err(SqfsError::corrupt(
                "ID table",
                "no entries (there is always one)",
            ));
        }
        let bytes_used = s.bytes_used;
        // The tables from the last to the first: each one's index must end
        // before the blocks of the one after it (`next`).
        let mut next = bytes_used;
        let xattrs = if s.flags & ffi::SQFS_FLAG_NO_XATTRS as u16 == 0
            && s.xattr_id_table_start != NO_TABLE
        {
            let table = "xattr id table";
            let start = s.xattr_id_table_start;
            let header_end = start + 16;
            if header_end > next {
                return Err(SqfsError::corrupt(
                    table,
                    format!("its header at {start} runs past the end of the image ({bytes_used})"),
                ));
            }
            let header = read_raw(file, start, 16)?;
            let kv_start = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
            let count = u64::from(u32::from_le_bytes(header[8..12].try_into().expect("4")));
            let ids = index(
                file,
                table,
                header_end,
                count,
                16,
                s.directory_table_start,
                next,
            )?;
            let kv_end = if ids.blocks.is_empty() {
                start
            } else {
                ids.extent.start
            };
            if !(s.directory_table_start..=kv_end).contains(&kv_start) {
                return Err(SqfsError::corrupt(
                    table,
                    format!(
                        "the key/value table start {kv_start} is outside {}..{kv_end}",
                        s.directory_table_start
                    ),
                ));
            }
            next = kv_start;
            Some(XattrLayout {
                kv: kv_start..kv_end,
                ids,
            })
        } else {
            None
        };
        let ids = index(
            file,
            "ID table",
            s.id_table_start,
            u64::from(s.id_count),
            4,
            s.directory_table_start,
            next,
        )?;
        next = ids.extent.start;
        // The export table (inode number -> reference, for NFS) is not
        // read, only checked: it sizes no allocation of rfake's.
        if s.export_table_start != NO_TABLE {
            let t = index(
                file,
                "export table",
                s.export_table_start,
                u64::from(s.inode_count),
                8,
                s.directory_table_start,
                next,
            )?;
            next = t.extent.start;
        }
        // libsquashfs reads no fragment table with this flag or no entries.
        let fragments = if s.flags & ffi::SQFS_FLAG_NO_FRAGMENTS as u16 == 0
            && s.fragment_table_start != NO_TABLE
            && s.fragment_entry_count > 0
        {
            let t = index(
                file,
                "fragment table",
                s.fragment_table_start,
                u64::from(s.fragment_entry_count),
                16,
                s.directory_table_start,
                next,
            )?;
            next = t.extent.start;
            Some(t)
        } else {
            None
        };
        if s.directory_table_start > next {
            return Err(SqfsError::corrupt(
                "directory table",
                format!(
                    "it starts at {}, after the table that follows it (at {next})",
                    s.directory_table_start
                ),
            ));
        }
        if s.inode_table_start >= s.directory_table_start {
            return Err(SqfsError::corrupt(
                "inode table",
                format!(
                    "it starts at {}, not before the directory table (at {})",
                    s.inode_table_start, s.directory_table_start
                ),
            ));
        }
        // The compressor's options, if any, are a metadata block right
        // after the super block; the data follows.
        let mut data_start = SUPERBLOCK_LEN as u64;
        if s.flags & ffi::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0 {
            let header = read_raw(file, data_start, 2)?;
            data_start += 2 + u64::from(u16::from_le_bytes([header[0], header[1]]) & 0x7fff);
        }
        if data_start > s.inode_table_start {
            return Err(SqfsError::corrupt(
                "inode table",
                format!(
                    "it starts at {}, inside the compressor options (which end at {data_start})",
                    s.inode_table_start
                ),
            ));
        }
        Ok(Layout {
            block_size: s.block_size,
            data: data_start..s.inode_table_start,
            inodes: s.inode_table_start..s.directory_table_start,
            dirs: s.directory_table_start..next,
            fragments,
            ids,
            xattrs,
        })
    }

    /// Whether the image stores extended attributes.
    pub fn has_xattrs(&self) -> bool {
        self.xattrs.is_some()
    }

    /// Entries in the fragment table.
    pub fn fragment_count(&self) -> u64 {
        self.fragments.as_ref().map_or(0, |t| t.count)
    }
}

/// Read and check the index at `start` of a table of `count` entries of
/// `entry` bytes, whose blocks lie after `lower` and whose index must end
/// by `next`.
fn index(
    file: &SqfsFile,
    table: &'static str,
    start: u64,
    count: u64,
    entry: u64,
    lower: u64,
    next: u64,
) -> Result<Indexed, SqfsError> {
    // At most 2^32 entries of 16 bytes: no overflow.
    let blocks = (count * entry).div_ceil(META_BLOCK);
    let index_len = blocks * 8;
    let end = start.saturating_add(index_len);
    if start < lower || end > next {
        return Err(SqfsError::corrupt(
            table,
            format!(
                "{count} entries need an index of {index_len} bytes at {start}, which does not fit in {lower}..{next}"
            ),
        ));
    }
    let raw = read_raw(file, start, index_len as usize)?;
    let starts: Vec<u64> = raw
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    // The blocks follow one another, each at most one full block long, and
    // the last ends where the index starts.
    let mut prev: Option<u64> = None;
    for (n, &at) in starts.iter().chain(std::iter::once(&start)).enumerate() {
        let ok = match prev {
            None => at >= lower,
            Some(p) => at > p && (MIN_META_DISK..=MAX_META_DISK).contains(&(at - p)),
        };
        if !ok {
            let what = if n == starts.len() {
                format!(
                    "its last block (at {}) does not end right before the index at {start}",
                    prev.unwrap_or(0)
                )
            } else {
                format!("index entry {n} points to {at}, not to the next metadata block")
            };
            return Err(SqfsError::corrupt(table, what));
        }
        prev = Some(at);
    }
    let first = starts.first().copied().unwrap_or(start);
    Ok(Indexed {
        count,
        entry,
        blocks: starts,
        extent: first..start,
    })
}
