//! `%files`: host files copied into the build root, and paths in the
//! image resolved the way the container will resolve them.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use super::{failed, refused};
use crate::build::deffile::{Definition, FileLine, Stage};
use crate::error::Error;
use crate::text::io_text;

/// `%files`: each `SRC [DST]` copied from the host (SRC relative to the
/// current directory, as Apptainer takes it) to DST in the root (default:
/// SRC's own path), as `cp -r` would: into DST when DST is a directory.
pub fn copy_files(def: &Definition, stage: &Stage, root: &Path) -> Result<(), Error> {
    for block in &stage.files {
        for FileLine { src, dst, line } in &block.files {
            let bad = |problem: String| refused(def, *line, "%files", problem);
            if src.contains(['*', '?', '[']) && !Path::new(src).exists() {
                return Err(bad(format!(
                    "{src}: wildcards are not supported yet: name each file"
                )));
            }
            let from = PathBuf::from(src);
            let inside = dst.clone().unwrap_or_else(|| src.clone());
            let to = inside_root(root, &inside)
                .ok_or_else(|| bad(format!("{inside}: the destination leaves the image's root")))?;
            let meta =
                fs::symlink_metadata(&from).map_err(|e| bad(format!("{src}: {}", io_text(&e))))?;
            let to = if to.is_dir() && !meta.is_dir() || (to.is_dir() && dst.is_some()) {
                to.join(from.file_name().unwrap_or_default())
            } else {
                to
            };
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(|e| failed(parent, "%files", &e))?;
            }
            copy_tree(&from, &to).map_err(|e| bad(format!("{src}: {}", io_text(&e))))?;
        }
    }
    Ok(())
}

/// `inside` (a path in the image) as a path under `root`, with the
/// image's symbolic links followed as the container would follow them:
/// an absolute target from the image's root, `..` never above it. So a
/// link in an untrusted base (`/opt -> /home/you/.ssh`) leads inside the
/// image, never to the host. `None` for a loop (more than 40 links).
/// Nothing else changes the tree while the build writes into it.
pub fn inside_root(root: &Path, inside: &str) -> Option<PathBuf> {
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
    let mut todo = parts(Path::new(inside));
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
