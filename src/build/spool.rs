//! The build's spool: one temporary file (beside the output, removed with
//! it) holding the bytes of tar members and layer files, so a source that
//! can only be read once (a compressed stream) is read once, and the
//! writer reads each file's bytes back by offset.
//!
//! Holes are never written: the data chunks of a sparse member go in as
//! they are, and a run of zeros covering a whole [`HOLE_GRAIN`] of a file
//! (aligned in the file) is left out as a hole. Such a file's content is a
//! list of [`Extent`]s; the SquashFS writer stores the blocks with no data
//! as sparse blocks, which take no space (`src/sqfs/write.rs`). So a
//! tarball of a 1 TiB sparse file costs its data, not 1 TiB of zeros.
//!
//! Image layers are not copied: a layer is a file (a blob of an OCI layout
//! or of the image cache) or a member of an uncompressed archive, which
//! can be read again. The spool only records how to open each layer's tar
//! stream ([`Spool::add_layer`]); a file from a layer is a range of that
//! stream ([`Content::Layer`]). The writer reads those ranges in stream
//! order, so each layer is decompressed once more, from its start to its
//! last file still in the image, and nothing of it lands on disk
//! (issue 11: a pull's peak disk use is its compressed layers and the
//! output).

use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::tree::{Content, Extent};

/// A run of zeros this long, at a multiple of it in the file, becomes a
/// hole. Every SquashFS block size divides it, so the blocks inside such a
/// run are whole holes whatever the block size; and a file alternating data
/// and zeros costs one extent (24 bytes) per 2 MiB of data at most.
pub const HOLE_GRAIN: usize = 1 << 20;

/// Opens a layer's uncompressed tar stream at its start.
pub type LayerOpener = Box<dyn Fn() -> io::Result<Box<dyn Read>>>;

/// A layer the writer reads file data from.
struct Layer {
    /// Where it is, for messages ("archive: layer 2 of 3 (sha256:...)").
    place: String,
    open: LayerOpener,
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)
    }
}

/// Append-only store of file contents, and the layers file data is read
/// from.
#[derive(Debug)]
pub struct Spool {
    file: File,
    len: u64,
    buf: Vec<u8>,
    layers: Vec<Layer>,
}

impl Spool {
    /// A spool in `file` (created by the caller, e.g. beside the output).
    pub fn new(file: File) -> Spool {
        Spool {
            file,
            len: 0,
            buf: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// Record a layer whose tar stream `open` gives (from its start, each
    /// time it is called); returns its number for [`Content::Layer`].
    /// `place` names it in messages.
    pub fn add_layer(&mut self, place: String, open: LayerOpener) -> u32 {
        self.layers.push(Layer { place, open });
        (self.layers.len() - 1) as u32
    }

    /// Copy exactly `len` bytes from `reader` into the spool: a file of
    /// `len` bytes, with its zero runs left out as holes.
    pub fn append(&mut self, reader: &mut dyn Read, len: u64) -> io::Result<Content> {
        let mut extents = Vec::new();
        self.copy_range(reader, 0, len, &mut extents)?;
        Ok(self.content(len, extents))
    }

    /// Copy a sparse file of `size` bytes whose data `chunks` (offset in
    /// the file, length; in order, not overlapping, inside the file, as
    /// the caller checked) follow one another in `reader`.
    pub fn append_sparse(
        &mut self,
        reader: &mut dyn Read,
        chunks: &[(u64, u64)],
        size: u64,
    ) -> io::Result<Content> {
        let mut extents = Vec::new();
        for &(at, len) in chunks {
            self.copy_range(reader, at, len, &mut extents)?;
        }
        Ok(self.content(size, extents))
    }

    /// A plain spool range when the data is one extent covering the file.
    fn content(&self, size: u64, extents: Vec<Extent>) -> Content {
        match extents.as_slice() {
            [] if size == 0 => Content::Spool {
                offset: self.len,
                len: 0,
            },
            [one] if one.at == 0 && one.len == size => Content::Spool {
                offset: one.spool,
                len: size,
            },
            _ => Content::Sparse {
                size,
                extents: extents.into(),
            },
        }
    }

    /// Copy the `len` bytes at offset `at` of a file from `reader`, adding
    /// what is not a zero grain to `extents`.
    fn copy_range(
        &mut self,
        reader: &mut dyn Read,
        at: u64,
        len: u64,
        extents: &mut Vec<Extent>,
    ) -> io::Result<()> {
        let end = at
            .checked_add(len)
            .ok_or_else(|| io::Error::other("a chunk past the largest file size"))?;
        if self.buf.is_empty() {
            self.buf = vec![0; HOLE_GRAIN];
        }
        let grain = HOLE_GRAIN as u64;
        let mut pos = at;
        while pos < end {
            // Up to the next grain boundary of the file.
            let want = (end - pos).min(grain - pos % grain) as usize;
            let buf = &mut self.buf[..want];
            let got = read_full(reader, buf)?;
            if got < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("expected {len} bytes, got {}", pos - at + got as u64),
                ));
            }
            if want < HOLE_GRAIN || !is_zero(buf) {
                self.file.write_all_at(buf, self.len)?;
                match extents.last_mut() {
                    Some(last)
                        if last.at + last.len == pos && last.spool + last.len == self.len =>
                    {
                        last.len += want as u64;
                    }
                    _ => extents.push(Extent {
                        at: pos,
                        len: want as u64,
                        spool: self.len,
                    }),
                }
                self.len += want as u64;
            }
            pos += want as u64;
        }
        Ok(())
    }

    /// Hand the file and the layers over for reading.
    pub fn finish(self) -> io::Result<Spooled> {
        Ok(Spooled {
            file: self.file,
            layers: self.layers,
            cursor: RefCell::new(None),
        })
    }
}

