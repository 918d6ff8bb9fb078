//! Step 2 of the environment: what the image itself sets. Runs inside the
//! container, after `pivot_root`.
//!
//! Apptainer/Singularity images keep shell snippets in
//! `/.singularity.d/env/*.sh`; they are sourced in lexical order by the
//! image's own `/bin/sh`, which then `exec`s a second shell that stops
//! itself (`kill -STOP $$`). rfake reads that stopped process's
//! `/proc/PID/environ`, the exact exported environment, so no shell output
//! is parsed and the image needs nothing but `/bin/sh`. Images rfake builds
//! carry a static `/.rfake/environment` (`NAME=value` lines) instead.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{EnvList, parse_assignment, set};
use crate::input::{self, InputError};

pub const SINGULARITY_ENV_DIR: &str = "/.singularity.d/env";
pub const RFAKE_ENV_FILE: &str = "/.rfake/environment";
const SHELL: &str = "/bin/sh";

/// Sources the scripts, then stops in a fresh exec with their environment.
const SOURCE_AND_STOP: &str = r#"for __rfake_f in /.singularity.d/env/*.sh; do
  if [ -f "$__rfake_f" ] && [ -r "$__rfake_f" ]; then . "$__rfake_f"; fi
done
unset __rfake_f
exec /bin/sh -c 'kill -STOP $$'"#;

/// Variables a shell adds by itself; dropped unless they were there before.
const SHELL_NOISE: [&str; 3] = ["_", "SHLVL", "OLDPWD"];

#[derive(Debug, thiserror::Error)]
pub enum ImageEnvError {
    #[error("image environment {path}: {reason}")]
    File { path: String, reason: String },
    #[error("image environment scripts in {SINGULARITY_ENV_DIR}: {0}")]
    Scripts(String),
}

/// Apply the image's environment to `env`; returns what was done, for `-v`.
pub fn apply(env: &mut EnvList, cwd: &Path) -> Result<Option<String>, ImageEnvError> {
    let static_file = Path::new(RFAKE_ENV_FILE);
    if static_file.is_file() {
        // Checked again on the open descriptor, at most 1 MiB (crate::input).
        let text =
            input::read_text(static_file, input::TEXT_LIMIT).map_err(|e| ImageEnvError::File {
                path: RFAKE_ENV_FILE.into(),
                reason: e.to_string(),
            })?;
        // Written by `rfake build`: NAME=value lines, values literal.
        let mut count = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let o =
                parse_assignment(line, &format!("{RFAKE_ENV_FILE}:{}", i + 1)).map_err(|e| {
                    ImageEnvError::File {
                        path: RFAKE_ENV_FILE.into(),
                        reason: e.to_string(),
                    }
                })?;
            set(env, o.name.as_str(), o.value);
            count += 1;
        }
        return Ok(Some(format!("{count} settings from {RFAKE_ENV_FILE}")));
    }
    let scripts = script_count(Path::new(SINGULARITY_ENV_DIR));
    if scripts == 0 {
        return Ok(None);
    }
    if !Path::new(SHELL).exists() {
        return Ok(Some(format!(
            "{scripts} scripts in {SINGULARITY_ENV_DIR} ignored: the image has no {SHELL}"
        )));
    }
    if let Some(settings) = plain_scripts(Path::new(SINGULARITY_ENV_DIR)) {
        // Only literal assignments: the same result as the shell, without
        // starting one (a few milliseconds of every launch).
        for (name, value, exported) in settings {
            if exported || super::get(env, &name).is_some() {
                set(env, name, value);
            }
        }
        return Ok(Some(format!(
            "{scripts} scripts from {SINGULARITY_ENV_DIR} (plain assignments, read directly)"
        )));
    }
    let captured = source_scripts(env, cwd)?;
    let before: Vec<OsString> = env.iter().map(|(k, _)| k.clone()).collect();
    *env = captured
        .into_iter()
        .filter(|(k, _)| !SHELL_NOISE.iter().any(|n| k == n) || before.contains(k))
        .collect();
    Ok(Some(format!(
        "{scripts} scripts from {SINGULARITY_ENV_DIR}"
    )))
}

/// The scripts' settings, in the order the shell would make them, when
/// every line is a comment, blank, or `[export ]NAME=VALUE` with a literal
/// value (bare, or quoted without anything the shell would expand); `None`
/// as soon as one line is anything else.
pub fn plain_scripts(dir: &Path) -> Option<Vec<(String, String, bool)>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".sh"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        // As the shell does (`[ -f ]`), skip what is not a regular file: a
        // FIFO in the image would block the launch.
        let text = match input::read_text(&dir.join(name), input::TEXT_LIMIT) {
            Ok(text) => text,
            Err(InputError::NotRegular(_)) => continue,
            Err(_) => return None,
        };
        for line in text.lines() {
            out.extend(plain_line(line)?);
        }
    }
    Some(out)
}

