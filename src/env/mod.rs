//! The payload's environment (the full order is documented in
//! `docs/launch.md`; site and image steps come with the configuration work).

use std::ffi::{OsStr, OsString};
use std::path::Path;

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

/// Build the payload's environment from the host's.
pub fn container_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    image: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host
        .into_iter()
        .filter(|(k, _)| !DROPPED.iter().any(|d| k == d))
        .filter(|(k, _)| k != "RFAKE_CONTAINER")
        .collect();
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let path = with_standard_dirs(path.as_deref());
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), path));
    env.push(("RFAKE_CONTAINER".into(), image.as_os_str().to_owned()));
    env
}

/// `path` followed by every standard directory it lacks.
pub fn with_standard_dirs(path: Option<&OsStr>) -> OsString {
    let mut dirs: Vec<std::path::PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for std_dir in STANDARD_PATH {
        if !dirs.iter().any(|d| d == Path::new(std_dir)) {
            dirs.push(std_dir.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| STANDARD_PATH.join(":").into())
}

/// Look a variable up in an environment list.
pub fn get<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_os_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str) -> (OsString, OsString) {
        (k.into(), v.into())
    }

    #[test]
    fn host_libraries_dropped_and_path_completed() {
        let env = container_env(
            vec![
                e("LD_LIBRARY_PATH", "/opt/lib"),
                e("LD_PRELOAD", "x.so"),
                e("SLURM_JOB_ID", "7"),
                e("PATH", "/opt/bin:/usr/bin"),
            ],
            Path::new("/img.sif"),
        );
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), None);
        assert_eq!(get(&env, "LD_PRELOAD"), None);
        assert_eq!(get(&env, "SLURM_JOB_ID"), Some(OsStr::new("7")));
        assert_eq!(
            get(&env, "PATH"),
            Some(OsStr::new(
                "/opt/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin"
            ))
        );
        assert_eq!(get(&env, "RFAKE_CONTAINER"), Some(OsStr::new("/img.sif")));
    }

    #[test]
    fn missing_path_gets_the_standard_one() {
        assert_eq!(
            with_standard_dirs(None),
            OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        );
    }
}
