//! Extended attributes, read with two metadata readers (the xattr ID
//! table and the key/value table) and nothing else: every count, name and
//! value size is checked before it sizes a loop or an allocation.
//!
//! An inode names an entry of the xattr ID table: where its key/value
//! pairs start (a position in the key/value table), and how many there are.
//! A key is a prefix id (with a flag: the value is stored elsewhere) and
//! the rest of the name; a value is its size and bytes, or, out of line,
//! an 8-byte position of the value shared by several inodes.
//! Linux's limits are the format's here: the image comes from, and goes
//! to, a Linux filesystem (`include/uapi/linux/limits.h`).

use super::layout::XattrLayout;
use super::meta::{META_BLOCK, MetaReader};
use super::{SqfsError, ffi};
use crate::fuse::Xattr;

/// The longest full name ("user.foo"): Linux's `XATTR_NAME_MAX`.
pub(super) const XATTR_NAME_MAX: usize = 255;
/// The largest value: Linux's `XATTR_SIZE_MAX`.
pub(super) const XATTR_SIZE_MAX: u32 = 65536;
/// The most bytes of names (each with its NUL) one inode may have:
/// Linux's `XATTR_LIST_MAX`, the size `listxattr` can return.
pub(super) const XATTR_LIST_MAX: usize = 65536;
/// So at most this many attributes: each name is at least "user." + NUL.
const MAX_XATTRS: u32 = (XATTR_LIST_MAX / 6) as u32;

const ID_TABLE: &str = "xattr id table";
const KV_TABLE: &str = "xattr table";

/// One thread's readers of the xattr tables.
pub(super) struct XattrReaders {
    ids: MetaReader,
    kv: MetaReader,
}

impl XattrReaders {
    pub fn new(
        fp: *mut ffi::sqfs_file_t,
        cmp: &super::obj::Obj<ffi::sqfs_compressor_t>,
        layout: &XattrLayout,
    ) -> Result<XattrReaders, SqfsError> {
        Ok(XattrReaders {
            ids: MetaReader::new(fp, cmp, layout.ids.extent.clone(), ID_TABLE)?,
            kv: MetaReader::new(fp, cmp, layout.kv.clone(), KV_TABLE)?,
        })
    }
}

/// Go to the position `pos` (block relative to the table in the upper
/// bits, offset in the lower 16) of the key/value table.
fn seek_kv(kv: &mut MetaReader, pos: u64) -> Result<(), SqfsError> {
    let block = kv.extent.start.saturating_add(pos >> 16);
    let offset = pos & 0xffff;
    if block >= kv.extent.end || offset >= META_BLOCK {
        return Err(kv.corrupt(format!(
            "position {:#x} points past the end of the table ({} bytes)",
            pos,
            kv.extent.end - kv.extent.start
        )));
    }
    kv.seek(block, offset)
}

/// The attributes of xattr ID `index` (full names, in stored order).
pub(super) fn read(
    r: &mut XattrReaders,
    layout: &XattrLayout,
    index: u32,
) -> Result<Vec<Xattr>, SqfsError> {
    let entry = |e: SqfsError| e.about(format!("entry {index}"));
    let Some((block, offset)) = layout.ids.locate(u64::from(index)) else {
        return Err(SqfsError::corrupt(
            ID_TABLE,
            format!(
                "an inode refers to entry {index}, the table has {}",
                layout.ids.count
            ),
        ));
    };
    r.ids.seek(block, offset).map_err(entry)?;
    let start = r.ids.u64().map_err(entry)?;
    let count = r.ids.u32().map_err(entry)?;
    let _size = r.ids.u32().map_err(entry)?;
    if count > MAX_XATTRS {
        return Err(entry(SqfsError::corrupt(
            ID_TABLE,
            format!("{count} attributes, more than Linux lists for one file ({MAX_XATTRS})"),
        )));
    }
    seek_kv(&mut r.kv, start).map_err(|e| entry(SqfsError::corrupt(ID_TABLE, e.to_string())))?;
    let mut out = Vec::new();
    let mut names = 0;
    // Where to go on after a value stored out of line.
    let mut resume = None;
    for _ in 0..count {
        if let Some((block, offset)) = resume.take() {
            r.kv.seek(block, offset)?;
        }
        let kind = r.kv.u16()?;
        let len = usize::from(r.kv.u16()?);
        let prefix: &[u8] = match u32::from(kind) & ffi::SQFS_XATTR_PREFIX_MASK {
            ffi::SQFS_XATTR_USER => b"user.",
            ffi::SQFS_XATTR_TRUSTED => b"trusted.",
            ffi::SQFS_XATTR_SECURITY => b"security.",
            other => return Err(r.kv.corrupt(format!("unknown name prefix {other}"))),
        };
        let name_len = prefix.len() + len;
        if name_len > XATTR_NAME_MAX {
            return Err(r.kv.corrupt(format!(
                "a name of {name_len} bytes (at most {XATTR_NAME_MAX})"
            )));
        }
        names += name_len + 1;
        if names > XATTR_LIST_MAX {
            return Err(r.kv.corrupt(format!(
                "entry {index}: names of more than {XATTR_LIST_MAX} bytes"
            )));
        }
        let mut name = prefix.to_vec();
        name.resize(name_len, 0);
        r.kv.read(&mut name[prefix.len()..])?;
        let mut size = r.kv.u32()?;
        if u32::from(kind) & ffi::SQFS_XATTR_FLAG_OOL != 0 {
            if size != 8 {
                return Err(r.kv.corrupt(format!(
                    "the reference to a value stored elsewhere has {size} bytes, not 8"
                )));
            }
            let at = r.kv.u64()?;
            resume = Some(r.kv.position());
            seek_kv(&mut r.kv, at)?;
            size = r.kv.u32()?;
        }
        if size > XATTR_SIZE_MAX {
            return Err(r.kv.corrupt(format!(
                "a value of {size} bytes (at most {XATTR_SIZE_MAX})"
            )));
        }
        let mut value = vec![0; size as usize];
        r.kv.read(&mut value)?;
        out.push((name, value));
    }
    Ok(out)
}
