//! `rfake build OUT app.def`: an Apptainer definition file, built without
//! root. Each stage's bootstrap is written out as a directory in the
//! build's work area ([`super::materialize`]); `%files` are copied in (from
//! the host, or from an earlier stage's root); the metadata sections become
//! the `/.singularity.d` layout Apptainer's tools and rfake read; `%post`
//! runs in it as fakeroot ([`super::fakeroot`]); `%test` runs last unless
//! `--notest`. The last stage's directory is then the build's source (or,
//! with `--sandbox`, the result), and the work area is removed whatever
//! happens (a panic, an error, SIGINT or SIGTERM included: see [`Work`]).
//!
//! The parts: [`bootstrap`] (the base), [`files`] (`%files`, and paths in
//! the image), [`metadata`] (`/.singularity.d`), [`steps`] (`%post` and
//! `%test` as fakeroot), [`work`] (the work directory), [`space`] (the
//! free-space check before it), [`perms`] (`--fix-perms`).
//!
//! [`debootstrap`] builds a `Bootstrap: debootstrap` base as fakeroot.
//!
//! Not yet: `%post -c` with arguments after the shell; `**` in `%files`.

mod bootstrap;
mod debootstrap;
mod files;
mod metadata;
mod perms;
mod space;
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
    /// `--fix-perms`: make every file owner-readable and writable and
    /// every directory owner-rwx before the tree is read ([`perms`]).
    pub fix_perms: bool,
}

