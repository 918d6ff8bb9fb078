//! Images named by reference: `docker://` and `oras://` images from
//! registries, `oci-archive:` and `docker-archive:` files, turned into a
//! local single-file image that rfake runs, inspects or builds from.
//!
//! Parse → plan → execute, as everywhere: [`PullOptions`] is what the
//! command line and the configuration say; [`Puller`] carries out one pull:
//!
//! 1. resolve the reference to one image manifest for the architecture
//!    (the registry's index, or the cache's record under `--offline`);
//! 2. fetch the configuration and the layers into the cache, each blob once
//!    however many processes ask ([`crate::cache::Cache::blob`]: a lock,
//!    a resumable partial file, a digest check, a rename);
//! 3. convert them, once, into a SquashFS in the cache, named by the
//!    manifest's digest (an ORAS SIF needs no conversion);
//! 4. record the reference, and evict least recently used entries.
//!
//! A second launch of the same reference finds the converted image and runs
//! it as it would a local file. A tag is asked of the registry again only
//! when its record is older than [`TAG_FRESH`]: the ranks of a job and the
//! tasks of an array start together and should neither wait on the
//! registry nor count against its rate limits; a digest is never asked
//! again.

mod progress;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::build::run::{BuildRequest, BuildSource};
use crate::build::source::SizeLimit;
use crate::cache::Cache;
use crate::config::Config;
use crate::digest::Digest;
use crate::error::Error;
use crate::exit::ExitKind;
use crate::image::sif::Arch;
use crate::registry::{self, Client, ClientOptions, Content, ImageRef, Reference};
use crate::text::shown;
use progress::Progress;

/// How long a tag's resolution is trusted without asking the registry.
pub const TAG_FRESH: Duration = Duration::from_secs(60);

/// What the command line and the configuration say about pulls.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The architecture to take from a multi-architecture index (Go name).
    pub arch: String,
    /// Never contact a registry (`--offline`, `offline`).
    pub offline: bool,
    /// Extra certificate authorities (`--ca-file`, `registry_ca_file`).
    pub ca_file: Option<PathBuf>,
    /// No progress on stderr (`--quiet`).
    pub quiet: bool,
    /// The cache's directory, whether it is read-only, its size limit.
    pub cache: crate::cache::Settings,
    /// Credential files, in the order they are consulted.
    pub auth_files: Vec<PathBuf>,
}

impl PullOptions {
    /// The options from the flags, the configuration and the environment.
    pub fn new(
        args: &crate::cli::PullArgs,
        config: &Config,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
    ) -> Result<PullOptions, Error> {
        let arch = match &args.arch {
            None => Arch::host().name().to_string(),
            Some(name) => check_arch(name)?.to_string(),
        };
        let cache = crate::cache::Settings::new(config, env)?;
        Ok(PullOptions {
            arch,
            offline: args.offline || config.offline.value,
            ca_file: args
                .ca_file
                .clone()
                .or_else(|| config.registry_ca_file.value.clone()),
            quiet: args.quiet,
            cache,
            auth_files: registry::auth::default_files(env),
        })
    }
}

/// Seconds since `pulled` (seconds since the epoch).
fn age(pulled: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(pulled)
}

/// `--arch NAME[/VARIANT]`: a Go architecture name rfake knows (`amd64`,
/// `arm64`, `arm/v7`); the variant only chooses among an index's images.
pub fn check_arch(arch: &str) -> Result<Arch, Error> {
    let name = arch.split('/').next().unwrap_or_default();
    Arch::ALL
        .into_iter()
        .filter(|a| *a != Arch::Unknown)
        .find(|a| a.name() == name)
        .ok_or_else(|| {
            let known: Vec<_> = Arch::ALL[1..].iter().map(|a| a.name()).collect();
            Error::Usage(format!(
                "--arch {arch}: unknown architecture (one of: {})",
                known.join(", ")
            ))
        })
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The local image: in the cache, or the path given.
    pub path: PathBuf,
}

