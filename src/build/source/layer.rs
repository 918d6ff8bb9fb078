//! Tar members into the tree: root filesystem tarballs, and image layers
//! with their whiteouts.
//!
//! Members are applied in archive order; a later member replaces an earlier
//! one at the same path (a directory over a directory keeps its contents).
//! Member names lose a leading `/` or `./`; one that climbs (`..`) is
//! refused. A layer's file bytes stay in the layer: a file is recorded as
//! a range of the layer's (uncompressed) tar stream and skipped, and the
//! writer reads the ranges still in the image from the layer again
//! ([`Content::Layer`]); a root filesystem tarball's are copied to the
//! spool once. Owners are dropped
//! (counted for the summary warning); PAX `SCHILY.xattr.*` records become
//! extended attributes. Each member keeps its modification time (a PAX
//! `mtime` record's whole seconds, else the header's), clamped into
//! SquashFS's unsigned 32-bit range; parent directories an archive leaves
//! out have none (they get the build's time).
//!
//! In a layer (OCI image spec, "Representing Changes"), `DIR/.wh.NAME`
//! deletes `DIR/NAME` from the layers below, and `DIR/.wh..wh..opq` (opaque)
//! hides everything the layers below have in `DIR`; neither is added
//! itself. Both apply to lower layers only, whatever their position in the
//! layer: the paths this layer added so far are remembered, and an opaque
//! directory keeps them.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::super::spool::FileRange;
use super::super::tree::{Content, Extent, Meta, Node, Tree, TreeError, mtime_from_secs};
use super::detect::{decoder, input_error, sniff};
use super::oci::{Digest, Verify};
use super::tar_reader::{MAX_SPARSE_CHUNKS, SparseMap, TarReader};
use super::{Compression, Cx, SourceError, io_text, keep_xattr, one_line, shown};
use crate::input::open_regular;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Where a tar stream comes from, for messages: the host file and, inside
/// it, the layer ("layer 2 of 3 (sha256:...)").
pub(super) struct Origin<'a> {
    pub(super) archive: &'a Path,
    pub(super) inner: Option<String>,
}

impl Origin<'_> {
    /// "archive: layer ...: member".
    pub(super) fn place(&self, member: Option<&str>) -> String {
        let mut place = shown(self.archive);
        for part in [self.inner.as_deref(), member].into_iter().flatten() {
            place.push_str(": ");
            place.push_str(part);
        }
        place
    }

    fn corrupt(&self, member: Option<&str>, e: &io::Error) -> SourceError {
        SourceError::invalid(
            self.place(member),
            format!("corrupt tar archive: {}", io_text(e)),
        )
    }
}

/// Load the root filesystem tarball at `path`.
pub(super) fn load_tarball(
    cx: &mut Cx,
    path: &Path,
    compression: Compression,
    tree: &mut Tree,
) -> Result<(), SourceError> {
    let (file, _) = open_regular(path).map_err(|e| input_error(path, e))?;
    let origin = Origin {
        archive: path,
        inner: None,
    };
    let reader =
        decoder(compression, BufReader::new(file)).map_err(|e| origin.corrupt(None, &e))?;
    apply(cx, &origin, reader, tree, None)
}

/// A layer that can be read again: `len` bytes at `offset` of `file` (a
/// blob file, or a member of an uncompressed archive).
pub(super) struct Blob {
    pub(super) file: Arc<File>,
    pub(super) offset: u64,
    pub(super) len: u64,
}

impl Blob {
    fn reader(&self) -> BufReader<FileRange> {
        BufReader::with_capacity(
            READ_BUF,
            FileRange::new(self.file.clone(), self.offset, self.len),
        )
    }
}

/// Reads of layer blobs, compressed.
const READ_BUF: usize = 256 << 10;

/// Apply the layer in `blob` (a tar, plain or gzip, xz or zstd compressed,
/// told by its magic bytes) over `tree`; with `digest`, check that the
/// blob has that digest (and `size` bytes, if given). Its files are
/// recorded as ranges of the layer, which the writer reads again.
pub(super) fn apply_layer(
    cx: &mut Cx,
    origin: &Origin,
    blob: &Blob,
    digest: Option<(&Digest, Option<u64>)>,
    tree: &mut Tree,
) -> Result<(), SourceError> {
    match digest {
        Some((digest, size)) => {
            let mut verify = Verify::new(blob.reader(), digest);
            apply_stream(cx, origin, blob, &mut verify, tree)?;
            verify.check(digest, size, &origin.place(None))
        }
        None => apply_stream(cx, origin, blob, blob.reader(), tree),
    }
}

