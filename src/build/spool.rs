//! The build's spool: one temporary file (beside the output, removed with
//! it) holding the bytes of tar members and layer files, so a source that
//! can only be read once (a compressed stream) is read once, and the
//! writer reads each file's bytes back by offset.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::tree::Content;

/// Append-only store of file contents.
#[derive(Debug)]
pub struct Spool {
    file: File,
    len: u64,
}

impl Spool {
    /// A spool in `file` (created by the caller, e.g. beside the output).
    pub fn new(file: File) -> Spool {
        Spool { file, len: 0 }
    }

    /// Copy exactly `len` bytes from `reader` into the spool.
    pub fn append(&mut self, reader: &mut dyn Read, len: u64) -> io::Result<Content> {
        let offset = self.len;
        self.file.seek(SeekFrom::Start(offset))?;
        let copied = io::copy(&mut reader.take(len), &mut self.file)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {len} bytes, got {copied}"),
            ));
        }
        self.len += len;
        Ok(Content::Spool { offset, len })
    }

    /// Flush and hand the file over for reading.
    pub fn finish(mut self) -> io::Result<Arc<File>> {
        self.file.flush()?;
        Ok(Arc::new(self.file))
    }
}

/// Reads a range of a shared file with `pread`, so many readers can share
/// one descriptor.
pub struct RangeReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Open the bytes of `content`; `spool` is needed for spooled content.
pub fn open_content(
    content: &Content,
    spool: Option<&Arc<File>>,
) -> io::Result<Box<dyn Read + Send>> {
    match content {
        // Never blocks on a FIFO swapped in since the walk (see crate::input).
        Content::Host(path) => {
            let (file, _) =
                crate::input::open_regular(path).map_err(|e| with_path(path, e.into()))?;
            Ok(Box::new(file))
        }
        Content::Spool { offset, len } => {
            let file = spool
                .ok_or_else(|| io::Error::other("spooled content without a spool"))?
                .clone();
            Ok(Box::new(RangeReader {
                file,
                pos: *offset,
                end: offset + len,
            }))
        }
        Content::Bytes(bytes) => Ok(Box::new(io::Cursor::new(bytes.as_ref().clone()))),
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_round_trip() {
        let f = tempfile::tempfile().unwrap();
        let mut s = Spool::new(f);
        let a = s.append(&mut &b"hello"[..], 5).unwrap();
        let b = s.append(&mut &b"world!"[..], 6).unwrap();
        assert!(s.append(&mut &b"xy"[..], 3).is_err());
        let file = s.finish().unwrap();
        let mut out = String::new();
        open_content(&b, Some(&file))
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "world!");
        out.clear();
        open_content(&a, Some(&file))
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello");
        let bytes = Content::Bytes(Arc::new(b"gen".to_vec()));
        out.clear();
        open_content(&bytes, None)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "gen");
    }
}
