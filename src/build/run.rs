//! One build: source → tree → SquashFS (→ SIF) → OUT.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::output::Pending;
use super::source::{self, SourceError};
use super::spool::Spool;
use super::tree::{Tree, TreeError};
use super::{ImageMeta, meta_files};
use crate::exit::ExitKind;
use crate::image::sif::{Arch, DataType};
use crate::image::sif_write::{self, Object, ObjectData};
use crate::sqfs::{self, Compression, SqfsError, WriteOptions};

/// A build as requested on the command line.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub out: PathBuf,
    pub source: PathBuf,
    pub compression: Compression,
    pub block_size: u32,
    pub skip_special: bool,
    pub random_uuid: bool,
    /// The architecture a SIF records.
    pub arch: Arch,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{}: {error}", input.display())]
    Tree { input: PathBuf, error: TreeError },
    #[error("{}: {what}: {error}", out.display())]
    Output {
        out: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{}: writing the SquashFS: {error}", out.display())]
    Write { out: PathBuf, error: SqfsError },
    #[error("--block-size {0}: must be a power of two from 4K to 1M")]
    BlockSize(String),
}

impl BuildError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            BuildError::Source(e) => e.exit_kind(),
            BuildError::Tree { .. } => ExitKind::BadImage,
            BuildError::Output { .. } | BuildError::Write { .. } => ExitKind::OsError,
            BuildError::BlockSize(_) => ExitKind::Usage,
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

/// The build's fixed timestamp: `SOURCE_DATE_EPOCH`, else 0.
pub fn build_time(env: &[(std::ffi::OsString, std::ffi::OsString)]) -> u32 {
    crate::env::get(env, "SOURCE_DATE_EPOCH")
        .and_then(|v| v.to_str()?.trim().parse::<u64>().ok())
        .map(|t| t.min(u32::MAX as u64) as u32)
        .unwrap_or(0)
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
    let kind = source::detect(&req.source)?;
    log::info!("source {}: {kind:?}", req.source.display());
    let dir = out_dir(&req.out);
    // Unnamed temporary files in OUT's directory: nothing to clean up, ever.
    let spool_file = tempfile::tempfile_in(&dir).map_err(|e| out_err("creating the spool", e))?;
    let mut spool = Spool::new(spool_file);
    let mut tree = Tree::default();
    let mut meta = ImageMeta::default();
    let opts = source::Options {
        skip_special: req.skip_special,
    };
    for warning in source::load(&req.source, kind, &opts, &mut spool, &mut tree, &mut meta)? {
        log::warn!("{warning}");
    }
    let tree_err = |error| BuildError::Tree {
        input: req.source.clone(),
        error,
    };
    meta_files::add(&mut tree, &meta).map_err(tree_err)?;
    tree.check_hard_links().map_err(tree_err)?;
    let spool = spool
        .finish()
        .map_err(|e| out_err("writing the spool", e))?;
    let (entries, data_bytes) = tree.totals();
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
    let mut on_progress = |p: sqfs::Progress| {
        if let Some(bar) = &bar {
            bar.set_position(p.bytes_done);
            bar.set_message(format!("{}/{entries} files", p.files_done));
        }
    };
    let sif = req
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sif"));
    let write = |target: &Path, progress: &mut dyn FnMut(sqfs::Progress)| {
        sqfs::write_image(target, &tree, Some(&spool), &write_opts, progress).map_err(|error| {
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
        let len = sif_write::write(&mut pending.file, req.arch, uuid, mtime as i64, objects)
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
    Ok(BuildSummary {
        out: req.out.clone(),
        format: if sif { "SIF" } else { "SquashFS" },
        entries,
        data_bytes,
        image_bytes,
        took: t0.elapsed(),
    })
}

/// The SIF definition-file object: the recipe, or a note of the source.
fn definition(meta: &ImageMeta, source: &Path) -> String {
    meta.definition.clone().unwrap_or_else(|| {
        format!(
            "# built by rfake build from {}\n",
            source.file_name().unwrap_or_default().to_string_lossy()
        )
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
    }
}
