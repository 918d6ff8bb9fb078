//! Helpers for the source tests: load a source the way `rfake build` does,
//! read back what landed in the tree, and make tar archives, compressed
//! streams and OCI layouts.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::super::ImageMeta;
use super::super::spool::{Spool, Spooled, open_content};
use super::super::tree::{Node, Tree};
use super::{Compression, Options, SourceError, detect, load};

/// A loaded source.
#[derive(Debug)]
pub struct Loaded {
    pub tree: Tree,
    pub meta: ImageMeta,
    pub warnings: Vec<String>,
    spool: Spooled,
}

impl Loaded {
    /// The bytes of the regular file at `path` in the image.
    pub fn bytes(&self, path: &str) -> Vec<u8> {
        let Some(Node::File { content, size, .. }) = self.tree.get(Path::new(path)) else {
            panic!("{path}: not a file in {:?}", self.tree)
        };
        let mut out = Vec::new();
        open_content(content, *size, Some(&self.spool))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len() as u64, *size, "{path}: size");
        out
    }

    /// What the spool holds, for writing the image.
    pub fn spooled(&self) -> &Spooled {
        &self.spool
    }

    /// How much the spool holds.
    pub fn spool_len(&self) -> u64 {
        self.spool.file().metadata().unwrap().len()
    }

    pub fn text(&self, path: &str) -> String {
        String::from_utf8(self.bytes(path)).unwrap()
    }
}

/// Detect and load `path` with a fresh tree, meta and spool.
pub fn load_source(path: &Path, opts: &Options) -> Result<Loaded, SourceError> {
    let kind = detect(path)?;
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let mut tree = Tree::default();
    let mut meta = ImageMeta::default();
    let warnings = load(path, kind, opts, &mut spool, &mut tree, &mut meta)?;
    Ok(Loaded {
        tree,
        meta,
        warnings,
        spool: spool.finish().unwrap(),
    })
}

/// [`load_source`], with `steps` running a recipe's `[[run]]` steps.
pub fn load_source_with_steps(
    path: &Path,
    opts: &Options,
    steps: &mut dyn super::StepRunner,
) -> Result<Loaded, SourceError> {
    let kind = detect(path)?;
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let mut tree = Tree::default();
    let mut meta = ImageMeta::default();
    let warnings =
        super::load_with_steps(path, kind, opts, &mut spool, &mut tree, &mut meta, steps)?;
    Ok(Loaded {
        tree,
        meta,
        warnings,
        spool: spool.finish().unwrap(),
    })
}

/// Load a pulled image: `manifest`'s bytes, blobs under `root`.
pub fn load_pulled_source(root: &Path, manifest: &[u8]) -> Result<Loaded, SourceError> {
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let mut tree = Tree::default();
    let mut meta = ImageMeta::default();
    let warnings = super::load_pulled(
        root,
        manifest,
        "docker://registry.example/demo:1",
        &Options::default(),
        &mut spool,
        &mut tree,
        &mut meta,
    )?;
    Ok(Loaded {
        tree,
        meta,
        warnings,
        spool: spool.finish().unwrap(),
    })
}

pub fn mode_of(tree: &Tree, path: &str) -> u16 {
    match tree.get(Path::new(path)) {
        Some(Node::Dir { meta, .. } | Node::File { meta, .. } | Node::Symlink { meta, .. }) => {
            meta.mode
        }
        other => panic!("{path}: {other:?}"),
    }
}

/// The entry's own modification time (`None`: it gets the build's).
pub fn mtime_of(tree: &Tree, path: &str) -> Option<u32> {
    match tree.get(Path::new(path)) {
        Some(Node::Dir { meta, .. } | Node::File { meta, .. } | Node::Symlink { meta, .. }) => {
            meta.mtime
        }
        other => panic!("{path}: {other:?}"),
    }
}

/// Set the modification time of `path` itself (a symbolic link is not
/// followed) to `secs`; the time the filesystem kept, which for times out
/// of its range differs.
pub fn set_mtime(path: &Path, secs: i64) -> i64 {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a NUL-terminated path and an array of two timespecs.
    let ret = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        ret,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    fs::symlink_metadata(path).unwrap().mtime()
}

pub fn link_of(tree: &Tree, path: &str) -> String {
    match tree.get(Path::new(path)) {
        Some(Node::Symlink { target, .. }) => target.to_string_lossy().into_owned(),
        other => panic!("{path}: not a symlink: {other:?}"),
    }
}

/// The sorted paths of the tree (the root is "").
pub fn paths(tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    tree.visit(&mut |p, _| out.push(p.to_string_lossy().into_owned()));
    out
}

/// Set a `user.*` attribute; false when the filesystem does not allow it.
pub fn set_user_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of `value.len()` bytes.
    unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

/// A tar archive made member by member, each with modification time 0
/// unless [`TarMaker::at`] says otherwise.
pub struct TarMaker {
    builder: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for TarMaker {
    fn default() -> Self {
        TarMaker {
            builder: tar::Builder::new(Vec::new()),
            mtime: 0,
        }
    }
}

/// A header with `name` (and `link`) written as is: the builder would
/// rewrite `./x` and refuse `/x` and `..`, which the tests need.
fn header(
    name: &str,
    link: &str,
    kind: tar::EntryType,
    mode: u32,
    size: u64,
    mtime: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    h
}

impl TarMaker {
    fn add(mut self, h: &tar::Header, data: &[u8]) -> Self {
        self.builder.append(h, data).unwrap();
        self
    }

