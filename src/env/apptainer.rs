//! Apptainer's (and Singularity's) environment variables, read the way
//! Apptainer reads them, so a job script written for `apptainer` works with
//! `rfake` (`docs/user-guide.md`, "Apptainer's environment variables").
//!
//! Three kinds (facts from Apptainer's `pkg/cmdline` and
//! `internal/pkg/util/env`):
//!
//! - `APPTAINER_KEY` mirrors a flag: [`FLAG_VARS`] is the one table of them.
//!   `APPTAINER_KEY` is read, else `SINGULARITY_KEY` (both set with
//!   different values: a warning, `APPTAINER_` wins). A flag given on the
//!   command line wins over its variable; a list flag (`--bind`) takes the
//!   variable's entries as well. A boolean variable is `1`/`t`/`true`
//!   (`0`/`f`/`false`), as Go's `strconv.ParseBool` reads it; an empty value
//!   counts as unset.
//! - `APPTAINERENV_NAME=value` (else `SINGULARITYENV_NAME`) sets `NAME`
//!   inside, after the image's environment; `PREPEND_PATH`/`APPEND_PATH`
//!   add to `PATH`; `HOME` cannot be set this way. rfake's own names win:
//!   `RFAKE_ENV_NAME`, `RFAKE_BIND`, `RFAKE_CACHEDIR`, `RFAKE_TMPDIR`.
//! - None of these enter the container as they are: `APPTAINER_*`,
//!   `SINGULARITY_*`, `APPTAINERENV_*` and `SINGULARITYENV_*` host
//!   variables are dropped from step 1, as Apptainer drops them.

use std::ffi::{OsStr, OsString};

use super::{Override, valid_name};
use crate::cli::LaunchArgs;
use crate::error::Error;

/// Prefixes of flag variables, the first with priority.
pub const PREFIXES: [&str; 2] = ["APPTAINER_", "SINGULARITY_"];
/// Prefixes of variables set inside, the first with priority.
pub const ENV_PREFIXES: [&str; 2] = ["APPTAINERENV_", "SINGULARITYENV_"];

/// A host variable found for a key: its full name and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub value: OsString,
}

/// `APPTAINER_KEY`, else `SINGULARITY_KEY`; blank values count as unset.
pub fn lookup(env: &[(OsString, OsString)], key: &str) -> Option<Found> {
    let get = |prefix: &str| {
        let name = format!("{prefix}{key}");
        super::get(env, &name)
            .filter(|v| !v.to_string_lossy().trim().is_empty())
            .map(|v| Found {
                name,
                value: v.to_owned(),
            })
    };
    let (new, legacy) = (get(PREFIXES[0]), get(PREFIXES[1]));
    match (new, legacy) {
        (Some(new), Some(legacy)) => {
            if new.value != legacy.value {
                log::warn!(
                    "{} and {} have different values, using {}",
                    legacy.name,
                    new.name,
                    new.name
                );
            }
            Some(new)
        }
        (new, legacy) => new.or(legacy),
    }
}

/// `rfake_name` if set (not empty), else `APPTAINER_KEY`, else
/// `SINGULARITY_KEY`: rfake's own name wins.
pub fn rfake_or_apptainer(
    env: &[(OsString, OsString)],
    rfake_name: &str,
    key: &str,
) -> Option<Found> {
    match super::get(env, rfake_name).filter(|v| !v.is_empty()) {
        Some(v) => Some(Found {
            name: rfake_name.to_string(),
            value: v.to_owned(),
        }),
        None => lookup(env, key),
    }
}

