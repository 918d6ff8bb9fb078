//! Bind profiles: named bundles of host paths and variables in the
//! configuration (`[profiles.NAME]`), applied by `--profile NAME` or
//! `RFAKE_PROFILE`. The "bind model" of host MPI: the site lists once the
//! directories of its Open MPI, UCX/verbs or vendor fabric stack and the
//! variables they need, and users name the bundle instead of copying a
//! long bind list into every job script.
//!
//! ```toml
//! [profiles.host-openmpi]
//! description = "the host's Open MPI 4.1 and PMIx (bind model)"
//! binds = ["/usr/lib/x86_64-linux-gnu/openmpi:/opt/host/openmpi:ro"]
//! library_path = ["/opt/host/openmpi/lib"]   # put first on LD_LIBRARY_PATH inside
//! path = ["/opt/host/openmpi/bin"]           # put first on PATH inside
//! env = { OMPI_MCA_pml = "ucx" }
//! ```
//!
//! A profile's binds are checked like `binds` when the file is read (exit
//! 78); its `library_path` and `path` are directories inside the container.
//! A user file may define profiles only where user binds are allowed; a
//! user's profile replaces the site's of the same name.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml::de::DeValue;

use super::values::{At, check_bind, found, string, strings};
use super::{ConfigError, Setting};
use crate::launch::settings::Sourced;

/// The longest profile name.
const NAME_MAX: usize = 64;

/// The keys a profile may have.
const PROFILE_KEYS: [&str; 5] = ["description", "binds", "env", "library_path", "path"];

/// One profile, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// `SRC[:DST[:ro|rw]]`, `$NAME` expanded (as `binds`' `spec`).
    pub binds: Vec<String>,
    /// `NAME = value`, set after the image's environment and before the
    /// user's `RFAKE_ENV_*`, `--env-file` and `--env`.
    pub env: Vec<(String, String)>,
    /// Directories inside, put first on `LD_LIBRARY_PATH`.
    pub library_path: Vec<PathBuf>,
    /// Directories inside, put first on `PATH`.
    pub path: Vec<PathBuf>,
}

/// Whether `name` may name a profile: letters, digits, `_`, `-`, not
/// starting with `-`, at most [`NAME_MAX`] bytes: a TOML bare key (so
/// `rfake config` writes `[profiles.NAME]` as is) that fits in
/// `--profile a,b` lists and messages.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Check the `profiles` table and add its profiles to `into` (a profile of
/// the same name is replaced).
pub(super) fn apply(
    into: &mut Vec<Setting<Profile>>,
    value: &Spanned<DeValue>,
    at: &At,
    env: &[(OsString, OsString)],
) -> Result<(), ConfigError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(at.error(format!(
            "expected a table of profiles ([profiles.NAME]), found {}",
            found(value.get_ref())
        )));
    };
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (name, body) in entries {
        let line = at.line_of(name.span().start);
        let name = name.get_ref().as_ref();
        if !valid_name(name) {
            return Err(at.error_on(
                line,
                format!(
                    "profile name {:?}: letters, digits, '_' and '-', not \
                     starting with '-' (at most {NAME_MAX})",
                    crate::text::one_line(name)
                ),
            ));
        }
        let profile = parse_one(name, body, at, line, env)?;
        into.retain(|p| p.value.name != name);
        into.push(Setting {
            value: profile,
            origin: at.origin(line),
        });
    }
    Ok(())
}

