//! `%files`: files copied into the build root from the host or from an
//! earlier stage's root, sources expanded as shell wildcards, and paths in
//! the image resolved the way the container will resolve them.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use super::{failed, refused};
use crate::build::deffile::{Definition, FileLine, FilesBlock, Stage};
use crate::error::Error;
use crate::text::{io_text, one_line, shown};

/// `%files` of `stage` into `root`. The blocks `from STAGE` come first,
/// then those from the host, each group in file order (Apptainer's order:
/// it copies from stages before `%setup` and the host's files). For
/// `from STAGE`, `stage_root` gives that stage's root (the parser has
/// checked the name is an earlier stage's).
pub fn copy_files(
    def: &Definition,
    stage: &Stage,
    root: &Path,
    stage_root: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(), Error> {
    let (from_stages, from_host): (Vec<&FilesBlock>, Vec<&FilesBlock>) =
        stage.files.iter().partition(|b| b.from.is_some());
    for block in from_stages.into_iter().chain(from_host) {
        let source = match &block.from {
            None => Source::Host,
            Some(name) => Source::Stage(stage_root(name).ok_or_else(|| {
                Error::Internal(format!("%files from {name}: the stage's root is gone"))
            })?),
        };
        for line in &block.files {
            copy_line(def, line, &source, root)?;
        }
    }
    Ok(())
}

/// Where a `%files` block reads.
enum Source {
    /// The host: a relative path is from the current directory.
    Host,
    /// An earlier stage's root: every path is in that image, its links
    /// followed inside it ([`inside_root`]).
    Stage(PathBuf),
}

impl Source {
    /// The file to read for `path` (as written, or as a wildcard matched).
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        match self {
            Source::Host => Some(path.to_path_buf()),
            Source::Stage(root) => inside_root(root, path),
        }
    }

    /// The names in directory `dir` (a path as for [`Source::resolve`];
    /// empty: the current directory, or the stage's root).
    fn names(&self, dir: &Path) -> Vec<OsString> {
        let at = match (self, dir.as_os_str().is_empty()) {
            (Source::Host, true) => Some(PathBuf::from(".")),
            _ => self.resolve(dir),
        };
        let mut names: Vec<OsString> = at
            .and_then(|at| fs::read_dir(at).ok())
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// One `SRC [DST]` line: SRC expanded, each match copied as `cp -r` would:
/// into DST when DST is a directory (or ends in `/`, or SRC matched more
/// than one path: then DST is made a directory), else to DST; without
/// DST, to the same path in the image.
fn copy_line(def: &Definition, line: &FileLine, source: &Source, root: &Path) -> Result<(), Error> {
    let FileLine { src, dst, line } = line;
    let bad = |problem: String| refused(def, *line, "%files", problem);
    let matches = expand(src, source).map_err(|why| bad(format!("{}: {why}", one_line(src))))?;
    let into_dir = dst
        .as_deref()
        .is_some_and(|d| d.ends_with('/') || matches.len() > 1);
    for from_path in &matches {
        let inside = match dst {
            Some(dst) => PathBuf::from(dst),
            None => from_path.clone(),
        };
        let from = source.resolve(from_path).ok_or_else(|| {
            bad(format!(
                "{}: too many levels of symbolic links in the stage",
                shown(from_path)
            ))
        })?;
        let to = inside_root(root, &inside).ok_or_else(|| {
            bad(format!(
                "{}: the destination leaves the image's root",
                shown(&inside)
            ))
        })?;
        let meta = fs::symlink_metadata(&from)
            .map_err(|e| bad(format!("{}: {}", shown(from_path), io_text(&e))))?;
        if into_dir {
            fs::create_dir_all(&to).map_err(|e| failed(&to, "%files", &e))?;
        }
        let to = if to.is_dir() && (!meta.is_dir() || dst.is_some()) {
            let name = Path::new(from_path).file_name().unwrap_or_default();
            to.join(name)
        } else {
            to
        };
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|e| failed(parent, "%files", &e))?;
        }
        copy_tree(&from, &to).map_err(|e| bad(format!("{}: {}", shown(from_path), io_text(&e))))?;
    }
    Ok(())
}

