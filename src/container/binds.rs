//! Bind specifications (`SRC[:DST[:ro|rw]]`) and the container's bind list:
//! home, `/tmp`, scratch, the site's binds and the user's, in that order.

use std::path::{Component, Path, PathBuf};

use crate::container::rootfs::{Bind, BindKind, Symlink, Tmpfs};

/// One parsed `SRC[:DST[:ro|rw]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `-B ''`, `-B ' '`, `-B ,`: nothing to bind. Refused rather than
    /// ignored: it is more likely an unset variable than a wish.
    #[error("empty bind specification (expected SRC[:DST[:ro|rw]])")]
    Empty,
    /// `:`, `::ro`, `:/dst`.
    #[error("the source is empty (expected SRC[:DST[:ro|rw]])")]
    EmptySource,
    /// `/src:`: a ':' with nothing after it, likely an unset variable
    /// (`-B /data:$DEST`).
    #[error("the destination after ':' is empty (give SRC alone to bind it at the same path)")]
    EmptyDestination,
    /// `/src::`, `/src:/dst:`.
    #[error("the mode after the second ':' is empty (expected ro or rw)")]
    EmptyMode,
    #[error("{what} '{path}' must be an absolute path")]
    Relative { what: &'static str, path: String },
    #[error("unknown bind mode '{0}' (expected ro or rw)")]
    BadMode(String),
    #[error("too many ':' fields (expected SRC[:DST[:ro|rw]])")]
    TooManyFields,
}

/// A bind specification that was refused, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bind '{}' (from {origin}): {source}", crate::text::one_line(spec))]
pub struct BindError {
    pub spec: String,
    pub origin: String,
    pub source: SpecError,
}

/// Parse one `SRC[:DST[:ro|rw]]`; DST defaults to SRC (`/data`, and
/// `/data::ro` with a mode). Every field that is written must say
/// something: an empty SRC, an empty DST without a mode after it, or an
/// empty mode is refused.
pub fn parse_spec(text: &str) -> Result<BindSpec, SpecError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SpecError::Empty);
    }
    let fields: Vec<&str> = text.split(':').collect();
    if fields.len() > 3 {
        return Err(SpecError::TooManyFields);
    }
    if fields[0].is_empty() {
        return Err(SpecError::EmptySource);
    }
    let src = absolute("source", fields[0])?;
    let dst = match fields.get(1) {
        Some(d) if !d.is_empty() => absolute("destination", d)?,
        Some(_) if fields.len() == 2 => return Err(SpecError::EmptyDestination),
        _ => src.clone(),
    };
    let readonly = match fields.get(2) {
        None | Some(&"rw") => false,
        Some(&"ro") => true,
        Some(&"") => return Err(SpecError::EmptyMode),
        Some(other) => return Err(SpecError::BadMode((*other).to_string())),
    };
    Ok(BindSpec { src, dst, readonly })
}

/// Parse a comma-separated list of specifications (`-B a,b:c:ro`). Empty
/// entries between commas are skipped (`/a,,/b`, `/a,`), but a list with
/// no entry at all (`''`, `' '`, `,`) is refused: [`SpecError::Empty`].
pub fn parse_list(text: &str, origin: &str) -> Result<Vec<BindSpec>, BindError> {
    let error = |spec: &str, source| BindError {
        spec: spec.to_string(),
        origin: origin.to_string(),
        source,
    };
    let specs = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_spec(s).map_err(|source| error(s, source)))
        .collect::<Result<Vec<_>, _>>()?;
    if specs.is_empty() {
        return Err(error(text, SpecError::Empty));
    }
    Ok(specs)
}

fn absolute(what: &'static str, path: &str) -> Result<PathBuf, SpecError> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(normalize(p))
    } else {
        Err(SpecError::Relative {
            what,
            path: path.to_string(),
        })
    }
}

/// Lexically clean `//`, `.` and trailing `/` (not `..`: it is resolved
/// later, inside the root, where climbing out is refused).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            _ => {}
        }
    }
    out
}

/// `path` is `dir` or below it, on whole components.
pub fn is_within(path: &Path, dir: &Path) -> bool {
    normalize(path).starts_with(normalize(dir))
}