/// What a flag variable sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `--bind`: the entries are added (see [`bind_vars`]).
    Binds,
    Home,
    NoHome,
    Contain,
    /// `--containall`: `--contain`, `--cleanenv`, `--pid` and `--ipc`.
    Containall,
    Cleanenv,
    Pwd,
    WritableTmpfs,
    /// `--writable`: a SIF's overlay partition (refused for other images).
    Writable,
    Fakeroot,
    EnvFile,
    Nv,
    Rocm,
    Pid,
    Ipc,
    Uts,
    Net,
    NoPrivs,
    KeepPrivs,
    Userns,
    Hostname,
    Network,
    Workdir,
    /// `--scratch`, `--no-mount`: comma-separated lists, as on the
    /// command line.
    Scratch,
    NoMount,
    /// `--mount`: one specification per line (a specification has commas).
    Mount,
    App,
    /// A flag rfake does not have: a warning says what to do instead.
    Unsupported(&'static str),
}

/// One row: Apptainer's keys (after the prefix, as in its
/// `cmd/internal/cli/action_flags.go`), the flag they mirror, what it sets.
#[derive(Debug, Clone, Copy)]
pub struct FlagVar {
    pub keys: &'static [&'static str],
    pub flag: &'static str,
    pub target: Target,
}

impl Target {
    /// Whether the variable is a boolean (the flag is a switch).
    pub fn is_switch(self) -> bool {
        !matches!(
            self,
            Target::Binds
                | Target::Home
                | Target::Pwd
                | Target::EnvFile
                | Target::Hostname
                | Target::Network
                | Target::Workdir
                | Target::Scratch
                | Target::NoMount
                | Target::Mount
                | Target::App
        )
    }
}

const fn row(keys: &'static [&'static str], flag: &'static str, target: Target) -> FlagVar {
    FlagVar { keys, flag, target }
}

/// Every `APPTAINER_<FLAG>` of `exec`, `run` and `shell` that rfake reads.
pub const FLAG_VARS: &[FlagVar] = &[
    row(&["BIND", "BINDPATH"], "--bind", Target::Binds),
    row(&["HOME"], "--home", Target::Home),
    row(&["NO_HOME"], "--no-home", Target::NoHome),
    row(&["CONTAIN"], "--contain", Target::Contain),
    row(&["CONTAINALL"], "--containall", Target::Containall),
    row(&["CLEANENV"], "--cleanenv", Target::Cleanenv),
    row(&["PWD", "TARGET_PWD"], "--pwd", Target::Pwd),
    row(&["CWD", "TARGET_CWD"], "--cwd", Target::Pwd),
    row(
        &["WRITABLE_TMPFS"],
        "--writable-tmpfs",
        Target::WritableTmpfs,
    ),
    row(&["FAKEROOT"], "--fakeroot", Target::Fakeroot),
    row(&["ENV_FILE"], "--env-file", Target::EnvFile),
    row(&["NV"], "--nv", Target::Nv),
    row(
        &["NVCCLI"],
        "--nvccli",
        Target::Unsupported(
            "--nv uses nvidia-container-cli's list of driver files when it is installed",
        ),
    ),
    row(&["ROCM"], "--rocm", Target::Rocm),
    row(&["WRITABLE"], "--writable", Target::Writable),
    row(&["KEEP_PRIVS"], "--keep-privs", Target::KeepPrivs),
    row(&["NO_PRIVS"], "--no-privs", Target::NoPrivs),
    row(&["PID", "UNSHARE_PID"], "--pid", Target::Pid),
    row(&["IPC", "UNSHARE_IPC"], "--ipc", Target::Ipc),
    row(&["UTS", "UNSHARE_UTS"], "--uts", Target::Uts),
    row(&["NET", "UNSHARE_NET"], "--net", Target::Net),
    row(&["USERNS", "UNSHARE_USERNS"], "--userns", Target::Userns),
    row(&["HOSTNAME"], "--hostname", Target::Hostname),
    row(&["NETWORK"], "--network", Target::Network),
    row(&["WORKDIR"], "--workdir", Target::Workdir),
    row(&["SCRATCH", "SCRATCHDIR"], "--scratch", Target::Scratch),
    row(&["NO_MOUNT"], "--no-mount", Target::NoMount),
    row(&["MOUNT"], "--mount", Target::Mount),
    row(&["APP", "APPNAME"], "--app", Target::App),
];

