//! One build: source → tree → SquashFS (→ SIF) → OUT.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::output::Pending;
use super::source::{self, SizeLimit, SourceError, SourceKind};
use super::spool::Spool;
use super::tree::{Tree, TreeError};
use super::{ImageMeta, meta_files};
use crate::exit::ExitKind;
use crate::image::sif::{
    self,
    write::{Object, ObjectData},
};
use crate::image::sif::{Arch, DataType};
use crate::squashfs::{self, Compression, SqfsError, WriteOptions};

/// What a build reads.
#[derive(Debug, Clone)]
pub enum BuildSource {
    /// A path on the host, whose kind is detected by content.
    Path(PathBuf),
    /// An image pulled from a registry: its manifest (checked against its
    /// digest) and the blob store holding its layers (the image cache).
    Pulled {
        blobs_root: PathBuf,
        manifest: Vec<u8>,
        /// The reference, for messages and the SIF definition object.
        reference: String,
    },
}

impl BuildSource {
    /// The source as messages name it: the path, or the reference.
    pub fn name(&self) -> PathBuf {
        match self {
            BuildSource::Path(path) => path.clone(),
            BuildSource::Pulled { reference, .. } => PathBuf::from(reference),
        }
    }
}

/// A build as requested on the command line.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub out: PathBuf,
    pub source: BuildSource,
    pub compression: Compression,
    pub block_size: u32,
    pub skip_special: bool,
    pub random_uuid: bool,
    /// The architecture a SIF records.
    pub arch: Arch,
    /// The most the image's files may add up to, uncompressed.
    pub max_size: SizeLimit,
    /// Report what the image cannot keep (owners, special files left out)
    /// as warnings; else at `-v` only: a pulled image's device nodes and
    /// owners are routine, and the container has its own `/dev`.
    pub warn_losses: bool,
    /// For a definition file or a recipe's `[[run]]` steps: how their
    /// commands run and where the work area goes.
    pub definition: Option<super::definition::DefinitionOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{}: {error}", crate::text::shown(input))]
    Tree { input: PathBuf, error: TreeError },
    #[error("{}: {what}: {error}", crate::text::shown(out))]
    Output {
        out: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{}: writing the SquashFS: {error}", crate::text::shown(out))]
    Write { out: PathBuf, error: SqfsError },
    #[error("--block-size {0}: must be a power of two from 4K to 1M")]
    BlockSize(String),
    #[error(transparent)]
    Deffile(#[from] super::deffile::DefError),
    /// Preparing a definition file's root (bootstrap, `%files`, `%post`).
    #[error(transparent)]
    Definition(Box<crate::error::Error>),
}

impl BuildError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            BuildError::Source(e) => e.exit_kind(),
            BuildError::Tree { .. } => ExitKind::BadImage,
            BuildError::Write {
                error: SqfsError::Library(_),
                ..
            } => ExitKind::HostUnavailable,
            BuildError::Output { .. } | BuildError::Write { .. } => ExitKind::OsError,
            BuildError::BlockSize(_) => ExitKind::Usage,
            BuildError::Deffile(e) => e.exit_kind(),
            BuildError::Definition(e) => e.exit_kind(),
        }
    }
}

/// Parse `--block-size` ("128K", "1M", "65536").
pub fn parse_block_size(text: &str) -> Result<u32, BuildError> {
    let bad = || BuildError::BlockSize(text.to_string());
    let bytes = crate::config::parse_size(text).map_err(|_| bad())?;
    if !(4096..=1 << 20).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(bad());
    }
    Ok(bytes as u32)
}

/// What a finished build reports.
#[derive(Debug)]
pub struct BuildSummary {
    pub out: PathBuf,
    pub format: &'static str,
    pub entries: u64,
    pub data_bytes: u64,
    pub image_bytes: u64,
    pub took: Duration,
}