/// The local image for `image` as `exec`, `run`, `shell`, `inspect`,
/// `test` and `run-help` take it: a path stays a path; a reference is
/// pulled into the cache with the options `opts` makes, only then (they
/// read the configuration, which a local image does not need).
pub fn local_image(
    image: &Path,
    opts: impl FnOnce() -> Result<PullOptions, Error>,
) -> Result<PathBuf, Error> {
    match ImageRef::parse(image.as_os_str())? {
        ImageRef::Path(path) => Ok(path),
        other => Ok(Puller::new(&opts()?)?.pull(&other)?.path),
    }
}

/// What `rfake build OUT SOURCE` reads for SOURCE: a path, or a registry
/// image's manifest and the cache holding its blobs (never converted to a
/// SquashFS in the cache first: the build is the conversion).
pub fn build_source(source: &Path, opts: &PullOptions) -> Result<BuildSource, Error> {
    match ImageRef::parse(source.as_os_str())? {
        ImageRef::Path(path) => Ok(BuildSource::Path(path)),
        ImageRef::OciArchive(path) | ImageRef::DockerArchive(path) => Ok(BuildSource::Path(path)),
        ImageRef::Docker(r) => {
            let mut puller = Puller::new(opts)?;
            let image = puller.resolve(&r)?;
            let Content::Oci { .. } = &image.content else {
                return Err(not_an_oci_image(&r));
            };
            puller.fetch_blobs(&r, &image)?;
            puller.record(&r, &image)?;
            Ok(BuildSource::Pulled {
                blobs_root: puller.cache.root().to_path_buf(),
                manifest: image.manifest_bytes,
                reference: format!("docker://{r}"),
            })
        }
        ImageRef::Oras(r) => Err(Error::Usage(format!(
            "oras://{r}: a SIF file, not an image to build from; `rfake pull OUT.sif oras://{r}` fetches it"
        ))),
    }
}

/// How the cache names `r`'s record; `tag` is `r.reference()`.
fn ref_key<'a>(r: &'a Reference, tag: &'a str) -> crate::cache::RefKey<'a> {
    crate::cache::RefKey {
        registry: &r.registry,
        repository: &r.repository,
        reference: tag,
    }
}

fn not_an_oci_image(r: &Reference) -> Error {
    Error::Usage(format!(
        "docker://{r}: a SIF artifact, not a container image: use oras://{r}"
    ))
}

/// One image resolved to its manifest.
struct Resolved {
    manifest: Digest,
    manifest_bytes: Vec<u8>,
    index: Option<Digest>,
    content: Content,
}

/// One pull: the cache, the registry client (made when first needed) and
/// the progress display.
pub struct Puller<'o> {
    opts: &'o PullOptions,
    cache: Cache,
    client: Option<Client>,
    progress: Progress,
}