/// Parse a boolean as Go's `strconv.ParseBool` does.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A flag variable found in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagSetting {
    pub var: &'static str,
    pub flag: &'static str,
    pub found: Found,
    pub target: Target,
}

/// Every flag variable set, in table order (binds included).
pub fn flag_settings(env: &[(OsString, OsString)]) -> Vec<FlagSetting> {
    let mut out = Vec::new();
    for row in FLAG_VARS {
        for key in row.keys {
            if let Some(found) = lookup(env, key) {
                out.push(FlagSetting {
                    var: key,
                    flag: row.flag,
                    found,
                    target: row.target,
                });
            }
        }
    }
    out
}

fn text(found: &Found) -> String {
    found.value.to_string_lossy().trim().to_string()
}

fn switch(found: &Found) -> Result<bool, Error> {
    parse_bool(&text(found)).ok_or_else(|| {
        Error::Usage(format!(
            "{}={}: not a boolean (1, t, true or 0, f, false)",
            found.name,
            found.value.to_string_lossy()
        ))
    })
}

/// Apply the flag variables to the parsed command line: a flag given there
/// wins (also over a variable for a flag it conflicts with). Returns what
/// was taken from where, one line each, for `-v`. Binds are not applied
/// here but planned with their own origin ([`bind_vars`]).
pub fn apply_flags(
    mut args: LaunchArgs,
    env: &[(OsString, OsString)],
) -> Result<(LaunchArgs, Vec<String>), Error> {
    let mut notes = Vec::new();
    for s in flag_settings(env) {
        let row_is_switch = s.target.is_switch();
        let on = if row_is_switch {
            switch(&s.found)?
        } else {
            true
        };
        if !on {
            continue;
        }
        let value = text(&s.found);
        let applied = match s.target {
            Target::Binds => false,
            Target::Home if args.home.is_none() && !args.no_home => {
                args.home = Some(value.clone());
                true
            }
            Target::NoHome if !args.no_home && args.home.is_none() => {
                args.no_home = true;
                true
            }
            Target::Contain if !args.contain => {
                args.contain = true;
                true
            }
            Target::Containall if !args.containall => {
                args.containall = true;
                true
            }
            Target::Pid if !args.pid => {
                args.pid = true;
                true
            }
            Target::Ipc if !args.ipc => {
                args.ipc = true;
                true
            }
            Target::Uts if !args.uts => {
                args.uts = true;
                true
            }
            Target::Net if !args.net => {
                args.net = true;
                true
            }
            Target::NoPrivs if !args.no_privs && !args.keep_privs => {
                args.no_privs = true;
                true
            }
            Target::KeepPrivs if !args.keep_privs && !args.no_privs => {
                args.keep_privs = true;
                true
            }
            Target::Userns if !args.userns => {
                args.userns = true;
                true
            }
            Target::Hostname if args.hostname.is_none() => {
                args.hostname = Some(value.clone());
                true
            }
            Target::Network if args.network.is_none() => {
                args.network = Some(value.clone());
                true
            }
            Target::Workdir if args.workdir.is_none() => {
                args.workdir = Some(value.clone().into());
                true
            }
            Target::Scratch if args.scratch.is_empty() => {
                args.scratch.push(value.clone());
                true
            }
            Target::NoMount if args.no_mount.is_empty() => {
                args.no_mount.push(value.clone());
                true
            }
            Target::Mount if args.mounts.is_empty() => {
                args.mounts.extend(
                    value
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(String::from),
                );
                true
            }
            Target::App if args.app.is_none() => {
                args.app = Some(value.clone());
                true
            }
            Target::Cleanenv if !args.cleanenv => {
                args.cleanenv = true;
                true
            }
            Target::Pwd if args.pwd.is_none() => {
                args.pwd = Some(value.clone().into());
                true
            }
            Target::WritableTmpfs if args.writable_tmpfs.is_none() => {
                args.writable_tmpfs = Some(String::new());
                true
            }
            Target::Fakeroot if !args.fakeroot && !args.keep_id => {
                args.fakeroot = true;
                true
            }
            Target::Writable if !args.writable => {
                args.writable = true;
                true
            }
            Target::Nv if !args.nv => {
                args.nv = true;
                true
            }
            Target::Rocm if !args.rocm => {
                args.rocm = true;
                true
            }
            Target::EnvFile if args.env_files.is_empty() => {
                args.env_files.push(value.clone().into());
                true
            }
            Target::Unsupported(advice) => {
                log::warn!(
                    "{} is set, but rfake has no {}: {advice}; ignored",
                    s.found.name,
                    s.flag
                );
                false
            }
            _ => {
                notes.push(format!(
                    "{} ignored: the command line already decides {}",
                    s.found.name, s.flag
                ));
                false
            }
        };
        if applied {
            let shown = if row_is_switch {
                s.flag.to_string()
            } else {
                format!("{} {value}", s.flag)
            };
            notes.push(format!("{shown} (from {})", s.found.name));
        }
    }
    Ok((args, notes))
}