impl Default for DefinitionOptions {
    fn default() -> Self {
        DefinitionOptions {
            notest: false,
            fakeroot: FakerootMode::Seccomp,
            tmpdir: None,
            pull: None,
            fix_perms: false,
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

/// Build every stage of the definition in order under `work_base`; the
/// last stage's root is the result. An earlier stage's root is removed as
/// soon as the last stage that copies from it has copied (at once if none
/// does: it is built anyway, its `%post` and `%test` run, as Apptainer does).
pub fn prepare(
    def: &Definition,
    opts: &DefinitionOptions,
    work_base: &Path,
    env: &[(OsString, OsString)],
) -> Result<Prepared, Error> {
    check(def)?;
    let last_use = last_uses(def);
    space::check(def, &last_use, work_base)?;
    let work = Work::create(work_base)?;
    let count = def.stages.len();
    let mut roots: Vec<Option<PathBuf>> = vec![None; count];
    let mut meta = ImageMeta::default();
    for (i, stage) in def.stages.iter().enumerate() {
        if count > 1 {
            log::info!(
                "stage {} of {count}{}",
                i + 1,
                stage
                    .name
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            );
        }
        let root = work.path().join(format!("stage-{}", i + 1));
        fs::create_dir(&root).map_err(|e| failed(&root, "creating the build root", &e))?;
        meta = bootstrap::bootstrap(def, stage, opts, env, &root, work.path())?;
        let stage_root = |name: &str| -> Option<PathBuf> {
            let at = def.stages[..i]
                .iter()
                .position(|s| s.name.as_deref() == Some(name))?;
            roots[at].clone()
        };
        files::copy_files(def, stage, &root, &stage_root)?;
        // The earlier stages whose last reader this was are done with.
        for (at, last) in last_use.iter().enumerate().take(i) {
            if *last == Some(i) {
                if let Some(done) = roots[at].take() {
                    remove(&done, at)?;
                }
            }
        }
        metadata::write_metadata(def, stage, &root, &mut meta)?;
        if let Some(post) = &stage.post {
            steps::run_script(def, "%post", post, &root, opts, env, work.path())?;
        }
        if let (Some(test), false) = (&stage.test, opts.notest) {
            steps::run_script(def, "%test", test, &root, opts, env, work.path())?;
        }
        if opts.fix_perms {
            let changed = perms::fix(&root).map_err(|e| failed(&root, "--fix-perms", &e))?;
            log::info!("--fix-perms: {changed} modes changed");
        }
        if i + 1 < count && last_use[i].is_none() {
            remove(&root, i)?;
        } else {
            roots[i] = Some(root);
        }
    }
    let root = roots
        .pop()
        .flatten()
        .ok_or_else(|| Error::Internal("the last stage's root is gone".into()))?;
    if !opts.fix_perms {
        readable(def, &root)?;
    }
    Ok(Prepared { work, root, meta })
}

/// What can be refused from the text alone, before anything is written.
fn check(def: &Definition) -> Result<(), Error> {
    if def.stages.is_empty() {
        return Err(refused(def, 1, "Header", "no Bootstrap header".into()));
    }
    for stage in &def.stages {
        // Apptainer runs `/bin/sh -c "SHELL ARGS... SCRIPT"`; rfake runs
        // the shell itself, so it takes one word, an absolute path.
        if let Some(post) = &stage.post {
            if let Some(shell) = &post.shell {
                if shell.split_whitespace().count() > 1 {
                    return Err(refused(
                        def,
                        post.line,
                        "%post",
                        format!(
                            "-c `{}`: arguments to the shell are not supported: give only the \
                             shell (as in `%post -c /bin/bash`) and set options in the script",
                            crate::text::one_line(shell)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// For each stage, the last stage whose `%files from` names it.
fn last_uses(def: &Definition) -> Vec<Option<usize>> {
    let mut last = vec![None; def.stages.len()];
    for (j, stage) in def.stages.iter().enumerate() {
        for from in stage.files.iter().filter_map(|b| b.from.as_deref()) {
            if let Some(i) = def.stages[..j]
                .iter()
                .position(|s| s.name.as_deref() == Some(from))
            {
                last[i] = Some(j);
            }
        }
    }
    last
}

/// Remove stage `index`'s root (from 0), which no later stage needs.
fn remove(root: &Path, index: usize) -> Result<(), Error> {
    crate::build::materialize::remove_tree(root)
        .map_err(|e| failed(root, "removing a finished stage's root", &e))?;
    log::info!(
        "stage {}'s root removed: no later stage copies from it",
        index + 1
    );
    Ok(())
}

/// The image's tree can be read by rfake, outside the user namespace
/// where `%post` ran as root: else name the first unreadable entry and
/// `--fix-perms`.
fn readable(def: &Definition, root: &Path) -> Result<(), Error> {
    let found =
        perms::first_unreadable(root).map_err(|e| failed(root, "checking the tree's modes", &e))?;
    let Some((path, mode)) = found else {
        return Ok(());
    };
    let stage = def.stages.last();
    let (line, section) = match stage.and_then(|s| s.post.as_ref()) {
        Some(post) => (post.line, "%post"),
        None => (stage.map_or(1, |s| s.header.line), "Header"),
    };
    let inside = Path::new("/").join(path.strip_prefix(root).unwrap_or(&path));
    Err(refused(
        def,
        line,
        section,
        format!(
            "{} (mode {mode:04o}) cannot be read by its owner, so not by rfake outside the \
             build: add --fix-perms (every file owner-readable and writable, every directory \
             owner-rwx)",
            shown(&inside)
        ),
    ))
}

/// `rfake build --sandbox OUTDIR app.def`: the definition built as for an
/// image, its last stage's root then renamed to OUTDIR (the work area is
/// made beside OUTDIR, so this is a rename on one file system, however big
/// the tree). OUTDIR must not exist, or be an empty directory: rfake never
/// removes what is there. Returns the line `rfake build` prints.
pub fn build_sandbox(
    path: &Path,
    opts: &DefinitionOptions,
    outdir: &Path,
    env: &[(OsString, OsString)],
) -> Result<String, Error> {
    let t0 = std::time::Instant::now();
    sandbox_target(outdir)?;
    let def = super::deffile::parse(path).map_err(super::run::BuildError::from)?;
    let base = match outdir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prepared = prepare(&def, opts, &base, env)?;
    // An empty OUTDIR is replaced by the rename (rename(2)); one that
    // became non-empty meanwhile fails it (ENOTEMPTY), and is kept.
    fs::rename(&prepared.root, outdir).map_err(|e| Error::Failed {
        kind: ExitKind::CannotCreate,
        message: format!(
            "{}: moving the built tree there: {}",
            shown(outdir),
            io_text(&e)
        ),
    })?;
    drop(prepared);
    Ok(format!(
        "wrote {} (a sandbox directory), {:.1?}",
        outdir.display(),
        t0.elapsed()
    ))
}

/// OUTDIR for `--sandbox`: absent, or an empty directory (not a link).
fn sandbox_target(outdir: &Path) -> Result<(), Error> {
    let refuse = |why: &str| Error::Failed {
        kind: ExitKind::CannotCreate,
        message: format!(
            "{}: {why} (--sandbox writes a new directory or fills an empty one: remove it or \
             choose another)",
            shown(outdir)
        ),
    };
    match fs::symlink_metadata(outdir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(outdir, "--sandbox", &e)),
        Ok(m) if !m.is_dir() => Err(refuse("exists and is not a directory")),
        Ok(_) => match fs::read_dir(outdir).map(|mut d| d.next().is_none()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(refuse("exists and is not empty")),
            Err(e) => Err(failed(outdir, "--sandbox", &e)),
        },
    }
}
