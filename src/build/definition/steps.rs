//! Script sections (`%post`, `%test`) run in the build root as fakeroot,
//! their output shown as it runs and kept on failure.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::DefinitionOptions;
use super::work::cleanup;
use crate::build::deffile::{Definition, Script};
use crate::build::fakeroot::{self, RunSpec};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::text::shown;

/// Run a script section in the root as fakeroot; a failure stops the build
/// with the command's status and the last lines of its output (the whole
/// log is kept beside OUT... printed as it runs).
pub fn run_script(
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