fn apply_stream(
    cx: &mut Cx,
    origin: &Origin,
    blob: &Blob,
    raw: impl Read,
    tree: &mut Tree,
) -> Result<(), SourceError> {
    let (compression, reader) = sniff(raw).map_err(|e| origin.corrupt(None, &e))?;
    let (file, offset, len) = (blob.file.clone(), blob.offset, blob.len);
    let layer = cx.spool.add_layer(
        origin.place(None),
        Box::new(move || {
            let raw = BufReader::with_capacity(READ_BUF, FileRange::new(file.clone(), offset, len));
            decoder(compression, raw)
        }),
    );
    apply(cx, origin, reader, tree, Some(layer))
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Apply the tar stream `reader`: a layer (whiteouts apply) whose file
/// data stays in it when `layer` is its spool number, else a root
/// filesystem tarball, whose file data is copied to the spool.
fn apply(
    cx: &mut Cx,
    origin: &Origin,
    reader: impl Read,
    tree: &mut Tree,
    layer: Option<u32>,
) -> Result<(), SourceError> {
    // Where the tar stream is: after a member's headers, its data.
    let read = Rc::new(Cell::new(0));
    let mut archive = TarReader::new(Counted {
        inner: reader,
        count: read.clone(),
    });
    let mut skip = Vec::new();
    // The paths this layer added, which its whiteouts do not touch.
    let mut added: HashSet<PathBuf> = HashSet::new();
    while let Some(member) = archive
        .next_member()
        .map_err(|e| origin.corrupt(None, &e))?
    {
        let data_start = read.get();
        let header = &member.header;
        let kind = header.entry_type();
        // Global PAX headers hold defaults (times, charset) that an image
        // made by rfake does not carry.
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let pax = Pax::read(&member.pax).map_err(|e| origin.corrupt(None, &e))?;
        // GNU tar's PAX sparse files carry their real name in the records.
        let raw = pax.sparse.name.as_ref().unwrap_or(&member.name);
        let member_name = one_line(&String::from_utf8_lossy(raw));
        let place = || origin.place(Some(&member_name));
        let corrupt = |e: &io::Error| origin.corrupt(Some(&member_name), e);
        let path = member_path(raw).map_err(|p| SourceError::invalid(place(), p))?;
        if layer.is_some() && whiteout(tree, &path, &added) {
            continue;
        }
        let uid = match pax.uid {
            Some(uid) => uid,
            None => header.uid().map_err(|e| corrupt(&e))?,
        };
        if uid != 0 {
            cx.foreign_owners += 1;
        }
        let mode = header.mode().map_err(|e| corrupt(&e))?;
        let mtime = match pax.mtime {
            Some(t) => t,
            None => header_mtime(header).map_err(|e| corrupt(&e))?,
        };
        let mut meta = Meta::with_mode(mode);
        meta.mtime = Some(mtime);
        meta.xattrs = pax.xattrs;
        cx.dropped_xattrs += pax.dropped_xattrs;
        use tar::EntryType as T;
        let node = match kind {
            // Pre-POSIX archives mark directories by a trailing slash only.
            T::Regular if raw.ends_with(b"/") => Node::Dir {
                meta,
                children: BTreeMap::new(),
            },
            // An old GNU sparse member: the reader has its map.
            T::GNUSparse => {
                let map = member.sparse.clone().ok_or_else(|| {
                    SourceError::invalid(place(), "a GNU sparse member without a map")
                })?;
                let content = match layer {
                    Some(layer) => {
                        cx.charge(&place(), map.size)?;
                        skip_data(&mut archive.data(), member.size, &mut skip, place())?;
                        layer_sparse(layer, data_start, &map)
                    }
                    None => spool_sparse(cx, place(), &mut archive.data(), &map)?,
                };
                Node::File {
                    meta,
                    size: map.size,
                    content,
                }
            }
            // GNU tar's sparse files in PAX archives.
            T::Regular | T::Continuous if pax.sparse.seen => {
                let mut data = io::BufReader::new(archive.data());
                let map = pax
                    .sparse
                    .map(&mut data, member.size)
                    .map_err(|p| SourceError::invalid(place(), p))?;
                let content = match layer {
                    Some(layer) => {
                        cx.charge(&place(), map.size)?;
                        let stored: u64 = map.chunks.iter().map(|c| c.1).sum();
                        skip_data(&mut data, stored, &mut skip, place())?;
                        // The chunks are the end of the member's data
                        // (format 1.0: after the map).
                        layer_sparse(layer, data_start + member.size - stored, &map)
                    }
                    None => spool_sparse(cx, place(), &mut data, &map)?,
                };
                Node::File {
                    meta,
                    size: map.size,
                    content,
                }
            }
            T::Regular | T::Continuous => {
                let size = member.size;
                let content = match layer {
                    Some(layer) => {
                        cx.charge(&place(), size)?;
                        skip_data(&mut archive.data(), size, &mut skip, place())?;
                        Content::Layer {
                            layer,
                            offset: data_start,
                            len: size,
                        }
                    }
                    None => spool_copy(cx, place(), &mut archive.data(), size)?,
                };
                Node::File {
                    meta,
                    size,
                    content,
                }
            }
            T::Directory => Node::Dir {
                meta,
                children: BTreeMap::new(),
            },
            T::Symlink => {
                meta.mode = 0o777;
                Node::Symlink {
                    meta,
                    target: PathBuf::from(OsStr::from_bytes(&member.link)),
                }
            }
            T::Link => match hard_link(tree, &path, &member.link) {
                Ok(Some(node)) => node,
                Ok(None) => continue,
                Err(problem) => return Err(SourceError::invalid(place(), problem)),
            },
            T::Char => {
                cx.special(place(), "character device")?;
                continue;
            }
            T::Block => {
                cx.special(place(), "block device")?;
                continue;
            }
            T::Fifo => {
                cx.special(place(), "FIFO")?;
                continue;
            }
            other => {
                cx.warn(format!(
                    "{}: member of tar type {:?} left out",
                    place(),
                    other.as_byte() as char
                ));
                continue;
            }
        };
        if path.as_os_str().is_empty() && !node.is_dir() {
            return Err(SourceError::invalid(
                place(),
                "names the image root but is not a directory",
            ));
        }
        tree.insert(&path, node)
            .map_err(|e| SourceError::invalid(place(), tree_problem(&e)))?;
        if layer.is_some() {
            added.insert(path);
        }
    }
    Ok(())
}

/// The modification time in a member's header, clamped as
/// [`mtime_from_secs`] does. The field is octal, or GNU base-256 binary for
/// times octal cannot hold; a negative one (first byte 0xff), which the tar
/// crate reads as a large unsigned number, is before 1970.
fn header_mtime(header: &tar::Header) -> io::Result<u32> {
    if header.as_old().mtime[0] == 0xff {
        return Ok(0);
    }
    Ok(mtime_from_secs(
        i64::try_from(header.mtime()?).unwrap_or(i64::MAX),
    ))
}

/// A PAX `mtime` record ("1700000000.123456789", "-5.5": decimal seconds,
/// maybe negative, maybe with a fraction) as whole seconds clamped as
/// [`mtime_from_secs`] does; `None` when it is not such a number.
fn pax_mtime(value: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let (negative, digits) = match whole.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, whole),
    };
    let decimal = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if digits.is_empty() || !decimal(digits) || !decimal(fraction) {
        return None;
    }
    if negative {
        // Before 1970, whatever the fraction.
        return Some(0);
    }
    // Only digits: an error here is an overflow.
    Some(mtime_from_secs(digits.parse().unwrap_or(i64::MAX)))
}