impl std::fmt::Display for BuildSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} ({}): {} entries, {} bytes of file data in {} bytes, {:.1?}",
            self.out.display(),
            self.format,
            self.entries,
            self.data_bytes,
            self.image_bytes,
            self.took
        )
    }
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), when it is set to a
/// number of seconds; clamped to SquashFS's u32.
pub fn source_date_epoch(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> Option<u32> {
    crate::env::get(env, "SOURCE_DATE_EPOCH")
        .and_then(|v| v.to_str()?.trim().parse::<u64>().ok())
        .map(|t| t.min(u32::MAX as u64) as u32)
}

/// The build's own time, for the super block, a SIF's header and the
/// entries rfake makes itself: `SOURCE_DATE_EPOCH`, else 0 (so that it does
/// not make two builds differ).
pub fn build_time(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> u32 {
    source_date_epoch(env).unwrap_or(0)
}

fn out_dir(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Run the build.
pub fn run(
    req: &BuildRequest,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<BuildSummary, BuildError> {
    let t0 = Instant::now();
    let out_err = |what, error| BuildError::Output {
        out: req.out.clone(),
        what,
        error,
    };
    let dir = out_dir(&req.out);
    // Unnamed temporary files in OUT's directory: nothing to clean up, ever.
    let spool_file = tempfile::tempfile_in(&dir).map_err(|e| out_err("creating the spool", e))?;
    let mut spool = Spool::new(spool_file);
    let mut tree = Tree::default();
    let mut meta = ImageMeta::default();
    let opts = source::Options {
        skip_special: req.skip_special,
        max_size: req.max_size.clone(),
    };
    // A definition file's prepared root, or the work area of a recipe's
    // [[run]] steps: it must outlive the write, which reads its files.
    let mut prepared = None;
    let mut recipe_steps = None;
    let warnings = match &req.source {
        BuildSource::Path(path) => {
            let kind = source::detect(path)?;
            log::info!("source {}: {kind:?}", path.display());
            if kind == SourceKind::Definition {
                let def = super::deffile::parse(path)?;
                let options = req.definition.clone().unwrap_or_default();
                let base = options.tmpdir.clone().unwrap_or_else(|| dir.clone());
                let p = super::definition::prepare(&def, &options, &base, env)
                    .map_err(|e| BuildError::Definition(Box::new(e)))?;
                let warnings = source::load(
                    &p.root,
                    SourceKind::Directory,
                    &opts,
                    &mut spool,
                    &mut tree,
                    &mut meta,
                )?;
                meta = p.meta.clone();
                prepared = Some(p);
                warnings
            } else if kind == SourceKind::Recipe {
                let options = req.definition.clone().unwrap_or_default();
                let base = options.tmpdir.clone().unwrap_or_else(|| dir.clone());
                let steps =
                    recipe_steps.insert(super::definition::RecipeSteps::new(&options, base, env));
                source::load_with_steps(path, kind, &opts, &mut spool, &mut tree, &mut meta, steps)?
            } else {
                source::load(path, kind, &opts, &mut spool, &mut tree, &mut meta)?
            }
        }
        BuildSource::Pulled {
            blobs_root,
            manifest,
            reference,
        } => source::load_pulled(
            blobs_root, manifest, reference, &opts, &mut spool, &mut tree, &mut meta,
        )?,
    };
    for warning in warnings {
        if req.warn_losses {
            log::warn!("{warning}");
        } else {
            log::info!("{warning}");
        }
    }
    let tree_err = |error| BuildError::Tree {
        input: req.source.name(),
        error,
    };
    meta_files::add(&mut tree, &meta).map_err(tree_err)?;
    tree.check_hard_links().map_err(tree_err)?;
    // Entries keep their source's times; under SOURCE_DATE_EPOCH none is
    // later than it (`tar --clamp-mtime`), so a checkout's times do not make
    // two builds of the same commit differ.
    if let Some(limit) = source_date_epoch(env) {
        tree.clamp_mtimes(limit);
    }
    let spool = spool
        .finish()
        .map_err(|e| out_err("writing the spool", e))?;
    let (entries, data_bytes) = tree.totals();
    // The sources counted every file as they met it; this also covers what
    // rfake added (the metadata files).
    if data_bytes > req.max_size.bytes {
        return Err(SourceError::TooLarge {
            place: crate::text::shown(&req.source.name()),
            limit: req.max_size.clone(),
        }
        .into());
    }
    let mtime = build_time(env);
    let write_opts = WriteOptions {
        compression: req.compression,
        block_size: req.block_size,
        mtime,
        workers: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let bar = progress_bar(entries, data_bytes);
    let mut on_progress = |p: squashfs::Progress| {
        if let Some(bar) = &bar {
            bar.set_position(p.bytes_done);
            bar.set_message(format!("{}/{entries} files", p.files_done));
        }
    };
    let sif = req
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sif"));
    let write = |target: &Path, progress: &mut dyn FnMut(squashfs::Progress)| {
        squashfs::write_image(target, &tree, Some(&spool), &write_opts, progress).map_err(|error| {
            BuildError::Write {
                out: req.out.clone(),
                error,
            }
        })
    };
    let image_bytes = if sif {
        let squash = Pending::create(&dir.join(".rfake-squashfs"))
            .map_err(|e| out_err("creating a temporary file", e))?;
        write(&squash.path_for_writers(), &mut on_progress)?;
        let mut pending = Pending::create(&req.out).map_err(|e| out_err("creating it", e))?;
        let mut objects = vec![Object {
            data_type: DataType::Deffile,
            name: "definition".into(),
            data: ObjectData::Bytes(definition(&meta, &req.source).into_bytes()),
            partition: None,
        }];
        if !meta.labels.is_empty() {
            objects.push(Object {
                data_type: DataType::Labels,
                name: "labels.json".into(),
                data: ObjectData::Bytes(
                    serde_json::to_vec_pretty(&meta.labels).unwrap_or_default(),
                ),
                partition: None,
            });
        }
        // The squashfs file is never named: `squash` is dropped unlinked.
        let squash_file = squash
            .file
            .try_clone()
            .map_err(|e| out_err("reopening the SquashFS", e))?;
        objects.push(Object::root_squashfs(squash_file));
        let uuid = if req.random_uuid {
            random_uuid()
        } else {
            [0; 16]
        };
        let len = sif::write::write(&mut pending.file, req.arch, uuid, mtime as i64, objects)
            .map_err(|e| out_err("writing the SIF", e))?;
        drop(squash);
        pending.commit().map_err(|e| out_err("naming it", e))?;
        len
    } else {
        let pending = Pending::create(&req.out).map_err(|e| out_err("creating it", e))?;
        write(&pending.path_for_writers(), &mut on_progress)?;
        let len = pending.file.metadata().map(|m| m.len()).unwrap_or(0);
        pending.commit().map_err(|e| out_err("naming it", e))?;
        len
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // The work directory goes now that the image is written.
    drop(prepared);
    drop(recipe_steps);
    Ok(BuildSummary {
        out: req.out.clone(),
        format: if sif { "SIF" } else { "SquashFS" },
        entries,
        data_bytes,
        image_bytes,
        took: t0.elapsed(),
    })
}

/// The SIF definition-file object: the recipe; for a pulled image the
/// header Apptainer writes for one (`bootstrap: docker`, `from: REF`);
/// else a note of the source.
fn definition(meta: &ImageMeta, source: &BuildSource) -> String {
    meta.definition.clone().unwrap_or_else(|| match source {
        BuildSource::Pulled { reference, .. } => {
            format!("bootstrap: docker\nfrom: {reference}\n")
        }
        BuildSource::Path(path) => format!(
            "# built by rfake build from {}\n",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
    })
}

fn random_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut uuid);
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
    uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid
}

/// A progress bar on a terminal (stderr), none otherwise.
fn progress_bar(entries: u64, bytes: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} {msg} [{bar:30}] {binary_bytes_per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("0/{entries} files"));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::super::source::testutil::set_mtime;
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(parse_block_size("128K").unwrap(), 131072);
        assert_eq!(parse_block_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_block_size("4096").unwrap(), 4096);
        assert!(parse_block_size("3000").is_err());
        assert!(parse_block_size("2M").is_err());
        assert!(parse_block_size("100K").is_err());
    }

    /// Build `source` into `out` (SquashFS) with `SOURCE_DATE_EPOCH` set to
    /// `epoch` if given; the image's bytes and a reader on it.
    fn build(source: &Path, out: &Path, epoch: Option<&str>) -> (Vec<u8>, squashfs::Reader) {
        let req = BuildRequest {
            out: out.to_path_buf(),
            source: BuildSource::Path(source.to_path_buf()),
            compression: Compression::Gzip,
            block_size: squashfs::DEFAULT_BLOCK_SIZE,
            skip_special: false,
            random_uuid: false,
            arch: Arch::host(),
            max_size: SizeLimit::default(),
            warn_losses: true,
            definition: None,
        };
        let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = epoch
            .map(|t| ("SOURCE_DATE_EPOCH".into(), t.into()))
            .into_iter()
            .collect();
        run(&req, &env).unwrap();
        let reader = squashfs::Reader::open(std::fs::File::open(out).unwrap(), 0).unwrap();
        (std::fs::read(out).unwrap(), reader)
    }

    /// The modification times at `paths` in the image, and the super block's.
    fn times(r: &squashfs::Reader, paths: &[&str]) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = paths
            .iter()
            .map(|p| (p.to_string(), r.stat(p).unwrap().mtime))
            .collect();
        out.push(("super block".into(), r.info().mtime));
        out
    }

    /// Entries keep their source's modification times (Python's `.pyc`
    /// files record their `.py`'s and are stale otherwise); what rfake
    /// writes itself has the build's time; `SOURCE_DATE_EPOCH` caps the
    /// first and is the second; the same source gives the same bytes.
    #[test]
    fn entries_keep_their_source_times() {
        let d = tempfile::tempdir().unwrap();
        let files = d.path().join("files");
        std::fs::create_dir_all(files.join("sub")).unwrap();
        std::fs::write(files.join("old.py"), "print('old')\n").unwrap();
        std::fs::write(files.join("sub/new.py"), "print('new')\n").unwrap();
        std::os::unix::fs::symlink("old.py", files.join("link")).unwrap();
        std::fs::hard_link(files.join("old.py"), files.join("again.py")).unwrap();
        set_mtime(&files.join("old.py"), 1_000_000_000);
        set_mtime(&files.join("sub/new.py"), 1_800_000_000);
        set_mtime(&files.join("link"), 1_200_000_000);
        set_mtime(&files.join("sub"), 1_100_000_000);
        set_mtime(&files, 1_300_000_000);

        // A directory source: every entry, the root too, has its own time.
        let (_, r) = build(&files, &d.path().join("dir.sqfs"), None);
        assert_eq!(
            times(
                &r,
                &["/", "/old.py", "/again.py", "/link", "/sub", "/sub/new.py"]
            ),
            [
                ("/", 1_300_000_000),
                ("/old.py", 1_000_000_000),
                ("/again.py", 1_000_000_000),
                ("/link", 1_200_000_000),
                ("/sub", 1_100_000_000),
                ("/sub/new.py", 1_800_000_000),
                ("super block", 0),
            ]
            .map(|(p, t)| (p.to_string(), t))
        );

        // A recipe: what it copies keeps its times; the root, the parents it
        // implies and the files rfake writes have the build's.
        let recipe = d.path().join("app.toml");
        std::fs::write(
            &recipe,
            r##"[image]
runscript = "#!/bin/sh\nexec python3 /opt/app/old.py\n"
[files]
"/opt/app" = "files"
[inline]
"/etc/note" = "x"
[env]
A = "1"
"##,
        )
        .unwrap();
        let paths = [
            "/",
            "/opt",
            "/opt/app",
            "/opt/app/old.py",
            "/opt/app/sub/new.py",
            "/etc/note",
            "/.rfake",
            "/.rfake/environment",
            "/.singularity.d/runscript",
        ];
        let expect = |opt, app, new, generated| {
            [
                ("/", generated),
                ("/opt", generated),
                ("/opt/app", app),
                ("/opt/app/old.py", 1_000_000_000),
                ("/opt/app/sub/new.py", new),
                ("/etc/note", generated),
                ("/.rfake", generated),
                ("/.rfake/environment", generated),
                ("/.singularity.d/runscript", generated),
                ("super block", opt),
            ]
            .map(|(p, t)| (p.to_string(), t))
        };
        let (a, r) = build(&recipe, &d.path().join("a.sqfs"), None);
        assert_eq!(
            times(&r, &paths),
            expect(0, 1_300_000_000, 1_800_000_000, 0)
        );
        let (b, _) = build(&recipe, &d.path().join("b.sqfs"), None);
        assert!(a == b, "two builds of the same source differ");

        // SOURCE_DATE_EPOCH: later times clamped, earlier ones kept.
        let (c, r) = build(&recipe, &d.path().join("c.sqfs"), Some("1500000000"));
        assert_eq!(
            times(&r, &paths),
            expect(1_500_000_000, 1_300_000_000, 1_500_000_000, 1_500_000_000)
        );
        let (c2, _) = build(&recipe, &d.path().join("c2.sqfs"), Some("1500000000"));
        assert!(c == c2, "two builds with SOURCE_DATE_EPOCH differ");
    }

    #[test]
    fn build_time_from_env() {
        assert_eq!(build_time(&[]), 0);
        assert_eq!(
            build_time(&[("SOURCE_DATE_EPOCH".into(), "1700000000".into())]),
            1_700_000_000
        );
        assert_eq!(
            build_time(&[("SOURCE_DATE_EPOCH".into(), "junk".into())]),
            0
        );
        assert_eq!(
            source_date_epoch(&[("SOURCE_DATE_EPOCH".into(), "junk".into())]),
            None
        );
        assert_eq!(
            source_date_epoch(&[("SOURCE_DATE_EPOCH".into(), "99999999999".into())]),
            Some(u32::MAX)
        );
        assert_eq!(source_date_epoch(&[]), None);
    }
}