/// The bind variables in the order their binds are mounted (a later one
/// wins at the same destination): `APPTAINER_BIND` (else
/// `SINGULARITY_BIND`), `APPTAINER_BINDPATH` (else `SINGULARITY_BINDPATH`),
/// then `RFAKE_BIND`; `--bind` comes after all of them.
pub fn bind_vars(env: &[(OsString, OsString)]) -> Vec<Found> {
    let mut out: Vec<Found> = flag_settings(env)
        .into_iter()
        .filter(|s| s.target == Target::Binds)
        .map(|s| s.found)
        .collect();
    // An empty RFAKE_BIND is as good as unset; an empty -B is an error.
    if let Some(v) = super::get(env, "RFAKE_BIND").filter(|v| !v.is_empty()) {
        out.push(Found {
            name: "RFAKE_BIND".into(),
            value: v.to_owned(),
        });
    }
    out
}

/// Names inside that `APPTAINERENV_` may not set (Apptainer refuses them
/// too: the home is the container's, `PATH` has its own rule).
const NOT_SETTABLE: [&str; 1] = ["HOME"];

/// `APPTAINERENV_NAME` (else `SINGULARITYENV_NAME`) as overrides, in the
/// host's order: step 3, before `RFAKE_ENV_NAME`.
pub fn env_overrides(host: &[(OsString, OsString)]) -> Vec<Override> {
    let mut out: Vec<Override> = Vec::new();
    for prefix in ENV_PREFIXES {
        for (k, v) in host {
            let Some(name) = k.to_str().and_then(|k| k.strip_prefix(prefix)) else {
                continue;
            };
            if !valid_name(name) {
                continue;
            }
            if NOT_SETTABLE.contains(&name) {
                log::warn!("{prefix}{name}: setting {name} this way is not permitted; ignored");
                continue;
            }
            if let Some(first) = out.iter().find(|o| o.name == name) {
                // APPTAINERENV_ came first and wins.
                if first.value != *v {
                    log::warn!(
                        "{prefix}{name} and {} have different values, using {}",
                        first.origin,
                        first.origin
                    );
                }
                continue;
            }
            out.push(Override {
                name: name.to_string(),
                value: v.clone(),
                origin: format!("{prefix}{name}"),
            });
        }
    }
    out
}

/// Whether a host variable belongs to Apptainer's configuration (never
/// passed into the container as it is).
pub fn is_apptainer_var(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    PREFIXES
        .iter()
        .chain(ENV_PREFIXES.iter())
        .any(|p| bytes.starts_with(p.as_bytes()))
}

/// Whether an override's value is expanded inside, as Apptainer evaluates
/// `APPTAINERENV_` values (rfake's own `RFAKE_ENV_`, `--env` and env-file
/// values stay literal).
pub fn evaluated(o: &Override) -> bool {
    ENV_PREFIXES.iter().any(|p| o.origin.starts_with(p))
}

