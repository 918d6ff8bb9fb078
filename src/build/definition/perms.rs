//! `--fix-perms`, and the check that the tree a build hands over can be
//! read by the user running rfake.
//!
//! `%post` runs as root of a user namespace, where root may read any file
//! whatever its mode (CAP_DAC_OVERRIDE over the files it owns). rfake then
//! reads the tree back as the user it is, outside that namespace: a file
//! `%post` left `chmod 000` (as some packages leave `/etc/shadow`-like files
//! or private directories) is unreadable there. Apptainer's answer is
//! `--fix-perms` (`chmod -R u+rwX`), and so is rfake's; without it the build
//! stops at the first such entry and says so, before reading anything.

use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The owner bits a directory needs to be listed and entered.
const DIR_NEEDS: u32 = 0o500;
/// The owner bit a file needs to be read.
const FILE_NEEDS: u32 = 0o400;

/// Give every directory under `root` (itself included) owner `rwx` and
/// every regular file owner `rw`, as `chmod -R u+rwX` does for them;
/// symbolic links and special files are left alone. A directory is fixed
/// before it is listed, so an unreadable one is walked too. Returns how
/// many entries changed.
pub fn fix(root: &Path) -> io::Result<u64> {
    let mut changed = 0;
    walk(root, |path, kind, mode| {
        let bits = match kind {
            Kind::Dir => 0o700,
            Kind::File => 0o600,
        };
        if mode & bits != bits {
            // Not a symbolic link: the walk saw its type with lstat, and
            // nothing else changes the tree.
            fs::set_permissions(path, fs::Permissions::from_mode(mode | bits))?;
            changed += 1;
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(changed)
}

/// The first entry under `root` (in a depth-first walk) that the owner
/// cannot read: a directory without owner `r` and `x`, a regular file
/// without owner `r`; with its mode. The walk does not enter such a
/// directory.
pub fn first_unreadable(root: &Path) -> io::Result<Option<(PathBuf, u32)>> {
    walk(root, |path, kind, mode| {
        let needs = match kind {
            Kind::Dir => DIR_NEEDS,
            Kind::File => FILE_NEEDS,
        };
        Ok(if mode & needs == needs {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break((path.to_path_buf(), mode))
        })
    })
}

enum Kind {
    Dir,
    File,
}

/// Depth-first over `root` and the directories and regular files under it
/// (symbolic links are never followed, special files skipped), calling
/// `visit` with each one's permission bits (lstat). A directory is visited
/// before it is listed, so `visit` may make it listable; the first `Break`
/// ends the walk and is returned.
fn walk<B>(
    root: &Path,
    mut visit: impl FnMut(&Path, Kind, u32) -> io::Result<ControlFlow<B>>,
) -> io::Result<Option<B>> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let mode = fs::symlink_metadata(&dir)?.mode() & 0o7777;
        if let ControlFlow::Break(b) = visit(&dir, Kind::Dir, mode)? {
            return Ok(Some(b));
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            // The entry itself (lstat): a link is never followed.
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                let mode = entry.metadata()?.mode() & 0o7777;
                if let ControlFlow::Break(b) = visit(&entry.path(), Kind::File, mode)? {
                    return Ok(Some(b));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// What `chmod 000` left is found, then fixed: owner bits added,
    /// the rest of each mode kept, links left alone.
    #[test]
    fn unreadable_entries_found_and_fixed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("etc/private/deeper")).unwrap();
        fs::write(root.join("etc/private/deeper/key"), "k").unwrap();
        fs::write(root.join("etc/shadow"), "s").unwrap();
        fs::write(root.join("etc/tool"), "t").unwrap();
        let outside = d.path().join("outside");
        fs::write(&outside, "o").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o000)).unwrap();
        symlink(&outside, root.join("etc/link")).unwrap();
        assert_eq!(first_unreadable(&root).unwrap(), None);
        fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o040)).unwrap();
        fs::set_permissions(root.join("etc/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(
            root.join("etc/private/deeper/key"),
            fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        fs::set_permissions(root.join("etc/private"), fs::Permissions::from_mode(0o000)).unwrap();
        let (path, m) = first_unreadable(&root).unwrap().unwrap();
        assert!(
            (path == root.join("etc/private") && m == 0)
                || (path == root.join("etc/shadow") && m == 0o040),
            "{path:?} {m:o}"
        );
        assert_eq!(fix(&root).unwrap(), 3);
        assert_eq!(mode(&root.join("etc/shadow")), 0o640);
        assert_eq!(mode(&root.join("etc/tool")), 0o4755);
        assert_eq!(mode(&root.join("etc/private")), 0o700);
        assert_eq!(mode(&root.join("etc/private/deeper/key")), 0o600);
        // The link's target, outside the tree, is not touched.
        assert_eq!(mode(&outside), 0o000);
        assert_eq!(first_unreadable(&root).unwrap(), None);
        assert_eq!(fix(&root).unwrap(), 0);
    }
}