impl<'o> Puller<'o> {
    pub fn new(opts: &'o PullOptions) -> Result<Puller<'o>, Error> {
        let cache = opts.cache.open()?;
        Ok(Puller {
            opts,
            cache,
            client: None,
            progress: Progress::new(opts.quiet),
        })
    }

    fn client(&mut self) -> Result<&mut Client, Error> {
        if self.client.is_none() {
            self.client = Some(Client::new(ClientOptions {
                ca_file: self.opts.ca_file.clone(),
                auth_files: self.opts.auth_files.clone(),
                user_agent: format!("rfake/{}", env!("CARGO_PKG_VERSION")),
            })?);
        }
        Ok(self.client.as_mut().expect("made above"))
    }

    /// Pull `image` into the cache; the local image to use.
    pub fn pull(&mut self, image: &ImageRef) -> Result<Pulled, Error> {
        match image {
            ImageRef::Path(path) => Ok(Pulled { path: path.clone() }),
            ImageRef::OciArchive(path) | ImageRef::DockerArchive(path) => self.archive(path),
            ImageRef::Docker(r) | ImageRef::Oras(r) => {
                let oras = matches!(image, ImageRef::Oras(_));
                if let Some(path) = self.converted(r, oras) {
                    return Ok(Pulled { path });
                }
                let resolved = self.resolve(r)?;
                let path = self.convert(r, &resolved, oras)?;
                self.record(r, &resolved)?;
                self.evict();
                Ok(Pulled { path })
            }
        }
    }

    /// The converted image of `r`, when its record may be trusted without
    /// asking the registry (as [`Puller::resolve`] decides) and the image is
    /// still in the cache: nothing else is read, so a launch from the cache
    /// needs neither the manifest nor the blobs eviction may have removed.
    fn converted(&self, r: &Reference, oras: bool) -> Option<PathBuf> {
        let tag = r.reference();
        let record = self.cache.lookup_ref(&ref_key(r, &tag), &self.opts.arch)?;
        if !self.trusted(r, record.pulled) {
            return None;
        }
        let path = self
            .cache
            .lookup_image(&record.manifest, if oras { "sif" } else { "sqfs" })?;
        log::info!("{r}: {} from the cache", record.manifest);
        Some(path)
    }

    /// Whether a record of `r` made at `pulled` (seconds since the epoch)
    /// is used without asking the registry: a digest never changes, a tag
    /// resolved less than [`TAG_FRESH`] ago is trusted, and so is every
    /// record offline or in a site-curated cache (what the site decided to
    /// run is not second-guessed).
    fn trusted(&self, r: &Reference, pulled: u64) -> bool {
        r.digest.is_some()
            || self.opts.offline
            || self.opts.cache.read_only
            || age(pulled) < TAG_FRESH.as_secs()
    }

    /// Record what `r` resolved to, for `--offline` and `rfake cache list`.
    /// A read-only (site) cache is never written.
    fn record(&self, r: &Reference, image: &Resolved) -> Result<(), Error> {
        if self.opts.cache.read_only {
            return Ok(());
        }
        let tag = r.reference();
        self.cache.record_ref(
            &ref_key(r, &tag),
            &self.opts.arch,
            &image.manifest,
            image.index.as_ref(),
        )?;
        Ok(())
    }

    /// The manifest for `r`: from the cache's record when offline, when `r`
    /// is a digest already converted, or when the tag was resolved less than
    /// [`TAG_FRESH`] ago; else from the registry.
    fn resolve(&mut self, r: &Reference) -> Result<Resolved, Error> {
        let arch = self.opts.arch.clone();
        let tag = r.reference();
        let record = self.cache.lookup_ref(&ref_key(r, &tag), &arch);
        if let Some(record) = &record {
            if self.trusted(r, record.pulled) {
                if let Some(resolved) = self.cached(&record.manifest, record.index.clone())? {
                    log::info!("{r}: {} from the cache", record.manifest);
                    return Ok(resolved);
                }
            }
        }
        if self.opts.cache.read_only {
            return Err(Error::Failed {
                kind: ExitKind::Refused,
                message: format!(
                    "{r}: not in the site's read-only cache {} (cache_read_only) for {arch}; \
                     ask for it to be added, or set RFAKE_CACHEDIR to a cache of your own",
                    shown(self.cache.root())
                ),
            });
        }
        if self.opts.offline {
            return Err(Error::Failed {
                kind: ExitKind::NoInput,
                message: format!(
                    "{r}: not in the cache {} for {arch}, and --offline (or offline = true) \
                     forbids asking the registry",
                    shown(self.cache.root())
                ),
            });
        }
        let resolved = match registry::resolve(self.client()?, r, &arch) {
            Ok(resolved) => resolved,
            Err(e) => {
                // A registry that is down does not stop a job whose image
                // is cached: the tag's last resolution is used.
                let down = matches!(
                    e.exit_kind(),
                    ExitKind::RegistryUnreachable | ExitKind::RegistryProtocol
                );
                if let (true, Some(record)) = (down, &record) {
                    if let Some(resolved) = self.cached(&record.manifest, record.index.clone())? {
                        log::warn!(
                            "{e}; running the cached {} of {r} (resolved {} s ago)",
                            record.manifest,
                            age(record.pulled)
                        );
                        return Ok(resolved);
                    }
                }
                return Err(e.into());
            }
        };
        let manifest = resolved.manifest.digest.clone();
        // The manifest is kept as a blob: an offline launch, or a conversion
        // that was interrupted, needs nothing from the registry.
        if !self.opts.cache.read_only {
            self.cache.put_blob(&manifest, &resolved.manifest.bytes)?;
        }
        Ok(Resolved {
            manifest,
            manifest_bytes: resolved.manifest.bytes,
            index: resolved.index_digest,
            content: resolved.content,
        })
    }

    /// The image whose manifest is `manifest`, from the blob the cache
    /// keeps of it; `None` if the cache lacks it.
    fn cached(
        &mut self,
        manifest: &Digest,
        index: Option<Digest>,
    ) -> Result<Option<Resolved>, Error> {
        let Some(path) = self.cache.has_blob(manifest) else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|e| Error::Failed {
            kind: ExitKind::OsError,
            message: format!(
                "{}: cannot read: {}",
                shown(&path),
                crate::text::io_text(&e)
            ),
        })?;
        let content = registry::manifest::manifest_content(&shown(&path), &bytes)?;
        Ok(Some(Resolved {
            manifest: manifest.clone(),
            manifest_bytes: bytes,
            index,
            content,
        }))
    }