/// Expand `$NAME` and `${NAME}` from `env` (unset: empty), and `\$`, `\\`,
/// `` \` ``, `\"` to the character, as a double-quoted shell word does; any
/// other `$` (a command substitution, `$1`) is kept as written.
pub fn expand(value: &OsStr, env: &[(OsString, OsString)]) -> OsString {
    let Some(text) = value.to_str() else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match c {
            '\\' => {
                let next = rest[1..].chars().next();
                match next {
                    Some(n @ ('$' | '\\' | '`' | '"')) => {
                        out.push(n);
                        rest = &rest[2..];
                    }
                    _ => {
                        out.push('\\');
                        rest = &rest[1..];
                    }
                }
            }
            '$' => {
                let after = &rest[1..];
                let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                    match braced.find('}') {
                        Some(end) if valid_name(&braced[..end]) => (&braced[..end], end + 2),
                        _ => ("", 0),
                    }
                } else {
                    let end = after
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    if valid_name(&after[..end]) {
                        (&after[..end], end)
                    } else {
                        ("", 0)
                    }
                };
                if len == 0 {
                    out.push('$');
                    rest = after;
                } else {
                    if let Some(v) = super::get(env, name) {
                        out.push_str(&v.to_string_lossy());
                    }
                    rest = &after[len..];
                }
            }
            c => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out.into()
}

