//! Reading a metadata table: libsquashfs's metadata block reader, kept
//! inside one table's extent and with its failures named after the table.
//!
//! SquashFS keeps everything but file data in metadata blocks: a 2-byte
//! header (bit 15: stored uncompressed; the rest: the size on disk, at most
//! 8 KiB) and at most 8 KiB of data once decompressed. A table is a chain
//! of them; a position in it is (where its block starts, offset inside the
//! decompressed block). The reader holds one block (two 8 KiB buffers) and
//! allocates nothing else, whatever the image says.

use std::ops::Range;

use super::obj::Obj;
use super::{SqfsError, code_name, ffi};

/// Decompressed bytes in a metadata block, at most.
pub(super) const META_BLOCK: u64 = ffi::SQFS_META_BLOCK_SIZE as u64;
/// A metadata block takes at most this many bytes on disk (header and
/// 8 KiB stored as is)...
pub(super) const MAX_META_DISK: u64 = META_BLOCK + 2;
/// ...and at least this many (header and one byte).
pub(super) const MIN_META_DISK: u64 = 3;

/// The most decompressed bytes that the metadata blocks between `from`
/// and `to` on disk can hold: the bound for a length read from a table
/// that must lie in that extent.
pub(super) fn max_decoded(from: u64, to: u64) -> u64 {
    (to.saturating_sub(from) / MIN_META_DISK + 1).saturating_mul(META_BLOCK)
}

/// A metadata reader over one table.
pub(super) struct MetaReader {
    obj: Obj<ffi::sqfs_meta_reader_t>,
    /// Named in errors ("inode table").
    pub table: &'static str,
    /// Where the table's blocks may be.
    pub extent: Range<u64>,
}

impl MetaReader {
    /// A reader for the table `table` whose blocks lie in `extent`.
    /// `fp` and `cmp` must outlive it.
    pub fn new(
        fp: *mut ffi::sqfs_file_t,
        cmp: &Obj<ffi::sqfs_compressor_t>,
        extent: Range<u64>,
        table: &'static str,
    ) -> Result<MetaReader, SqfsError> {
        // SAFETY: a constructor with live arguments; the caller keeps them
        // alive for as long as the reader (field order of its owner).
        let obj = unsafe {
            Obj::from_raw(
                ffi::lib().sqfs_meta_reader_create(fp, cmp.as_ptr(), extent.start, extent.end),
                &format!("creating the {table} reader"),
            )?
        };
        Ok(MetaReader { obj, table, extent })
    }

    pub fn as_ptr(&self) -> *mut ffi::sqfs_meta_reader_t {
        self.obj.as_ptr()
    }

    /// Turn a library error code into a corruption of this table (an I/O
    /// error of the file stays one: the caller adds the file's detail).
    pub fn fail(&self, ret: i32, what: impl FnOnce() -> String) -> SqfsError {
        if ret == ffi::SQFS_ERROR_IO || ret == ffi::SQFS_ERROR_ALLOC {
            SqfsError::Lib {
                what: format!("reading the {}: {}", self.table, what()),
                code: ret,
                detail: None,
            }
        } else {
            SqfsError::corrupt(self.table, format!("{}: {}", what(), code_name(ret)))
        }
    }

    /// A corruption of this table.
    pub fn corrupt(&self, detail: String) -> SqfsError {
        SqfsError::corrupt(self.table, detail)
    }

    /// Go to byte `offset` of the block at `block` (absolute).
    pub fn seek(&mut self, block: u64, offset: u64) -> Result<(), SqfsError> {
        if !self.extent.contains(&block) || offset >= META_BLOCK {
            return Err(SqfsError::corrupt(
                self.table,
                format!(
                    "position {block}:{offset} is outside the table ({}..{})",
                    self.extent.start, self.extent.end
                ),
            ));
        }
        // SAFETY: a live reader; plain integers.
        let ret =
            unsafe { ffi::lib().sqfs_meta_reader_seek(self.as_ptr(), block, offset as usize) };
        if ret < 0 {
            return Err(self.fail(ret, || format!("the metadata block at {block}")));
        }
        Ok(())
    }

    /// Where the next read starts.
    pub fn position(&self) -> (u64, u64) {
        let (mut block, mut offset) = (0, 0);
        // SAFETY: a live reader; the outputs are plain integers.
        unsafe { ffi::lib().sqfs_meta_reader_get_position(self.as_ptr(), &mut block, &mut offset) };
        (block, offset as u64)
    }

    /// Fill `buf` from the current position on (crossing into the next
    /// blocks of the table as needed).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<(), SqfsError> {
        if buf.is_empty() {
            return Ok(());
        }
        let (block, offset) = self.position();
        // SAFETY: a live reader; `buf` has `buf.len()` writable bytes.
        let ret = unsafe {
            ffi::lib().sqfs_meta_reader_read(self.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        if ret < 0 {
            return Err(self.fail(ret, || format!("{} bytes from {block}:{offset}", buf.len())));
        }
        Ok(())
    }

    pub fn u16(&mut self) -> Result<u16, SqfsError> {
        let mut b = [0; 2];
        self.read(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn u32(&mut self) -> Result<u32, SqfsError> {
        let mut b = [0; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn u64(&mut self) -> Result<u64, SqfsError> {
        let mut b = [0; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Skip `n` bytes.
    pub fn skip(&mut self, mut n: u64) -> Result<(), SqfsError> {
        let mut buf = [0; 256];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}
