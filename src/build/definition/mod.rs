//! `rfake build OUT app.def`: an Apptainer definition file, built without
//! root. The stage's bootstrap is written out as a directory in the build's
//! work area ([`super::materialize`]); `%files` are copied in; `%post` runs
//! in it as fakeroot ([`super::fakeroot`]); the metadata sections become the
//! `/.singularity.d` layout Apptainer's tools and rfake read; `%test` runs
//! last unless `--notest`. The directory is then the build's source, and is
//! removed whatever happens (a panic, an error, SIGINT or SIGTERM included:
//! see [`Work`]).
//!
//! The parts: [`bootstrap`] (the base), [`files`] (`%files`, and paths in
//! the image), [`metadata`] (`/.singularity.d`), [`steps`] (`%post` and
//! `%test` as fakeroot), [`work`] (the work directory).
//!
//! Not yet: several stages, `%files from`, `Bootstrap: debootstrap`; each
//! is refused with its file and line.

mod bootstrap;
mod files;
mod metadata;
mod steps;
mod work;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::ImageMeta;
use super::deffile::Definition;
use super::fakeroot::FakerootMode;
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::{io_text, shown};
pub use steps::RecipeSteps;
pub use work::Work;

/// How to run a definition file's commands, from the command line.
#[derive(Debug, Clone)]
pub struct DefinitionOptions {
    /// Skip `%test` (`--notest`).
    pub notest: bool,
    /// `--fakeroot-mode`.
    pub fakeroot: FakerootMode,
    /// Where the work directory goes (`--tmpdir`, `RFAKE_TMPDIR`); `None`:
    /// beside OUT.
    pub tmpdir: Option<PathBuf>,
    /// For `Bootstrap: docker` and `oras`: the registry options.
    pub pull: Option<crate::pull::PullOptions>,
}

impl Default for DefinitionOptions {
    fn default() -> Self {
        DefinitionOptions {
            notest: false,
            fakeroot: FakerootMode::Seccomp,
            tmpdir: None,
            pull: None,
        }
    }
}

/// What a prepared stage leaves for the build: the root directory (inside
/// `work`, removed when it is dropped) and what the image says about
/// itself besides its files.
pub struct Prepared {
    /// Kept only to be dropped (removed) after the write.
    #[allow(dead_code)]
    pub work: Work,
    pub root: PathBuf,
    pub meta: ImageMeta,
}

fn failed(path: &Path, what: &str, e: &io::Error) -> Error {
    Error::Failed {
        kind: ExitKind::OsError,
        message: format!("{}: {what}: {}", shown(path), io_text(e)),
    }
}

/// A problem with the definition file at `line` of `section`.
fn refused(def: &Definition, line: usize, section: &str, problem: String) -> Error {
    Error::Failed {
        kind: ExitKind::BadImage,
        message: format!("{}:{line}: {section}: {problem}", shown(&def.path)),
    }
}

/// Prepare the definition's (one) stage as a directory under `work_base`.
pub fn prepare(
    def: &Definition,
    opts: &DefinitionOptions,
    work_base: &Path,
    env: &[(OsString, OsString)],
) -> Result<Prepared, Error> {
    let stage = match def.stages.as_slice() {
        [one] => one,
        [_, second, ..] => {
            return Err(refused(
                def,
                second.header.line,
                "Stage",
                "multi-stage builds are not supported yet: build each stage as an image of its \
                 own and use Bootstrap: localimage"
                    .into(),
            ));
        }
        [] => return Err(refused(def, 1, "Header", "no Bootstrap header".into())),
    };
    if let Some(block) = stage.files.iter().find(|b| b.from.is_some()) {
        return Err(refused(
            def,
            block.line,
            "%files",
            "`%files from STAGE` needs multi-stage builds, which are not supported yet".into(),
        ));
    }
    let work = Work::create(work_base)?;
    let root = work.path().join("root");
    fs::create_dir(&root).map_err(|e| failed(&root, "creating the build root", &e))?;
    let mut meta = bootstrap::bootstrap(def, stage, opts, &root, work.path())?;
    files::copy_files(def, stage, &root)?;
    metadata::write_metadata(def, stage, &root, &mut meta)?;
    if let Some(post) = &stage.post {
        steps::run_script(def, "%post", post, &root, opts, env, work.path())?;
    }
    if let (Some(test), false) = (&stage.test, opts.notest) {
        steps::run_script(def, "%test", test, &root, opts, env, work.path())?;
    }
    Ok(Prepared { work, root, meta })
}
