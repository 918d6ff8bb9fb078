//! A read-only FUSE server on libfuse3's low-level API.
//!
//! The filesystem side is the [`Filesystem`] trait: stateless, by node ID,
//! thread-safe (the session runs libfuse's multi-threaded loop). This
//! module owns the protocol side: the session on an already-mounted FUSE
//! device (`/dev/fd/N`), the callbacks, and the kernel caching a read-only
//! image allows:
//! - entries (negative ones too) and attributes never expire: nothing
//!   changes under the kernel's feet;
//! - the kernel opens files and directories without asking the server
//!   (`open`/`opendir` answer ENOSYS once, where the kernel allows it), so
//!   a warm read of a file or a listing is no round trip at all; files keep
//!   their page cache across opens, directories their listings, and
//!   symlink targets are cached (older kernels: `keep_cache` and
//!   `cache_readdir` in each open's reply);
//! - the superblock is read-only (the mount's `ro`), so reads never mark
//!   the cached atime stale;
//! - `readdirplus` answers a listing's lookups in the same round trip;
//! - node IDs are stable and hard links share theirs, so the kernel sees
//!   one inode per file, as the image stores it.

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_docs
)]
pub mod ffi;
mod session;

pub use ffi::load;
pub use session::{LoopConfig, serve};

/// An extended attribute: full name ("user.x") and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// An errno value, the one thing an operation reports on failure.
pub type Errno = i32;

/// The node ID of the root directory (FUSE_ROOT_ID).
pub const ROOT: u64 = 1;

/// What `stat` shows of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    /// The inode number shown (`st_ino`); hard links share it.
    pub ino: u64,
    /// Type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    /// Device number of a device node.
    pub rdev: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Box<[u8]>,
    pub node: u64,
    pub attr_ino: u64,
    /// The type bits of `st_mode` (S_IFDIR, ...).
    pub kind: u32,
}

/// A directory's listing, sorted by name; `.` and `..` are not in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dir {
    pub ino: u64,
    pub parent_ino: u64,
    pub entries: Vec<DirEntry>,
}

/// One position of a listing as `readdir` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'a> {
    pub name: &'a [u8],
    /// The inode number shown (`d_ino`).
    pub ino: u64,
    /// `None` for `.` and `..`.
    pub entry: Option<&'a DirEntry>,
    /// The position after this one (the offset that resumes the listing).
    pub next: u64,
}

impl Dir {
    /// The listing from position `offset` on: 0 is `.`, 1 is `..`, then
    /// the entries in order.
    pub fn positions_from(&self, offset: u64) -> impl Iterator<Item = Listed<'_>> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        (start..self.entries.len().saturating_add(2)).map(move |pos| {
            let next = pos as u64 + 1;
            match pos {
                0 => Listed {
                    name: b".",
                    ino: self.ino,
                    entry: None,
                    next,
                },
                1 => Listed {
                    name: b"..",
                    ino: self.parent_ino,
                    entry: None,
                    next,
                },
                _ => {
                    let e = &self.entries[pos - 2];
                    Listed {
                        name: &e.name,
                        ino: e.attr_ino,
                        entry: Some(e),
                        next,
                    }
                }
            }
        })
    }

    /// The entry called `name`.
    pub fn find(&self, name: &[u8]) -> Option<&DirEntry> {
        self.entries
            .binary_search_by(|e| (*e.name).cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Totals for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStats {
    pub block_size: u32,
    pub blocks: u64,
    pub files: u64,
}

/// A read-only filesystem addressed by node ID ([`ROOT`] is the root).
/// Node IDs must be stable for the life of the session: `forget` is not
/// passed on, so an implementation cannot keep per-lookup state.
pub trait Filesystem: Send + Sync {
    /// The node called `name` in directory `parent`; `None` if absent.
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Attr)>, Errno>;
    fn getattr(&self, node: u64) -> Result<Attr, Errno>;
    fn readlink(&self, node: u64) -> Result<Vec<u8>, Errno>;
    /// Up to `size` bytes at `offset` of a regular file, appended to `out`
    /// (fewer only at the end of the file).
    fn read(&self, node: u64, offset: u64, size: usize, out: &mut Vec<u8>) -> Result<(), Errno>;
    fn dir(&self, node: u64) -> Result<std::sync::Arc<Dir>, Errno>;
    /// Extended attributes: full names ("user.x") and values.
    fn xattrs(&self, node: u64) -> Result<Vec<Xattr>, Errno>;
    /// Whether any node can have extended attributes.
    fn has_xattrs(&self) -> bool;
    fn stats(&self) -> FsStats;
}
