//! Script steps run in the build root as fakeroot, their output shown as
//! it runs and kept on failure: a definition file's `%post` and `%test`
//! ([`run_script`]), and a recipe's `[[run]]` steps ([`RecipeSteps`]).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::DefinitionOptions;
use super::work::{Work, cleanup};
use crate::build::deffile::{Definition, Script};
use crate::build::fakeroot::{self, FakerootMode, RunSpec};
use crate::build::materialize::remove_tree;
use crate::build::source::{RunStep, StepRunner};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::shown;

/// One script to run, and where it is written (for messages and the name
/// of the kept log).
pub struct Step<'a> {
    /// The definition file or recipe.
    pub file: &'a Path,
    /// The line the script starts at.
    pub line: usize,
    /// As messages name it: `%post`, `[[run]]`.
    pub section: &'a str,
    /// The kept log is `FILE.LOG_NAME.log`: `post`, `run`.
    pub log_name: &'a str,
    /// `None`: `/bin/sh`.
    pub shell: Option<&'a str>,
    pub text: &'a str,
}

/// Run a definition file's script section in the root as fakeroot.
/// Sources the image's environment scripts in name order (errors in them
/// do not stop the test, as they do not stop `exec`).
const TEST_PRELUDE: &str = "set +e\nfor rfake_env in /.singularity.d/env/*.sh; do \
    if [ -r \"$rfake_env\" ]; then . \"$rfake_env\"; fi; done\nunset rfake_env\nset -e\n";

pub fn run_script(
    def: &Definition,
    section: &str,
    script: &Script,
    root: &Path,
    opts: &DefinitionOptions,
    env: &[(OsString, OsString)],
    work: &Path,
) -> Result<(), Error> {
    // `%test` runs in the finished image as `exec` would run it: with the
    // image's environment (`/.singularity.d/env/*.sh`, `%environment`
    // included), as Apptainer runs it; `%post` builds that environment and
    // runs without it.
    let text = if section == "%test" {
        format!("{TEST_PRELUDE}{}", script.text)
    } else {
        script.text.clone()
    };
    let step = Step {
        file: &def.path,
        line: script.line,
        section,
        log_name: section.trim_start_matches('%'),
        shell: script.shell.as_deref(),
        text: &text,
    };
    run_step(&step, root, opts.fakeroot, env, work)
}

/// Run `step` in `root` as fakeroot (with `set -e`); a failure stops the
/// build with the command's status and the last lines of its output (the
/// output is printed as it runs, and the whole log is kept beside the work
/// directory `work`, which goes).
pub fn run_step(
    step: &Step,
    root: &Path,
    mode: FakerootMode,
    env: &[(OsString, OsString)],
    work: &Path,
) -> Result<(), Error> {
    let section = step.section;
    let shell = step.shell.unwrap_or("/bin/sh");
    let mut run_env = clean_env(env);
    run_env.push(("SINGULARITY_ROOTFS".into(), "/".into()));
    run_env.push(("APPTAINER_ROOTFS".into(), "/".into()));
    let log_path = work.join(format!("{}.log", step.log_name));
    let mut log = Tail::new(fs::File::create(&log_path).ok());
    log::info!("{section}: running with {shell} in {}", shown(root));
    let status = fakeroot::run(RunSpec {
        root,
        shell,
        script: &format!("set -e\n{}", step.text),
        env: run_env,
        mode,
        log: &mut log,
    })
    .map_err(|e| Error::Failed {
        kind: e.exit_kind(),
        message: format!("{}:{}: {section}: {e}", shown(step.file), step.line),
    })?;
    if status.success() {
        return Ok(());
    }
    let code = failed_status(status, section);
    let kept = keep_log(step.file, step.log_name, work, &log_path);
    Err(Error::Failed {
        kind: ExitKind::BadImage,
        message: format!(
            "{}:{}: {section} failed ({code}); its last lines: {}{}",
            shown(step.file),
            step.line,
            log.last_lines(3),
            kept.map(|k| format!(" (the whole log: {})", shown(&k)))
                .unwrap_or_default()
        ),
    })
}

/// The clean environment every build step starts from: a fixed `PATH`
/// with the sbin directories (package tools look for programs there),
/// root's `HOME`, `LANG=C`, a non-interactive Debian front end, and the
/// invoking environment's proxies (network works as on the host).
pub(super) fn clean_env(env: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C".into()),
        ("TERM".into(), "dumb".into()),
        ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
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
            out.push((name.into(), v.into()));
        }
    }
    out
}

