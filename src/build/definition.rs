//! `rfake build OUT app.def`: an Apptainer definition file, built without
//! root. The stage's bootstrap is written out as a directory in the build's
//! work area ([`super::materialize`]); `%files` are copied in; `%post` runs
//! in it as fakeroot ([`super::fakeroot`]); the metadata sections become the
//! `/.singularity.d` layout Apptainer's tools and rfake read; `%test` runs
//! last unless `--notest`. The directory is then the build's source, and is
//! removed whatever happens (a panic, an error, SIGINT or SIGTERM included:
//! see [`Work`]).
//!
//! Not yet: several stages, `%files from`, `Bootstrap: debootstrap`; each
//! is refused with its file and line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use super::ImageMeta;
use super::deffile::{Bootstrap, Definition, FileLine, Script, Stage};
use super::fakeroot::{self, FakerootMode, RunSpec};
use super::materialize::{image_to_dir, remove_tree, tree_to_dir};
use super::source;
use super::spool::Spool;
use super::tree::Tree;
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::{io_text, shown};

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

/// The build's work directory, removed when dropped; while it exists,
/// SIGINT and SIGTERM remove it before rfake dies of them.
pub struct Work {
    dir: PathBuf,
}

impl Work {
    fn create(base: &Path) -> Result<Work, Error> {
        let dir = tempfile::Builder::new()
            .prefix(".rfake-build-")
            .tempdir_in(base)
            .map_err(|e| failed(base, "creating the build's work directory", &e))?
            .keep();
        cleanup::register(&dir);
        Ok(Work { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.dir) {
            log::warn!(
                "removing the build's work directory {}: {}",
                shown(&self.dir),
                io_text(&e)
            );
        }
        cleanup::unregister();
    }
}

/// Removing the work directory when rfake is interrupted.
mod cleanup {
    use std::ffi::CString;
    use std::path::Path;
    use std::sync::Mutex;

    /// The directory to remove, as `rm -rf` would get it.
    static DIR: Mutex<Option<CString>> = Mutex::new(None);

    extern "C" fn on_signal(signal: libc::c_int) {
        // Not async-signal-safe in general, but the process is about to
        // die of this signal and is single-threaded here (no build worker
        // runs while a definition's commands run or files are copied).
        if let Ok(guard) = DIR.try_lock() {
            if let Some(dir) = guard.as_ref() {
                use std::os::unix::ffi::OsStrExt;
                let _ = super::remove_tree(Path::new(std::ffi::OsStr::from_bytes(dir.as_bytes())));
            }
        }
        // SAFETY: restoring the default action and raising the signal again
        // ends the process as that signal would have.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }

    pub fn register(dir: &Path) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = CString::new(dir.as_os_str().as_bytes()) {
            if let Ok(mut guard) = DIR.lock() {
                *guard = Some(c);
            }
        }
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `on_signal` is an `extern "C"` function of the right
            // type; installing it changes no other state.
            unsafe {
                libc::signal(signal, on_signal as *const () as libc::sighandler_t);
            }
        }
    }

    /// End rfake as killed by `signal`, after removing the work directory:
    /// the build was interrupted (its step died of the signal rfake got).
    pub fn die_of(signal: libc::c_int) -> ! {
        on_signal(signal);
        // SAFETY: only reached if the signal did not end the process.
        unsafe { libc::_exit(128 + signal) }
    }

