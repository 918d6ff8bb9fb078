//! The payload's environment, built in a documented order (each later step
//! overrides the earlier ones; see `docs/user-guide.md`, "Environment"):
//!
//! 1. the host's environment (HPC convention: `SLURM_*`, `PMI*`, `OMPI_*`,
//!    `UCX_*` pass through) minus `LD_LIBRARY_PATH`/`LD_PRELOAD`, or with
//!    `--cleanenv` only `HOME`, `USER`, `TERM`, `LANG`; `HOME` is set to the
//!    home directory inside the container;
//! 2. the image's environment ([`image`]): `/.singularity.d/env/*.sh` run
//!    through the image's `/bin/sh`, or rfake's own static `/.rfake/environment`;
//! 3. `RFAKE_ENV_NAME=value` from the host, then `--env-file FILE`, then
//!    `--env NAME=value`;
//! 4. `PATH` completed with the standard directories, `PS1="rfake> "`,
//!    `RFAKE_CONTAINER` (the image path) and `RFAKE_NAME` (its file name).

pub mod image;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// An environment: ordered `NAME=value` pairs, later entries winning.
pub type EnvList = Vec<(OsString, OsString)>;

/// Directories every container PATH contains, appended when missing.
pub const STANDARD_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Host variables that name host libraries: they never enter the container.
const DROPPED: [&str; 2] = ["LD_LIBRARY_PATH", "LD_PRELOAD"];
/// What `--cleanenv` keeps from the host: the basics, and the scheduler's
/// GPU binding (which GPUs of the node this job or rank may use): that
/// describes the allocation, not the user's environment, and without it a
/// CUDA or ROCm program would pick GPUs that belong to other jobs.
const CLEANENV_KEEP: [&str; 9] = [
    "HOME",
    "USER",
    "TERM",
    "LANG",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "SLURM_STEP_GPUS",
    "SLURM_JOB_GPUS",
];
/// Host variables that set a container variable: `RFAKE_ENV_NAME=value`.
pub const ENV_PREFIX: &str = "RFAKE_ENV_";
/// The prompt of interactive shells.
pub const PS1: &str = "rfake> ";

/// Look a variable up (the last definition wins).
pub fn get<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_os_str())
}

/// Set `name` to `value`, replacing any earlier definition.
pub fn set(env: &mut EnvList, name: impl Into<OsString>, value: impl Into<OsString>) {
    let name = name.into();
    env.retain(|(k, _)| *k != name);
    env.push((name, value.into()));
}

/// Step 1: the base environment from the host's.
pub fn base(host: &[(OsString, OsString)], cleanenv: bool, home: Option<&Path>) -> EnvList {
    let mut env: EnvList = host
        .iter()
        .filter(|(k, _)| {
            if cleanenv {
                CLEANENV_KEEP.iter().any(|keep| k == keep)
            } else {
                !DROPPED.iter().any(|d| k == d)
                    && !k.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes())
                    && k != "RFAKE_CONTAINER"
                    && k != "RFAKE_NAME"
            }
        })
        .cloned()
        .collect();
    if let Some(home) = home {
        set(&mut env, "HOME", home.as_os_str());
    }
    env
}

/// A `NAME=value` setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub value: OsString,
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{origin}: '{text}' is not NAME=value with a valid variable name")]
    Malformed { origin: String, text: String },
    #[error("{}: cannot read: {reason}", crate::text::shown(path))]
    Unreadable { path: PathBuf, reason: String },
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parse one `NAME=value`.
pub fn parse_assignment(text: &str, origin: &str) -> Result<Override, EnvError> {
    match text.split_once('=') {
        Some((name, value)) if valid_name(name) => Ok(Override {
            name: name.to_string(),
            value: value.into(),
            origin: origin.to_string(),
        }),
        _ => Err(EnvError::Malformed {
            origin: origin.to_string(),
            text: text.to_string(),
        }),
    }
}

/// Parse an env file: `NAME=value` lines, `#` comments and blank lines,
/// an optional leading `export `; values taken literally (no quoting rules
/// beyond stripping one pair of matching surrounding quotes).
pub fn parse_env_file(path: &Path, text: &str) -> Result<Vec<Override>, EnvError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let origin = format!("{}:{}", path.display(), i + 1);
        let mut o = parse_assignment(line, &origin)?;
        let v = o.value.to_string_lossy().into_owned();
        for q in ['"', '\''] {
            if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
                o.value = v[1..v.len() - 1].into();
            }
        }
        out.push(o);
    }
    Ok(out)
}