/// What to do about the user's home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// Bind host `src` at `dst` (the default: `$HOME` at the same path).
    Bind { src: PathBuf, dst: PathBuf },
    /// No home from the host (`--no-home`).
    None,
    /// A private, empty tmpfs at `dst` (`--contain`).
    Private { dst: PathBuf },
}

impl Home {
    /// The home directory inside the container, if any.
    pub fn dst(&self) -> Option<&Path> {
        match self {
            Home::Bind { dst, .. } | Home::Private { dst } => Some(dst),
            Home::None => None,
        }
    }
}

/// Everything that decides the bind list, already validated.
#[derive(Debug, Clone)]
pub struct BindInputs {
    pub home: Home,
    /// Bind the host's `/tmp` (else a private tmpfs).
    pub host_tmp: bool,
    /// Why `/tmp` is private when it is ("--contain", "mount_tmp = false in FILE").
    pub private_tmp_origin: String,
    /// Existing scratch directories with their origin.
    pub scratch: Vec<(PathBuf, String)>,
    /// Site and user binds, in order, with their origin.
    pub extra: Vec<(BindSpec, String)>,
}

/// The container's binds and private tmpfs mounts, in mount order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Bind(Bind),
    Tmpfs(Tmpfs),
    Symlink(Symlink),
}

#[cfg(test)]
impl Mount {
    pub fn dst(&self) -> &Path {
        match self {
            Mount::Bind(b) => &b.dst,
            Mount::Tmpfs(t) => &t.dst,
            Mount::Symlink(l) => &l.link,
        }
    }
}

fn system_dir(path: &str, allow_devices: bool) -> Bind {
    Bind {
        src: path.into(),
        dst: path.into(),
        kind: BindKind::Dir,
        readonly: false,
        allow_devices,
        optional: false,
        create: true,
        origin: "default".into(),
    }
}

fn host_file(path: &str) -> Bind {
    Bind {
        kind: BindKind::File,
        optional: true,
        create: false,
        ..system_dir(path, false)
    }
}

/// The mounts every container gets, then the site's and the user's, in
/// order. Private tmpfs mounts belong to root of the outer namespace, which
/// is the user (also inside an inner namespace).
pub fn container_mounts(inputs: &BindInputs) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = vec![
        Mount::Bind(system_dir("/proc", false)),
        Mount::Bind(system_dir("/sys", false)),
        // /dev keeps its device nodes usable; /dev/shm (shared by MPI
        // ranks) and /dev/pts come along as submounts.
        Mount::Bind(system_dir("/dev", true)),
    ];
    if inputs.host_tmp {
        mounts.push(Mount::Bind(system_dir("/tmp", false)));
    } else {
        mounts.push(Mount::Tmpfs(Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
            origin: inputs.private_tmp_origin.clone(),
        }));
    }
    mounts.push(Mount::Bind(host_file("/etc/resolv.conf")));
    mounts.push(Mount::Bind(host_file("/etc/hosts")));
    match &inputs.home {
        Home::Bind { src, dst } => mounts.push(Mount::Bind(Bind {
            src: src.clone(),
            dst: dst.clone(),
            origin: "home".into(),
            ..system_dir("/", false)
        })),
        Home::Private { dst } => mounts.push(Mount::Tmpfs(Tmpfs {
            dst: dst.clone(),
            mode: 0o700,
            origin: "--contain".into(),
        })),
        Home::None => {}
    }
    for (dir, origin) in &inputs.scratch {
        mounts.push(Mount::Bind(Bind {
            src: dir.clone(),
            dst: dir.clone(),
            origin: origin.clone(),
            ..system_dir("/", false)
        }));
    }
    for (spec, origin) in &inputs.extra {
        mounts.push(Mount::Bind(Bind {
            src: spec.src.clone(),
            dst: spec.dst.clone(),
            kind: BindKind::AsSource,
            readonly: spec.readonly,
            allow_devices: false,
            optional: false,
            create: true,
            origin: origin.clone(),
        }));
    }
    mounts
}

