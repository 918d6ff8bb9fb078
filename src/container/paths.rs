//! Resolving container paths inside a root directory, on file descriptors.
//!
//! Security rule (docs/security.md, "Paths inside the container"): a path
//! inside the container is resolved against the container root the way the
//! kernel will see it *after* `pivot_root`, and used through the file
//! descriptor the resolution ends on, never re-resolved by name:
//! - each step opens *one* name below the directory reached so far with
//!   `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS` (`O_PATH | O_NOFOLLOW`): the kernel guarantees
//!   the step neither follows a link nor leaves that directory, whatever
//!   is mounted or renamed meanwhile;
//! - rfake follows symlinks itself: an absolute target starts again at the
//!   root, `..` never climbs above it (refused, not clamped), at most 40
//!   links (`MAXSYMLINKS`);
//! - a symlink on procfs is refused: `/proc/self/root`, `/proc/1/cwd`,
//!   `/proc/self/fd/N` (and `/dev/fd/N` through `/dev/fd -> /proc/self/fd`)
//!   are magic links whose text does not say where they lead; the kernel
//!   would jump out of the container root through them;
//! - names are compared as components (`/procx` is not inside `/proc`) and
//!   paths stay bytes.
//!
//! What a resolution ends on is a [`Walk`]: the descriptors of every
//! directory it went through, so a missing destination is created with
//! `mkdirat(2)` below the deepest existing one, and a mount is attached to
//! the final descriptor (`move_mount(2)` with `MOVE_MOUNT_T_EMPTY_PATH`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::input::{FileKind, InputError};
use crate::text::shown;

/// The Linux limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{}: must be an absolute path", shown(path))]
    NotAbsolute { path: PathBuf },
    #[error("{}: climbs out of the container root through '..'", shown(path))]
    Escapes { path: PathBuf },
    #[error("{}: too many levels of symbolic links inside the image", shown(path))]
    Loop { path: PathBuf },
    #[error("{}: a component inside the image is not a directory", shown(path))]
    NotDirectory { path: PathBuf },
    #[error(
        "{}: goes through {}, a symbolic link in /proc, which can lead outside the container; refused",
        shown(path),
        shown(link)
    )]
    ProcLink { path: PathBuf, link: PathBuf },
    #[error("{}: is the container root itself", shown(path))]
    IsRoot { path: PathBuf },
    #[error("{}: cannot inspect inside the image: {} ({errno:?})", shown(path), errno.desc())]
    Io {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// The result of resolving a container path: the directories walked
/// through (with descriptors) and, when the path does not exist, the names
/// still missing below the last of them.
#[derive(Debug)]
pub struct Walk {
    /// The root and every existing component after it, each opened
    /// `O_PATH`; `found[0]` is the root. The last is the path itself when
    /// `missing` is empty.
    found: Vec<(OsString, OwnedFd)>,
    /// Components that do not exist yet (no symlink, no `..` among them).
    missing: Vec<OsString>,
}

impl Walk {
    /// The path exists.
    pub fn exists(&self) -> bool {
        self.missing.is_empty()
    }

    /// The descriptor of the path itself, when it exists.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.exists().then(|| self.last_found().1.as_fd())
    }

    /// The deepest existing directory (the path's parent directory or an
    /// ancestor when components are missing; the path itself when it is
    /// the root).
    pub fn deepest_dir(&self) -> BorrowedFd<'_> {
        let n = if self.exists() && self.found.len() > 1 {
            self.found.len() - 2
        } else {
            self.found.len() - 1
        };
        self.found[n].1.as_fd()
    }

    /// The names still to create below [`Walk::deepest_dir`] (empty when
    /// the path exists).
    pub fn missing(&self) -> &[OsString] {
        &self.missing
    }

    /// The resolved container path (no symlink in it), missing names
    /// included: where the path is, or would be.
    pub fn container_path(&self) -> PathBuf {
        let mut p = PathBuf::from("/");
        for (name, _) in self.found.iter().skip(1) {
            p.push(name);
        }
        for name in &self.missing {
            p.push(name);
        }
        p
    }

    /// The existing part of [`Walk::container_path`].
    pub fn existing_path(&self) -> PathBuf {
        let mut p = PathBuf::from("/");
        for (name, _) in self.found.iter().skip(1) {
            p.push(name);
        }
        p
    }

    /// True when the path is the root itself.
    pub fn is_root(&self) -> bool {
        self.found.len() == 1 && self.missing.is_empty()
    }

    /// The next missing name, once it was created below
    /// [`Walk::deepest_dir`]: open it there without following anything and
    /// make it part of the walk. `dir` is what it must be; something else
    /// (a symlink put there meanwhile) is refused.
    pub fn descend(&mut self, dir: bool) -> Result<(), PathError> {
        let Some(name) = self.missing.first().cloned() else {
            return Ok(());
        };
        let at = self.existing_path().join(&name);
        let fd =
            open_name(self.deepest_dir(), &name, OFlags::PATH).map_err(|e| io_error(&at, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_error(&at, e))?;
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let is_file = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
        if (dir && !is_dir) || (!dir && !is_file) {
            return Err(PathError::NotDirectory { path: at });
        }
        self.missing.remove(0);
        self.found.push((name, fd));
        Ok(())
    }

    fn last_found(&self) -> &(OsString, OwnedFd) {
        self.found.last().expect("a walk always holds its root")
    }

    /// Open the existing path's file for reading (no symlink followed:
    /// the walk already followed them, and `O_NONBLOCK`, so a FIFO does
    /// not wait for a writer), refusing anything that is not a regular
    /// file (see [`crate::input`]). `None` when it is missing.
    pub fn open_regular(&self) -> Option<Result<std::fs::File, InputError>> {
        if !self.exists() {
            return None;
        }
        if self.found.len() < 2 {
            return Some(Err(InputError::NotRegular(FileKind::Directory)));
        }
        let (name, _) = self.last_found();
        let opened = open_name(self.deepest_dir(), name, OFlags::RDONLY | OFlags::NONBLOCK);
        Some(match opened {
            Err(e) => Err(InputError::Io(e.into())),
            Ok(fd) => {
                // fstat(2) of what was opened, not of the name.
                let file = std::fs::File::from(fd);
                match file.metadata() {
                    Ok(meta) => match FileKind::of(&meta.file_type()) {
                        None => Ok(file),
                        Some(kind) => Err(InputError::NotRegular(kind)),
                    },
                    Err(e) => Err(InputError::Io(e)),
                }
            }
        })
    }
}