/// Step 3's host part: `RFAKE_ENV_NAME=value` becomes `NAME=value`.
pub fn host_overrides(host: &[(OsString, OsString)]) -> Vec<Override> {
    host.iter()
        .filter_map(|(k, v)| {
            let name = k.to_str()?.strip_prefix(ENV_PREFIX)?;
            valid_name(name).then(|| Override {
                name: name.to_string(),
                value: v.clone(),
                origin: format!("{ENV_PREFIX}{name}"),
            })
        })
        .collect()
}

/// Step 3: apply the overrides in order.
pub fn apply(env: &mut EnvList, overrides: &[Override]) {
    for o in overrides {
        set(env, o.name.as_str(), o.value.clone());
    }
}

/// Step 4: the variables rfake always sets.
pub fn finish(env: &mut EnvList, image: &Path) {
    let path = with_standard_dirs(get(env, "PATH"));
    set(env, "PATH", path);
    set(env, "PS1", PS1);
    set(env, "RFAKE_CONTAINER", image.as_os_str());
    let name = image
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| image.as_os_str().to_owned());
    set(env, "RFAKE_NAME", name);
}

/// `path` followed by every standard directory it lacks.
pub fn with_standard_dirs(path: Option<&OsStr>) -> OsString {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.retain(|d| !d.as_os_str().is_empty());
    for std_dir in STANDARD_PATH {
        if !dirs.iter().any(|d| d == Path::new(std_dir)) {
            dirs.push(std_dir.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| STANDARD_PATH.join(":").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str) -> (OsString, OsString) {
        (k.into(), v.into())
    }

    fn host() -> EnvList {
        vec![
            e("LD_LIBRARY_PATH", "/opt/lib"),
            e("LD_PRELOAD", "x.so"),
            e("SLURM_JOB_ID", "7"),
            e("OMPI_COMM_WORLD_RANK", "0"),
            e("PATH", "/opt/bin:/usr/bin"),
            e("HOME", "/home/u"),
            e("USER", "u"),
            e("TERM", "xterm"),
            e("RFAKE_ENV_FOO", "bar"),
            e("RFAKE_CONTAINER", "/stale"),
        ]
    }

    #[test]
    fn step1_host_minus_libraries() {
        let env = base(&host(), false, Some(Path::new("/home/u")));
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), None);
        assert_eq!(get(&env, "LD_PRELOAD"), None);
        assert_eq!(get(&env, "SLURM_JOB_ID"), Some(OsStr::new("7")));
        assert_eq!(get(&env, "OMPI_COMM_WORLD_RANK"), Some(OsStr::new("0")));
        assert_eq!(get(&env, "RFAKE_ENV_FOO"), None);
        assert_eq!(get(&env, "RFAKE_CONTAINER"), None);
    }

    #[test]
    fn step1_cleanenv_keeps_four() {
        let env = base(&host(), true, Some(Path::new("/root")));
        let names: Vec<&str> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["USER", "TERM", "HOME"]);
        assert_eq!(get(&env, "HOME"), Some(OsStr::new("/root")));
    }

    #[test]
    fn step3_order_and_parsing() {
        let mut env = base(&host(), false, None);
        let mut o = host_overrides(&host());
        let file = parse_env_file(
            Path::new("/f.env"),
            "# c\n\nexport FOO=file\nBAR=\"quoted value\"\n",
        )
        .unwrap();
        o.extend(file);
        o.push(parse_assignment("FOO=cli", "--env").unwrap());
        apply(&mut env, &o);
        assert_eq!(get(&env, "FOO"), Some(OsStr::new("cli")));
        assert_eq!(get(&env, "BAR"), Some(OsStr::new("quoted value")));
        assert!(parse_assignment("1X=y", "--env").is_err());
        assert!(parse_assignment("novalue", "--env").is_err());
        let err = parse_env_file(Path::new("/f.env"), "OK=1\nbad line\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/f.env:2: 'bad line' is not NAME=value with a valid variable name"
        );
    }

    #[test]
    fn step4_always_set() {
        let mut env = vec![e("PATH", "/opt/bin:/usr/bin"), e("PS1", "$ ")];
        finish(&mut env, Path::new("/images/demo.sif"));
        assert_eq!(
            get(&env, "PATH"),
            Some(OsStr::new(
                "/opt/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin"
            ))
        );
        assert_eq!(get(&env, "PS1"), Some(OsStr::new("rfake> ")));
        assert_eq!(
            get(&env, "RFAKE_CONTAINER"),
            Some(OsStr::new("/images/demo.sif"))
        );
        assert_eq!(get(&env, "RFAKE_NAME"), Some(OsStr::new("demo.sif")));
    }

    #[test]
    fn missing_path_gets_the_standard_one() {
        assert_eq!(
            with_standard_dirs(None),
            OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        );
    }
}