fn parse_one(
    name: &str,
    body: &Spanned<DeValue>,
    at: &At,
    line: usize,
    env: &[(OsString, OsString)],
) -> Result<Profile, ConfigError> {
    let DeValue::Table(table) = body.get_ref() else {
        return Err(at.error_on(
            line,
            format!(
                "profiles.{name}: expected a table, found {}",
                found(body.get_ref())
            ),
        ));
    };
    let mut profile = Profile {
        name: name.to_string(),
        ..Profile::default()
    };
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let key_line = at.line_of(key.span().start);
        let key = key.get_ref().as_ref();
        let full = format!("profiles.{name}.{key}");
        let sub = At {
            path: at.path,
            text: at.text,
            role: at.role,
            key: &full,
            line: key_line,
        };
        match key {
            "description" => {
                profile.description = string(value, &sub, "one line of text")?.to_string();
            }
            "binds" => {
                for (written, line) in strings(value, &sub)? {
                    let spec = check_bind(written, env).map_err(|p| sub.error_on(line, p))?;
                    profile.binds.push(spec);
                }
            }
            "library_path" | "path" => {
                let mut dirs = Vec::new();
                for (dir, line) in strings(value, &sub)? {
                    dirs.push(inside_dir(dir).map_err(|p| sub.error_on(line, p))?);
                }
                if key == "path" {
                    profile.path = dirs;
                } else {
                    profile.library_path = dirs;
                }
            }
            "env" => profile.env = variables(value, &sub)?,
            other => {
                return Err(sub.error(format!(
                    "unknown profile key {:?} (a profile has {})",
                    crate::text::one_line(other),
                    PROFILE_KEYS.join(", ")
                )));
            }
        }
    }
    Ok(profile)
}

/// A directory inside the container: absolute, without `..` or `:`
/// (it goes into a `:`-separated list), normalized.
fn inside_dir(dir: &str) -> Result<PathBuf, String> {
    let path = Path::new(dir);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{dir:?}: a directory inside the container: absolute, without '..'"
        ));
    }
    if dir.contains(':') {
        return Err(format!("{dir:?}: ':' separates list entries"));
    }
    Ok(path.components().collect())
}

/// `env = { NAME = "value", ... }`: variable names, string values.
/// `PATH` and `LD_LIBRARY_PATH` are refused: setting them would drop the
/// image's own entries; `path` and `library_path` put directories first.
fn variables(value: &Spanned<DeValue>, at: &At) -> Result<Vec<(String, String)>, ConfigError> {
    let DeValue::Table(table) = value.get_ref() else {
        return Err(at.error(format!(
            "expected a table of NAME = \"value\", found {}",
            found(value.get_ref())
        )));
    };
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut out = Vec::new();
    for (name, v) in entries {
        let line = at.line_of(name.span().start);
        let name = name.get_ref().as_ref();
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(at.error_on(
                line,
                format!("{:?} is not a variable name", crate::text::one_line(name)),
            ));
        }
        if name == "PATH" || name == "LD_LIBRARY_PATH" {
            let key = if name == "PATH" {
                "path"
            } else {
                "library_path"
            };
            return Err(at.error_on(
                line,
                format!(
                    "{name}: would replace the image's own; list the directories in \
                     `{key}` to put them first"
                ),
            ));
        }
        match v.get_ref() {
            DeValue::String(s) => out.push((name.to_string(), s.to_string())),
            other => {
                return Err(at.error_on(
                    line,
                    format!("{name}: expected a string, found {}", found(other)),
                ));
            }
        }
    }
    Ok(out)
}

/// The profiles a launch asked for: `--profile` (repeatable, each a
/// comma-separated list), else `RFAKE_PROFILE`; an empty value asks for
/// none. Each name once, in the order given.
pub fn requested(flags: &[String], env_value: Option<&str>) -> Vec<String> {
    let lists: Vec<&str> = if flags.is_empty() {
        env_value.into_iter().collect()
    } else {
        flags.iter().map(String::as_str).collect()
    };
    let mut names: Vec<String> = Vec::new();
    for name in lists.iter().flat_map(|l| l.split(',')).map(str::trim) {
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Find the profiles named, in order; an unknown name is an error naming
/// the configuration files read and the profiles they define. `from` says
/// where the names came from (`--profile`, `RFAKE_PROFILE`).
pub fn select<'a>(
    defined: &'a [Sourced<Profile>],
    names: &[String],
    from: &str,
    files: &str,
) -> Result<Vec<&'a Sourced<Profile>>, String> {
    names
        .iter()
        .map(|name| {
            defined
                .iter()
                .find(|p| &p.value.name == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = defined.iter().map(|p| p.value.name.as_str()).collect();
                    format!(
                        "{from} {}: no such profile in {files} ({})",
                        crate::text::one_line(name),
                        if known.is_empty() {
                            "it defines none".to_string()
                        } else {
                            format!("defined: {}", known.join(", "))
                        }
                    )
                })
        })
        .collect()
}

