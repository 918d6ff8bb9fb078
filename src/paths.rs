//! Resolving container paths inside the new root, on path components.
//!
//! Security rule: a bind destination is resolved against the image root the
//! way the kernel will see it *after* `pivot_root`: an absolute symlink in the
//! image is relative to the image root, and `..` may never climb above the
//! root. Resolution is done on components (never string prefixes), so `/procx`
//! is not inside `/proc`, and the final path handed to `mount(2)` contains no
//! symlink at all.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The Linux limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{path}: must be an absolute path")]
    NotAbsolute { path: PathBuf },
    #[error("{path}: climbs out of the container root through '..'")]
    Escapes { path: PathBuf },
    #[error("{path}: too many levels of symbolic links inside the image")]
    Loop { path: PathBuf },
    #[error("{path}: a component inside the image is not a directory")]
    NotDirectory { path: PathBuf },
    #[error("{path}: cannot inspect inside the image: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// Where a container path lives under `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The path exists; this host path (under `root`) has no symlinks.
    Exists(PathBuf),
    /// A component is missing; this is where it would be.
    Missing(PathBuf),
}

/// Resolve the absolute container path `path` under the directory `root`.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<Resolved, PathError> {
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    let mut pending: Vec<OsString> = components_reversed(path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if resolved.pop().is_none() {
                return Err(PathError::Escapes {
                    path: path.to_path_buf(),
                });
            }
            continue;
        }
        let candidate = join_all(root, &resolved).join(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(PathError::Loop {
                        path: path.to_path_buf(),
                    });
                }
                let target = std::fs::read_link(&candidate).map_err(|e| io_error(path, &e))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                pending.extend(components_reversed(&target));
            }
            Ok(meta) => {
                if !pending.is_empty() && !meta.is_dir() {
                    return Err(PathError::NotDirectory {
                        path: path.to_path_buf(),
                    });
                }
                resolved.push(name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved.push(name);
                while let Some(rest) = pending.pop() {
                    if rest == ".." {
                        return Err(PathError::Escapes {
                            path: path.to_path_buf(),
                        });
                    }
                    resolved.push(rest);
                }
                return Ok(Resolved::Missing(join_all(root, &resolved)));
            }
            Err(e) => return Err(io_error(path, &e)),
        }
    }
    Ok(Resolved::Exists(join_all(root, &resolved)))
}

/// `root` joined with a container path, lexically (for host-side sources).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(name) = c {
            out.push(name);
        }
    }
    out
}

fn components_reversed(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    names.reverse();
    names
}

fn join_all(root: &Path, names: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for n in names {
        p.push(n);
    }
    p
}

fn io_error(path: &Path, e: &io::Error) -> PathError {
    PathError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("proc")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::fs::write(r.join("etc-file"), "x").unwrap();
        symlink("/run", r.join("var-run")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("../../..", r.join("up")).unwrap();
        symlink("/oldroot/etc", r.join("abs-out")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("/nonexistent/x", r.join("dangling")).unwrap();
        d
    }

    #[test]
    fn table() {
        let d = tree();
        let r = d.path();
        let ex = |p: &str| Ok(Resolved::Exists(under(r, Path::new(p))));
        let miss = |p: &str| Ok(Resolved::Missing(under(r, Path::new(p))));
        let cases: Vec<(&str, Result<Resolved, PathError>)> = vec![
            ("/proc", ex("/proc")),
            ("//proc", ex("/proc")),
            ("/proc/", ex("/proc")),
            ("/proc/.", ex("/proc")),
            ("/procx", miss("/procx")),
            ("/usr/lib/../lib", ex("/usr/lib")),
            ("/lib", ex("/usr/lib")),
            ("/var-run", ex("/run")),
            ("/var-run/munge", miss("/run/munge")),
            ("/abs-out", miss("/oldroot/etc")),
            ("/dangling", miss("/nonexistent/x")),
            ("/", ex("/")),
        ];
        for (input, want) in cases {
            assert_eq!(resolve_in_root(r, Path::new(input)), want, "{input}");
        }
    }

    #[test]
    fn refusals() {
        let d = tree();
        let r = d.path();
        assert!(matches!(
            resolve_in_root(r, Path::new("/..")),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            resolve_in_root(r, Path::new("/up/etc")),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            resolve_in_root(r, Path::new("/missing/../../x")),
            Err(PathError::Escapes { .. })
        ));
        assert!(matches!(
            resolve_in_root(r, Path::new("/loop1")),
            Err(PathError::Loop { .. })
        ));
        assert!(matches!(
            resolve_in_root(r, Path::new("/etc-file/x")),
            Err(PathError::NotDirectory { .. })
        ));
        assert!(matches!(
            resolve_in_root(r, Path::new("relative")),
            Err(PathError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn under_is_lexical() {
        assert_eq!(
            under(Path::new("/oldroot"), Path::new("/a/b")),
            PathBuf::from("/oldroot/a/b")
        );
        assert_eq!(
            under(Path::new("/oldroot"), Path::new("/")),
            PathBuf::from("/oldroot")
        );
    }
}