    pub fn unregister() {
        if let Ok(mut guard) = DIR.lock() {
            *guard = None;
        }
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: restores the default action.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
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
    let mut meta = bootstrap(def, stage, opts, &root, work.path())?;
    copy_files(def, stage, &root)?;
    write_metadata(def, stage, &root, &mut meta)?;
    if let Some(post) = &stage.post {
        run_script(def, "%post", post, &root, opts, env, work.path())?;
    }
    if let (Some(test), false) = (&stage.test, opts.notest) {
        run_script(def, "%test", test, &root, opts, env, work.path())?;
    }
    Ok(Prepared { work, root, meta })
}

/// The stage's starting point written into `root`; the image configuration
/// of an OCI base (environment, entrypoint, labels) in the returned meta.
fn bootstrap(
    def: &Definition,
    stage: &Stage,
    opts: &DefinitionOptions,
    root: &Path,
    work: &Path,
) -> Result<ImageMeta, Error> {
    let line = stage.header.line;
    let mut meta = ImageMeta::default();
    let from_tree = |source: super::run::BuildSource, meta: &mut ImageMeta| -> Result<(), Error> {
        let spool_file = tempfile::tempfile_in(work)
            .map_err(|e| failed(work, "creating the build spool", &e))?;
        let mut spool = Spool::new(spool_file);
        let mut tree = Tree::default();
        let options = source::Options {
            skip_special: true,
            ..source::Options::default()
        };
        let warnings = match &source {
            super::run::BuildSource::Path(path) => {
                let kind = source::detect(path).map_err(super::run::BuildError::from)?;
                source::load(path, kind, &options, &mut spool, &mut tree, meta)
                    .map_err(super::run::BuildError::from)?
            }
            super::run::BuildSource::Pulled {
                blobs_root,
                manifest,
                reference,
            } => source::load_pulled(
                blobs_root, manifest, reference, &options, &mut spool, &mut tree, meta,
            )
            .map_err(super::run::BuildError::from)?,
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
            from_tree(super::run::BuildSource::Path(path.clone()), &mut meta)?;
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
        Bootstrap::Debootstrap { .. } => {
            return Err(refused(
                def,
                line,
                "Header",
                "Bootstrap: debootstrap is not supported yet: build the root with debootstrap \
                 and use it as a directory or tarball base (Bootstrap: localimage)"
                    .into(),
            ));
        }
    }
    Ok(meta)
}

/// A SquashFS or SIF image, or a directory, written into `root`.
fn local_image(
    path: &Path,
    root: &Path,
    meta: &mut ImageMeta,
    from_tree: &dyn Fn(super::run::BuildSource, &mut ImageMeta) -> Result<(), Error>,
) -> Result<(), Error> {
    if path.is_dir() {
        return from_tree(super::run::BuildSource::Path(path.to_path_buf()), meta);
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

/// `%files`: each `SRC [DST]` copied from the host (SRC relative to the
/// current directory, as Apptainer takes it) to DST in the root (default:
/// SRC's own path), as `cp -r` would: into DST when DST is a directory.
fn copy_files(def: &Definition, stage: &Stage, root: &Path) -> Result<(), Error> {
    for block in &stage.files {
        for FileLine { src, dst, line } in &block.files {
            let bad = |problem: String| refused(def, *line, "%files", problem);
            if src.contains(['*', '?', '[']) && !Path::new(src).exists() {
                return Err(bad(format!(
                    "{src}: wildcards are not supported yet: name each file"
                )));
            }
            let from = PathBuf::from(src);
            let inside = dst.clone().unwrap_or_else(|| src.clone());
            let to = inside_root(root, &inside)
                .ok_or_else(|| bad(format!("{inside}: the destination leaves the image's root")))?;
            let meta =
                fs::symlink_metadata(&from).map_err(|e| bad(format!("{src}: {}", io_text(&e))))?;
            let to = if to.is_dir() && !meta.is_dir() || (to.is_dir() && dst.is_some()) {
                to.join(from.file_name().unwrap_or_default())
            } else {
                to
            };
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(|e| failed(parent, "%files", &e))?;
            }
            copy_tree(&from, &to).map_err(|e| bad(format!("{src}: {}", io_text(&e))))?;
        }
    }
    Ok(())
}

/// `inside` (a path in the image) as a path under `root`, with the
/// image's symbolic links followed as the container would follow them:
/// an absolute target from the image's root, `..` never above it. So a
/// link in an untrusted base (`/opt -> /home/you/.ssh`) leads inside the
/// image, never to the host. `None` for a loop (more than 40 links).
/// Nothing else changes the tree while the build writes into it.
fn inside_root(root: &Path, inside: &str) -> Option<PathBuf> {
    use std::collections::VecDeque;
    let parts = |p: &Path| -> VecDeque<std::ffi::OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut todo = parts(Path::new(inside));
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        let full = root.join(&next);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = fs::read_link(&full).ok()?;
                if target.is_absolute() {
                    at = PathBuf::new();
                }
                let mut rest = parts(&target);
                rest.extend(todo);
                todo = rest;
            }
            _ => at = next,
        }
    }
    Some(root.join(at))
}