/// What `rfake config` adds: the variables in effect, each with its name
/// (nothing when none is set).
pub fn describe(env: &[(OsString, OsString)]) -> String {
    let mut lines = Vec::new();
    for b in bind_vars(env) {
        lines.push(format!(
            "# binds: {} ({})",
            b.value.to_string_lossy(),
            b.name
        ));
    }
    for s in flag_settings(env) {
        if s.target == Target::Binds {
            continue;
        }
        let value = s.found.value.to_string_lossy();
        let what = match s.target {
            Target::Unsupported(advice) => format!("{}: not in rfake, ignored ({advice})", s.flag),
            t if !t.is_switch() => format!("{} {value}", s.flag),
            _ => match parse_bool(value.trim()) {
                Some(true) => s.flag.to_string(),
                Some(false) => format!("{}: off", s.flag),
                None => format!("{}: not a boolean, refused by exec/run/shell", s.flag),
            },
        };
        lines.push(format!("# {what} ({}={value})", s.found.name));
    }
    for (rfake_name, key, what) in [
        ("RFAKE_CACHEDIR", "CACHEDIR", "cache_dir"),
        ("RFAKE_TMPDIR", "TMPDIR", "build --tmpdir"),
    ] {
        if let Some(f) = rfake_or_apptainer(env, rfake_name, key) {
            let value = f.value.to_string_lossy();
            let value = if f.name == rfake_name || key != "CACHEDIR" {
                value.into_owned()
            } else {
                format!("{value}/rfake")
            };
            lines.push(format!("# {what}: {value} ({})", f.name));
        }
    }
    for o in env_overrides(env) {
        lines.push(format!(
            "# inside: {}={} ({})",
            o.name,
            o.value.to_string_lossy(),
            o.origin
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# environment (exec, run, shell: the command line wins; RFAKE_ names over APPTAINER_ over SINGULARITY_):\n",
    );
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn e(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn launch_args(cli: &[&str]) -> LaunchArgs {
        let mut argv = vec!["rfake", "exec"];
        argv.extend(cli);
        argv.extend(["img", "true"]);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Commands::Exec { launch, .. } => launch,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn apptainer_prefix_wins_over_singularity() {
        let env = e(&[("SINGULARITY_CONTAIN", "0"), ("APPTAINER_CONTAIN", "1")]);
        assert_eq!(lookup(&env, "CONTAIN").unwrap().name, "APPTAINER_CONTAIN");
        let env = e(&[("SINGULARITY_CONTAIN", "1"), ("APPTAINER_CONTAIN", " ")]);
        assert_eq!(lookup(&env, "CONTAIN").unwrap().name, "SINGULARITY_CONTAIN");
        assert_eq!(lookup(&e(&[]), "CONTAIN"), None);
    }

    #[test]
    fn every_row_has_keys_and_a_flag() {
        for row in FLAG_VARS {
            assert!(
                !row.keys.is_empty() && row.flag.starts_with("--"),
                "{row:?}"
            );
            for k in row.keys {
                assert!(valid_name(k) && k.to_ascii_uppercase() == *k, "{k}");
            }
        }
    }

    #[test]
    fn flags_from_variables_and_the_command_line_wins() {
        let env = e(&[
            ("APPTAINER_CONTAIN", "true"),
            ("SINGULARITY_CLEANENV", "1"),
            ("APPTAINER_WRITABLE_TMPFS", "0"),
            ("APPTAINER_PWD", "/opt"),
            ("APPTAINER_HOME", "/h"),
        ]);
        let (args, notes) = apply_flags(launch_args(&[]), &env).unwrap();
        assert!(args.contain && args.cleanenv && args.writable_tmpfs.is_none());
        assert_eq!(args.pwd.as_deref(), Some(std::path::Path::new("/opt")));
        assert_eq!(args.home.as_deref(), Some("/h"));
        assert!(notes.contains(&"--contain (from APPTAINER_CONTAIN)".to_string()));
        assert!(notes.contains(&"--pwd /opt (from APPTAINER_PWD)".to_string()));
        // Flags given win, and so do flags that conflict.
        let (args, _) = apply_flags(launch_args(&["--pwd", "/cli", "--no-home"]), &env).unwrap();
        assert_eq!(args.pwd.as_deref(), Some(std::path::Path::new("/cli")));
        assert_eq!(args.home, None);
        let env = e(&[("APPTAINER_NO_HOME", "1"), ("APPTAINER_FAKEROOT", "1")]);
        let (args, _) = apply_flags(launch_args(&["--home", "/x", "--keep-id"]), &env).unwrap();
        assert!(!args.no_home && !args.fakeroot && args.keep_id);
        // --cwd's variable sets the same as --pwd's.
        let (args, _) = apply_flags(launch_args(&[]), &e(&[("APPTAINER_CWD", "/w")])).unwrap();
        assert_eq!(args.pwd.as_deref(), Some(std::path::Path::new("/w")));
        // Containall is --containall (contain, cleanenv, PID and IPC).
        let (args, _) =
            apply_flags(launch_args(&[]), &e(&[("SINGULARITY_CONTAINALL", "t")])).unwrap();
        assert!(args.containall);
        // The namespace, mount and privilege flags.
        let env = e(&[
            ("APPTAINER_UNSHARE_PID", "1"),
            ("APPTAINER_IPC", "true"),
            ("APPTAINER_HOSTNAME", "node"),
            ("APPTAINER_NETWORK", "none"),
            ("APPTAINER_WORKDIR", "/w"),
            ("APPTAINER_SCRATCH", "/s1,/s2"),
            ("APPTAINER_NO_MOUNT", "tmp,cwd"),
            (
                "APPTAINER_MOUNT",
                "type=bind,src=/a,dst=/b\ntype=bind,src=/c,dst=/d,ro",
            ),
            ("APPTAINER_NO_PRIVS", "1"),
        ]);
        let (args, _) = apply_flags(launch_args(&[]), &env).unwrap();
        assert!(args.pid && args.ipc && args.no_privs && !args.uts);
        assert_eq!(args.hostname.as_deref(), Some("node"));
        assert_eq!(args.network.as_deref(), Some("none"));
        assert_eq!(args.workdir.as_deref(), Some(std::path::Path::new("/w")));
        assert_eq!(args.scratch, ["/s1,/s2"]);
        assert_eq!(args.no_mount, ["tmp,cwd"]);
        assert_eq!(
            args.mounts,
            ["type=bind,src=/a,dst=/b", "type=bind,src=/c,dst=/d,ro"]
        );
        // The command line wins.
        let (args, _) = apply_flags(launch_args(&["--hostname", "cli"]), &env).unwrap();
        assert_eq!(args.hostname.as_deref(), Some("cli"));
    }

    #[test]
    fn a_bad_boolean_is_a_usage_error_naming_the_variable() {
        let err = apply_flags(launch_args(&[]), &e(&[("APPTAINER_CONTAIN", "yes")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "APPTAINER_CONTAIN=yes: not a boolean (1, t, true or 0, f, false)"
        );
        assert_eq!(err.exit_kind(), crate::exit::ExitKind::Usage);
        // An unsupported one only warns.
        let (args, notes) =
            apply_flags(launch_args(&[]), &e(&[("APPTAINER_NVCCLI", "1")])).unwrap();
        assert!(notes.is_empty() && !args.contain && !args.nv);
        // APPTAINER_WRITABLE is --writable (a SIF's overlay partition).
        let (args, _) = apply_flags(launch_args(&[]), &e(&[("APPTAINER_WRITABLE", "1")])).unwrap();
        assert!(args.writable && args.writable_tmpfs.is_none());
        // APPTAINER_NV and APPTAINER_ROCM are --nv and --rocm.
        let (args, _) = apply_flags(
            launch_args(&[]),
            &e(&[("APPTAINER_NV", "1"), ("SINGULARITY_ROCM", "true")]),
        )
        .unwrap();
        assert!(args.nv && args.rocm);
    }

    #[test]
    fn bind_variables_in_mount_order() {
        let env = e(&[
            ("RFAKE_BIND", "/r"),
            ("SINGULARITY_BINDPATH", "/sp"),
            ("APPTAINER_BIND", "/a"),
            ("SINGULARITY_BIND", "/s"),
        ]);
        let names: Vec<String> = bind_vars(&env).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["APPTAINER_BIND", "SINGULARITY_BINDPATH", "RFAKE_BIND"]
        );
    }

    #[test]
    fn env_overrides_apptainer_first_home_refused() {
        let env = e(&[
            ("SINGULARITYENV_FOO", "s"),
            ("APPTAINERENV_FOO", "a"),
            ("SINGULARITYENV_BAR", "b"),
            ("APPTAINERENV_HOME", "/x"),
            ("APPTAINERENV_1X", "bad"),
        ]);
        let o = env_overrides(&env);
        let got: Vec<(&str, &str, &str)> = o
            .iter()
            .map(|o| {
                (
                    o.name.as_str(),
                    o.value.to_str().unwrap(),
                    o.origin.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("FOO", "a", "APPTAINERENV_FOO"),
                ("BAR", "b", "SINGULARITYENV_BAR")
            ]
        );
        assert!(evaluated(&o[0]));
    }

    #[test]
    fn expansion_as_a_double_quoted_word() {
        let env = e(&[("PATH", "/bin"), ("X", "x")]);
        let ex = |s: &str| expand(OsStr::new(s), &env).into_string().unwrap();
        assert_eq!(ex("/opt:$PATH"), "/opt:/bin");
        assert_eq!(ex("${X}y$X"), "xyx");
        assert_eq!(ex("$UNSET-"), "-");
        assert_eq!(ex(r"\$PATH \\ \n"), r"$PATH \ \n");
        assert_eq!(ex("$(id) $1 ${bad-} $"), "$(id) $1 ${bad-} $");
        assert_eq!(ex("é$X"), "éx");
    }

    #[test]
    fn apptainer_variables_are_recognized() {
        for name in ["APPTAINER_BIND", "SINGULARITYENV_X", "APPTAINERENV_Y"] {
            assert!(is_apptainer_var(OsStr::new(name)));
        }
        assert!(!is_apptainer_var(OsStr::new("APPTAINERX")));
    }
}