    /// Fetch what `image` needs into the cache: its configuration and
    /// layers, or its SIF.
    fn fetch_blobs(&mut self, r: &Reference, image: &Resolved) -> Result<Vec<PathBuf>, Error> {
        let blobs: Vec<(String, registry::Descriptor)> = match &image.content {
            Content::Oci { config, layers } => {
                let mut all = vec![("config".to_string(), config.clone())];
                let n = layers.len();
                all.extend(
                    layers
                        .iter()
                        .enumerate()
                        .map(|(i, l)| (format!("layer {}/{n}", i + 1), l.clone())),
                );
                all
            }
            Content::Sif { blob } => vec![("SIF".to_string(), blob.clone())],
        };
        let mut paths = Vec::with_capacity(blobs.len());
        for (what, desc) in blobs {
            if let Some(path) = self.cache.has_blob(&desc.digest) {
                paths.push(path);
                continue;
            }
            if self.opts.offline {
                return Err(Error::Failed {
                    kind: ExitKind::NoInput,
                    message: format!(
                        "{r}: {what} ({}) is not in the cache {}, and --offline forbids \
                         fetching it",
                        desc.digest,
                        shown(self.cache.root())
                    ),
                });
            }
            let mut bar = self.progress.blob(&what, &desc.digest, desc.size);
            // The client is made before the cache takes its lock.
            self.client()?;
            let client = self.client.as_mut().expect("made above");
            let path = self
                .cache
                .blob(&desc.digest, desc.size, &mut |offset, sink| {
                    bar.resumed(offset);
                    client.blob(r, &desc.digest, desc.size, offset, sink, &mut |n| bar.at(n))
                })?;
            bar.done();
            paths.push(path);
        }
        if let (Content::Oci { .. }, None) = (&image.content, &image.index) {
            self.check_arch(r, &paths[0])?;
        }
        Ok(paths)
    }