/// What a finished [`Spool`] holds, for reading file contents back.
#[derive(Debug)]
pub struct Spooled {
    file: File,
    layers: Vec<Layer>,
    /// The layer stream read last and where it is: reading on from there
    /// costs only what lies between; going back opens the stream again.
    cursor: RefCell<Option<Cursor>>,
}

struct Cursor {
    layer: u32,
    /// Bytes of the stream read so far.
    pos: u64,
    reader: Box<dyn Read>,
    /// Where skipped bytes go.
    scratch: Vec<u8>,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {} at {}", self.layer, self.pos)
    }
}

impl Spooled {
    /// The spool file itself.
    #[cfg(test)]
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Read bytes of layer `layer`'s tar stream at `offset` into `buf`
    /// (not empty); fewer than asked is fine, none is an error: the stream
    /// ends before data pass 1 saw in it.
    pub fn read_layer(&self, layer: u32, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(source) = self.layers.get(layer as usize) else {
            return Err(io::Error::other(format!("no layer {layer} in the spool")));
        };
        let mut cursor = self.cursor.borrow_mut();
        let result = read_layer_at(&mut cursor, source, layer, offset, buf);
        if result.is_err() {
            // A decompressor that failed is not read again.
            *cursor = None;
        }
        result.map_err(|e| io::Error::new(e.kind(), format!("{}: {}", source.place, e)))
    }
}