/// The characters that make a path component a pattern.
fn is_pattern(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// `src` expanded as the shell expands a word with wildcards (Apptainer
/// hands it to a shell parser): `*`, `?`, `[...]` and `[!...]` in any
/// component, matched against the names in the source; a name starting
/// with `.` only by a pattern starting with `.`; matches in byte order.
/// A pattern that matches nothing stands for itself (as in the shell), so
/// it must then name a file: else the error says nothing matched. `**`
/// (any depth) is refused: the shell Apptainer uses reads it, rfake not.
fn expand(src: &str, source: &Source) -> Result<Vec<PathBuf>, String> {
    let components: Vec<&str> = src.split('/').collect();
    // `[` without its `]` is a plain character, to the shell too.
    if !components
        .iter()
        .any(|c| is_pattern(c) && glob::Pattern::new(c).is_ok())
    {
        return Ok(vec![PathBuf::from(src)]);
    }
    if components.iter().any(|c| c.contains("**")) {
        return Err(
            "`**` (any depth) is not supported: name the directory, it is copied whole".into(),
        );
    }
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let mut found = vec![PathBuf::from(if src.starts_with('/') { "/" } else { "" })];
    for component in components.iter().filter(|c| !c.is_empty()) {
        let pattern = is_pattern(component)
            .then(|| glob::Pattern::new(component).ok())
            .flatten();
        found = match pattern {
            // A plain name, or `[` without its `]`.
            None => found.into_iter().map(|p| p.join(component)).collect(),
            Some(pattern) => found
                .into_iter()
                .flat_map(|dir| {
                    source
                        .names(&dir)
                        .into_iter()
                        .filter(|name| pattern.matches_with(&name.to_string_lossy(), options))
                        .map(move |name| dir.join(name))
                })
                .collect(),
        };
        if found.is_empty() {
            break;
        }
    }
    // Only what exists (plain components after a pattern were not looked
    // up); with a trailing `/`, only directories, as in the shell.
    found.retain(|p| {
        source.resolve(p).is_some_and(|p| match src.ends_with('/') {
            true => p.is_dir(),
            false => fs::symlink_metadata(p).is_ok(),
        })
    });
    if found.is_empty() {
        let literal = source.resolve(Path::new(src));
        if literal.is_some_and(|p| fs::symlink_metadata(p).is_ok()) {
            return Ok(vec![PathBuf::from(src)]);
        }
        return Err("no file matches the pattern".into());
    }
    Ok(found)
}

/// `inside` (a path in the image) as a path under `root`, with the
/// image's symbolic links followed as the container would follow them:
/// an absolute target from the image's root, `..` never above it. So a
/// link in an untrusted base (`/opt -> /home/you/.ssh`) leads inside the
/// image, never to the host. `None` for a loop (more than 40 links).
/// Nothing else changes the tree while the build writes into it.
pub fn inside_root(root: &Path, inside: impl AsRef<Path>) -> Option<PathBuf> {
    use std::collections::VecDeque;
    let parts = |p: &Path| -> VecDeque<std::ffi::OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut todo = parts(inside.as_ref());
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        let full = root.join(&next);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = fs::read_link(&full).ok()?;
                if target.is_absolute() {
                    at = PathBuf::new();
                }
                let mut rest = parts(&target);
                rest.extend(todo);
                todo = rest;
            }
            _ => at = next,
        }
    }
    Some(root.join(at))
}