/// One step of a walk: open the single name `name` below `dir` with
/// `flags`, never following it (`O_NOFOLLOW`), and with the kernel's
/// guarantee that the step neither follows a link nor leaves `dir`.
fn open_name(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Open `root` (a host path) as the root of later resolutions.
pub fn open_root(root: &Path) -> Result<OwnedFd, PathError> {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(root, e))
}

/// Resolve the absolute container path `path` below the directory `root`.
pub fn walk(root: BorrowedFd<'_>, path: &Path) -> Result<Walk, PathError> {
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    let root = root
        .try_clone_to_owned()
        .map_err(|e| io_error(path, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
    let mut found: Vec<(OsString, OwnedFd)> = vec![(OsString::new(), root)];
    let mut pending: Vec<OsString> = components_reversed(path);
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if found.len() == 1 {
                return Err(PathError::Escapes {
                    path: path.to_path_buf(),
                });
            }
            found.pop();
            continue;
        }
        let dir = found.last().expect("the root stays").1.as_fd();
        let fd = match open_name(dir, &name, OFlags::PATH) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let mut missing = vec![name];
                while let Some(rest) = pending.pop() {
                    if rest == ".." {
                        return Err(PathError::Escapes {
                            path: path.to_path_buf(),
                        });
                    }
                    missing.push(rest);
                }
                return Ok(Walk { found, missing });
            }
            Err(Errno::NOTDIR) => {
                return Err(PathError::NotDirectory {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(io_error(path, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_error(path, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let fs = rustix::fs::fstatfs(&fd).map_err(|e| io_error(path, e))?;
                if fs.f_type == rustix::fs::PROC_SUPER_MAGIC {
                    let walked = Walk {
                        found,
                        missing: vec![name],
                    };
                    return Err(PathError::ProcLink {
                        path: path.to_path_buf(),
                        link: walked.container_path(),
                    });
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(PathError::Loop {
                        path: path.to_path_buf(),
                    });
                }
                let target =
                    rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| io_error(path, e))?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    found.truncate(1);
                }
                pending.extend(components_reversed(target));
            }
            FileType::Directory => found.push((name, fd)),
            _ if pending.is_empty() => found.push((name, fd)),
            _ => {
                return Err(PathError::NotDirectory {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    Ok(Walk {
        found,
        missing: Vec::new(),
    })
}

/// `root` joined with a container path, lexically (for messages and the
/// staging paths rfake creates itself).
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

fn io_error(path: &Path, e: Errno) -> PathError {
    PathError::Io {
        path: path.to_path_buf(),
        errno: nix::errno::Errno::from_raw(e.raw_os_error()),
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
        symlink("/", r.join("to-root")).unwrap();
        symlink("/proc/self/root", r.join("tmp")).unwrap();
        d
    }

    /// Where a walk ends (its container path) and whether that exists.
    type Ended = Result<(String, bool), PathError>;

    fn at(root: &Path, path: &str) -> Ended {
        let fd = open_root(root).unwrap();
        walk(fd.as_fd(), Path::new(path))
            .map(|w| (w.container_path().display().to_string(), w.exists()))
    }

    #[test]
    fn table() {
        let d = tree();
        let r = d.path();
        let ex = |p: &str| Ok((p.to_string(), true));
        let miss = |p: &str| Ok((p.to_string(), false));
        let cases: Vec<(&str, Ended)> = vec![
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
            ("/etc-file", ex("/etc-file")),
            ("/", ex("/")),
            ("/to-root", ex("/")),
            // An absolute symlink stays inside the root: this root has no
            // procfs, so it leads nowhere.
            ("/tmp", miss("/proc/self/root")),
        ];
        for (input, want) in cases {
            assert_eq!(at(r, input), want, "{input}");
        }
    }

    #[test]
    fn the_root_is_recognised() {
        let d = tree();
        let fd = open_root(d.path()).unwrap();
        assert!(walk(fd.as_fd(), Path::new("/to-root")).unwrap().is_root());
        assert!(walk(fd.as_fd(), Path::new("/usr/..")).unwrap().is_root());
        assert!(!walk(fd.as_fd(), Path::new("/usr")).unwrap().is_root());
    }

    #[test]
    fn refusals() {
        let d = tree();
        let r = d.path();
        let refused = |p: &str| at(r, p).unwrap_err();
        assert!(matches!(refused("/.."), PathError::Escapes { .. }));
        assert!(matches!(refused("/up/etc"), PathError::Escapes { .. }));
        assert!(matches!(
            refused("/missing/../../x"),
            PathError::Escapes { .. }
        ));
        assert!(matches!(refused("/loop1"), PathError::Loop { .. }));
        assert!(matches!(
            refused("/etc-file/x"),
            PathError::NotDirectory { .. }
        ));
        assert!(matches!(refused("relative"), PathError::NotAbsolute { .. }));
    }

    /// procfs's magic links (a process's root, cwd, open files) do not say
    /// where they lead: resolution refuses every symlink on procfs, here
    /// below the host's real root, where `/proc` is procfs.
    #[test]
    fn procfs_links_are_refused() {
        let root = Path::new("/");
        for path in [
            "/proc/self/root",
            "/proc/self/root/etc",
            "/proc/1/root",
            "/proc/self/cwd",
            "/proc/self/fd/0",
            "/proc/thread-self/root",
            "/dev/fd/0",
            "/dev/stdin",
        ] {
            match at(root, path) {
                Err(PathError::ProcLink { .. }) => {}
                other => panic!("{path}: {other:?}"),
            }
        }
        // Plain procfs files and directories are fine.
        assert_eq!(at(root, "/proc/sys"), Ok(("/proc/sys".into(), true)));
    }

    #[test]
    fn created_names_join_the_walk() {
        let d = tree();
        let fd = open_root(d.path()).unwrap();
        let mut w = walk(fd.as_fd(), Path::new("/var-run/a/b")).unwrap();
        assert_eq!(w.missing(), [OsString::from("a"), OsString::from("b")]);
        std::fs::create_dir(d.path().join("run/a")).unwrap();
        w.descend(true).unwrap();
        std::fs::write(d.path().join("run/a/b"), "").unwrap();
        // A file where a directory is wanted is refused.
        let mut wrong = walk(fd.as_fd(), Path::new("/run/a/b")).unwrap();
        assert!(wrong.exists());
        assert!(
            wrong.descend(true).is_ok(),
            "nothing missing: nothing to do"
        );
        w.descend(false).unwrap();
        assert!(w.exists());
        assert_eq!(w.container_path(), Path::new("/run/a/b"));
        let mut text = String::new();
        use std::io::Read;
        w.open_regular()
            .unwrap()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "");
    }

    #[test]
    fn a_symlink_put_in_place_of_a_created_name_is_refused() {
        let d = tree();
        let fd = open_root(d.path()).unwrap();
        let mut w = walk(fd.as_fd(), Path::new("/run/x")).unwrap();
        symlink("/proc/self/root", d.path().join("run/x")).unwrap();
        assert!(matches!(
            w.descend(true),
            Err(PathError::NotDirectory { .. })
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