    /// A reference that names one image, not an index, has its
    /// architecture only in its configuration (`config`): an image for
    /// another architecture than `--arch` (the host's) is refused, as a SIF
    /// built for one is.
    fn check_arch(&self, r: &Reference, config: &Path) -> Result<(), Error> {
        let found = std::fs::read(config)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|v| v.get("architecture")?.as_str().map(str::to_string));
        let wanted = self.opts.arch.split('/').next().unwrap_or_default();
        let Some(found) = found.filter(|f| !f.is_empty()) else {
            return Ok(());
        };
        let known = |name: &str| Arch::ALL.into_iter().find(|a| a.name() == name);
        let runs = match (known(&found), known(wanted)) {
            (Some(image), Some(host)) => image.runs_on(host),
            _ => found == wanted,
        };
        if runs {
            return Ok(());
        }
        Err(Error::Failed {
            kind: ExitKind::BadImage,
            message: format!(
                "{r}: an image for {found}, not {wanted}, and no index to choose another from \
                 (--arch {found} takes it anyway)"
            ),
        })
    }

    /// The converted image for `image`, in the cache: made once, by
    /// whichever process gets the lock first.
    fn convert(&mut self, r: &Reference, image: &Resolved, oras: bool) -> Result<PathBuf, Error> {
        let ext = match (&image.content, oras) {
            (Content::Sif { .. }, true) => "sif",
            (Content::Oci { .. }, false) => "sqfs",
            (Content::Sif { .. }, false) => return Err(not_an_oci_image(r)),
            (Content::Oci { .. }, true) => {
                return Err(Error::Usage(format!(
                    "oras://{r}: a container image, not a SIF artifact: use docker://{r}"
                )));
            }
        };
        if let Some(path) = self.cache.lookup_image(&image.manifest, ext) {
            return Ok(path);
        }
        let blobs = self.fetch_blobs(r, image)?;
        let root = self.cache.root().to_path_buf();
        let reference = format!("{}://{r}", if oras { "oras" } else { "docker" });
        let progress = &self.progress;
        self.cache
            .image(&image.manifest, ext, &mut |temp: &Path| {
                if oras {
                    // The SIF is the blob itself: a second name for it.
                    return link_or_copy(&blobs[0], temp);
                }
                let started = std::time::Instant::now();
                let request = conversion(
                    temp.to_path_buf(),
                    BuildSource::Pulled {
                        blobs_root: root.clone(),
                        manifest: image.manifest_bytes.clone(),
                        reference: reference.clone(),
                    },
                    Arch::host(),
                );
                crate::build::run::run(&request, &[])?;
                progress.step(&format!(
                    "{reference}: converted to SquashFS in {:.1?}",
                    started.elapsed()
                ));
                Ok::<(), Error>(())
            })
            .map_err(Error::from)
    }

    /// An OCI or docker archive, converted into the cache under a key made
    /// of its identity (device, inode, size, modification time): a changed
    /// archive is converted again.
    fn archive(&mut self, path: &Path) -> Result<Pulled, Error> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| Error::Failed {
            kind: ExitKind::NoInput,
            message: format!("{}: {}", shown(path), crate::text::io_text(&e)),
        })?;
        let identity = format!(
            "{}:{}:{}:{}:{}",
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display(),
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        );
        let key = Digest::sha256_of(identity.as_bytes());
        let source = path.to_path_buf();
        let path = self.cache.image(&key, "sqfs", &mut |temp: &Path| {
            let request = conversion(
                temp.to_path_buf(),
                BuildSource::Path(source.clone()),
                Arch::host(),
            );
            crate::build::run::run(&request, &[])?;
            Ok::<(), Error>(())
        })?;
        self.evict();
        Ok(Pulled { path })
    }

    /// Evict down to the size limit; a failure is a warning, not the
    /// launch's failure.
    fn evict(&self) {
        if self.opts.cache.read_only {
            return;
        }
        if let Err(e) = self.cache.evict() {
            log::warn!("cleaning the image cache: {e}");
        }
    }
}

/// `to` as a hard link to `from` (same file system: the cache's), else a
/// copy.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), Error> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| Error::Failed {
            kind: ExitKind::OsError,
            message: format!(
                "copying {} to {}: {}",
                shown(from),
                shown(to),
                crate::text::io_text(&e)
            ),
        })
}

