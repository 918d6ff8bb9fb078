//! For the tests of the reading side: a small image written by the in-tree
//! writer with one of everything a reader parses (xattrs, some stored out
//! of line, symlinks, fragments, full and sparse blocks, hard links,
//! nested directories), and [`Img`], which edits an image's bytes the way
//! a corrupted file would differ: superblock fields, table indexes, and
//! fields inside (compressed) metadata blocks.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Compression, WriteOptions, write_image};
use crate::build::tree::{Content, Meta, Node, Tree};
use crate::squashfs::superblock::{NO_TABLE, Superblock};

/// The fixture's block size: small, so that a few KiB make several blocks.
pub(super) const BLOCK_SIZE: u32 = 4096;

fn file(data: &[u8], xattrs: &[(&str, &[u8])]) -> Node {
    let mut meta = Meta::with_mode(0o644);
    for (k, v) in xattrs {
        meta.xattrs.insert((*k).into(), v.to_vec());
    }
    Node::File {
        meta,
        size: data.len() as u64,
        content: Content::Bytes(Arc::new(data.to_vec())),
    }
}

/// Bytes that do not compress much.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The fixture's tree.
pub(super) fn fixture_tree() -> Tree {
    let shared: &[u8] = b"a value long enough to be stored once, out of line";
    let mut t = Tree::default();
    let mut ins = |p: &str, n: Node| t.insert(Path::new(p), n).unwrap();
    ins(
        "hello.txt",
        file(
            b"hello\n",
            &[
                ("user.a", b"1"),
                ("user.shared", shared),
                ("trusted.t", b""),
            ],
        ),
    );
    ins(
        "big.bin",
        file(&noise(3 * BLOCK_SIZE as usize + 100, 7), &[]),
    );
    let mut sparse = vec![0u8; 2 * BLOCK_SIZE as usize];
    sparse.extend_from_slice(b"tail");
    ins("sparse", file(&sparse, &[("user.shared", shared)]));
    ins("dir/inner.txt", file(b"inner\n", &[]));
    ins("dir/deeper/leaf", file(b"leaf", &[]));
    ins(
        "dir/hard",
        Node::HardLink {
            target: "hello.txt".into(),
        },
    );
    let mut link_meta = Meta::with_mode(0o777);
    link_meta.xattrs.insert("user.l".into(), b"x".to_vec());
    ins(
        "link",
        Node::Symlink {
            meta: link_meta,
            target: "dir/inner.txt".into(),
        },
    );
    ins(
        "abs",
        Node::Symlink {
            meta: Meta::with_mode(0o777),
            target: "/dir/deeper".into(),
        },
    );
    ins("empty", file(b"", &[]));
    t
}

/// Write the fixture compressed with `compression` as `dir/fixture.sqfs`.
pub(super) fn fixture_with(dir: &Path, compression: Compression) -> PathBuf {
    let path = dir.join("fixture.sqfs");
    File::create(&path).unwrap();
    let opts = WriteOptions {
        compression,
        block_size: BLOCK_SIZE,
        mtime: 1_700_000_000,
        workers: 1,
    };
    write_image(&path, &fixture_tree(), None, &opts, &mut |_| {}).unwrap();
    path
}

/// The fixture's bytes (gzip).
pub(super) fn fixture_bytes() -> Vec<u8> {
    fixture_bytes_with(Compression::Gzip)
}

/// The fixture's bytes, compressed with `compression`.
pub(crate) fn fixture_bytes_with(compression: Compression) -> Vec<u8> {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::read(fixture_with(scratch.path(), compression)).unwrap()
}

/// Bytes of a SquashFS image, edited in place.
pub(super) struct Img {
    pub bytes: Vec<u8>,
}

/// A table with an index of metadata block positions (all absolute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Table {
    Fragment,
    Export,
    Id,
    XattrId,
}

impl Img {
    pub fn new(bytes: Vec<u8>) -> Img {
        Img { bytes }
    }

    pub fn sb(&self) -> Superblock {
        Superblock::parse(&self.bytes).unwrap()
    }

    pub fn set_sb(&mut self, sb: &Superblock) {
        self.bytes[..96].copy_from_slice(&sb.to_bytes());
    }