/// What a member's PAX records say that rfake keeps.
#[derive(Default)]
struct Pax {
    /// The `mtime` record ([`pax_mtime`]), which overrides the header's.
    mtime: Option<u32>,
    /// The `uid` record, which overrides the header's.
    uid: Option<u64>,
    /// `SCHILY.xattr.*` records that [`keep_xattr`] keeps.
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Those it does not.
    dropped_xattrs: u64,
    sparse: Sparse,
}

impl Pax {
    /// The records of a PAX extended header (raw, possibly empty).
    fn read(records: &[u8]) -> io::Result<Pax> {
        let mut pax = Pax::default();
        for extension in tar::PaxExtensions::new(records) {
            let extension = extension?;
            let (key, value) = (extension.key_bytes(), extension.value_bytes());
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                match std::str::from_utf8(name) {
                    Ok(name) if keep_xattr(name) => {
                        pax.xattrs.insert(name.to_string(), value.to_vec());
                    }
                    _ => pax.dropped_xattrs += 1,
                }
            } else if let Some(key) = key.strip_prefix(b"GNU.sparse.") {
                pax.sparse.record(key, value);
            } else if key == b"mtime" {
                // A malformed record is ignored, as if absent.
                pax.mtime = pax_mtime(value).or(pax.mtime);
            } else if key == b"uid" {
                pax.uid = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .or(pax.uid);
            }
        }
        Ok(pax)
    }
}

/// A sparse file as GNU tar writes it in PAX archives (`--sparse` with
/// `--format=pax`, which `--xattrs` implies; GNU tar manual, "Storing
/// Sparse Files"). Format 0.0 lists the data chunks in repeated
/// `GNU.sparse.offset`/`numbytes` records, 0.1 in `GNU.sparse.map`, 1.0 in
/// decimal lines at the start of the member's data (padded to 512 bytes).
/// The member itself is named `.../GNUSparseFile.<pid>/<name>`; the real
/// name is `GNU.sparse.name` and the real size `GNU.sparse.realsize` (1.0)
/// or `GNU.sparse.size` (0.x). Only the chunks are stored; the holes
/// become holes of the spool ([`Spool::append_sparse`]).
///
/// [`Spool::append_sparse`]: super::super::spool::Spool::append_sparse
#[derive(Default)]
struct Sparse {
    seen: bool,
    /// Format 1.0: the map is in the data.
    in_data: bool,
    name: Option<Vec<u8>>,
    size: Option<u64>,
    /// offset, length, offset, length...; `None` after a malformed number
    /// or too many.
    map: Option<Vec<u64>>,
}

impl Sparse {
    fn record(&mut self, key: &[u8], value: &[u8]) {
        if !self.seen {
            self.seen = true;
            self.map = Some(Vec::new());
        }
        let number = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u64>().ok();
        let mut push = |n: Option<u64>| {
            self.map = self
                .map
                .take()
                .zip(n)
                .filter(|(m, _)| m.len() < 2 * MAX_SPARSE_CHUNKS)
                .map(|(mut m, n)| {
                    m.push(n);
                    m
                });
        };
        match key {
            b"major" => self.in_data = value == b"1",
            b"name" => self.name = Some(value.to_vec()),
            b"realsize" | b"size" => self.size = number(value),
            b"map" => {
                for part in value.split(|&b| b == b',') {
                    push(number(part));
                }
            }
            b"offset" | b"numbytes" => push(number(value)),
            _ => {}
        }
    }