/// `rfake pull [OUT] REF`: the image as a file of its own. OUT ending in
/// `.sif` is a SIF (with the image's Env, Entrypoint, Cmd, WorkingDir and
/// labels, as `rfake build` keeps them), else a SquashFS; the default OUT
/// is `NAME_TAG.sif` in the current directory, as Apptainer names it.
pub fn pull_to_file(
    out: Option<&Path>,
    reference: &OsStr,
    force: bool,
    opts: &PullOptions,
) -> Result<PathBuf, Error> {
    let image = ImageRef::parse(reference)?;
    if let ImageRef::Path(_) = image {
        return Err(Error::Usage(format!(
            "{}: not a reference (docker://, oras://, oci-archive:, docker-archive:); \
             `rfake build OUT SOURCE` converts files",
            shown(Path::new(reference))
        )));
    }
    let out = match out {
        Some(out) => out.to_path_buf(),
        None => default_out(&image)?,
    };
    if !force && std::fs::symlink_metadata(&out).is_ok() {
        return Err(Error::Failed {
            kind: ExitKind::CannotCreate,
            message: format!("{}: already exists; --force overwrites it", shown(&out)),
        });
    }
    let sif = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sif"));
    match &image {
        ImageRef::Oras(_) => {
            let pulled = Puller::new(opts)?.pull(&image)?;
            copy_out(&pulled.path, &out)
        }
        ImageRef::Path(_) => unreachable!("refused above"),
        _ if !sif => {
            // The cached SquashFS is the image: copy it.
            let pulled = Puller::new(opts)?.pull(&image)?;
            copy_out(&pulled.path, &out)
        }
        _ => {
            let source = build_source(Path::new(reference), opts)?;
            let request = conversion(out.clone(), source, check_arch(&opts.arch)?);
            crate::build::run::run(&request, &[])?;
            Ok(out)
        }
    }
}

/// How a pull converts what it fetched: a build into `out` with the
/// build's defaults (gzip, 128 KiB blocks), special files left out and what
/// the image cannot keep reported at `-v` only, no size limit (the
/// registry's image is what it is), `arch` recorded in a SIF.
fn conversion(out: PathBuf, source: BuildSource, arch: Arch) -> BuildRequest {
    BuildRequest {
        out,
        source,
        compression: crate::squashfs::Compression::Gzip,
        block_size: crate::squashfs::DEFAULT_BLOCK_SIZE,
        skip_special: true,
        random_uuid: false,
        arch,
        max_size: SizeLimit {
            bytes: u64::MAX,
            origin: "pull".into(),
        },
        warn_losses: false,
        definition: None,
    }
}

