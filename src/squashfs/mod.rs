//! SquashFS in-process: writing a [`Tree`](crate::build::tree::Tree) as an
//! image and reading images (bare, or inside a SIF file at an offset).
//!
//! Both sides use libsquashfs, the library of squashfs-tools-ng (Debian's
//! `libsquashfs-dev`), through bindings that `build.rs` generates from its
//! headers; the library is loaded when first used ([`ffi`]).
//! [`write_image`] lays out the image like `gensquashfs`: super block,
//! compressor options, data and fragment blocks (from the multi-threaded
//! block processor, deduplicated), inode table, directory table, fragment
//! table, ID table, xattr tables, padded to 4 KiB. The
//! output depends only on the tree and the options: every entry is owned
//! by 0:0 and has its own modification time from the tree, or `opts.mtime`
//! when it has none; the super block has `opts.mtime`.
//! [`ImageFs`] serves an image by node ID (the FUSE server); [`Reader`]
//! gives the same by path (`rfake inspect`): super block facts, `stat`,
//! listing, walking and reading files. Both read through one path, which
//! treats the image as untrusted: the super block and every table's index
//! are checked against the file first (`layout.rs`), an inode's sizes
//! before libsquashfs decodes it (`inode.rs`), xattrs are read by rfake
//! itself (`xattr.rs`); a contradiction is [`SqfsError::Corrupt`], naming
//! the table.

mod cmp;
mod cold;
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]
pub mod ffi;
mod file;
mod fs;
mod inode;
mod layout;
mod meta;
mod node_cache;
mod obj;
mod prefetch;
mod profile;
mod read;
pub mod superblock;
mod write;
mod xattr;

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod fs_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
pub(crate) mod test_image;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use cold::{Cold, ColdSettings, Identity};
pub use fs::{BlockKey, FRAGMENT_BLOCKS, ImageFs};
pub use read::Reader;
pub use write::write_image;

/// The compressors rfake offers (libsquashfs also reads lzo and lzma).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 4] = [
        Compression::Gzip,
        Compression::Xz,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The name used by mksquashfs, unsquashfs and rfake's options.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    fn id(self) -> ffi::SQFS_COMPRESSOR {
        match self {
            Compression::Gzip => ffi::SQFS_COMP_GZIP,
            Compression::Xz => ffi::SQFS_COMP_XZ,
            Compression::Lz4 => ffi::SQFS_COMP_LZ4,
            Compression::Zstd => ffi::SQFS_COMP_ZSTD,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = SqfsError;
    fn from_str(s: &str) -> Result<Compression, SqfsError> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| SqfsError::UnknownCompression(s.to_owned()))
    }
}

/// How [`write_image`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Seconds since the epoch: the super block's time, and the time of
    /// every entry without one of its own (`Meta::mtime` is `None`).
    pub mtime: u32,
    /// Compression threads of the block processor (0 counts as 1).
    pub workers: usize,
}

/// The smallest and largest block sizes SquashFS allows.
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Gzip,
            block_size: DEFAULT_BLOCK_SIZE,
            mtime: 0,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Reported to the progress callback as file data goes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Regular files (inodes) whose data has been handed over completely.
    pub files_done: u64,
    /// Bytes of file data handed over so far.
    pub bytes_done: u64,
}

/// What [`write_image`] made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// Size of the image file, padding included.
    pub bytes: u64,
    /// Number of inodes (hard links share one).
    pub inodes: u64,
}

/// Facts from an image's super block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperInfo {
    /// "gzip", "xz", "lz4", "zstd", "lzo" or "lzma".
    pub compression: String,
    pub block_size: u32,
    pub inode_count: u32,
    /// Bytes used by the filesystem, padding not counted.
    pub bytes_used: u64,
    pub mtime: u32,
    /// `SQFS_FLAG_*` bits (see [`SuperInfo::has_flag`] and friends).
    pub flags: u16,
    pub fragment_count: u32,
    pub id_count: u16,
}

impl SuperInfo {
    /// Whether the image has an NFS export table.
    pub fn exportable(&self) -> bool {
        u32::from(self.flags) & ffi::SQFS_FLAG_EXPORTABLE != 0
    }

    /// Whether the image stores extended attributes.
    pub fn has_xattrs(&self) -> bool {
        u32::from(self.flags) & ffi::SQFS_FLAG_NO_XATTRS == 0
    }

    /// Whether non-default compressor options follow the super block.
    pub fn has_compressor_options(&self) -> bool {
        u32::from(self.flags) & ffi::SQFS_FLAG_COMPRESSOR_OPTIONS != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl EntryKind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            EntryKind::Dir => ffi::SQFS_INODE_MODE_DIR,
            EntryKind::File => ffi::SQFS_INODE_MODE_REG,
            EntryKind::Symlink => ffi::SQFS_INODE_MODE_LNK,
            EntryKind::CharDev => ffi::SQFS_INODE_MODE_CHR,
            EntryKind::BlockDev => ffi::SQFS_INODE_MODE_BLK,
            EntryKind::Fifo => ffi::SQFS_INODE_MODE_FIFO,
            EntryKind::Socket => ffi::SQFS_INODE_MODE_SOCK,
        }
    }
}

/// One entry of an image, as [`Reader`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The entry's name in its directory ("/" for the root).
    pub name: String,
    pub kind: EntryKind,
    /// Permission bits (the low 12 bits of `st_mode`); the type is `kind`.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// File size, symlink target length, or directory listing size (as
    /// stored, i.e. what `stat` shows through the kernel driver).
    pub size: u64,
    pub mtime: u32,
    pub nlink: u32,
    /// Inode number (the same for all names of a hard-linked file).
    pub inode: u32,
    pub symlink_target: Option<String>,
    /// Extended attributes, full names ("user.foo"), in stored order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// What went wrong writing or reading an image.
