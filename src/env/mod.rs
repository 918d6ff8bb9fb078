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

pub mod apptainer;
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
                    && !apptainer::is_apptainer_var(k)
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

/// Step 3's host part: `APPTAINERENV_NAME=value` (else
/// `SINGULARITYENV_NAME`), then `RFAKE_ENV_NAME=value`, each becomes
/// `NAME=value`.
pub fn host_overrides(host: &[(OsString, OsString)]) -> Vec<Override> {
    let mut out = apptainer::env_overrides(host);
    out.extend(host.iter().filter_map(|(k, v)| {
        let name = k.to_str()?.strip_prefix(ENV_PREFIX)?;
        valid_name(name).then(|| Override {
            name: name.to_string(),
            value: v.clone(),
            origin: format!("{ENV_PREFIX}{name}"),
        })
    }));
    out
}

/// Step 3: apply the overrides in order (`APPTAINERENV_` values expanded
/// against the environment so far). As in Apptainer, `PREPEND_PATH` and
/// `APPEND_PATH` (the last of each) are added to `PATH` rather than set,
/// unless an override sets `PATH` itself, which then wins.
pub fn apply(env: &mut EnvList, overrides: &[Override]) {
    let (mut prepend, mut append, mut path_set) = (None, None, false);
    for o in overrides {
        let value = if apptainer::evaluated(o) {
            apptainer::expand(&o.value, env)
        } else {
            o.value.clone()
        };
        match o.name.as_str() {
            "PREPEND_PATH" => prepend = Some(value),
            "APPEND_PATH" => append = Some(value),
            name => {
                path_set |= name == "PATH";
                set(env, name, value);
            }
        }
    }
    if path_set {
        return;
    }
    let mut path = OsString::new();
    for part in [prepend.as_deref(), get(env, "PATH"), append.as_deref()]
        .into_iter()
        .flatten()
        .filter(|p| !p.is_empty())
    {
        if !path.is_empty() {
            path.push(":");
        }
        path.push(part);
    }
    if prepend.is_some() || append.is_some() {
        set(env, "PATH", path);
    }
}

/// The file Apptainer names in `APPTAINER_ENVIRONMENT`: where a
/// definition's `%post` appends lines for the runtime environment.
pub const APPTAINER_ENVIRONMENT: &str = "/.singularity.d/env/91-environment.sh";

/// Step 4: the variables rfake always sets: `PATH` completed, `PS1` when
/// nothing set one (as Apptainer's action script does), and the image's
/// path and name under rfake's, Apptainer's and Singularity's names.
pub fn finish(env: &mut EnvList, image: &Path) {
    let path = with_standard_dirs(get(env, "PATH"));
    set(env, "PATH", path);
    if get(env, "PS1").is_none_or(OsStr::is_empty) {
        set(env, "PS1", PS1);
    }
    let name = image
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| image.as_os_str().to_owned());
    for prefix in ["RFAKE", "APPTAINER", "SINGULARITY"] {
        set(env, format!("{prefix}_CONTAINER"), image.as_os_str());
        set(env, format!("{prefix}_NAME"), name.clone());
    }
    for prefix in ["APPTAINER", "SINGULARITY"] {
        set(env, format!("{prefix}_ENVIRONMENT"), APPTAINER_ENVIRONMENT);
    }
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
        // An image's (or the user's) prompt stays, as in Apptainer.
        assert_eq!(get(&env, "PS1"), Some(OsStr::new("$ ")));
        assert_eq!(
            get(&env, "APPTAINER_CONTAINER"),
            Some(OsStr::new("/images/demo.sif"))
        );
        assert_eq!(get(&env, "SINGULARITY_NAME"), Some(OsStr::new("demo.sif")));
        assert_eq!(
            get(&env, "APPTAINER_ENVIRONMENT"),
            Some(OsStr::new(APPTAINER_ENVIRONMENT))
        );
        let mut env = vec![e("PS1", "")];
        finish(&mut env, Path::new("/images/demo.sif"));
        assert_eq!(get(&env, "PS1"), Some(OsStr::new("rfake> ")));
        assert_eq!(
            get(&env, "RFAKE_CONTAINER"),
            Some(OsStr::new("/images/demo.sif"))
        );
        assert_eq!(get(&env, "RFAKE_NAME"), Some(OsStr::new("demo.sif")));
    }

    #[test]
    fn prepend_and_append_path_unless_path_is_set() {
        let o = |text: &str, origin: &str| parse_assignment(text, origin).unwrap();
        let mut env = vec![e("PATH", "/usr/bin"), e("X", "x")];
        apply(
            &mut env,
            &[
                o("PREPEND_PATH=/pre", "APPTAINERENV_PREPEND_PATH"),
                o("APPEND_PATH=/app", "--env"),
                o("Y=$X-y", "APPTAINERENV_Y"),
                o("Z=$X", "--env"),
            ],
        );
        assert_eq!(get(&env, "PATH"), Some(OsStr::new("/pre:/usr/bin:/app")));
        assert_eq!(get(&env, "Y"), Some(OsStr::new("x-y")));
        assert_eq!(get(&env, "Z"), Some(OsStr::new("$X")));
        let mut env = vec![e("PATH", "/usr/bin")];
        apply(
            &mut env,
            &[
                o("PATH=/only", "APPTAINERENV_PATH"),
                o("PREPEND_PATH=/pre", "--env"),
            ],
        );
        assert_eq!(get(&env, "PATH"), Some(OsStr::new("/only")));
    }

    #[test]
    fn apptainer_host_variables_do_not_pass() {
        let mut host = host();
        host.push(e("APPTAINER_BIND", "/data"));
        host.push(e("SINGULARITYENV_FOO", "s"));
        host.push(e("APPTAINERENV_FOO", "a"));
        let env = base(&host, false, None);
        assert_eq!(get(&env, "APPTAINER_BIND"), None);
        assert_eq!(get(&env, "APPTAINERENV_FOO"), None);
        // APPTAINERENV_ first, then RFAKE_ENV_ (which wins).
        let o = host_overrides(&host);
        let names: Vec<&str> = o.iter().map(|o| o.origin.as_str()).collect();
        assert_eq!(names, ["APPTAINERENV_FOO", "RFAKE_ENV_FOO"]);
    }

    #[test]
    fn missing_path_gets_the_standard_one() {
        assert_eq!(
            with_standard_dirs(None),
            OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        );
    }
}
