//! Reading a tar stream member by member, for root filesystem tarballs and
//! image layers.
//!
//! The `tar` crate parses the fields of a header ([`tar::Header`]: octal and
//! GNU base-256 numbers, the ustar prefix) and PAX records; this module does
//! the framing itself because the crate's reader expands a GNU sparse
//! member's holes into zeros (a tarball of a 1 TiB sparse file reads as
//! 1 TiB) and does not hand out the sparse map. Here a member is its
//! header, its name and link after GNU long-name members and PAX `path`
//! and `linkpath` records, its PAX records, the size of its data in the
//! archive, and for an old GNU sparse member (type `S`) its map; its data
//! is read from the stream as stored, holes never expanded.
//!
//! Format facts (POSIX pax, GNU tar manual "Basic Tar Format" and "Sparse
//! Formats"): 512-byte blocks; a header, then the data padded to a whole
//! block; two zero blocks end the archive (one is enough here). A member
//! may be preceded by a GNU long name (`L`) or long link (`K`) member and a
//! PAX extended header (`x`) holding `LEN key=value\n` records, which
//! describe it; a PAX `size` record overrides the header's. An old GNU
//! sparse member has four (offset, length) pairs of octal numbers at byte
//! 386, a flag at 482 saying that 512-byte extension blocks of 21 more
//! pairs follow the header (each with the same flag at byte 504), and the
//! file's real size at 483; its data is the chunks one after another.
//!
//! Untrusted sizes are checked before they size anything: a long name may
//! be [`MAX_LONG_NAME`] bytes, a PAX header [`MAX_PAX`], a sparse map
//! [`MAX_SPARSE_CHUNKS`] chunks; a member's data is read (or skipped) as
//! the stream delivers it, so a size beyond the stream's end is a
//! truncated archive, found when the data runs out.

use crate::build::spool::read_full;
use std::io::{self, Read, Seek, SeekFrom};

/// The longest GNU long name or long link accepted (Linux's `PATH_MAX` is
/// 4096; GNU tar writes names of any length).
pub(super) const MAX_LONG_NAME: u64 = 64 << 10;
/// The largest PAX extended header accepted (xattrs, a GNU sparse map in
/// format 0.1).
pub(super) const MAX_PAX: u64 = 16 << 20;
/// Data chunks a sparse file may have at most (a bound on a corrupt map).
pub(super) const MAX_SPARSE_CHUNKS: usize = 1 << 20;

const BLOCK: u64 = 512;

/// A member of the archive, described by its own header and the long-name
/// and PAX members before it.
pub(super) struct Member {
    /// The member's own header (mode, uid, times, type).
    pub(super) header: tar::Header,
    /// The name: a PAX `path` record, else a GNU long name, else the
    /// header's (with the ustar prefix).
    pub(super) name: Vec<u8>,
    /// The link target, likewise (`linkpath`, long link, header).
    pub(super) link: Vec<u8>,
    /// The raw records of its PAX extended header (see
    /// [`tar::PaxExtensions`]), empty without one.
    pub(super) pax: Vec<u8>,
    /// Bytes of data stored in the archive (not the file size of a sparse
    /// member).
    pub(super) size: u64,
    /// An old GNU sparse member's map.
    pub(super) sparse: Option<SparseMap>,
}

/// Where a sparse file's data is: `chunks` of (offset, length), in order,
/// not overlapping, inside `size`; their data is stored one after another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SparseMap {
    pub(super) size: u64,
    pub(super) chunks: Vec<(u64, u64)>,
}

impl SparseMap {
    /// Check `chunks` of a file of `size` bytes whose stored data is
    /// `stored` bytes; the error says what is wrong.
    pub(super) fn new(
        size: u64,
        chunks: Vec<(u64, u64)>,
        stored: u64,
    ) -> Result<SparseMap, String> {
        let mut end = 0u64;
        let mut data = 0u64;
        for &(offset, len) in &chunks {
            let chunk_end = offset.checked_add(len).filter(|&e| e <= size);
            match chunk_end {
                Some(chunk_end) if offset >= end => end = chunk_end,
                _ => {
                    return Err("a sparse map with overlapping or out-of-range chunks".to_string());
                }
            }
            data += len;
        }
        if data != stored {
            return Err(format!(
                "a sparse map of {data} bytes of data, but {stored} are stored"
            ));
        }
        Ok(SparseMap { size, chunks })
    }
}