fn read_layer_at(
    cursor: &mut Option<Cursor>,
    source: &Layer,
    layer: u32,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    let reusable = cursor
        .as_ref()
        .is_some_and(|c| c.layer == layer && c.pos <= offset);
    if !reusable {
        *cursor = Some(Cursor {
            layer,
            pos: 0,
            reader: (source.open)()?,
            scratch: cursor.take().map(|c| c.scratch).unwrap_or_default(),
        });
    }
    let Some(c) = cursor.as_mut() else {
        unreachable!("set above")
    };
    let ended = |pos: u64| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ends at {pos} bytes, before the data at {offset} (changed since it was read?)"
            ),
        )
    };
    // What lies before `offset`: files replaced or deleted by later
    // layers, tar headers, padding.
    if c.pos < offset && c.scratch.is_empty() {
        c.scratch = vec![0; SKIP_BUF];
    }
    while c.pos < offset {
        let want = (offset - c.pos).min(c.scratch.len() as u64) as usize;
        match c.reader.read(&mut c.scratch[..want]) {
            Ok(0) => return Err(ended(c.pos)),
            Ok(n) => c.pos += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        match c.reader.read(buf) {
            Ok(0) => return Err(ended(c.pos)),
            Ok(n) => {
                c.pos += n as u64;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The buffer skipped layer data is read into.
const SKIP_BUF: usize = 256 << 10;

/// `len` bytes at `offset` of a file, read with `pread` (so that the
/// file can be shared): a layer blob, or a member of an archive.
pub struct FileRange {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl FileRange {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> FileRange {
        FileRange {
            file,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Fill `buf` from `reader`; fewer bytes only at its end.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// All zeros? (No early exit per byte: the compiler vectorizes the fold.)
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    chunks.all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

/// A regular file's bytes, by offset and in order: what the SquashFS
/// writer and the tests read.
pub struct ContentReader<'s> {
    source: Source<'s>,
    size: u64,
    /// Where [`Read`] goes on.
    pos: u64,
}

enum Source<'s> {
    Host(File),
    /// A spool range: `len` bytes at `offset`.
    Spool {
        file: &'s File,
        offset: u64,
    },
    Sparse {
        file: &'s File,
        extents: Arc<[Extent]>,
    },
    /// A range of a layer's tar stream, at `offset`.
    Layer {
        spooled: &'s Spooled,
        layer: u32,
        offset: u64,
    },
    LayerSparse {
        spooled: &'s Spooled,
        layer: u32,
        extents: Arc<[Extent]>,
    },
    Bytes(Arc<Vec<u8>>),
}

/// Open the bytes of `content` (a file of `size` bytes); `spool` is needed
/// for spooled and layer content.
pub fn open_content<'s>(
    content: &Content,
    size: u64,
    spool: Option<&'s Spooled>,
) -> io::Result<ContentReader<'s>> {
    let spool = || spool.ok_or_else(|| io::Error::other("spooled content without a spool"));
    let source = match content {
        // Never blocks on a FIFO swapped in since the walk (see crate::input).
        Content::Host(path) => Source::Host(
            crate::input::open_regular(path)
                .map_err(|e| with_path(path, e.into()))?
                .0,
        ),
        Content::Spool { offset, .. } => Source::Spool {
            file: &spool()?.file,
            offset: *offset,
        },
        Content::Sparse { extents, .. } => Source::Sparse {
            file: &spool()?.file,
            extents: extents.clone(),
        },
        Content::Layer { layer, offset, .. } => Source::Layer {
            spooled: spool()?,
            layer: *layer,
            offset: *offset,
        },
        Content::LayerSparse { layer, extents, .. } => Source::LayerSparse {
            spooled: spool()?,
            layer: *layer,
            extents: extents.clone(),
        },
        Content::Bytes(bytes) => Source::Bytes(bytes.clone()),
    };
    Ok(ContentReader {
        source,
        size,
        pos: 0,
    })
}

impl ContentReader<'_> {
    /// Where the file's data is, as (offset, length) in order: everything
    /// else is a hole, zeros that need not be read. A host file's holes
    /// are the file system's (`lseek(2)` `SEEK_DATA`/`SEEK_HOLE`); where
    /// it cannot tell, the whole file is data.
    pub fn data_extents(&self) -> Vec<(u64, u64)> {
        match &self.source {
            Source::Host(file) => host_extents(file, self.size),
            Source::Sparse { extents, .. } | Source::LayerSparse { extents, .. } => extents
                .iter()
                .filter(|e| e.len > 0 && e.at < self.size)
                .map(|e| (e.at, e.len.min(self.size - e.at)))
                .collect(),
            Source::Spool { .. } | Source::Layer { .. } | Source::Bytes(_) => {
                vec![(0, self.size)]
            }
        }
    }

    /// Read the file's bytes at `offset` (zeros in holes); 0 only at the
    /// end of the file, or where a host file ends early.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.size.saturating_sub(offset);
        let buf_len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let buf = &mut buf[..buf_len];
        if buf.is_empty() {
            return Ok(0);
        }
        match &self.source {
            Source::Host(file) => file.read_at(buf, offset),
            Source::Spool { file, offset: base } => {
                let n = file.read_at(buf, base + offset)?;
                if n == 0 {
                    return Err(spool_truncated());
                }
                Ok(n)
            }
            Source::Sparse { file, extents } => {
                read_sparse(extents, self.size, buf, offset, |buf, at| {
                    let got = file.read_at(buf, at)?;
                    if got == 0 {
                        return Err(spool_truncated());
                    }
                    Ok(got)
                })
            }
            Source::Layer {
                spooled,
                layer,
                offset: base,
            } => spooled.read_layer(*layer, base + offset, buf),
            Source::LayerSparse {
                spooled,
                layer,
                extents,
            } => read_sparse(extents, self.size, buf, offset, |buf, at| {
                spooled.read_layer(*layer, at, buf)
            }),
            Source::Bytes(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let rest = bytes.get(start..).unwrap_or_default();
                let n = buf.len().min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                Ok(n)
            }
        }
    }
}

/// Read a sparse file of `size` bytes at `offset`: from its data
/// `extents` through `read(buf, stored offset)`, zeros in the holes.
fn read_sparse(
    extents: &[Extent],
    size: u64,
    buf: &mut [u8],
    offset: u64,
    read: impl FnOnce(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<usize> {
    // The first extent ending after `offset`.
    let i = extents.partition_point(|e| e.at + e.len <= offset);
    match extents.get(i) {
        Some(e) if e.at <= offset => {
            let skip = offset - e.at;
            let n = buf.len().min((e.len - skip) as usize);
            read(&mut buf[..n], e.spool + skip)
        }
        next => {
            let hole_end = next.map_or(size, |e| e.at);
            let n = buf.len().min((hole_end - offset) as usize);
            buf[..n].fill(0);
            Ok(n)
        }
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn spool_truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "spool truncated")
}

/// The data extents of the first `size` bytes of a host file. Past its
/// current end, if it shrank, the rest counts as data, so that reading it
/// fails as a short file should.
fn host_extents(file: &File, size: u64) -> Vec<(u64, u64)> {
    let whole = vec![(0, size)];
    let fd = file.as_raw_fd();
    let Ok(meta) = file.metadata() else {
        return whole;
    };
    let end = meta.len().min(size);
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < end {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // No data after `pos`: the rest is a hole.
                Some(libc::ENXIO) => break,
                // The file system cannot tell: read everything.
                _ => return whole,
            }
        }
        let data = (data as u64).min(end);
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return whole;
        }
        let hole = (hole as u64).clamp(data + 1, end);
        out.push((data, hole - data));
        pos = hole;
    }
    if end < size {
        out.push((end, size - end));
    }
    out
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(content: &Content, size: u64, spool: &Spooled) -> Vec<u8> {
        let mut out = Vec::new();
        open_content(content, size, Some(spool))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn spool_round_trip() {
        let f = tempfile::tempfile().unwrap();
        let mut s = Spool::new(f);
        let a = s.append(&mut &b"hello"[..], 5).unwrap();
        let b = s.append(&mut &b"world!"[..], 6).unwrap();
        assert!(s.append(&mut &b"xy"[..], 3).is_err());
        let file = s.finish().unwrap();
        assert_eq!(read_all(&b, 6, &file), b"world!");
        assert_eq!(read_all(&a, 5, &file), b"hello");
        let bytes = Content::Bytes(Arc::new(b"gen".to_vec()));
        let mut out = String::new();
        open_content(&bytes, 3, None)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "gen");
    }

    /// A file with zero runs: whole aligned grains of zeros are holes (not
    /// in the spool), shorter runs are data; the bytes read back the same.
    #[test]
    fn zero_runs_become_holes() {
        let g = HOLE_GRAIN;
        let mut data = vec![0u8; 5 * g + 100];
        data[10] = 1; // grain 0: data
        // grain 1 and 2: zeros; grain 3: zeros but for its last byte
        data[4 * g - 1] = 2;
        // grain 4: zeros; the tail (100 bytes, not a whole grain): zeros
        let f = tempfile::tempfile().unwrap();
        let mut s = Spool::new(f);
        let c = s.append(&mut &data[..], data.len() as u64).unwrap();
        let Content::Sparse { size, extents } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(*size, data.len() as u64);
        let g = g as u64;
        assert_eq!(
            extents
                .iter()
                .map(|e| (e.at, e.len, e.spool))
                .collect::<Vec<_>>(),
            [(0, g, 0), (3 * g, g, g), (5 * g, 100, 2 * g)]
        );
        let file = s.finish().unwrap();
        assert_eq!(file.file().metadata().unwrap().len(), 2 * g + 100);
        assert!(read_all(&c, data.len() as u64, &file) == data);
        let r = open_content(&c, data.len() as u64, Some(&file)).unwrap();
        assert_eq!(r.data_extents(), [(0, g), (3 * g, g), (5 * g, 100)]);
    }

    /// A sparse member's chunks land at their offsets; a 1 TiB file costs
    /// its data only.
    #[test]
    fn sparse_chunks() {
        let size = 1u64 << 40;
        let chunks = [(0, 3), (size - 2, 2)];
        let f = tempfile::tempfile().unwrap();
        let mut s = Spool::new(f);
        let c = s.append_sparse(&mut &b"abcde"[..], &chunks, size).unwrap();
        let file = s.finish().unwrap();
        assert_eq!(file.file().metadata().unwrap().len(), 5);
        let r = open_content(&c, size, Some(&file)).unwrap();
        assert_eq!(r.data_extents(), chunks);
        let mut buf = [9u8; 8];
        assert_eq!(r.read_at(&mut buf, 0).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(r.read_at(&mut buf, 3).unwrap(), 8);
        assert_eq!(buf, [0; 8]);
        assert_eq!(r.read_at(&mut buf, size - 4).unwrap(), 2);
        assert_eq!(&buf[..2], [0, 0]);
        assert_eq!(r.read_at(&mut buf, size - 2).unwrap(), 2);
        assert_eq!(&buf[..2], b"de");
        assert_eq!(r.read_at(&mut buf, size).unwrap(), 0);
    }

    /// Layer content is read from the layer's stream: forward by skipping,
    /// backward by opening it again; a stream shorter than pass 1 saw is
    /// an error naming the layer.
    #[test]
    fn layer_ranges() {
        let stream: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut s = Spool::new(tempfile::tempfile().unwrap());
        let layer = |s: &mut Spool, data: Vec<u8>, place: &str| {
            let opened = opened.clone();
            s.add_layer(
                place.into(),
                Box::new(move || {
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(Box::new(io::Cursor::new(data.clone())) as Box<dyn Read>)
                }),
            )
        };
        let a = layer(&mut s, stream.clone(), "layer A");
        let b = layer(&mut s, stream[..10].to_vec(), "layer B");
        let spooled = s.finish().unwrap();
        let range = |offset: u64, len: u64| Content::Layer {
            layer: a,
            offset,
            len,
        };
        let want = |offset: usize, len: usize| stream[offset..offset + len].to_vec();
        assert_eq!(read_all(&range(10, 5), 5, &spooled), want(10, 5));
        assert_eq!(
            read_all(&range(70_000, 20_000), 20_000, &spooled),
            want(70_000, 20_000)
        );
        assert_eq!(opened.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Back to an earlier offset: opened again.
        assert_eq!(read_all(&range(0, 3), 3, &spooled), want(0, 3));
        assert_eq!(opened.load(std::sync::atomic::Ordering::Relaxed), 2);
        // A sparse member: "at 5: 2 bytes from 100, at 9: 1 byte from 200".
        let sparse = Content::LayerSparse {
            layer: a,
            size: 12,
            extents: vec![
                Extent {
                    at: 5,
                    len: 2,
                    spool: 100,
                },
                Extent {
                    at: 9,
                    len: 1,
                    spool: 200,
                },
            ]
            .into(),
        };
        let got = read_all(&sparse, 12, &spooled);
        let mut expected = vec![0u8; 12];
        expected[5..7].copy_from_slice(&stream[100..102]);
        expected[9] = stream[200];
        assert_eq!(got, expected);
        let r = open_content(&sparse, 12, Some(&spooled)).unwrap();
        assert_eq!(r.data_extents(), [(5, 2), (9, 1)]);
        // Layer B ends before the data.
        let short = Content::Layer {
            layer: b,
            offset: 8,
            len: 5,
        };
        let mut out = Vec::new();
        let e = open_content(&short, 5, Some(&spooled))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            e.to_string()
                .starts_with("layer B: the stream ends at 10 bytes"),
            "{e}"
        );
        // And layer A is read again after it.
        assert_eq!(read_all(&range(1, 2), 2, &spooled), want(1, 2));
    }

    #[test]
    fn host_holes_are_found() {
        let f = tempfile::tempfile().unwrap();
        let size = 64u64 << 20;
        f.set_len(size).unwrap();
        f.write_all_at(b"x", 32 << 20).unwrap();
        let extents = host_extents(&f, size);
        // File systems report holes at their own granularity, or not at all.
        let data: u64 = extents.iter().map(|e| e.1).sum();
        assert!(
            extents
                .iter()
                .any(|&(at, len)| at <= 32 << 20 && at + len > 32 << 20),
            "{extents:?}"
        );
        assert!(data == size || data <= 2 << 20, "{extents:?}");
        // Shrunk below the size it had: the missing end counts as data.
        assert_eq!(host_extents(&f, size + 10).last(), Some(&(size, 10)));
    }
}