impl super::Config {
    /// The configuration files read, for messages: "FILE", "FILE and
    /// FILE", or "no configuration file".
    pub fn files_read(&self) -> String {
        let found: Vec<String> = [&self.site_file, &self.user_file]
            .into_iter()
            .flatten()
            .filter(|f| f.found)
            .map(|f| crate::text::shown(&f.path))
            .collect();
        if found.is_empty() {
            "no configuration file".to_string()
        } else {
            found.join(" and ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Origin};
    use super::*;

    const SITE: &str = "/etc/rfake/rfake.toml";
    const USER: &str = "/home/u/.config/rfake/rfake.toml";

    fn env() -> Vec<(OsString, OsString)> {
        vec![("HOST_MPI".into(), "/opt/mpi".into())]
    }

    fn load(site: &str, user: Option<&str>) -> Result<Config, String> {
        Config::from_strs(
            Some((Path::new(SITE), site)),
            user.map(|u| (Path::new(USER), u)),
            &env(),
        )
        .map_err(|e| {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "one line: {msg}");
            msg
        })
    }

    const OPENMPI: &str = r#"
[profiles.host-openmpi]
description = "host Open MPI"
binds = ["$HOST_MPI/lib:/opt/host/lib:ro", "/dev/infiniband"]
library_path = ["/opt/host/lib/"]
path = ["/opt/host/bin"]
env = { OMPI_MCA_pml = "ucx", UCX_TLS = "rc,sm" }
"#;

    #[test]
    fn a_profile_is_read_with_its_origin() {
        let c = load(OPENMPI, None).unwrap();
        assert_eq!(c.profiles.len(), 1);
        let p = &c.profiles[0];
        assert_eq!(
            p.origin,
            Origin::Site {
                path: SITE.into(),
                line: 2
            }
        );
        assert_eq!(p.value.name, "host-openmpi");
        assert_eq!(p.value.description, "host Open MPI");
        assert_eq!(
            p.value.binds,
            ["/opt/mpi/lib:/opt/host/lib:ro", "/dev/infiniband"]
        );
        assert_eq!(p.value.library_path, [PathBuf::from("/opt/host/lib")]);
        assert_eq!(p.value.path, [PathBuf::from("/opt/host/bin")]);
        assert_eq!(
            p.value.env,
            [
                ("OMPI_MCA_pml".to_string(), "ucx".to_string()),
                ("UCX_TLS".to_string(), "rc,sm".to_string())
            ]
        );
        // `rfake config` writes it back as TOML that reads the same.
        let again = load(&c.render(), None).unwrap();
        assert_eq!(again.profiles[0].value, p.value);
    }

    #[test]
    fn bad_profiles_are_refused_at_their_line() {
        for (text, want) in [
            (
                "profiles = 1",
                "/etc/rfake/rfake.toml:1: profiles: expected a table of profiles ([profiles.NAME]), found an integer",
            ),
            (
                "[profiles]\nx = 1",
                "/etc/rfake/rfake.toml:2: profiles: profiles.x: expected a table, found an integer",
            ),
            (
                "[profiles.\"a b\"]",
                "/etc/rfake/rfake.toml:1: profiles: profile name \"a b\": letters, digits, '_' and '-', not starting with '-' (at most 64)",
            ),
            (
                "[profiles.a]\nbind = []",
                "/etc/rfake/rfake.toml:2: profiles.a.bind: unknown profile key \"bind\" (a profile has description, binds, env, library_path, path)",
            ),
            (
                "[profiles.a]\nbinds = [\n  \"/x\",\n  \"rel:/y\",\n]",
                "/etc/rfake/rfake.toml:4: profiles.a.binds: ",
            ),
            (
                "[profiles.a]\nlibrary_path = [\"lib\"]",
                "/etc/rfake/rfake.toml:2: profiles.a.library_path: \"lib\": a directory inside the container: absolute, without '..'",
            ),
            (
                "[profiles.a]\npath = [\"/a:/b\"]",
                "/etc/rfake/rfake.toml:2: profiles.a.path: \"/a:/b\": ':' separates list entries",
            ),
            (
                "[profiles.a]\nenv = { LD_LIBRARY_PATH = \"/x\" }",
                "/etc/rfake/rfake.toml:2: profiles.a.env: LD_LIBRARY_PATH: would replace the image's own; list the directories in `library_path` to put them first",
            ),
            (
                "[profiles.a]\nenv = { \"1X\" = \"/x\" }",
                "/etc/rfake/rfake.toml:2: profiles.a.env: \"1X\" is not a variable name",
            ),
            (
                "[profiles.a]\nenv = { X = 1 }",
                "/etc/rfake/rfake.toml:2: profiles.a.env: X: expected a string, found an integer",
            ),
        ] {
            let msg = load(text, None).expect_err(text);
            assert!(msg.starts_with(want), "{text}:\n{msg}\nwanted {want}");
        }
    }

    #[test]
    fn a_user_profile_replaces_the_sites_unless_user_binds_are_off() {
        let user = "[profiles.host-openmpi]\nenv = { A = \"b\" }\n[profiles.mine]\n";
        let c = load(OPENMPI, Some(user)).unwrap();
        let names: Vec<&str> = c.profiles.iter().map(|p| p.value.name.as_str()).collect();
        assert_eq!(names, ["host-openmpi", "mine"]);
        assert!(c.profiles[0].value.binds.is_empty());
        assert!(matches!(c.profiles[0].origin, Origin::User { .. }));
        let site = format!("allow_user_binds = false\n{OPENMPI}");
        let msg = load(&site, Some(user)).unwrap_err();
        assert!(
            msg.starts_with(&format!("{USER}:1: profiles: the site configuration")),
            "{msg}"
        );
        assert!(msg.contains("does not allow user binds"), "{msg}");
    }

    #[test]
    fn requested_names_flag_over_variable() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(requested(&[], Some("a,b")), s(&["a", "b"]));
        assert_eq!(requested(&s(&["c", "a,c"]), Some("a,b")), s(&["c", "a"]));
        assert_eq!(requested(&[], Some("")), s(&[]));
        assert_eq!(requested(&s(&[" a , "]), None), s(&["a"]));
        assert_eq!(requested(&[], None), s(&[]));
    }

    #[test]
    fn unknown_names_list_what_is_defined() {
        let c = load(OPENMPI, None).unwrap();
        let defined: Vec<Sourced<Profile>> = c
            .profiles
            .iter()
            .map(|p| Sourced {
                value: p.value.clone(),
                origin: p.origin.to_string(),
            })
            .collect();
        let got = select(&defined, &["host-openmpi".into()], "--profile", SITE).unwrap();
        assert_eq!(got[0].value.name, "host-openmpi");
        assert_eq!(
            select(&defined, &["nope".into()], "--profile", SITE).unwrap_err(),
            "--profile nope: no such profile in /etc/rfake/rfake.toml (defined: host-openmpi)"
        );
        assert_eq!(
            select(&[], &["x".into()], "RFAKE_PROFILE", "no configuration file").unwrap_err(),
            "RFAKE_PROFILE x: no such profile in no configuration file (it defines none)"
        );
    }
}
