//! OCI images: a layout directory (`oci-layout`, `index.json`, `blobs/`)
//! or the same in an uncompressed tar (an OCI archive, as `podman save
//! --format oci-archive` and `skopeo copy oci-archive:` write it); and the
//! image configuration, which docker archives share.
//!
//! `index.json` names manifests; with several, the one whose platform is the
//! host's architecture is taken, else the first (a nested index is followed
//! the same way). The manifest names the configuration and the layers, which
//! are applied in order with their whiteouts. Every blob is checked against
//! its digest and size: manifests and the configuration before they are
//! used, layers while they are read.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::super::ImageMeta;
use super::super::tree::Tree;
use super::archive::Archive;
use super::detect::input_error;
use super::layer::{Blob, Origin, apply_layer};
use super::{Cx, SourceError, io_text, one_line, set_env, shown};
pub(super) use crate::digest::Digest;
use crate::digest::Hasher;
use crate::image::sif::Arch;
use crate::input::{InputError, open_regular};

/// The most a JSON document (index, manifest, configuration) may have.
pub(super) const JSON_LIMIT: u64 = 16 << 20;
/// Nested indexes followed at most.
const MAX_DEPTH: usize = 8;

/// Load the OCI layout directory at `path`.
pub(super) fn load_layout_dir(
    cx: &mut Cx,
    path: &Path,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    let root = fs::canonicalize(path).map_err(|e| SourceError::unreadable(path, e))?;
    load_image(cx, &Store::Dir(root), Arch::host().name(), tree, meta)
}

/// Load the OCI archive at `path`.
pub(super) fn load_archive(
    cx: &mut Cx,
    path: &Path,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    let archive = Archive::open(path)?;
    load_image(
        cx,
        &Store::Archive(archive),
        Arch::host().name(),
        tree,
        meta,
    )
}

/// Load the image whose manifest is `manifest` (its bytes, already checked
/// against their digest by whoever fetched them; `place` names it in
/// messages) from a blob store laid out as an OCI layout's `blobs/` is:
/// `root/blobs/<algorithm>/<hex>`. The image cache is one.
pub(super) fn load_manifest(
    cx: &mut Cx,
    root: &Path,
    manifest: &[u8],
    place: &str,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    let doc = parse_json(manifest, place)?;
    if doc.get("manifests").is_some() {
        return Err(SourceError::invalid(
            place,
            "an image index, not an image manifest",
        ));
    }
    apply_manifest(cx, &Store::Dir(root.to_path_buf()), &doc, place, tree, meta)
}

/// A file of the layout opened for reading, and its size.
type Opened<'a> = (Box<dyn Read + 'a>, u64);

/// Where the layout's files are.
enum Store {
    Dir(PathBuf),
    Archive(Archive),
}

impl Store {
    /// The layout itself, for messages.
    fn top(&self) -> String {
        match self {
            Store::Dir(root) => shown(root),
            Store::Archive(a) => shown(a.path()),
        }
    }

    fn place(&self, name: &str) -> String {
        match self {
            Store::Dir(root) => shown(&root.join(name)),
            Store::Archive(a) => a.place(name),
        }
    }