    /// The checked map of a member with `stored` bytes of data, which
    /// `data` reads (format 1.0: the map is read from it first).
    fn map(&self, data: &mut impl io::BufRead, stored: u64) -> Result<SparseMap, String> {
        let size = self
            .size
            .ok_or("a GNU sparse file without GNU.sparse.realsize")?;
        let (map, stored) = if self.in_data {
            let mut consumed = 0u64;
            let count = read_decimal(data, &mut consumed)?;
            if count > MAX_SPARSE_CHUNKS as u64 {
                return Err(format!("a GNU sparse map of {count} chunks"));
            }
            let mut map = Vec::new();
            for _ in 0..count * 2 {
                map.push(read_decimal(data, &mut consumed)?);
            }
            let padding = (512 - consumed % 512) % 512;
            io::copy(&mut data.take(padding), &mut io::sink())
                .map_err(|e| format!("cannot read the GNU sparse map: {}", io_text(&e)))?;
            let stored = stored
                .checked_sub(consumed + padding)
                .ok_or("a GNU sparse map longer than the member")?;
            (map, stored)
        } else {
            (
                self.map.clone().ok_or("a malformed GNU sparse map")?,
                stored,
            )
        };
        if map.len() % 2 != 0 {
            return Err("a GNU sparse map with an odd number of values".into());
        }
        let chunks = map.chunks(2).map(|c| (c[0], c[1])).collect();
        SparseMap::new(size, chunks, stored)
            .map_err(|e| format!("a GNU {}", e.trim_start_matches("a ")))
    }
}

/// One decimal number and its newline from a GNU sparse 1.0 map.
fn read_decimal(r: &mut impl io::BufRead, consumed: &mut u64) -> Result<u64, String> {
    let mut line = Vec::new();
    r.take(21)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the GNU sparse map: {}", io_text(&e)))?;
    *consumed += line.len() as u64;
    line.strip_suffix(b"\n")
        .and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok())
        .ok_or_else(|| "a malformed GNU sparse map".to_string())
}

/// A member name as a relative image path: no leading `/` or `./`; the
/// root itself is empty; `..` is refused.
fn member_path(raw: &[u8]) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err("the member's path climbs out of the image root (..)".to_string());
            }
        }
    }
    Ok(out)
}

/// A hard link member at `path` to `target` (a member name): the node, or
/// `None` for a link to itself. The target must be a regular file already
/// in the tree (earlier in the archive, or in a lower layer); a link to a
/// link is made to the same file.
fn hard_link(tree: &Tree, path: &Path, target: &[u8]) -> Result<Option<Node>, String> {
    let target = member_path(target)
        .map_err(|_| "the hard link's target climbs out of the image root (..)".to_string())?;
    if target == path {
        return Ok(None);
    }
    match tree.get(&target) {
        Some(Node::File { .. }) if !target.as_os_str().is_empty() => {
            Ok(Some(Node::HardLink { target }))
        }
        Some(Node::HardLink { target }) => Ok(Some(Node::HardLink {
            target: target.clone(),
        })),
        _ => Err(format!(
            "hard link to {}, which is not a regular file earlier in the archive",
            shown(&target)
        )),
    }
}

/// If `path` is a whiteout, apply it to the layers below and say so.
fn whiteout(tree: &mut Tree, path: &Path, added: &HashSet<PathBuf>) -> bool {
    let Some(name) = path.file_name().and_then(OsStr::to_str) else {
        return false;
    };
    let Some(hidden) = name.strip_prefix(WHITEOUT) else {
        return false;
    };
    let parent = path.parent().unwrap_or(Path::new(""));
    if name == OPAQUE {
        if let Some(children) = children_mut(tree, parent) {
            let mut at = parent.to_path_buf();
            keep_added(children, &mut at, added);
        }
    } else if !hidden.starts_with(WHITEOUT) && !hidden.is_empty() {
        // `.wh..wh.*` other than the opaque marker is AUFS bookkeeping.
        let target = parent.join(hidden);
        if !added.contains(&target) {
            tree.remove(&target);
        }
    }
    true
}

/// Remove from `children` (the directory `at`) everything the lower layers
/// put there: keep what this layer added, and directories on the way to it.
fn keep_added(children: &mut BTreeMap<OsString, Node>, at: &mut PathBuf, added: &HashSet<PathBuf>) {
    children.retain(|name, node| {
        at.push(name);
        let keep = match node {
            Node::Dir { children, .. } => {
                let mine = added.contains(at.as_path());
                keep_added(children, at, added);
                mine || !children.is_empty()
            }
            _ => added.contains(at.as_path()),
        };
        at.pop();
        keep
    });
}

/// The children of the directory at `path`, if it is one.
fn children_mut<'t>(tree: &'t mut Tree, path: &Path) -> Option<&'t mut BTreeMap<OsString, Node>> {
    let mut node = &mut tree.root;
    for c in path.components() {
        let Component::Normal(name) = c else { continue };
        node = match node {
            Node::Dir { children, .. } => children.get_mut(name)?,
            _ => return None,
        };
    }
    match node {
        Node::Dir { children, .. } => Some(children),
        _ => None,
    }
}