/// The cached image at `from` as `out`: a second name for it when `out`
/// is on the cache's file system (no copy, no second copy's disk space:
/// cache entries are never written again, and eviction only removes a
/// name), else a copy through a temporary file beside `out`; either is
/// renamed over `out` at the end.
fn copy_out(from: &Path, out: &Path) -> Result<PathBuf, Error> {
    let failed = |what: &str, e: std::io::Error| Error::Failed {
        kind: ExitKind::OsError,
        message: format!("{}: {what}: {}", shown(out), crate::text::io_text(&e)),
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let link = dir.join(format!(
        ".{}.rfake-link-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    if std::fs::hard_link(from, &link).is_ok() {
        return match std::fs::rename(&link, out) {
            Ok(()) => Ok(out.to_path_buf()),
            Err(e) => {
                let _ = std::fs::remove_file(&link);
                Err(failed("naming it", e))
            }
        };
    }
    let mut pending =
        crate::build::output::Pending::create(out).map_err(|e| failed("creating it", e))?;
    let mut src = std::fs::File::open(from).map_err(|e| failed("reading the cached image", e))?;
    std::io::copy(&mut src, &mut pending.file).map_err(|e| failed("writing it", e))?;
    pending.commit().map_err(|e| failed("naming it", e))?;
    Ok(out.to_path_buf())
}

/// `NAME_TAG.sif` (`debian_12.sif`), as `apptainer pull` names its output.
fn default_out(image: &ImageRef) -> Result<PathBuf, Error> {
    match image {
        ImageRef::Docker(r) | ImageRef::Oras(r) => {
            let name = r.repository.rsplit('/').next().unwrap_or("image");
            let tag = match (&r.tag, &r.digest) {
                (_, Some(d)) => d.hex[..12].to_string(),
                (Some(t), None) => t.clone(),
                (None, None) => "latest".into(),
            };
            Ok(PathBuf::from(format!("{name}_{tag}.sif")))
        }
        ImageRef::OciArchive(p) | ImageRef::DockerArchive(p) => {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            Ok(PathBuf::from(format!("{stem}.sif")))
        }
        ImageRef::Path(p) => Err(Error::Usage(format!(
            "{}: not a reference (docker://, oras://, oci-archive:, docker-archive:)",
            shown(p)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn image(arg: &str) -> ImageRef {
        ImageRef::parse(std::ffi::OsStr::new(arg)).unwrap()
    }

    /// `apptainer pull` names its output NAME_TAG.sif; so does rfake.
    #[test]
    fn default_output_names() {
        for (arg, want) in [
            ("docker://debian:12", "debian_12.sif"),
            ("docker://ghcr.io/org/tools/app", "app_latest.sif"),
            ("oras://127.0.0.1:5000/sif:1", "sif_1.sif"),
            (
                &format!("docker://x.io/a@sha256:{}", "ab".repeat(32)),
                "a_abababababab.sif",
            ),
            ("oci-archive:/data/app-oci.tar", "app-oci.sif"),
        ] {
            assert_eq!(default_out(&image(arg)).unwrap(), Path::new(want), "{arg}");
        }
        assert_eq!(
            default_out(&image("demo.sqfs")).unwrap_err().exit_kind(),
            ExitKind::Usage
        );
    }

    fn options(arch: &str) -> PullOptions {
        let env = vec![("RFAKE_CACHEDIR".into(), "/nonexistent/cache".into())];
        let args = crate::cli::PullArgs {
            arch: Some(arch.into()),
            offline: false,
            ca_file: None,
            quiet: true,
        };
        PullOptions::new(&args, &Config::default(), &env).unwrap()
    }

    /// A single image's configuration says its architecture; one for
    /// another is refused unless --arch asks for it (386 runs on amd64).
    #[test]
    fn a_single_image_of_another_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let r = Reference::parse("127.0.0.1:5000/foreign:1").unwrap();
        let check = |opts: &PullOptions, arch: &str| {
            std::fs::write(&config, format!(r#"{{"architecture":"{arch}"}}"#)).unwrap();
            let puller = Puller {
                opts,
                cache: Cache::open(dir.path().join("cache"), true, 0).unwrap(),
                client: None,
                progress: Progress::new(true),
            };
            puller.check_arch(&r, &config)
        };
        let amd64 = options("amd64");
        let err = check(&amd64, "arm64").unwrap_err();
        assert_eq!(err.exit_kind(), ExitKind::BadImage);
        assert_eq!(
            err.to_string(),
            "127.0.0.1:5000/foreign:1: an image for arm64, not amd64, and no index to choose \
             another from (--arch arm64 takes it anyway)"
        );
        check(&amd64, "amd64").unwrap();
        check(&amd64, "386").unwrap();
        check(&options("arm64"), "arm64").unwrap();
        check(&options("arm/v7"), "arm").unwrap();
        // No architecture recorded: nothing to check.
        std::fs::write(&config, "{}").unwrap();
        let puller = Puller {
            opts: &amd64,
            cache: Cache::open(dir.path().join("cache"), true, 0).unwrap(),
            client: None,
            progress: Progress::new(true),
        };
        puller.check_arch(&r, &config).unwrap();
    }

    #[test]
    fn unknown_architectures_are_usage_errors() {
        let err = check_arch("x86_64").unwrap_err();
        assert_eq!(err.exit_kind(), ExitKind::Usage);
        assert!(err.to_string().contains("amd64, arm"), "{err}");
    }
}