/// A tar stream, read member by member.
pub(super) struct TarReader<R> {
    inner: R,
    /// Data bytes of the current member not read yet.
    left: u64,
    /// Padding after the current member's data.
    pad: u64,
    /// How data not read is passed over: read and dropped, or sought past.
    skip: fn(&mut R, u64) -> io::Result<()>,
}

/// A corrupt archive: what is wrong, as an I/O error of kind `InvalidData`.
fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the archive is truncated")
}

/// Pass over `n` bytes of a stream by reading them.
fn skip_by_reading<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let skipped = io::copy(&mut r.take(n), &mut io::sink())?;
    if skipped != n {
        return Err(truncated());
    }
    Ok(())
}

/// Pass over `n` bytes of a file by seeking (a truncated archive is found
/// by the next header read).
fn skip_by_seeking<R: Seek>(r: &mut R, n: u64) -> io::Result<()> {
    let n = i64::try_from(n).map_err(|_| truncated())?;
    r.seek(SeekFrom::Current(n)).map(|_| ())
}

impl<R: Read + Seek> TarReader<R> {
    /// A reader of an archive file, which passes over data by seeking.
    pub(super) fn seekable(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            left: 0,
            pad: 0,
            skip: skip_by_seeking::<R>,
        }
    }
}

impl<R: Read> TarReader<R> {
    pub(super) fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            left: 0,
            pad: 0,
            skip: skip_by_reading::<R>,
        }
    }

    /// The next member, or `None` at the end of the archive. What is left
    /// of the previous member's data is skipped.
    pub(super) fn next_member(&mut self) -> io::Result<Option<Member>> {
        let mut long_name = None;
        let mut long_link = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            self.skip_rest()?;
            let Some(header) = self.read_header()? else {
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(corrupt(
                        "a long name or PAX header describes a member that never comes",
                    ));
                }
                return Ok(None);
            };
            let kind = header.entry_type();
            let pax_size = match &pax {
                Some(records) if !is_extension(kind) => pax_number(records, b"size")?,
                _ => None,
            };
            let size = match pax_size {
                Some(size) => size,
                None => header.entry_size()?,
            };
            self.start_data(size);
            match kind {
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                    let slot = if kind == tar::EntryType::GNULongName {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(corrupt("two long name members for one member"));
                    }
                    let mut text = self.read_data(size, MAX_LONG_NAME, "long name")?;
                    // NUL-terminated.
                    if let Some(end) = text.iter().position(|&b| b == 0) {
                        text.truncate(end);
                    }
                    *slot = Some(text);
                }
                tar::EntryType::XHeader => {
                    if pax.is_some() {
                        return Err(corrupt("two PAX headers for one member"));
                    }
                    pax = Some(self.read_data(size, MAX_PAX, "PAX header")?);
                }
                _ => {
                    let sparse = if kind == tar::EntryType::GNUSparse {
                        Some(self.old_gnu_sparse(&header, size)?)
                    } else {
                        None
                    };
                    let pax = pax.unwrap_or_default();
                    let name = match pax_value(&pax, b"path")? {
                        Some(path) => path.to_vec(),
                        None => long_name.unwrap_or_else(|| header.path_bytes().into_owned()),
                    };
                    let link = match pax_value(&pax, b"linkpath")? {
                        Some(path) => path.to_vec(),
                        None => long_link.unwrap_or_else(|| {
                            header
                                .link_name_bytes()
                                .map(|l| l.into_owned())
                                .unwrap_or_default()
                        }),
                    };
                    return Ok(Some(Member {
                        header,
                        name,
                        link,
                        pax,
                        size,
                        sparse,
                    }));
                }
            }
        }
    }

    /// A reader of the current member's data, as stored.
    pub(super) fn data(&mut self) -> Data<'_, R> {
        Data { tar: self }
    }

    /// One header block; `None` at the end of the archive (end of stream
    /// or a zero block).
    fn read_header(&mut self) -> io::Result<Option<tar::Header>> {
        let mut header = tar::Header::new_old();
        let bytes = header.as_mut_bytes();
        let got = read_full(&mut self.inner, bytes)?;
        if got == 0 {
            return Ok(None);
        }
        if got < bytes.len() {
            return Err(truncated());
        }
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        // The checksum: the sum of the header's bytes with its own field
        // read as spaces, unsigned (POSIX) or signed (old tars).
        let field = &bytes[148..156];
        let others = bytes[..148].iter().chain(&bytes[156..]);
        let unsigned: u32 = others.clone().map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
        let signed: i32 = others.map(|&b| i32::from(b as i8)).sum::<i32>() + 8 * 32;
        let stored = std::str::from_utf8(field)
            .ok()
            .map(|s| s.trim_matches(|c| c == ' ' || c == '\0'))
            .and_then(|s| u32::from_str_radix(s, 8).ok());
        match stored {
            Some(sum) if sum == unsigned || sum as i32 == signed => Ok(Some(header)),
            Some(_) => Err(corrupt("a header checksum mismatch")),
            None => Err(corrupt("a header without a valid checksum")),
        }
    }

    /// The current member has `size` bytes of data.
    fn start_data(&mut self, size: u64) {
        self.left = size;
        self.pad = (BLOCK - size % BLOCK) % BLOCK;
    }

    /// Read the whole data of an extension member of `size` bytes, at most
    /// `limit`.
    fn read_data(&mut self, size: u64, limit: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > limit {
            return Err(corrupt(format!(
                "a {what} of {size} bytes (more than {limit})"
            )));
        }
        // Grown as the data comes: the stream may end long before `size`.
        let mut out = Vec::with_capacity(size.min(BLOCK * 8) as usize);
        self.data().read_to_end(&mut out)?;
        if out.len() as u64 != size {
            return Err(truncated());
        }
        Ok(out)
    }

    /// Skip the rest of the current member's data and its padding.
    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.left.checked_add(self.pad).ok_or_else(truncated)?;
        if n > 0 {
            (self.skip)(&mut self.inner, n)?;
        }
        self.left = 0;
        self.pad = 0;
        Ok(())
    }

    /// An old GNU sparse member's map: the header's four pairs, then the
    /// extension blocks' (read here, before the data).
    fn old_gnu_sparse(&mut self, header: &tar::Header, stored: u64) -> io::Result<SparseMap> {
        let gnu = header
            .as_gnu()
            .ok_or_else(|| corrupt("a GNU sparse member without a GNU header"))?;
        let mut chunks = Vec::new();
        let add = |chunks: &mut Vec<(u64, u64)>, entry: &tar::GnuSparseHeader| {
            // An entry whose length field is empty ends the list.
            if entry.numbytes[0] == 0 {
                return Ok(());
            }
            if chunks.len() >= MAX_SPARSE_CHUNKS {
                return Err(corrupt(format!(
                    "a sparse map of more than {MAX_SPARSE_CHUNKS} chunks"
                )));
            }
            chunks.push((entry.offset()?, entry.length()?));
            Ok(())
        };
        for entry in &gnu.sparse {
            add(&mut chunks, entry)?;
        }
        let mut extended = gnu.is_extended();
        while extended {
            // The extension blocks sit between the header and the data,
            // outside the member's size.
            let mut ext = tar::GnuExtSparseHeader::new();
            let got = read_full(&mut self.inner, ext.as_mut_bytes())?;
            if got < BLOCK as usize {
                return Err(truncated());
            }
            for entry in ext.sparse() {
                add(&mut chunks, entry)?;
            }
            extended = ext.is_extended();
        }
        let size = gnu.real_size()?;
        SparseMap::new(size, chunks, stored).map_err(corrupt)
    }
}