    /// A reader of the file `name` and its size; `None` if it is absent.
    fn open(&self, name: &str) -> Result<Option<Opened<'_>>, SourceError> {
        match self {
            Store::Dir(root) => {
                let path = root.join(name);
                // Never blocks on a FIFO; checked on the open descriptor.
                let (file, meta) = match open_regular(&path) {
                    Ok(opened) => opened,
                    Err(InputError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(None);
                    }
                    Err(e) => return Err(input_error(&path, e)),
                };
                Ok(Some((Box::new(io::BufReader::new(file)), meta.len())))
            }
            Store::Archive(a) => Ok(a
                .open_member(name)?
                .map(|(r, size)| (Box::new(r) as Box<dyn Read>, size))),
        }
    }

    /// The file `name` as a [`Blob`], to read (and read again) in place;
    /// `None` if it is absent.
    fn open_blob(&self, name: &str) -> Result<Option<Blob>, SourceError> {
        match self {
            Store::Dir(root) => {
                let path = root.join(name);
                let (file, meta) = match open_regular(&path) {
                    Ok(opened) => opened,
                    Err(InputError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(None);
                    }
                    Err(e) => return Err(input_error(&path, e)),
                };
                Ok(Some(Blob {
                    file: Arc::new(file),
                    offset: 0,
                    len: meta.len(),
                }))
            }
            Store::Archive(a) => a.member_blob(name),
        }
    }

    /// The whole file `name`, at most [`JSON_LIMIT`] bytes.
    fn read_json_file(&self, name: &str) -> Result<Value, SourceError> {
        let Some((reader, size)) = self.open(name)? else {
            return Err(SourceError::invalid(
                self.top(),
                format!("{name} is missing"),
            ));
        };
        let bytes = read_limited(reader, size, &self.place(name))?;
        parse_json(&bytes, &self.place(name))
    }
}