/// What is wrong with a member the tree refused.
fn tree_problem(e: &TreeError) -> String {
    match e {
        TreeError::ParentNotDir { parent, .. } => format!(
            "cannot be added: {} is not a directory in the image",
            shown(parent)
        ),
        other => other.to_string(),
    }
}

/// Read past the `len` bytes of a member's data that `reader` gives (into
/// `buf`, grown to a working size): a read that fails or ends early is the
/// source's fault (corrupt or truncated).
fn skip_data(
    reader: &mut dyn Read,
    len: u64,
    buf: &mut Vec<u8>,
    place: String,
) -> Result<(), SourceError> {
    if buf.is_empty() {
        buf.resize(READ_BUF, 0);
    }
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        match reader.read(&mut buf[..want]) {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("expected {len} bytes, got {}", len - left),
                );
                return Err(SourceError::invalid(
                    place,
                    format!("cannot read its data: {}", io_text(&e)),
                ));
            }
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(SourceError::invalid(
                    place,
                    format!("cannot read its data: {}", io_text(&e)),
                ));
            }
        }
    }
    Ok(())
}

/// A sparse member of layer `layer` whose chunks (`map`) are stored one
/// after another from `start` in the layer's tar stream: its data extents
/// there, adjacent ones merged; one covering the whole file is a plain
/// range.
fn layer_sparse(layer: u32, start: u64, map: &SparseMap) -> Content {
    let mut extents: Vec<Extent> = Vec::new();
    let mut stream = start;
    for &(at, len) in &map.chunks {
        if len > 0 {
            match extents.last_mut() {
                Some(last) if last.at + last.len == at && last.spool + last.len == stream => {
                    last.len += len;
                }
                _ => extents.push(Extent {
                    at,
                    len,
                    spool: stream,
                }),
            }
        }
        stream += len;
    }
    match extents.as_slice() {
        [] if map.size == 0 => Content::Layer {
            layer,
            offset: start,
            len: 0,
        },
        [one] if one.at == 0 && one.len == map.size => Content::Layer {
            layer,
            offset: one.spool,
            len: map.size,
        },
        _ => Content::LayerSparse {
            layer,
            size: map.size,
            extents: extents.into(),
        },
    }
}

/// Copy `len` bytes of a member's data to the spool, counted against the
/// build's size limit first. A read that fails or ends early is the
/// source's fault (corrupt or truncated); a write that fails is the
/// spool's.
pub(super) fn spool_copy(
    cx: &mut Cx,
    place: String,
    reader: &mut dyn Read,
    len: u64,
) -> Result<Content, SourceError> {
    cx.charge(&place, len)?;
    let mut tracked = Tracked {
        inner: reader,
        failed: false,
    };
    let result = cx.spool.append(&mut tracked, len);
    spooled(result, &tracked, place)
}

/// Copy a sparse file's data chunks, as `map` says, to the spool: the holes
/// cost nothing, but the file's whole size counts against the limit.
fn spool_sparse(
    cx: &mut Cx,
    place: String,
    reader: &mut dyn Read,
    map: &SparseMap,
) -> Result<Content, SourceError> {
    cx.charge(&place, map.size)?;
    let mut tracked = Tracked {
        inner: reader,
        failed: false,
    };
    let result = cx.spool.append_sparse(&mut tracked, &map.chunks, map.size);
    spooled(result, &tracked, place)
}

fn spooled(
    result: io::Result<Content>,
    tracked: &Tracked,
    place: String,
) -> Result<Content, SourceError> {
    match result {
        Ok(content) => Ok(content),
        Err(e) if tracked.failed || e.kind() == io::ErrorKind::UnexpectedEof => Err(
            SourceError::invalid(place, format!("cannot read its data: {}", io_text(&e))),
        ),
        Err(error) => Err(SourceError::Spool { place, error }),
    }
}