/// Copy `from` (on the host) to `to` (in the build root, resolved by
/// [`inside_root`]). What the image has at a path written here is replaced
/// if it is a symbolic link, never followed: the image's links must not
/// lead the copy out of the root.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(to)?;
    }
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let _ = fs::remove_file(to);
        return symlink(fs::read_link(from)?, to);
    }
    if meta.is_dir() {
        match fs::create_dir(to) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() | 0o700));
    }
    fs::copy(from, to).map(|_| ())
}

use std::os::unix::fs::MetadataExt;

/// The `/.singularity.d` layout: the definition, labels, environment
/// scripts, runscript, startscript, test and help. The base's static
/// `/.rfake/environment` (an image rfake built) becomes a script too, so
/// `%environment` is sourced after it, as Apptainer does.
fn write_metadata(
    def: &Definition,
    stage: &Stage,
    root: &Path,
    meta: &mut ImageMeta,
) -> Result<(), Error> {
    // Resolved in the image: a base's `/.singularity.d` may be a link.
    let sd = inside_root(root, ".singularity.d").unwrap_or_else(|| root.join(".singularity.d"));
    if !sd.starts_with(root) {
        return Err(Error::Internal(
            "the metadata directory left the build root".into(),
        ));
    }
    let env_dir = sd.join("env");
    for dir in [&sd, &env_dir] {
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(dir).map_err(|e| failed(dir, "replacing it", &e))?;
        }
    }
    fs::create_dir_all(&env_dir).map_err(|e| failed(&env_dir, "creating it", &e))?;
    let write = |name: &str, text: &str, mode: u32| -> Result<(), Error> {
        let path = sd.join(name);
        // A link the base has there is replaced, never followed.
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&path).map_err(|e| failed(&path, "replacing it", &e))?;
        }
        fs::write(&path, text).map_err(|e| failed(&path, "writing it", &e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| failed(&path, "setting its mode", &e))
    };
    // The base's environment: an OCI image's Env, or an rfake image's file.
    // Read only if it is a regular file of the image (never through a link).
    let static_env = root.join(".rfake/environment");
    let regular = fs::symlink_metadata(root.join(".rfake")).is_ok_and(|m| m.is_dir())
        && fs::symlink_metadata(&static_env).is_ok_and(|m| m.is_file());
    if let (true, Ok(text)) = (regular, fs::read_to_string(&static_env)) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                super::source::set_env_pub(&mut meta.env, k, v);
            }
        }
        fs::remove_file(&static_env).map_err(|e| failed(&static_env, "removing it", &e))?;
    }
    if !meta.env.is_empty() {
        let mut sh = String::from("#!/bin/sh\n# The base image's environment (rfake build).\n");
        for (k, v) in &meta.env {
            sh.push_str(&format!(
                "export {k}={}\n",
                super::meta_files::shell_quote(v)
            ));
        }
        write("env/10-docker2singularity.sh", &sh, 0o755)?;
        meta.env.clear();
    }
    if let Some(env) = &stage.environment {
        write(
            "env/90-environment.sh",
            &format!("#!/bin/sh\n{}", env.text),
            0o755,
        )?;
    }
    let script = |s: &Script| format!("#!{}\n{}", s.shell.as_deref().unwrap_or("/bin/sh"), s.text);
    match &stage.runscript {
        Some(run) => write("runscript", &script(run), 0o755)?,
        None => {
            if let Some(oci) = super::meta_files::oci_runscript(meta) {
                write("runscript", &oci, 0o755)?;
            }
        }
    }
    meta.entrypoint.clear();
    meta.cmd.clear();
    meta.workdir = None;
    if let Some(start) = &stage.startscript {
        write("startscript", &script(start), 0o755)?;
    }
    if let Some(test) = &stage.test {
        write("test", &script(test), 0o755)?;
    }
    if let Some(help) = &stage.help {
        write("runscript.help", help, 0o644)?;
    }
    let mut labels: BTreeMap<String, String> = meta.labels.clone();
    labels.extend(stage.labels.iter().cloned());
    write(
        "labels.json",
        &(serde_json::to_string_pretty(&labels).unwrap_or_default() + "\n"),
        0o644,
    )?;
    write("Singularity", &def.text, 0o644)?;
    meta.labels = labels;
    meta.definition = Some(def.text.clone());
    Ok(())
}