/// One line: `Some(None)` for nothing to do, `Some(Some(..))` for a
/// literal assignment, `None` for anything that needs a shell.
fn plain_line(line: &str) -> Option<Option<(String, String, bool)>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Some(None);
    }
    let (exported, rest) = match line.strip_prefix("export ") {
        Some(rest) => (true, rest.trim_start()),
        None => (false, line),
    };
    let (name, value) = rest.split_once('=')?;
    let mut chars = name.chars();
    let name_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return None;
    }
    const SPECIAL: &[char] = &[
        '$', '`', '\\', '"', '\'', ';', '&', '|', '<', '>', '(', ')', '*', '?', '[', ']', '~', '#',
        '{', '}', ' ', '\t', '!',
    ];
    let literal = if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        let inner = &value[1..value.len() - 1];
        (!inner.contains('\'')).then_some(inner)?
    } else if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let inner = &value[1..value.len() - 1];
        (!inner.contains(['"', '\\', '$', '`'])).then_some(inner)?
    } else {
        (!value.contains(SPECIAL)).then_some(value)?
    };
    Some(Some((name.to_string(), literal.to_string(), exported)))
}

fn script_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".sh"))
                .count()
        })
        .unwrap_or(0)
}

fn source_scripts(env: &EnvList, cwd: &Path) -> Result<EnvList, ImageEnvError> {
    let mut cmd = Command::new(SHELL);
    cmd.arg("-c")
        .arg(SOURCE_AND_STOP)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| ImageEnvError::Scripts(format!("cannot start {SHELL}: {e}")))?;
    let pid = Pid::from_raw(child.id() as i32);
    let result = match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Stopped(_, _)) => read_environ(pid),
        Ok(WaitStatus::Exited(_, code)) => Err(ImageEnvError::Scripts(format!(
            "a script exited the shell with status {code}"
        ))),
        Ok(other) => Err(ImageEnvError::Scripts(format!(
            "the shell ended unexpectedly: {other:?}"
        ))),
        Err(e) => Err(ImageEnvError::Scripts(format!(
            "waiting for the shell: {e}"
        ))),
    };
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    result
}

fn read_environ(pid: Pid) -> Result<EnvList, ImageEnvError> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| ImageEnvError::Scripts(format!("reading the environment: {e}")))?;
    Ok(parse_environ(&raw))
}

/// Split a NUL-separated `NAME=value` block.
pub fn parse_environ(raw: &[u8]) -> EnvList {
    use std::os::unix::ffi::OsStrExt;
    raw.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let eq = entry.iter().position(|b| *b == b'=')?;
            Some((
                std::ffi::OsStr::from_bytes(&entry[..eq]).to_os_string(),
                std::ffi::OsStr::from_bytes(&entry[eq + 1..]).to_os_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_blocks() {
        let env = parse_environ(b"A=1\0B=x=y\0\0NOEQ\0C=\0");
        assert_eq!(
            env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x=y".into()),
                ("C".into(), "".into())
            ]
        );
    }

    #[test]
    fn plain_lines() {
        let ok = |l: &str, n: &str, v: &str, e: bool| {
            assert_eq!(plain_line(l), Some(Some((n.into(), v.into(), e))), "{l}")
        };
        ok("export A=1", "A", "1", true);
        ok(
            "  export PATH=\"/opt/bin:/usr/bin\"",
            "PATH",
            "/opt/bin:/usr/bin",
            true,
        );
        ok("B='it is'", "B", "it is", false);
        ok("C=", "C", "", false);
        assert_eq!(plain_line("# comment"), Some(None));
        assert_eq!(plain_line(""), Some(None));
        for needs_shell in [
            "export PATH=$PATH:/x",
            "A=\"$HOME/x\"",
            "A=`date`",
            "A=1; B=2",
            "if [ -z \"$X\" ]; then X=1; fi",
            "export A",
            "A=x y",
            "1A=2",
            ". /etc/profile",
            "A=~/x",
        ] {
            assert_eq!(plain_line(needs_shell), None, "{needs_shell}");
        }
    }

    #[test]
    fn plain_scripts_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("90-b.sh"), "#!/bin/sh\nexport B=2\n").unwrap();
        std::fs::write(d.path().join("10-a.sh"), "export A=1\nB=0\n").unwrap();
        std::fs::write(d.path().join("README"), "not a script $X\n").unwrap();
        let got = plain_scripts(d.path()).unwrap();
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into(), true),
                ("B".into(), "0".into(), false),
                ("B".into(), "2".into(), true)
            ]
        );
        std::fs::write(d.path().join("50-c.sh"), "export C=$A\n").unwrap();
        assert_eq!(plain_scripts(d.path()), None);
    }

    #[test]
    fn script_counting() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("01-base.sh"), "").unwrap();
        std::fs::write(d.path().join("90-environment.sh"), "").unwrap();
        std::fs::write(d.path().join("README"), "").unwrap();
        assert_eq!(script_count(d.path()), 2);
        assert_eq!(script_count(&d.path().join("missing")), 0);
    }
}