/// Copy `from` (on the host) to `to` (in the build root, resolved by
/// [`inside_root`]). What the image has at a path written here is replaced
/// if it is a symbolic link, never followed: the image's links must not
/// lead the copy out of the root.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(to)?;
    }
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let _ = fs::remove_file(to);
        return symlink(fs::read_link(from)?, to);
    }
    if meta.is_dir() {
        match fs::create_dir(to) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() | 0o700));
    }
    fs::copy(from, to).map(|_| ())
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Wildcards as the shell expands them, in a stage's root: per
    /// component, hidden names only by a leading `.`, sorted; no match is
    /// an error unless the pattern names a file as written.
    #[test]
    fn wildcards_expanded_in_a_stage() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        for dir in ["opt/d1", "opt/d2", "opt/dx", "opt/.hidden", "host"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "opt/d1/f",
            "opt/d2/f",
            "opt/a.txt",
            "opt/b.txt",
            "opt/.c.txt",
            "opt/x[1]",
        ] {
            fs::write(root.join(file), "x").unwrap();
        }
        // A link out of the image: followed inside it.
        symlink("/host", root.join("opt/link")).unwrap();
        let source = Source::Stage(root.clone());
        let paths = |pattern: &str| -> Result<Vec<String>, String> {
            expand(pattern, &source).map(|v| v.iter().map(|p| p.display().to_string()).collect())
        };
        assert_eq!(paths("/opt/*.txt").unwrap(), ["/opt/a.txt", "/opt/b.txt"]);
        assert_eq!(paths("/opt/.*.txt").unwrap(), ["/opt/.c.txt"]);
        assert_eq!(paths("opt/d?/f").unwrap(), ["opt/d1/f", "opt/d2/f"]);
        assert_eq!(paths("/opt/d[!1x]").unwrap(), ["/opt/d2"]);
        assert_eq!(
            paths("/opt/[ab].txt").unwrap(),
            ["/opt/a.txt", "/opt/b.txt"]
        );
        // A trailing slash matches directories only.
        assert_eq!(
            paths("/opt/*/").unwrap(),
            ["/opt/d1", "/opt/d2", "/opt/dx", "/opt/link"]
        );
        assert_eq!(
            paths("/opt/link/*").unwrap_err(),
            "no file matches the pattern"
        );
        fs::write(root.join("host/in"), "x").unwrap();
        assert_eq!(paths("/opt/link/*").unwrap(), ["/opt/link/in"]);
        // Not a pattern: as written, even if missing (the copy says so).
        assert_eq!(paths("/opt/none").unwrap(), ["/opt/none"]);
        assert_eq!(
            paths("/opt/*.none").unwrap_err(),
            "no file matches the pattern"
        );
        // No match, but the name as written exists: itself, as in the shell.
        assert_eq!(paths("/opt/x[1]").unwrap(), ["/opt/x[1]"]);
        // `[` without `]` is a plain character.
        assert_eq!(paths("/opt/[oops").unwrap(), ["/opt/[oops"]);
        assert!(paths("/opt/**/f").unwrap_err().contains("`**`"));
    }

    /// The image's links are followed inside the image, never to the host.
    #[test]
    fn paths_in_the_image_stay_in_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let host = d.path().join("host");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(&host).unwrap();
        symlink(&host, root.join("opt")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../../..", root.join("usr/lib/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let at = |p: &str| inside_root(&root, p);
        // An absolute link is taken from the image's root.
        assert_eq!(
            at("/opt/x").unwrap(),
            root.join(host.strip_prefix("/").unwrap()).join("x")
        );
        assert_eq!(at("/lib/x").unwrap(), root.join("usr/lib/x"));
        assert_eq!(at("/usr/lib/up/etc").unwrap(), root.join("etc"));
        assert_eq!(at("../../etc/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(at("/loop/x"), None);
        // Copying over a link replaces it.
        fs::write(d.path().join("src"), "new").unwrap();
        fs::write(host.join("victim"), "host file").unwrap();
        symlink(host.join("victim"), root.join("usr/lib/f")).unwrap();
        copy_tree(&d.path().join("src"), &root.join("usr/lib/f")).unwrap();
        assert_eq!(
            fs::read_to_string(host.join("victim")).unwrap(),
            "host file"
        );
        assert_eq!(fs::read_to_string(root.join("usr/lib/f")).unwrap(), "new");
    }
}