    /// The members after this have modification time `mtime`.
    pub fn at(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// A regular file whose header `edit` changes last (the checksum is
    /// set after it).
    pub fn file_with_header(
        self,
        path: &str,
        data: &[u8],
        edit: impl Fn(&mut tar::Header),
    ) -> Self {
        let mut h = header(
            path,
            "",
            tar::EntryType::Regular,
            0o644,
            data.len() as u64,
            self.mtime,
        );
        edit(&mut h);
        h.set_cksum();
        self.add(&h, data)
    }

    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        let h = header(
            path,
            "",
            tar::EntryType::Regular,
            mode,
            data.len() as u64,
            self.mtime,
        );
        self.add(&h, data)
    }

    pub fn file_owned(self, path: &str, data: &[u8], uid: u64) -> Self {
        self.file_with_header(path, data, |h| h.set_uid(uid))
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        let h = header(path, "", tar::EntryType::Directory, mode, 0, self.mtime);
        self.add(&h, &[])
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        let h = header(path, target, tar::EntryType::Symlink, 0o777, 0, self.mtime);
        self.add(&h, &[])
    }

    pub fn hard_link(self, path: &str, target: &str) -> Self {
        let h = header(path, target, tar::EntryType::Link, 0o644, 0, self.mtime);
        self.add(&h, &[])
    }

    pub fn special(self, path: &str, kind: tar::EntryType) -> Self {
        let h = header(path, "", kind, 0o644, 0, self.mtime);
        self.add(&h, &[])
    }

    /// A file whose name the builder writes, as a GNU long name member
    /// when it has more than 100 bytes.
    pub fn long_named(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = header(
            "",
            "",
            tar::EntryType::Regular,
            0o644,
            data.len() as u64,
            self.mtime,
        );
        self.builder.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A file with PAX `SCHILY.xattr.*` records.
    pub fn file_with_xattrs(mut self, path: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> Self {
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(path, data, 0o644)
    }

    /// A member with PAX records `records` before it.
    pub fn with_pax(mut self, records: &[(&str, &[u8])], path: &str, data: &[u8]) -> Self {
        self.builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self.file(path, data, 0o644)
    }

    /// Bytes written as they are (whole 512-byte blocks: a member made by
    /// hand).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        assert_eq!(bytes.len() % 512, 0);
        self.builder.get_mut().extend_from_slice(bytes);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// An old GNU sparse member (type `S`, as `tar --sparse --format=gnu`
/// writes it): a file of `size` bytes whose data `chunks` (offset, length)
/// hold `data`, one after the other. Four chunks go in the header, the
/// rest in extension blocks of 21 after it.
pub fn gnu_sparse_member(name: &str, size: u64, chunks: &[(u64, u64)], data: &[u8]) -> Vec<u8> {
    assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), data.len() as u64);
    let mut h = header(
        name,
        "",
        tar::EntryType::GNUSparse,
        0o644,
        data.len() as u64,
        0,
    );
    let (first, rest) = chunks.split_at(chunks.len().min(4));
    let gnu = h.as_gnu_mut().unwrap();
    for (entry, &(offset, len)) in gnu.sparse.iter_mut().zip(first) {
        entry.set_offset(offset);
        entry.set_length(len);
    }
    gnu.set_real_size(size);
    gnu.set_is_extended(!rest.is_empty());
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    let blocks: Vec<&[(u64, u64)]> = rest.chunks(21).collect();
    for (i, block) in blocks.iter().enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (entry, &(offset, len)) in ext.sparse_mut().iter_mut().zip(block.iter()) {
            entry.set_offset(offset);
            entry.set_length(len);
        }
        ext.set_is_extended(i + 1 < blocks.len());
        out.extend_from_slice(ext.as_bytes());
    }
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

pub fn compress(data: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::stream::encode_all(data, 1).unwrap(),
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An OCI image layout being written in a directory.
pub struct OciMaker {
    pub dir: std::path::PathBuf,
}

impl OciMaker {
    pub fn new(dir: &Path) -> OciMaker {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        OciMaker {
            dir: dir.to_path_buf(),
        }
    }

    /// Store `data` as a blob; its descriptor.
    pub fn blob(&self, media_type: &str, data: &[u8]) -> serde_json::Value {
        let hex = sha256_hex(data);
        fs::write(self.dir.join("blobs/sha256").join(&hex), data).unwrap();
        serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{hex}"),
            "size": data.len(),
        })
    }

    /// Store a config and a manifest for `layers`; the manifest's descriptor.
    pub fn image(&self, config: &serde_json::Value, layers: &[Vec<u8>]) -> serde_json::Value {
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let layers: Vec<_> = layers
            .iter()
            .map(|l| self.blob("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        )
    }

    pub fn index(&self, manifests: &[serde_json::Value]) {
        let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

/// A tar of the directory `dir`'s contents (member names relative to it).
pub fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}