/// The whole of a metadata file whose real size is `size` (a file's, or
/// an archive member's), at most [`JSON_LIMIT`] bytes.
fn read_limited(reader: impl Read, size: u64, place: &str) -> Result<Vec<u8>, SourceError> {
    if size > JSON_LIMIT {
        return Err(SourceError::invalid(
            place,
            format!("{size} bytes, more than the {JSON_LIMIT} a metadata file may have"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader
        .take(JSON_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| SourceError::invalid(place, format!("cannot read: {}", io_text(&e))))?;
    Ok(bytes)
}

pub(super) fn parse_json(bytes: &[u8], place: &str) -> Result<Value, SourceError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SourceError::invalid(place, format!("bad JSON: {}", one_line(&e.to_string()))))
}

/// A reader that hashes and counts what passes through it.
pub(super) struct Verify<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> Verify<R> {
    pub(super) fn new(inner: R, digest: &Digest) -> Verify<R> {
        Verify {
            inner,
            hasher: digest.hasher(),
            count: 0,
        }
    }

    /// Read what is left, then check the digest and the size.
    pub(super) fn check(
        mut self,
        digest: &Digest,
        size: Option<u64>,
        place: &str,
    ) -> Result<(), SourceError> {
        io::copy(&mut self, &mut io::sink())
            .map_err(|e| SourceError::invalid(place, format!("cannot read: {}", io_text(&e))))?;
        if let Some(size) = size {
            if self.count != size {
                return Err(SourceError::invalid(
                    place,
                    format!("{} bytes, the manifest says {size}", self.count),
                ));
            }
        }
        let found = self.hasher.hex();
        if found != digest.hex {
            return Err(SourceError::invalid(
                place,
                format!(
                    "the content does not match its digest (it hashes to {}:{found})",
                    digest.algorithm
                ),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A descriptor: what a manifest or index says about a blob.
#[derive(Debug, Clone)]
struct Descriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    architecture: Option<String>,
    os: Option<String>,
    /// An attestation (SBOM, provenance) that `docker buildx` lists beside
    /// the images in an index: not an image.
    attestation: bool,
}

impl Descriptor {
    fn parse(value: &Value, place: &str, what: &str) -> Result<Descriptor, SourceError> {
        let bad = |problem: String| SourceError::invalid(place, format!("{what}: {problem}"));
        let digest_text = value
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no digest".into()))?;
        let digest = Digest::parse(digest_text)
            .ok_or_else(|| bad(format!("unsupported or malformed digest {digest_text:?}")))?;
        let size = value
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no size".into()))?;
        let platform = value.get("platform");
        let text = |v: Option<&Value>, key: &str| {
            v.and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(Descriptor {
            media_type: text(Some(value), "mediaType").unwrap_or_default(),
            digest,
            size,
            architecture: text(platform, "architecture"),
            os: text(platform, "os"),
            attestation: value
                .pointer("/annotations/vnd.docker.reference.type")
                .and_then(Value::as_str)
                == Some("attestation-manifest"),
        })
    }

    fn is_index(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            "application/vnd.oci.image.index.v1+json"
                | "application/vnd.docker.distribution.manifest.list.v2+json"
        )
    }
}

/// The whole blob for `desc`, checked against its digest and size.
fn read_blob(store: &Store, desc: &Descriptor, what: &str) -> Result<Vec<u8>, SourceError> {
    let name = desc.digest.blob_path();
    let place = store.place(&name);
    let Some((reader, size)) = store.open(&name)? else {
        return Err(missing_blob(store, &desc.digest, what));
    };
    if desc.size > JSON_LIMIT {
        return Err(SourceError::invalid(
            place,
            format!(
                "{what}: its descriptor says {} bytes, more than the {JSON_LIMIT} a metadata \
                 file may have",
                desc.size
            ),
        ));
    }
    let mut verify = Verify::new(reader, &desc.digest);
    // The blob's own size (a file's, or an archive member's, which the
    // archive was checked to hold); a descriptor that says otherwise is
    // found by `check`.
    let bytes = read_limited(&mut verify, size, &place)?;
    verify.check(&desc.digest, Some(desc.size), &place)?;
    Ok(bytes)
}

fn missing_blob(store: &Store, digest: &Digest, what: &str) -> SourceError {
    SourceError::invalid(store.top(), format!("{what}: blob {digest} is missing"))
}

fn load_image(
    cx: &mut Cx,
    store: &Store,
    host: &str,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    let index = store.read_json_file("index.json")?;
    let mut desc = choose(cx, &index, &store.place("index.json"), host)?;
    for _ in 0..MAX_DEPTH {
        let what = if desc.is_index() { "index" } else { "manifest" };
        let bytes = read_blob(store, &desc, what)?;
        let place = store.place(&desc.digest.blob_path());
        let doc = parse_json(&bytes, &place)?;
        if desc.is_index() || doc.get("manifests").is_some() {
            desc = choose(cx, &doc, &place, host)?;
            continue;
        }
        return apply_manifest(cx, store, &doc, &place, tree, meta);
    }
    Err(SourceError::invalid(
        store.top(),
        format!("more than {MAX_DEPTH} nested indexes"),
    ))
}

/// The manifest to use from an index: the only one, else the first for
/// `host`'s architecture (on Linux), else the first.
fn choose(cx: &mut Cx, index: &Value, place: &str, host: &str) -> Result<Descriptor, SourceError> {
    let Some(list) = index.get("manifests").and_then(Value::as_array) else {
        return Err(SourceError::invalid(place, "no \"manifests\" array"));
    };
    let mut all = Vec::new();
    for (i, value) in list.iter().enumerate() {
        let desc = Descriptor::parse(value, place, &format!("manifests[{i}]"))?;
        if !desc.attestation {
            all.push(desc);
        }
    }
    let Some(first) = all.first() else {
        return Err(SourceError::invalid(place, "lists no image manifest"));
    };
    if all.len() == 1 {
        return Ok(first.clone());
    }
    let linux = |d: &&Descriptor| d.os.as_deref().is_none_or(|os| os == "linux");
    if let Some(found) = all
        .iter()
        .filter(linux)
        .find(|d| d.architecture.as_deref() == Some(host))
    {
        return Ok(found.clone());
    }
    cx.warn(format!(
        "{place}: none of its {} manifests is for {host}; using the first (for {})",
        all.len(),
        first
            .architecture
            .as_deref()
            .unwrap_or("an unnamed platform")
    ));
    Ok(first.clone())
}

fn apply_manifest(
    cx: &mut Cx,
    store: &Store,
    manifest: &Value,
    place: &str,
    tree: &mut Tree,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    if manifest.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err(SourceError::invalid(
            place,
            "a Docker schema 1 manifest, which rfake does not read (pull the image again \
             with a current tool)",
        ));
    }
    let config = manifest
        .get("config")
        .ok_or_else(|| SourceError::invalid(place, "the manifest has no config"))?;
    let config = Descriptor::parse(config, place, "config")?;
    let bytes = read_blob(store, &config, "config")?;
    let config_place = store.place(&config.digest.blob_path());
    apply_config(cx, &parse_json(&bytes, &config_place)?, &config_place, meta)?;

    let layers = match manifest.get("layers") {
        Some(Value::Array(layers)) => layers,
        None | Some(Value::Null) => &Vec::new(),
        Some(_) => return Err(SourceError::invalid(place, "\"layers\" is not an array")),
    };
    let descs = layers
        .iter()
        .enumerate()
        .map(|(i, l)| Descriptor::parse(l, place, &format!("layers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let archive = match store {
        Store::Dir(root) => root.as_path(),
        Store::Archive(a) => a.path(),
    };
    for (i, desc) in descs.iter().enumerate() {
        let what = format!("layer {} of {}", i + 1, descs.len());
        if desc.media_type.contains("encrypted") {
            return Err(SourceError::invalid(
                store.top(),
                format!(
                    "{what} ({}): an encrypted layer ({})",
                    desc.digest, desc.media_type
                ),
            ));
        }
        let name = desc.digest.blob_path();
        let Some(blob) = store.open_blob(&name)? else {
            return Err(missing_blob(store, &desc.digest, &what));
        };
        let origin = Origin {
            archive,
            inner: Some(format!("{what} ({})", short(&desc.digest))),
        };
        // Checked while it is read; its files stay in it (the writer reads
        // them from the same open file again).
        apply_layer(
            cx,
            &origin,
            &blob,
            Some((&desc.digest, Some(desc.size))),
            tree,
        )?;
    }
    Ok(())
}

/// `sha256:0123456789ab`: enough to tell layers apart in messages.
fn short(digest: &Digest) -> String {
    format!("{}:{}", digest.algorithm, &digest.hex[..12])
}

/// Take `Env`, `Entrypoint`, `Cmd`, `WorkingDir` and `Labels` from an image
/// configuration (OCI image spec "config", as Docker writes it too).
pub(super) fn apply_config(
    cx: &mut Cx,
    config: &Value,
    place: &str,
    meta: &mut ImageMeta,
) -> Result<(), SourceError> {
    if let Some(arch) = config.get("architecture").and_then(Value::as_str) {
        let image = Arch::ALL.iter().find(|a| a.name() == arch);
        let host = Arch::host();
        if image.is_some_and(|a| !a.runs_on(host)) {
            cx.warn(format!(
                "{place}: the image is for {arch}, this host is {host}: its programs may not run here"
            ));
        }
    }
    let Some(c) = config.get("config").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let bad = |key: &str, expected: &str| {
        SourceError::invalid(place, format!("config.{key}: expected {expected}"))
    };
    let strings = |key: &str| -> Result<Option<Vec<String>>, SourceError> {
        match c.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| bad(key, "an array of strings")),
            Some(_) => Err(bad(key, "an array of strings")),
        }
    };
    for entry in strings("Env")?.unwrap_or_default() {
        match entry.split_once('=') {
            Some((name, value)) if !name.is_empty() => set_env(&mut meta.env, name, value),
            _ => cx.warn(format!(
                "{place}: config.Env entry {:?} is not NAME=value; left out",
                one_line(&entry)
            )),
        }
    }
    if let Some(entrypoint) = strings("Entrypoint")? {
        meta.entrypoint = entrypoint;
    }
    if let Some(cmd) = strings("Cmd")? {
        meta.cmd = cmd;
    }
    match c.get("WorkingDir") {
        None | Some(Value::Null) => {}
        Some(Value::String(dir)) if dir.is_empty() => {}
        Some(Value::String(dir)) => meta.workdir = Some(dir.clone()),
        Some(_) => return Err(bad("WorkingDir", "a string")),
    }
    match c.get("Labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                let v = v.as_str().ok_or_else(|| bad("Labels", "string values"))?;
                meta.labels.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => return Err(bad("Labels", "an object")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Compression, Options, SourceKind, detect};
    use super::*;
    use crate::build::tree::{Content, Node};
    use crate::exit::ExitKind;
    use serde_json::json;

    /// A two-layer image: layer 2 deletes `etc/old` and makes `var/cache`
    /// opaque (its `var/cache/new` is kept, the lower `var/cache/*` is not),
    /// and lists `etc` again, with a later time.
    fn two_layer_image(dir: &Path) -> OciMaker {
        let oci = OciMaker::new(dir);
        let layer1 = TarMaker::default()
            .at(1_000_000_001)
            .dir("etc", 0o755)
            .file("etc/old", b"old", 0o644)
            .file("etc/keep", b"keep", 0o644)
            .file("var/cache/a", b"a", 0o644)
            .file("var/cache/sub/b", b"b", 0o644)
            .file("bin/sh", b"shell", 0o755)
            .finish();
        let layer2 = TarMaker::default()
            .at(1_000_000_002)
            .dir("etc", 0o755)
            .file("var/cache/new", b"new", 0o644)
            .file("etc/.wh.old", b"", 0o644)
            .file("var/cache/.wh..wh..opq", b"", 0o644)
            .file("etc/added", b"added", 0o600)
            .finish();
        let config = json!({
            "architecture": Arch::host().name(),
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hi"],
                "WorkingDir": "/srv",
                "Labels": {"org.example.name": "demo"},
            },
        });
        let manifest = oci.image(
            &config,
            &[
                compress(&layer1, Compression::Gzip),
                compress(&layer2, Compression::Zstd),
            ],
        );
        oci.index(&[manifest]);
        oci
    }

    fn check_two_layer_image(l: &Loaded) {
        assert_eq!(
            paths(&l.tree),
            [
                "",
                "bin",
                "bin/sh",
                "etc",
                "etc/added",
                "etc/keep",
                "var",
                "var/cache",
                "var/cache/new"
            ]
        );
        assert_eq!(l.text("var/cache/new"), "new");
        assert_eq!(l.text("bin/sh"), "shell");
        // Read from its layer, not copied: the spool stays empty.
        let Some(Node::File { content, .. }) = l.tree.get(Path::new("bin/sh")) else {
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
        assert_eq!(l.spool_len(), 0);
        assert_eq!(mode_of(&l.tree, "etc/added"), 0o600);
        // Each entry has its layer's time; `var` was only implied.
        for (path, mtime) in [
            ("etc", Some(1_000_000_002)),
            ("etc/keep", Some(1_000_000_001)),
            ("etc/added", Some(1_000_000_002)),
            ("var", None),
            ("var/cache/new", Some(1_000_000_002)),
        ] {
            assert_eq!(mtime_of(&l.tree, path), mtime, "{path}");
        }
        let m = &l.meta;
        assert_eq!(
            m.env,
            [("PATH", "/usr/bin:/bin"), ("LANG", "C.UTF-8")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(m.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(m.cmd, ["echo hi"]);
        assert_eq!(m.workdir.as_deref(), Some("/srv"));
        assert_eq!(m.labels["org.example.name"], "demo");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn layout_directory_with_whiteouts_and_config() {
        let d = tempfile::tempdir().unwrap();
        let oci = two_layer_image(&d.path().join("layout"));
        assert_eq!(detect(&oci.dir).unwrap(), SourceKind::OciLayout);
        check_two_layer_image(&load_source(&oci.dir, &Options::default()).unwrap());
    }

    /// A pulled image: the manifest's bytes and the blob store (the image
    /// cache has an OCI layout's `blobs/`), no `index.json` read.
    #[test]
    fn pulled_manifest_with_blobs_in_a_store() {
        let d = tempfile::tempdir().unwrap();
        let oci = two_layer_image(&d.path().join("cache"));
        fs::remove_file(oci.dir.join("index.json")).unwrap();
        let manifest = fs::read_dir(oci.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .find(|b| b.starts_with(b"{") && b.windows(6).any(|w| w == b"layers"))
            .unwrap();
        check_two_layer_image(&load_pulled_source(&oci.dir, &manifest).unwrap());
        // An index is not a manifest; a missing layer is named.
        let err = load_pulled_source(&oci.dir, br#"{"manifests": []}"#).unwrap_err();
        assert!(err.to_string().contains("an image index"), "{err}");
        let layer = manifest_layer(&manifest);
        fs::remove_file(oci.dir.join(layer.blob_path())).unwrap();
        let err = load_pulled_source(&oci.dir, &manifest).unwrap_err();
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
        assert!(err.to_string().contains(&layer.to_string()), "{err}");
    }

    fn manifest_layer(manifest: &[u8]) -> Digest {
        let doc: Value = serde_json::from_slice(manifest).unwrap();
        Digest::parse(doc["layers"][0]["digest"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn oci_archive() {
        let d = tempfile::tempdir().unwrap();
        let oci = two_layer_image(&d.path().join("layout"));
        let path = d.path().join("image.tar");
        fs::write(&path, tar_of_dir(&oci.dir)).unwrap();
        assert_eq!(detect(&path).unwrap(), SourceKind::OciArchive);
        check_two_layer_image(&load_source(&path, &Options::default()).unwrap());

        // Compressed: refused at detection with the way out.
        let gz = d.path().join("image.tar.gz");
        fs::write(&gz, compress(&tar_of_dir(&oci.dir), Compression::Gzip)).unwrap();
        let e = detect(&gz).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{0}: gzip-compressed OCI archive: rfake reads uncompressed image archives only; \
                 decompress it first (gzip -dk {0})",
                gz.display()
            )
        );
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
    }

    #[test]
    fn missing_and_corrupt_blobs() {
        let d = tempfile::tempdir().unwrap();
        let oci = two_layer_image(&d.path().join("layout"));
        // The second layer is the zstd blob: find it by its magic.
        let blobs: Vec<_> = fs::read_dir(oci.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let layer2 = blobs
            .iter()
            .find(|p| fs::read(p).unwrap().starts_with(&[0x28, 0xb5, 0x2f, 0xfd]))
            .unwrap();
        let hex = layer2.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = fs::read(layer2).unwrap();

        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        fs::write(layer2, &corrupt).unwrap();
        let e = load_source(&oci.dir, &Options::default()).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::BadImage);
        assert!(
            e.to_string()
                .contains(&format!("layer 2 of 2 (sha256:{})", &hex[..12])),
            "{e}"
        );

        fs::remove_file(layer2).unwrap();
        let e = load_source(&oci.dir, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: layer 2 of 2: blob sha256:{hex} is missing",
                fs::canonicalize(&oci.dir).unwrap().display()
            )
        );
        assert_eq!(e.exit_kind(), ExitKind::BadImage);

        // Same in an archive.
        let path = d.path().join("image.tar");
        fs::write(&path, tar_of_dir(&oci.dir)).unwrap();
        let e = load_source(&path, &Options::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: layer 2 of 2: blob sha256:{hex} is missing",
                path.display()
            )
        );
    }

    #[test]
    fn bad_json_and_digests_are_named() {
        let d = tempfile::tempdir().unwrap();
        let oci = OciMaker::new(d.path());
        fs::write(oci.dir.join("index.json"), "{not json").unwrap();
        let e = load_source(&oci.dir, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("index.json: bad JSON: "), "{e}");
        oci.index(&[json!({"mediaType": "x", "digest": "sha256:../../etc/passwd", "size": 1})]);
        let e = load_source(&oci.dir, &Options::default()).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "index.json: manifests[0]: unsupported or malformed digest \"sha256:../../etc/passwd\""
            ),
            "{e}"
        );
        // A manifest whose bytes do not match its digest.
        let desc = oci.blob("application/vnd.oci.image.manifest.v1+json", b"{}");
        let hex = desc["digest"].as_str().unwrap()[7..].to_string();
        fs::write(oci.dir.join("blobs/sha256").join(&hex), b"{} ").unwrap();
        oci.index(&[
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": format!("sha256:{hex}"), "size": 3}),
        ]);
        let e = load_source(&oci.dir, &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("the content does not match its digest"),
            "{e}"
        );
    }

    /// Sizes in descriptors are claims: a huge one is refused before it
    /// sizes anything, one that differs from the blob is named.
    #[test]
    fn descriptor_sizes_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let oci = OciMaker::new(d.path());
        let manifest = oci.image(&json!({}), &[]);
        let digest = manifest["digest"].as_str().unwrap().to_string();
        let media = "application/vnd.oci.image.manifest.v1+json";
        for (size, problem) in [
            (
                json!(1u64 << 50),
                "manifest: its descriptor says 1125899906842624 bytes, more than the \
                 16777216 a metadata file may have"
                    .to_string(),
            ),
            (
                json!(u64::MAX),
                "manifest: its descriptor says 18446744073709551615 bytes".to_string(),
            ),
            (json!(3), "bytes, the manifest says 3".to_string()),
            (json!(-1), "manifests[0]: no size".to_string()),
            (json!(1.5), "manifests[0]: no size".to_string()),
        ] {
            oci.index(&[json!({"mediaType": media, "digest": digest, "size": size})]);
            let e = load_source(&oci.dir, &Options::default()).unwrap_err();
            assert!(e.to_string().contains(&problem), "{size}: {e}");
            assert_eq!(e.exit_kind(), ExitKind::BadImage);
        }
    }

    #[test]
    fn nested_index_and_platform_choice() {
        let d = tempfile::tempdir().unwrap();
        let oci = OciMaker::new(d.path());
        let layer = |name: &str| TarMaker::default().file(name, b"x", 0o644).finish();
        let config = json!({"config": {}});
        let other = if Arch::host() == Arch::Arm64 {
            "s390x"
        } else {
            "arm64"
        };
        let mut m_other = oci.image(&config, &[layer("other")]);
        m_other["platform"] = json!({"architecture": other, "os": "linux"});
        let mut m_host = oci.image(&config, &[layer("host")]);
        m_host["platform"] = json!({"architecture": Arch::host().name(), "os": "linux"});
        let mut attestation = oci.image(&config, &[layer("attestation")]);
        attestation["annotations"] = json!({"vnd.docker.reference.type": "attestation-manifest"});
        let nested = json!({"schemaVersion": 2, "manifests": [m_other, m_host, attestation]});
        let nested = oci.blob(
            "application/vnd.oci.image.index.v1+json",
            nested.to_string().as_bytes(),
        );
        oci.index(&[nested]);
        let l = load_source(&oci.dir, &Options::default()).unwrap();
        assert_eq!(paths(&l.tree), ["", "host"]);

        // No manifest for the host: the first, with a warning.
        let cx_opts = Options::default();
        let index = json!({"manifests": [m_other, m_other]});
        let mut spool = crate::build::spool::Spool::new(tempfile::tempfile().unwrap());
        let mut cx = Cx::new(&cx_opts, &mut spool);
        let chosen = choose(&mut cx, &index, "index.json", "riscv64").unwrap();
        assert_eq!(chosen.architecture.as_deref(), Some(other));
        assert_eq!(
            cx.warnings,
            [format!(
                "index.json: none of its 2 manifests is for riscv64; using the first (for {other})"
            )]
        );
    }

    #[test]
    fn config_type_errors() {
        let mut spool = crate::build::spool::Spool::new(tempfile::tempfile().unwrap());
        let opts = Options::default();
        let mut cx = Cx::new(&opts, &mut spool);
        let mut meta = ImageMeta::default();
        let e = apply_config(
            &mut cx,
            &json!({"config": {"Cmd": "sh"}}),
            "c.json",
            &mut meta,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.json: config.Cmd: expected an array of strings"
        );
        apply_config(
            &mut cx,
            &json!({"config": {"Env": ["A=1", "broken", "B=x=y"], "Entrypoint": null}}),
            "c.json",
            &mut meta,
        )
        .unwrap();
        assert_eq!(
            meta.env,
            [("A", "1"), ("B", "x=y")].map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(
            cx.warnings,
            ["c.json: config.Env entry \"broken\" is not NAME=value; left out"]
        );
    }
}