/// Run a script section in the root as fakeroot; a failure stops the build
/// with the command's status and the last lines of its output (the whole
/// log is kept beside OUT... printed as it runs).
fn run_script(
    def: &Definition,
    section: &str,
    script: &Script,
    root: &Path,
    opts: &DefinitionOptions,
    env: &[(OsString, OsString)],
    work: &Path,
) -> Result<(), Error> {
    let shell = script.shell.clone().unwrap_or_else(|| "/bin/sh".into());
    let mut run_env: Vec<(OsString, OsString)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C".into()),
        ("TERM".into(), "dumb".into()),
        ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
        ("SINGULARITY_ROOTFS".into(), "/".into()),
        ("APPTAINER_ROOTFS".into(), "/".into()),
    ];
    for name in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Some(v) = crate::env::get(env, name) {
            run_env.push((name.into(), v.into()));
        }
    }
    let log_path = work.join(format!("{}.log", section.trim_start_matches('%')));
    let mut log = Tail::new(fs::File::create(&log_path).ok());
    log::info!("{section}: running with {shell} in {}", shown(root));
    let status = fakeroot::run(RunSpec {
        root,
        shell: &shell,
        script: &format!("set -e\n{}", script.text),
        env: run_env,
        mode: opts.fakeroot,
        log: &mut log,
    })
    .map_err(|e| Error::Failed {
        kind: e.exit_kind(),
        message: format!("{}:{}: {section}: {e}", shown(&def.path), script.line),
    })?;
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal @ (libc::SIGINT | libc::SIGTERM | libc::SIGHUP)) = status.signal() {
        log::info!("{section} ended by signal {signal}: the build is interrupted");
        cleanup::die_of(signal);
    }
    let code = status
        .code()
        .map_or_else(|| format!("{status}"), |c| format!("exit status {c}"));
    // The whole log is kept where the work area was (it goes with it).
    let kept = work.parent().map(|base| {
        base.join(format!(
            "{}.{}.log",
            def.path.file_name().unwrap_or_default().to_string_lossy(),
            section.trim_start_matches('%')
        ))
    });
    let kept = kept.filter(|to| fs::copy(&log_path, to).is_ok());
    Err(Error::Failed {
        kind: ExitKind::BadImage,
        message: format!(
            "{}:{}: {section} failed ({code}); its last lines: {}{}",
            shown(&def.path),
            script.line,
            log.last_lines(3),
            kept.map(|k| format!(" (the whole log: {})", shown(&k)))
                .unwrap_or_default()
        ),
    })
}

/// The output of a step: kept in a file and its last lines in memory.
struct Tail {
    file: Option<fs::File>,
    last: Vec<u8>,
}

impl Tail {
    fn new(file: Option<fs::File>) -> Tail {
        Tail {
            file,
            last: Vec::new(),
        }
    }

    fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.last);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(n);
        crate::text::one_line(&lines[start..].join(" | "))
    }
}

impl Write for Tail {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            let _ = f.write_all(buf);
        }
        self.last.extend_from_slice(buf);
        if self.last.len() > 8192 {
            self.last.drain(..self.last.len() - 4096);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image's links are followed inside the image, never to the host.
    #[test]
    fn paths_in_the_image_stay_in_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let host = d.path().join("host");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(&host).unwrap();
        symlink(&host, root.join("opt")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../../..", root.join("usr/lib/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let at = |p: &str| inside_root(&root, p);
        // An absolute link is taken from the image's root.
        assert_eq!(
            at("/opt/x").unwrap(),
            root.join(host.strip_prefix("/").unwrap()).join("x")
        );
        assert_eq!(at("/lib/x").unwrap(), root.join("usr/lib/x"));
        assert_eq!(at("/usr/lib/up/etc").unwrap(), root.join("etc"));
        assert_eq!(at("../../etc/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(at("/loop/x"), None);
        // Copying over a link replaces it.
        fs::write(d.path().join("src"), "new").unwrap();
        fs::write(host.join("victim"), "host file").unwrap();
        symlink(host.join("victim"), root.join("usr/lib/f")).unwrap();
        copy_tree(&d.path().join("src"), &root.join("usr/lib/f")).unwrap();
        assert_eq!(
            fs::read_to_string(host.join("victim")).unwrap(),
            "host file"
        );
        assert_eq!(fs::read_to_string(root.join("usr/lib/f")).unwrap(), "new");
    }
}