/// A failed step's status in words (`exit status 3`). A step that died of
/// SIGINT, SIGTERM or SIGHUP means the build was interrupted: rfake then
/// removes the work area and ends as killed by that signal.
pub(super) fn failed_status(status: std::process::ExitStatus, what: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal @ (libc::SIGINT | libc::SIGTERM | libc::SIGHUP)) = status.signal() {
        log::info!("{what} ended by signal {signal}: the build is interrupted");
        cleanup::die_of(signal);
    }
    status
        .code()
        .map_or_else(|| format!("{status}"), |c| format!("exit status {c}"))
}

/// A failed step's whole log, copied to `FILE.LOG_NAME.log` where the work
/// area `work` was (the work area goes, the copy stays); `None` if it could
/// not be copied.
pub(super) fn keep_log(file: &Path, log_name: &str, work: &Path, log: &Path) -> Option<PathBuf> {
    let to = work.parent()?.join(format!(
        "{}.{log_name}.log",
        file.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::copy(log, &to).ok().map(|_| to)
}

/// A recipe's `[[run]]` steps as `rfake build` runs them: each recipe
/// with steps writes its tree out as a new root in one work directory
/// (made at the first, under `base`: `--tmpdir`, `RFAKE_TMPDIR` or OUT's
/// directory), where its steps run as fakeroot. The work directory lives
/// as long as this does: the image's files are read from the last root
/// when it is written.
pub struct RecipeSteps<'e> {
    mode: FakerootMode,
    base: PathBuf,
    env: &'e [(OsString, OsString)],
    work: Option<Work>,
    roots: Vec<PathBuf>,
}

impl<'e> RecipeSteps<'e> {
    pub fn new(
        opts: &DefinitionOptions,
        base: PathBuf,
        env: &'e [(OsString, OsString)],
    ) -> RecipeSteps<'e> {
        RecipeSteps {
            mode: opts.fakeroot,
            base,
            env,
            work: None,
            roots: Vec::new(),
        }
    }
}

impl StepRunner for RecipeSteps<'_> {
    fn new_root(&mut self) -> Result<PathBuf, Error> {
        let work = match &mut self.work {
            Some(work) => work,
            None => self.work.insert(Work::create(&self.base)?),
        };
        let root = work.path().join(format!("root-{}", self.roots.len() + 1));
        fs::create_dir(&root).map_err(|e| super::failed(&root, "creating the build root", &e))?;
        self.roots.push(root.clone());
        Ok(root)
    }

    fn run(&mut self, recipe: &Path, step: &RunStep, root: &Path) -> Result<(), Error> {
        let work = self
            .work
            .as_ref()
            .ok_or_else(|| Error::Internal("a recipe step without a work directory".into()))?;
        let step = Step {
            file: recipe,
            line: step.line,
            section: "[[run]]",
            log_name: "run",
            shell: step.shell.as_deref(),
            text: &step.script,
        };
        run_step(&step, root, self.mode, self.env, work.path())
    }

    fn only(&mut self, root: &Path) {
        // An earlier recipe's root (a recipe built on a recipe with steps)
        // was read into the tree written out as `root`: nothing reads it now.
        for old in self.roots.iter().filter(|r| r.as_path() != root) {
            if let Err(e) = remove_tree(old) {
                log::warn!("removing {}: {}", shown(old), crate::text::io_text(&e));
            }
        }
        self.roots.retain(|r| r.as_path() == root);
    }
}

/// The output of a step: kept in a file and its last lines in memory.
pub(super) struct Tail {
    file: Option<fs::File>,
    last: Vec<u8>,
    /// After [`Tail::file_only`]: what is written goes to the file alone.
    frozen: bool,
}

impl Tail {
    pub(super) fn new(file: Option<fs::File>) -> Tail {
        Tail {
            file,
            last: Vec::new(),
            frozen: false,
        }
    }

    /// The last `n` non-empty lines, joined on one line.
    pub(super) fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.last);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(n);
        crate::text::one_line(&lines[start..].join(" | "))
    }

    /// From now on, write to the file only: what is appended to the kept
    /// log (another log) is not the step's last lines.
    pub(super) fn file_only(&mut self) {
        self.frozen = true;
    }
}

impl Write for Tail {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            let _ = f.write_all(buf);
        }
        if !self.frozen {
            self.last.extend_from_slice(buf);
            if self.last.len() > 16384 {
                self.last.drain(..self.last.len() - 8192);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