    pub fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes[at..at + 2].try_into().unwrap())
    }

    pub fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    pub fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    pub fn put(&mut self, at: usize, value: &[u8]) {
        self.bytes[at..at + value.len()].copy_from_slice(value);
    }

    /// Where a table's index is, and how many metadata blocks it lists.
    pub fn index(&self, table: Table) -> Option<(usize, usize)> {
        let sb = self.sb();
        let (start, bytes) = match table {
            Table::Fragment => (
                sb.fragment_table_start,
                u64::from(sb.fragment_entry_count) * 16,
            ),
            Table::Export => (sb.export_table_start, u64::from(sb.inode_count) * 8),
            Table::Id => (sb.id_table_start, u64::from(sb.id_count) * 4),
            Table::XattrId => {
                let start = sb.xattr_id_table_start;
                if start == NO_TABLE {
                    return None;
                }
                let count = self.u32_at(start as usize + 8);
                (start + 16, u64::from(count) * 16)
            }
        };
        (start != NO_TABLE).then(|| (start as usize, bytes.div_ceil(8192) as usize))
    }

    /// The position of block `n` of a table.
    pub fn table_block(&self, table: Table, n: usize) -> usize {
        let (at, count) = self.index(table).unwrap();
        assert!(n < count, "{table:?} has {count} blocks");
        self.u64_at(at + 8 * n) as usize
    }

    /// The chain of metadata blocks from `from` up to `to`.
    fn chain(&self, from: usize, to: usize, out: &mut Vec<usize>) {
        let mut at = from;
        while at < to && at + 2 <= self.bytes.len() {
            out.push(at);
            at += 2 + usize::from(self.u16_at(at) & 0x7fff);
        }
    }

    /// Where every metadata block of a sound image is: the compressor's
    /// options, the inode, directory and xattr key/value tables, and the
    /// blocks the table indexes list.
    pub fn meta_blocks(&self) -> Vec<usize> {
        let sb = self.sb();
        let mut out = Vec::new();
        if sb.flags & super::ffi::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0 {
            out.push(96);
        }
        let inodes = sb.inode_table_start as usize;
        let dirs = sb.directory_table_start as usize;
        self.chain(inodes, dirs, &mut out);
        let mut firsts = Vec::new();
        for table in [Table::Fragment, Table::Export, Table::Id, Table::XattrId] {
            if let Some((_, n)) = self.index(table) {
                for i in 0..n {
                    let at = self.table_block(table, i);
                    out.push(at);
                    if i == 0 {
                        firsts.push(at);
                    }
                }
            }
        }
        let xattr_ids = (sb.xattr_id_table_start != NO_TABLE).then(|| {
            let kv = self.u64_at(sb.xattr_id_table_start as usize) as usize;
            firsts.push(kv);
            let end = self
                .index(Table::XattrId)
                .filter(|&(_, n)| n > 0)
                .map_or(sb.xattr_id_table_start as usize, |_| {
                    self.table_block(Table::XattrId, 0)
                });
            (kv, end)
        });
        let dirs_end = firsts
            .iter()
            .copied()
            .min()
            .unwrap_or(sb.bytes_used as usize);
        self.chain(dirs, dirs_end, &mut out);
        if let Some((kv, end)) = xattr_ids {
            self.chain(kv, end, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Where a sound image keeps its lengths, counts and offsets outside
    /// metadata blocks: the super block's fields, the xattr ID table's
    /// header, every table index entry, every metadata block header.
    pub fn hot_offsets(&self) -> Vec<usize> {
        let sb = self.sb();
        let mut out: Vec<usize> = vec![
            4, 8, 12, 16, 20, 22, 24, 26, 28, 30, 32, 40, 48, 56, 64, 72, 80, 88,
        ];
        if sb.xattr_id_table_start != NO_TABLE {
            let at = sb.xattr_id_table_start as usize;
            out.extend([at, at + 8]);
        }
        for table in [Table::Fragment, Table::Export, Table::Id, Table::XattrId] {
            if let Some((at, n)) = self.index(table) {
                out.extend((0..n).map(|i| at + 8 * i));
            }
        }
        out.extend(self.meta_blocks());
        out
    }

    /// The metadata block at `at`, decompressed, and its size on disk.
    pub fn meta(&self, at: usize) -> (Vec<u8>, usize) {
        let header = self.u16_at(at);
        let size = usize::from(header & 0x7fff);
        let raw = &self.bytes[at + 2..at + 2 + size];
        let data = if header & 0x8000 != 0 {
            raw.to_vec()
        } else {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(raw)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        (data, size + 2)
    }

    /// Change the decompressed contents of the metadata block at `at` with
    /// `edit`, and store it again. If it needs more room than before, the
    /// rest of the image moves up, and every absolute position after it
    /// (superblock, table indexes, the xattr table's start) with it; so
    /// only single-block inode, directory and xattr tables can be edited
    /// (positions inside them are relative).
    pub fn edit_meta(&mut self, at: usize, edit: impl FnOnce(&mut Vec<u8>)) {
        let (mut data, old_len) = self.meta(at);
        edit(&mut data);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&data).unwrap();
        let packed = z.finish().unwrap();
        let mut block = Vec::new();
        if packed.len() < data.len() {
            block.extend_from_slice(&(packed.len() as u16).to_le_bytes());
            block.extend_from_slice(&packed);
        } else {
            block.extend_from_slice(&(data.len() as u16 | 0x8000).to_le_bytes());
            block.extend_from_slice(&data);
        }
        if block.len() <= old_len {
            self.put(at, &block);
            return;
        }
        let delta = (block.len() - old_len) as u64;
        let at64 = at as u64;
        let shift = |v: u64| {
            if v != NO_TABLE && v > at64 {
                v + delta
            } else {
                v
            }
        };
        self.bytes.splice(at..at + old_len, block);
        let mut sb = self.sb();
        sb.bytes_used = shift(sb.bytes_used);
        sb.inode_table_start = shift(sb.inode_table_start);
        sb.directory_table_start = shift(sb.directory_table_start);
        sb.fragment_table_start = shift(sb.fragment_table_start);
        sb.export_table_start = shift(sb.export_table_start);
        sb.id_table_start = shift(sb.id_table_start);
        sb.xattr_id_table_start = shift(sb.xattr_id_table_start);
        self.set_sb(&sb);
        if sb.xattr_id_table_start != NO_TABLE {
            let kv = sb.xattr_id_table_start as usize;
            let v = shift(self.u64_at(kv));
            self.put(kv, &v.to_le_bytes());
        }
        for table in [Table::Fragment, Table::Export, Table::Id, Table::XattrId] {
            if let Some((index, count)) = self.index(table) {
                for n in 0..count {
                    let v = shift(self.u64_at(index + 8 * n));
                    self.put(index + 8 * n, &v.to_le_bytes());
                }
            }
        }
    }
}