#[derive(Debug, thiserror::Error)]
pub enum SqfsError {
    /// A libsquashfs call failed; `what` says which step, `code` is the
    /// library's `SQFS_ERROR` value, `detail` the underlying I/O error.
    #[error("{what}: {}{}", code_name(*code), detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Lib {
        what: String,
        code: i32,
        detail: Option<String>,
    },
    /// Reading a file's bytes for the image, or opening the image.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid SquashFS options: {0}")]
    Options(String),
    #[error("unknown compression {0:?} (known: gzip, xz, lz4, zstd)")]
    UnknownCompression(String),
    #[error("{path}: hard link to {target}, which is not a regular file in the image")]
    BadHardLink { path: PathBuf, target: PathBuf },
    #[error("{path}: {size} bytes of content expected, the source gave {got}")]
    ShortContent { path: PathBuf, size: u64, got: u64 },
    #[error("{path}: no such file or directory in the image")]
    NotFound { path: String },
    #[error("{path}: not a directory in the image")]
    NotDir { path: String },
    #[error("{path}: not a regular file in the image")]
    NotFile { path: String },
    #[error("{path}: too many levels of symbolic links in the image")]
    SymlinkLoop { path: String },
    #[error("{path}: {size} bytes, more than the {max} allowed")]
    TooLarge { path: String, size: u64, max: u64 },
    /// The image contradicts itself or the format: a length, count or
    /// offset that points outside its table or the image, a value past the
    /// format's limits. `table` names where ("xattr id table").
    #[error("corrupt {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The super block is refused (see [`crate::squashfs::superblock`]).
    #[error("{0}")]
    Superblock(#[from] crate::squashfs::superblock::SquashfsError),
    /// libsquashfs itself cannot be loaded: a host prerequisite (exit 69),
    /// not a fault of the image.
    #[error(transparent)]
    Library(#[from] crate::dynlib::LibraryError),
}

impl SqfsError {
    /// The libsquashfs error code, for `Lib` errors.
    pub fn code(&self) -> Option<i32> {
        match self {
            SqfsError::Lib { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the error is about a path that is not in the image (or not
    /// of the kind asked for), rather than about the image itself.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            SqfsError::NotFound { .. }
                | SqfsError::NotDir { .. }
                | SqfsError::NotFile { .. }
                | SqfsError::SymlinkLoop { .. }
        )
    }

    /// A corruption found in `table`.
    pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> SqfsError {
        SqfsError::Corrupt {
            table,
            detail: detail.into(),
        }
    }

    /// The same error, said to be about `what` ("the inode at 0x1a2"):
    /// prefixed to a corruption's detail or a library call's step.
    pub(crate) fn about(self, what: impl fmt::Display) -> SqfsError {
        match self {
            SqfsError::Corrupt { table, detail } => SqfsError::Corrupt {
                table,
                detail: format!("{what}: {detail}"),
            },
            SqfsError::Lib {
                what: w,
                code,
                detail,
            } => SqfsError::Lib {
                what: format!("{what}: {w}"),
                code,
                detail,
            },
            e => e,
        }
    }
}

/// The identifier of a libsquashfs error code, as spelled in error.h.
pub fn code_name(code: i32) -> String {
    let name = match code {
        ffi::SQFS_ERROR_ALLOC => "SQFS_ERROR_ALLOC",
        ffi::SQFS_ERROR_IO => "SQFS_ERROR_IO",
        ffi::SQFS_ERROR_COMPRESSOR => "SQFS_ERROR_COMPRESSOR",
        ffi::SQFS_ERROR_INTERNAL => "SQFS_ERROR_INTERNAL",
        ffi::SQFS_ERROR_CORRUPTED => "SQFS_ERROR_CORRUPTED",
        ffi::SQFS_ERROR_UNSUPPORTED => "SQFS_ERROR_UNSUPPORTED",
        ffi::SQFS_ERROR_OVERFLOW => "SQFS_ERROR_OVERFLOW",
        ffi::SQFS_ERROR_OUT_OF_BOUNDS => "SQFS_ERROR_OUT_OF_BOUNDS",
        ffi::SFQS_ERROR_SUPER_MAGIC => "SFQS_ERROR_SUPER_MAGIC (not a SquashFS)",
        ffi::SFQS_ERROR_SUPER_VERSION => "SFQS_ERROR_SUPER_VERSION (not SquashFS 4.0)",
        ffi::SQFS_ERROR_SUPER_BLOCK_SIZE => "SQFS_ERROR_SUPER_BLOCK_SIZE",
        ffi::SQFS_ERROR_NOT_DIR => "SQFS_ERROR_NOT_DIR",
        ffi::SQFS_ERROR_NO_ENTRY => "SQFS_ERROR_NO_ENTRY",
        ffi::SQFS_ERROR_LINK_LOOP => "SQFS_ERROR_LINK_LOOP",
        ffi::SQFS_ERROR_NOT_FILE => "SQFS_ERROR_NOT_FILE",
        ffi::SQFS_ERROR_ARG_INVALID => "SQFS_ERROR_ARG_INVALID",
        ffi::SQFS_ERROR_SEQUENCE => "SQFS_ERROR_SEQUENCE",
        other => return format!("libsquashfs error {other}"),
    };
    name.to_owned()
}