/// Where the payload starts: `--pwd`, else the host's working directory
/// when a host directory bound at the same path contains it, else home.
/// The second value says why, for the warning when it is not the cwd.
pub fn start_dir(
    pwd: Option<&Path>,
    host_cwd: &Path,
    mounts: &[Mount],
    home: &Home,
) -> (PathBuf, Option<String>) {
    if let Some(p) = pwd {
        return (normalize(p), None);
    }
    let visible = mounts.iter().any(|m| match m {
        Mount::Bind(b) => b.kind != BindKind::File && b.src == b.dst && is_within(host_cwd, &b.src),
        Mount::Tmpfs(_) | Mount::Symlink(_) => false,
    });
    if visible {
        return (host_cwd.to_path_buf(), None);
    }
    let fallback = home
        .dst()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "/".into());
    let why = if fallback == host_cwd {
        format!(
            "starting in {}: the private home directory, not the host's",
            fallback.display()
        )
    } else {
        format!(
            "the current directory {} is not bound into the container; starting in {}",
            host_cwd.display(),
            fallback.display()
        )
    };
    (fallback, Some(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_table() {
        let ok = |s: &str, src: &str, dst: &str, ro: bool| {
            assert_eq!(
                parse_spec(s),
                Ok(BindSpec {
                    src: src.into(),
                    dst: dst.into(),
                    readonly: ro
                }),
                "{s}"
            )
        };
        ok("/data", "/data", "/data", false);
        ok("/data/", "/data", "/data", false);
        ok("//data//x/", "/data/x", "/data/x", false);
        ok("/data:/mnt", "/data", "/mnt", false);
        ok("/data:/mnt:ro", "/data", "/mnt", true);
        ok("/data:/mnt:rw", "/data", "/mnt", false);
        ok("/data::ro", "/data", "/data", true);
        ok(" /data ", "/data", "/data", false);
        ok("/a/./b", "/a/b", "/a/b", false);
        let err = |s: &str, e: SpecError| assert_eq!(parse_spec(s), Err(e), "{s}");
        err("", SpecError::Empty);
        err("  ", SpecError::Empty);
        err(":", SpecError::EmptySource);
        err("::", SpecError::EmptySource);
        err("::ro", SpecError::EmptySource);
        err(":/dst", SpecError::EmptySource);
        err(":/dst:ro", SpecError::EmptySource);
        err("/data:", SpecError::EmptyDestination);
        err(" /data: ", SpecError::EmptyDestination);
        err("/data::", SpecError::EmptyMode);
        err("/data:/mnt:", SpecError::EmptyMode);
        err("/data:::", SpecError::TooManyFields);
        err(
            "data",
            SpecError::Relative {
                what: "source",
                path: "data".into(),
            },
        );
        err(
            "/data:mnt",
            SpecError::Relative {
                what: "destination",
                path: "mnt".into(),
            },
        );
        err("/data:/mnt:rx", SpecError::BadMode("rx".into()));
        err("/a:/b:ro:x", SpecError::TooManyFields);
    }

    #[test]
    fn lists_are_comma_separated_and_errors_name_the_origin() {
        let l = parse_list("/a,/b:/c:ro,", "--bind").unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[1].readonly);
        let e = parse_list("/a,b", "RFAKE_BIND").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bind 'b' (from RFAKE_BIND): source 'b' must be an absolute path"
        );
        assert_eq!(parse_list("/a,,/b", "--bind").unwrap().len(), 2);
    }

    /// A `-B` value with nothing to bind, or a degenerate field: each is
    /// refused with a message naming the value and what is empty.
    #[test]
    fn empty_lists_and_fields_are_refused() {
        for (text, message) in [
            (
                "",
                "bind '' (from --bind): empty bind specification (expected SRC[:DST[:ro|rw]])",
            ),
            (
                " ",
                "bind ' ' (from --bind): empty bind specification (expected SRC[:DST[:ro|rw]])",
            ),
            (
                ",",
                "bind ',' (from --bind): empty bind specification (expected SRC[:DST[:ro|rw]])",
            ),
            (
                ":",
                "bind ':' (from --bind): the source is empty (expected SRC[:DST[:ro|rw]])",
            ),
            (
                "/a,::ro",
                "bind '::ro' (from --bind): the source is empty (expected SRC[:DST[:ro|rw]])",
            ),
            (
                "/a:",
                "bind '/a:' (from --bind): the destination after ':' is empty \
                 (give SRC alone to bind it at the same path)",
            ),
            (
                "/a::",
                "bind '/a::' (from --bind): the mode after the second ':' is empty \
                 (expected ro or rw)",
            ),
        ] {
            let e = parse_list(text, "--bind").unwrap_err();
            assert_eq!(e.to_string(), message, "{text:?}");
        }
    }

    #[test]
    fn within_is_on_components() {
        assert!(is_within(Path::new("/home/u/x"), Path::new("/home/u")));
        assert!(is_within(Path::new("/home/u"), Path::new("/home/u/")));
        assert!(!is_within(Path::new("/home/user2"), Path::new("/home/u")));
        assert!(is_within(Path::new("/x"), Path::new("/")));
    }

    fn inputs() -> BindInputs {
        BindInputs {
            home: Home::Bind {
                src: "/home/u".into(),
                dst: "/home/u".into(),
            },
            host_tmp: true,
            private_tmp_origin: "--contain".into(),
            scratch: vec![("/scratch/u".into(), "/etc/rfake/rfake.toml:3".into())],
            extra: vec![(parse_spec("/data:/mnt/data:ro").unwrap(), "--bind".into())],
        }
    }

    #[test]
    fn default_order_and_kinds() {
        let m = container_mounts(&inputs());
        let dsts: Vec<&str> = m.iter().map(|m| m.dst().to_str().unwrap()).collect();
        assert_eq!(
            dsts,
            [
                "/proc",
                "/sys",
                "/dev",
                "/tmp",
                "/etc/resolv.conf",
                "/etc/hosts",
                "/home/u",
                "/scratch/u",
                "/mnt/data"
            ]
        );
        let Mount::Bind(dev) = &m[2] else { panic!() };
        assert!(dev.allow_devices);
        let Mount::Bind(data) = &m[8] else { panic!() };
        assert!(data.readonly && data.create && !data.optional);
        assert_eq!(data.origin, "--bind");
    }

    #[test]
    fn contain_uses_private_tmpfs() {
        let mut i = inputs();
        i.host_tmp = false;
        i.home = Home::Private {
            dst: "/home/u".into(),
        };
        i.scratch.clear();
        let m = container_mounts(&i);
        assert!(matches!(&m[3], Mount::Tmpfs(t) if t.dst == Path::new("/tmp")));
        assert!(
            m.iter()
                .any(|x| matches!(x, Mount::Tmpfs(t) if t.dst == Path::new("/home/u")))
        );
    }

    #[test]
    fn start_dir_rules() {
        let i = inputs();
        let m = container_mounts(&i);
        let home = &i.home;
        assert_eq!(
            start_dir(None, Path::new("/home/u/proj"), &m, home),
            ("/home/u/proj".into(), None)
        );
        assert_eq!(
            start_dir(None, Path::new("/scratch/u"), &m, home),
            ("/scratch/u".into(), None)
        );
        let (dir, why) = start_dir(None, Path::new("/opt/x"), &m, home);
        assert_eq!(dir, PathBuf::from("/home/u"));
        assert!(why.unwrap().contains("/opt/x is not bound"));
        // /data is bound at another path: not the same directory inside.
        let (dir, _) = start_dir(None, Path::new("/data"), &m, home);
        assert_eq!(dir, PathBuf::from("/home/u"));
        assert_eq!(
            start_dir(Some(Path::new("/work/")), Path::new("/opt"), &m, home),
            ("/work".into(), None)
        );
        let (dir, _) = start_dir(None, Path::new("/opt"), &m, &Home::None);
        assert_eq!(dir, PathBuf::from("/"));
    }

    /// A newline in a `-B` value stays on the one line of the error.
    #[test]
    fn bind_errors_stay_on_one_line() {
        let err = parse_list("/a\n:/b:rx", "--bind").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("/a\\n:/b:rx"), "{text}");
    }
}
