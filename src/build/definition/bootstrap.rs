//! A stage's `Bootstrap:` written out as a directory: the build root.

use std::ffi::OsString;
use std::path::Path;

use super::{DefinitionOptions, failed};
use crate::build::ImageMeta;
use crate::build::deffile::{Bootstrap, Definition, Stage};
use crate::build::materialize::{image_to_dir, tree_to_dir};
use crate::build::source;
use crate::build::spool::Spool;
use crate::build::tree::Tree;
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::shown;

/// The stage's starting point written into `root`; the image configuration
/// of an OCI base (environment, entrypoint, labels) in the returned meta.
pub fn bootstrap(
    def: &Definition,
    stage: &Stage,
    opts: &DefinitionOptions,
    env: &[(OsString, OsString)],
    root: &Path,
    work: &Path,
) -> Result<ImageMeta, Error> {
    let line = stage.header.line;
    let mut meta = ImageMeta::default();
    let from_tree =
        |source: crate::build::run::BuildSource, meta: &mut ImageMeta| -> Result<(), Error> {
            let spool_file = tempfile::tempfile_in(work)
                .map_err(|e| failed(work, "creating the build spool", &e))?;
            let mut spool = Spool::new(spool_file);
            let mut tree = Tree::default();
            let options = source::Options {
                skip_special: true,
                ..source::Options::default()
            };
            let warnings = match &source {
                crate::build::run::BuildSource::Path(path) => {
                    let kind = source::detect(path).map_err(crate::build::run::BuildError::from)?;
                    source::load(path, kind, &options, &mut spool, &mut tree, meta)
                        .map_err(crate::build::run::BuildError::from)?
                }
                crate::build::run::BuildSource::Pulled {
                    blobs_root,
                    manifest,
                    reference,
                } => source::load_pulled(
                    blobs_root, manifest, reference, &options, &mut spool, &mut tree, meta,
                )
                .map_err(crate::build::run::BuildError::from)?,
            };
            for warning in warnings {
                log::info!("{warning}");
            }
            let spooled = spool
                .finish()
                .map_err(|e| failed(work, "writing the build spool", &e))?;
            tree_to_dir(&tree, Some(&spooled), root).map_err(|e| Error::Failed {
                kind: ExitKind::OsError,
                message: format!("writing the base into the build root: {e}"),
            })
        };
    match &stage.header.bootstrap {
        Bootstrap::Scratch => {}
        Bootstrap::LocalImage(path) => local_image(path, root, &mut meta, &from_tree)?,
        Bootstrap::OciArchive(path) | Bootstrap::DockerArchive(path) => {
            from_tree(
                crate::build::run::BuildSource::Path(path.clone()),
                &mut meta,
            )?;
        }
        Bootstrap::Docker(reference) => {
            let pull = opts.pull.as_ref().ok_or_else(|| {
                Error::Internal("no registry options for Bootstrap: docker".into())
            })?;
            let source =
                crate::pull::build_source(Path::new(&format!("docker://{reference}")), pull)?;
            from_tree(source, &mut meta)?;
        }
        Bootstrap::Oras(reference) => {
            let pull = opts
                .pull
                .as_ref()
                .ok_or_else(|| Error::Internal("no registry options for Bootstrap: oras".into()))?;
            let image =
                crate::pull::local_image(Path::new(&format!("oras://{reference}")), || {
                    Ok(pull.clone())
                })?;
            local_image(&image, root, &mut meta, &from_tree)?;
        }
        Bootstrap::Debootstrap {
            os_version,
            mirror,
            include,
        } => {
            let req = super::debootstrap::Request {
                os_version,
                mirror,
                include,
                line,
            };
            super::debootstrap::debootstrap(def, &req, opts, env, root, work)?;
        }
    }
    Ok(meta)
}

/// A SquashFS or SIF image, or a directory, written into `root`.
fn local_image(
    path: &Path,
    root: &Path,
    meta: &mut ImageMeta,
    from_tree: &dyn Fn(crate::build::run::BuildSource, &mut ImageMeta) -> Result<(), Error>,
) -> Result<(), Error> {
    if path.is_dir() {
        return from_tree(
            crate::build::run::BuildSource::Path(path.to_path_buf()),
            meta,
        );
    }
    let reader = crate::inspect::squashfs_reader(path)?;
    let skipped = image_to_dir(&reader, root).map_err(|e| Error::Failed {
        kind: ExitKind::OsError,
        message: format!("writing {} into the build root: {e}", shown(path)),
    })?;
    for path in skipped {
        log::info!("{path}: a special file, left out of the build root");
    }
    Ok(())
}