/// The data of the current member.
pub(super) struct Data<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = &mut *self.tar;
        if t.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(t.left).unwrap_or(usize::MAX));
        let n = t.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(truncated());
        }
        t.left -= n as u64;
        Ok(n)
    }
}

/// Members that describe the next one rather than being one.
fn is_extension(kind: tar::EntryType) -> bool {
    matches!(
        kind,
        tar::EntryType::GNULongName | tar::EntryType::GNULongLink | tar::EntryType::XHeader
    )
}

/// The last value of `key` in PAX `records` (a later record overrides an
/// earlier one); malformed records are a corrupt archive.
pub(super) fn pax_value<'a>(records: &'a [u8], key: &[u8]) -> io::Result<Option<&'a [u8]>> {
    let mut found = None;
    for record in tar::PaxExtensions::new(records) {
        let record = record.map_err(|_| corrupt("a malformed PAX record"))?;
        if record.key_bytes() == key {
            found = Some(record.value_bytes());
        }
    }
    Ok(found)
}

/// A PAX record holding a decimal number.
fn pax_number(records: &[u8], key: &[u8]) -> io::Result<Option<u64>> {
    match pax_value(records, key)? {
        None => Ok(None),
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                corrupt(format!(
                    "a PAX {} record that is not a number",
                    String::from_utf8_lossy(key)
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{TarMaker, gnu_sparse_member};
    use super::*;

    fn members(tar: &[u8]) -> io::Result<Vec<(String, u64, Vec<u8>)>> {
        let mut r = TarReader::new(tar);
        let mut out = Vec::new();
        while let Some(m) = r.next_member()? {
            let mut data = Vec::new();
            r.data().read_to_end(&mut data)?;
            out.push((String::from_utf8_lossy(&m.name).into_owned(), m.size, data));
        }
        Ok(out)
    }

    #[test]
    fn names_links_and_data() {
        let long = format!("{}/file", "d".repeat(200));
        let tar = TarMaker::default()
            .file("a", b"hello", 0o644)
            .long_named(&long, b"x")
            .with_pax(&[("path", b"from-pax")], "short", b"p")
            .symlink("l", "a")
            .finish();
        let got = members(&tar).unwrap();
        let names: Vec<&str> = got.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["a", long.as_str(), "from-pax", "l"]);
        assert_eq!(got[0].2, b"hello");
        assert_eq!(got[2].2, b"p");

        // Data not read is skipped.
        let mut r = TarReader::new(&tar[..]);
        let mut seen = Vec::new();
        while let Some(m) = r.next_member().unwrap() {
            seen.push(m.link);
        }
        assert_eq!(seen.last().unwrap(), b"a");
    }

    #[test]
    fn corrupt_and_truncated() {
        let tar = TarMaker::default().file("a", &[1; 1000], 0o644).finish();
        let mut bad = tar.clone();
        bad[0] ^= 1;
        let e = members(&bad).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = members(&tar[..1024]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        // A long name member that claims a huge size: refused before any
        // allocation.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 40);
        h.set_cksum();
        let e = members(h.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("long name of 1099511627776 bytes"),
            "{e}"
        );
        // A PAX header without a member after it.
        let tar = TarMaker::default()
            .with_pax(&[("path", b"x")], "y", b"")
            .finish();
        let pax_only = &tar[..1024];
        let e = members(pax_only).unwrap_err();
        assert!(e.to_string().contains("never comes"), "{e}");
    }

    /// An old GNU sparse member with extension blocks: the map is read,
    /// the data is stored bytes only.
    #[test]
    fn old_gnu_sparse_map() {
        // 30 chunks (4 in the header, 21 + 5 in two extension blocks).
        let chunks: Vec<(u64, u64)> = (0..30).map(|i| (i * 4096, 3)).collect();
        let data: Vec<u8> = (0..90).map(|i| i as u8).collect();
        let size = 1 << 40;
        let tar = TarMaker::default()
            .raw(&gnu_sparse_member("s", size, &chunks, &data))
            .file("after", b"ok", 0o644)
            .finish();
        let mut r = TarReader::new(&tar[..]);
        let m = r.next_member().unwrap().unwrap();
        assert_eq!(m.name, b"s");
        assert_eq!(m.size, 90);
        assert_eq!(m.sparse, Some(SparseMap { size, chunks }));
        let mut got = Vec::new();
        r.data().read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(r.next_member().unwrap().unwrap().name, b"after");
        assert!(r.next_member().unwrap().is_none());
    }

    #[test]
    fn sparse_maps_are_checked() {
        assert!(SparseMap::new(10, vec![(0, 3), (5, 2)], 5).is_ok());
        for (chunks, stored, problem) in [
            (vec![(5, 2), (0, 3)], 5, "overlapping"),
            (vec![(0, 3), (2, 2)], 5, "overlapping"),
            (vec![(8, 3)], 3, "out-of-range"),
            (vec![(u64::MAX, 3)], 3, "out-of-range"),
            (vec![(0, 3)], 4, "3 bytes of data, but 4 are stored"),
        ] {
            let e = SparseMap::new(10, chunks, stored).unwrap_err();
            assert!(e.contains(problem), "{e}");
        }
    }
}