/// A reader that remembers whether it failed.
struct Tracked<'r> {
    inner: &'r mut dyn Read,
    failed: bool,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = true;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Options, SourceKind, detect};
    use super::*;
    use crate::exit::ExitKind;

    fn rootfs() -> Vec<u8> {
        TarMaker::default()
            .dir("./", 0o755)
            .dir("./etc/", 0o750)
            .file("./etc/hosts", b"127.0.0.1 localhost\n", 0o644)
            .hard_link("./etc/hosts2", "./etc/hosts")
            .hard_link("etc/hosts3", "etc/hosts2")
            .symlink("./bin", "usr/bin")
            .file("/usr/bin/tool", b"#!/bin/sh\n", 0o4755)
            .file_with_xattrs(
                "usr/bin/ping",
                b"elf",
                &[
                    ("security.capability", b"\x01\x02"),
                    ("security.selinux", b"system_u:object_r:bin_t:s0"),
                ],
            )
            .file("etc/replaced", b"old", 0o644)
            .file("etc/replaced", b"new", 0o600)
            .file("opt/deep/implicit/parents", b"p", 0o644)
            .file_owned("home/user/.profile", b"", 1000)
            .finish()
    }

    #[test]
    fn tarballs_plain_and_compressed() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("rootfs");
            std::fs::write(&path, compress(&rootfs(), compression)).unwrap();
            assert_eq!(detect(&path).unwrap(), SourceKind::Tarball(compression));
            let l = load_source(&path, &Options::default()).unwrap();
            let t = &l.tree;
            assert_eq!(mode_of(t, "etc"), 0o750, "{compression:?}");
            assert_eq!(l.text("etc/hosts"), "127.0.0.1 localhost\n");
            for link in ["etc/hosts2", "etc/hosts3"] {
                assert_eq!(
                    t.get(Path::new(link)),
                    Some(&Node::HardLink {
                        target: "etc/hosts".into()
                    })
                );
            }
            assert_eq!(link_of(t, "bin"), "usr/bin");
            assert_eq!(mode_of(t, "usr/bin/tool"), 0o4755);
            let Some(Node::File { meta, .. }) = t.get(Path::new("usr/bin/ping")) else {
                panic!()
            };
            assert_eq!(
                meta.xattrs.keys().collect::<Vec<_>>(),
                ["security.capability"]
            );
            assert_eq!(l.text("etc/replaced"), "new");
            assert_eq!(mode_of(t, "etc/replaced"), 0o600);
            assert_eq!(mode_of(t, "opt/deep/implicit"), 0o755);
            assert_eq!(l.text("opt/deep/implicit/parents"), "p");
            assert_eq!(
                l.warnings,
                [
                    "1 entry owned by other users is owned by root in the image \
                     (an unprivileged build cannot preserve owners)",
                    "1 extended attribute left out (SELinux labels, which belong to the host, \
                     and POSIX ACLs, which SquashFS cannot hold)"
                ]
            );
            t.check_hard_links().unwrap();
        }
    }

    #[test]
    fn modification_times_from_headers_and_pax_records() {
        let tar = TarMaker::default()
            .at(1_000_000_000)
            .dir("./", 0o755)
            .at(1_000_000_001)
            .dir("etc", 0o755)
            .at(1_000_000_002)
            .file("etc/hosts", b"h", 0o644)
            .at(1_000_000_003)
            .symlink("etc/link", "hosts")
            .hard_link("etc/hosts2", "etc/hosts")
            .at(1_000_000_004)
            .file("opt/implied/f", b"", 0o644)
            // 2^33 needs more than 11 octal digits: GNU base-256.
            .at(1 << 33)
            .file("far", b"", 0o644)
            // -1 in base-256.
            .file_with_header("before-1970", b"", |h| h.as_old_mut().mtime.fill(0xff))
            .at(7)
            .with_pax(&[("mtime", b"1500000000.75")], "pax", b"")
            .with_pax(&[("mtime", b"-12.5")], "pax-negative", b"")
            .with_pax(&[("mtime", b"99999999999")], "pax-far", b"")
            .with_pax(&[("mtime", b"12e3")], "pax-junk", b"")
            .finish();
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("times.tar");
        std::fs::write(&path, tar).unwrap();
        let t = load_source(&path, &Options::default()).unwrap().tree;
        for (path, mtime) in [
            ("", Some(1_000_000_000)),
            ("etc", Some(1_000_000_001)),
            ("etc/hosts", Some(1_000_000_002)),
            ("etc/link", Some(1_000_000_003)),
            ("opt", None),
            ("opt/implied", None),
            ("opt/implied/f", Some(1_000_000_004)),
            ("far", Some(u32::MAX)),
            ("before-1970", Some(0)),
            ("pax", Some(1_500_000_000)),
            ("pax-negative", Some(0)),
            ("pax-far", Some(u32::MAX)),
            ("pax-junk", Some(7)),
        ] {
            assert_eq!(mtime_of(&t, path), mtime, "{path}");
        }
        assert_eq!(
            t.get(Path::new("etc/hosts2")),
            Some(&Node::HardLink {
                target: "etc/hosts".into()
            })
        );
        assert_eq!(pax_mtime(b""), None);
        assert_eq!(pax_mtime(b"-"), None);
        assert_eq!(pax_mtime(b"1."), Some(1));
        assert_eq!(pax_mtime(b"1.5x"), None);
        assert_eq!(pax_mtime(b"4294967295"), Some(u32::MAX));
        assert_eq!(pax_mtime(b"99999999999999999999999"), Some(u32::MAX));
    }

    /// GNU tar's PAX sparse formats 1.0 (map in the data), 0.1 (map in
    /// a record) and 0.0 (repeated records): "abc" at 0, "de" at 100 of 110.
    #[test]
    fn gnu_pax_sparse_files() {
        let mut expected = vec![0u8; 110];
        expected[..3].copy_from_slice(b"abc");
        expected[100..102].copy_from_slice(b"de");
        let mut v1_data = b"2\n0\n3\n100\n2\n".to_vec();
        v1_data.resize(512, 0);
        v1_data.extend_from_slice(b"abcde");
        let tar = TarMaker::default()
            .with_pax(
                &[
                    ("GNU.sparse.major", b"1"),
                    ("GNU.sparse.minor", b"0"),
                    ("GNU.sparse.name", b"v1"),
                    ("GNU.sparse.realsize", b"110"),
                ],
                "./GNUSparseFile.1/v1",
                &v1_data,
            )
            .with_pax(
                &[
                    ("GNU.sparse.size", b"110"),
                    ("GNU.sparse.numblocks", b"2"),
                    ("GNU.sparse.name", b"dir/v01"),
                    ("GNU.sparse.map", b"0,3,100,2"),
                ],
                "./GNUSparseFile.1/v01",
                b"abcde",
            )
            .with_pax(
                &[
                    ("GNU.sparse.size", b"110"),
                    ("GNU.sparse.numblocks", b"2"),
                    ("GNU.sparse.offset", b"0"),
                    ("GNU.sparse.numbytes", b"3"),
                    ("GNU.sparse.offset", b"100"),
                    ("GNU.sparse.numbytes", b"2"),
                ],
                "v00",
                b"abcde",
            )
            .finish();
        let mut tar = tar[..tar.len() - 1024].to_vec();
        // Old GNU (type S), and a 1 TiB one.
        tar.extend(gnu_sparse_member("old", 110, &[(0, 3), (100, 2)], b"abcde"));
        tar.extend(gnu_sparse_member(
            "huge",
            1 << 40,
            &[(0, 3), ((1 << 40) - 2, 2)],
            b"abcde",
        ));
        tar.extend([0; 1024]);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sparse.tar");
        std::fs::write(&path, &tar).unwrap();
        let l = load_source(&path, &Options::default()).unwrap();
        assert_eq!(
            paths(&l.tree),
            ["", "dir", "dir/v01", "huge", "old", "v00", "v1"]
        );
        for name in ["v1", "dir/v01", "v00", "old"] {
            assert_eq!(l.bytes(name), expected, "{name}");
        }
        // Only the data is in the spool.
        let Some(Node::File { size, content, .. }) = l.tree.get(Path::new("huge")) else {
            panic!()
        };
        assert_eq!(*size, 1 << 40);
        assert!(matches!(content, Content::Sparse { .. }), "{content:?}");
        assert_eq!(l.spool_len(), 5 * 5);

        let bad = TarMaker::default()
            .with_pax(
                &[
                    ("GNU.sparse.size", b"110"),
                    ("GNU.sparse.map", b"100,2,0,3"),
                ],
                "bad",
                b"abcde",
            )
            .finish();
        std::fs::write(&path, &bad).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(": bad: a GNU sparse map with overlapping or out-of-range chunks"),
            "{e}"
        );
    }

    /// Sparse members of a layer (GNU PAX 1.0 with its map in the data,
    /// PAX 0.1, old GNU) stay in the layer as extents of its tar stream;
    /// a file a later layer replaces, and one it deletes, are not read
    /// when the image is written. What is written reads back right.
    #[test]
    fn layer_files_stay_in_their_layer() {
        let mut v1_data = b"2\n0\n3\n100\n2\n".to_vec();
        v1_data.resize(512, 0);
        v1_data.extend_from_slice(b"abcde");
        let tar = TarMaker::default()
            .file("replaced", &[1u8; 3000], 0o644)
            .with_pax(
                &[
                    ("GNU.sparse.major", b"1"),
                    ("GNU.sparse.minor", b"0"),
                    ("GNU.sparse.name", b"v1"),
                    ("GNU.sparse.realsize", b"110"),
                ],
                "./GNUSparseFile.1/v1",
                &v1_data,
            )
            .with_pax(
                &[
                    ("GNU.sparse.size", b"110"),
                    ("GNU.sparse.map", b"0,3,100,2"),
                ],
                "v01",
                b"abcde",
            )
            .file("deleted", &[2u8; 700], 0o644)
            // All data: a plain range.
            .with_pax(
                &[("GNU.sparse.size", b"5"), ("GNU.sparse.map", b"0,2,2,3")],
                "dense",
                b"abcde",
            )
            .finish();
        let mut layer1 = tar[..tar.len() - 1024].to_vec();
        layer1.extend(gnu_sparse_member("old", 110, &[(0, 3), (100, 2)], b"abcde"));
        layer1.extend([0; 1024]);
        let layer2 = TarMaker::default()
            .file("replaced", b"new", 0o644)
            .file(".wh.deleted", b"", 0o644)
            .finish();
        let d = tempfile::tempdir().unwrap();
        let oci = OciMaker::new(d.path());
        let manifest = oci.image(
            &serde_json::json!({"architecture": "amd64", "os": "linux"}),
            &[compress(&layer1, Compression::Gzip), layer2],
        );
        oci.index(&[manifest]);
        let l = load_source(d.path(), &Options::default()).unwrap();
        assert_eq!(l.spool_len(), 0);
        let mut expected = vec![0u8; 110];
        expected[..3].copy_from_slice(b"abc");
        expected[100..102].copy_from_slice(b"de");
        for name in ["v1", "v01", "old"] {
            assert_eq!(l.bytes(name), expected, "{name}");
            let Some(Node::File { content, .. }) = l.tree.get(Path::new(name)) else {
                panic!()
            };
            let Content::LayerSparse {
                layer: 0, extents, ..
            } = content
            else {
                panic!("{name}: {content:?}")
            };
            assert_eq!(
                extents.iter().map(|e| (e.at, e.len)).collect::<Vec<_>>(),
                [(0, 3), (100, 2)]
            );
        }
        let Some(Node::File { content, .. }) = l.tree.get(Path::new("dense")) else {
            panic!()
        };
        assert!(
            matches!(
                content,
                Content::Layer {
                    layer: 0,
                    len: 5,
                    ..
                }
            ),
            "{content:?}"
        );
        assert_eq!(l.text("dense"), "abcde");
        assert_eq!(l.text("replaced"), "new");
        assert!(l.tree.get(Path::new("deleted")).is_none());

        let img = d.path().join("out.sqfs");
        std::fs::File::create(&img).unwrap();
        let opts = crate::squashfs::WriteOptions::default();
        crate::squashfs::write_image(&img, &l.tree, Some(l.spooled()), &opts, &mut |_| {}).unwrap();
        let reader = crate::squashfs::Reader::open(std::fs::File::open(&img).unwrap(), 0).unwrap();
        for name in ["v1", "v01", "old"] {
            assert_eq!(
                reader.read_file(&format!("/{name}"), 1 << 20).unwrap(),
                expected
            );
        }
        assert_eq!(reader.read_file("/dense", 1 << 20).unwrap(), b"abcde");
        assert_eq!(reader.read_file("/replaced", 1 << 20).unwrap(), b"new");
    }

    #[test]
    fn climbing_members_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("evil.tar");
        let tar = TarMaker::default()
            .file("ok", b"1", 0o644)
            .file("a/../../etc/passwd", b"x", 0o644)
            .finish();
        std::fs::write(&path, tar).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: a/../../etc/passwd: the member's path climbs out of the image root (..)",
                path.display()
            )
        );
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn special_members_and_bad_links() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("dev.tar.gz");
        let tar = TarMaker::default()
            .dir("dev", 0o755)
            .special("dev/null", tar::EntryType::Char)
            .special("dev/fifo", tar::EntryType::Fifo)
            .file("etc/x", b"", 0o644)
            .finish();
        std::fs::write(&path, compress(&tar, Compression::Gzip)).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: dev/null: character device: an unprivileged build cannot represent it \
                 in an image; use --skip-special to leave it out",
                path.display()
            )
        );
        let l = load_source(
            &path,
            &Options {
                skip_special: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(
            l.warnings,
            [
                format!(
                    "{}: dev/null: character device left out (--skip-special)",
                    path.display()
                ),
                format!(
                    "{}: dev/fifo: FIFO left out (--skip-special)",
                    path.display()
                ),
            ]
        );
        assert_eq!(paths(&l.tree), ["", "dev", "etc", "etc/x"]);

        let bad = TarMaker::default().hard_link("a", "missing").finish();
        std::fs::write(&path, bad).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert!(
            e.to_string().ends_with(
                ": a: hard link to missing, which is not a regular file earlier in the archive"
            ),
            "{e}"
        );
        let bad = TarMaker::default()
            .file("f", b"", 0o644)
            .file("f/x", b"", 0o644)
            .finish();
        std::fs::write(&path, bad).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(": f/x: cannot be added: f is not a directory in the image"),
            "{e}"
        );
    }

    #[test]
    fn truncated_and_corrupt_archives() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.tar");
        let mut tar = TarMaker::default()
            .file("big", &[7u8; 5000], 0o644)
            .finish();
        tar.truncate(2048);
        std::fs::write(&path, &tar).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert!(
            e.to_string().contains(": big: cannot read its data: "),
            "{e}"
        );
        assert_eq!(e.exit_kind(), ExitKind::BadImage);

        let mut gz = compress(&rootfs(), Compression::Gzip);
        let n = gz.len();
        gz[n / 2] ^= 0xff;
        gz[n / 2 + 1] ^= 0xff;
        std::fs::write(&path, &gz).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only() {
        let mut tree = Tree::default();
        let file = |s: &str| Node::File {
            meta: Meta::with_mode(0o644),
            size: s.len() as u64,
            content: Content::Bytes(std::sync::Arc::new(s.as_bytes().to_vec())),
        };
        for p in ["a/old", "a/sub/old", "b/gone", "b/kept", "c/x"] {
            tree.insert(Path::new(p), file("lower")).unwrap();
        }
        let mut added = HashSet::new();
        // This layer added a/new and a/sub/new before the opaque marker.
        for p in ["a/new", "a/sub/new"] {
            tree.insert(Path::new(p), file("upper")).unwrap();
            added.insert(PathBuf::from(p));
        }
        assert!(whiteout(&mut tree, Path::new("a/.wh..wh..opq"), &added));
        assert!(whiteout(&mut tree, Path::new("b/.wh.gone"), &added));
        assert!(whiteout(&mut tree, Path::new("c/.wh..wh.plnk"), &added));
        assert!(!whiteout(&mut tree, Path::new("c/x.wh.y"), &added));
        assert_eq!(
            paths(&tree),
            [
                "",
                "a",
                "a/new",
                "a/sub",
                "a/sub/new",
                "b",
                "b/kept",
                "c",
                "c/x"
            ]
        );
    }
}
