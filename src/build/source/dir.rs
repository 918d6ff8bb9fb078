//! A host directory into the tree: the SOURCE directory itself, or a
//! directory a recipe copies in.
//!
//! The walk never follows symbolic links (each is stored as a link, its
//! target as written), so link loops cannot make it loop; entries are read in
//! name order. Regular files stay on the host ([`Content::Host`]) and are
//! opened once here, so an unreadable file fails the build now, naming it,
//! rather than halfway through writing. Files met again under another name
//! (the same device and inode) become hard links to the first name.
//! Every entry keeps its modification time (`lstat`'s, so a symbolic link's
//! own), with either [`Modes`].

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::super::tree::{Content, Meta, Node, Tree, mtime_from_secs};
use super::detect::file_type_name;
use super::{Cx, SourceError, keep_xattr, shown};

/// What the copy does with the host's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Modes {
    /// The low 12 bits as they are (a SOURCE directory).
    Keep,
    /// Directories 0755, files 0755 when the owner may execute them, else
    /// 0644, no extended attributes, owners not reported (a recipe's files:
    /// the recipe says what goes in, and the image does not depend on the
    /// umask, on how a checkout set modes or on the host's SELinux labels;
    /// a recipe's `[modes]` sets other modes). Modification times are kept
    /// all the same: Python's bytecode caches and make compare them, and
    /// `SOURCE_DATE_EPOCH` caps the times a checkout gave.
    Normalize,
}

/// Load the SOURCE directory `path` (followed if it is a symbolic link).
pub(super) fn load(cx: &mut Cx, path: &Path, tree: &mut Tree) -> Result<(), SourceError> {
    let root = fs::canonicalize(path).map_err(|e| SourceError::unreadable(path, e))?;
    copy(cx, &root, Path::new(""), Modes::Keep, tree)
}

/// Copy `host` (an absolute path; a directory is copied recursively) to
/// `dest` (relative to the image root; empty for the root itself).
pub(super) fn copy(
    cx: &mut Cx,
    host: &Path,
    dest: &Path,
    modes: Modes,
    tree: &mut Tree,
) -> Result<(), SourceError> {
    let meta = fs::symlink_metadata(host).map_err(|e| SourceError::unreadable(host, e))?;
    let mut walk = Walk {
        cx,
        modes,
        first_names: HashMap::new(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        uid: unsafe { libc::geteuid() },
    };
    if meta.is_dir() {
        walk.dir(host, dest, &meta, tree)
    } else {
        walk.entry(host, dest, tree)
    }
}

struct Walk<'c, 'a> {
    cx: &'c mut Cx<'a>,
    modes: Modes,
    /// (device, inode) → the image path of the first name seen.
    first_names: HashMap<(u64, u64), PathBuf>,
    uid: u32,
}

impl Walk<'_, '_> {
    fn dir(
        &mut self,
        host: &Path,
        dest: &Path,
        meta: &Metadata,
        tree: &mut Tree,
    ) -> Result<(), SourceError> {
        let node = Node::Dir {
            meta: self.meta(host, meta)?,
            children: BTreeMap::new(),
        };
        insert(tree, host, dest, node)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(host).map_err(|e| SourceError::unreadable(host, e))? {
            names.push(
                entry
                    .map_err(|e| SourceError::unreadable(host, e))?
                    .file_name(),
            );
        }
        names.sort();
        for name in names {
            self.entry(&host.join(&name), &dest.join(&name), tree)?;
        }
        Ok(())
    }

    fn entry(&mut self, host: &Path, dest: &Path, tree: &mut Tree) -> Result<(), SourceError> {
        let meta = fs::symlink_metadata(host).map_err(|e| SourceError::unreadable(host, e))?;
        if self.modes == Modes::Keep && meta.uid() != self.uid {
            self.cx.foreign_owners += 1;
        }
        let file_type = meta.file_type();
        let node = if file_type.is_dir() {
            return self.dir(host, dest, &meta, tree);
        } else if file_type.is_symlink() {
            Node::Symlink {
                meta: self.meta(host, &meta)?,
                target: fs::read_link(host).map_err(|e| SourceError::unreadable(host, e))?,
            }
        } else if file_type.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.first_names.get(&key) {
                    let link = Node::HardLink {
                        target: first.clone(),
                    };
                    return insert(tree, host, dest, link);
                }
                self.first_names.insert(key, dest.to_path_buf());
            }
            check_readable(host)?;
            self.cx.charge(&shown(host), meta.len())?;
            Node::File {
                meta: self.meta(host, &meta)?,
                size: meta.len(),
                content: Content::Host(host.to_path_buf()),
            }
        } else {
            return self.cx.special(shown(host), file_type_name(&file_type));
        };
        insert(tree, host, dest, node)
    }

    /// The mode (kept or normalized), the modification time and the
    /// extended attributes to keep (none for [`Modes::Normalize`]).
    fn meta(&mut self, host: &Path, meta: &Metadata) -> Result<Meta, SourceError> {
        let file_type = meta.file_type();
        let mode = match self.modes {
            _ if file_type.is_symlink() => 0o777,
            Modes::Keep => meta.mode() & 0o7777,
            Modes::Normalize if file_type.is_dir() || meta.mode() & 0o100 != 0 => 0o755,
            Modes::Normalize => 0o644,
        };
        let mut out = Meta::with_mode(mode);
        out.mtime = Some(mtime_from_secs(meta.mtime()));
        if self.modes == Modes::Normalize {
            return Ok(out);
        }
        for name in list_xattrs(host).map_err(|e| SourceError::unreadable(host, e))? {
            let Ok(text) = std::str::from_utf8(&name) else {
                self.cx.dropped_xattrs += 1;
                continue;
            };
            if !keep_xattr(text) {
                self.cx.dropped_xattrs += 1;
                continue;
            }
            // An attribute removed since it was listed is simply not there.
            if let Some(value) =
                get_xattr(host, &name).map_err(|e| SourceError::unreadable(host, e))?
            {
                out.xattrs.insert(text.to_string(), value);
            }
        }
        Ok(out)
    }
}

fn insert(tree: &mut Tree, host: &Path, dest: &Path, node: Node) -> Result<(), SourceError> {
    tree.insert(dest, node)
        .map_err(|e| SourceError::invalid(shown(host), format!("in the image: {e}")))
}

/// Open `path` for reading and close it: fail now, naming the file, if the
/// build could not read it later. Never blocks (`O_NONBLOCK`) and never
/// follows a link swapped in since the walk looked (`O_NOFOLLOW`).
pub(super) fn check_readable(path: &Path) -> Result<(), SourceError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map(drop)
        .map_err(|e| SourceError::unreadable(path, e))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
}

/// The names of the extended attributes of `path` itself (a symbolic link
/// is not followed); none where the filesystem has no xattr support.
fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = c_path(path)?;
    loop {
        // SAFETY: `c` is a NUL-terminated path; a null buffer with size 0
        // asks for the size only.
        let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew since the size was asked: ask again
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// The value of the extended attribute `name` of `path` itself; `None` if
/// it is gone.
fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let c = c_path(path)?;
    let n = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a name"))?;
    loop {
        // SAFETY: both strings are NUL-terminated; size 0 asks for the size.
        let size = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let got =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue,
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Options, SourceKind, detect};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn walks_files_links_hard_links_modes_and_xattrs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("etc/sub")).unwrap();
        fs::write(root.join("etc/hosts"), "h\n").unwrap();
        fs::set_permissions(root.join("etc/hosts"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(root.join("etc/sub"), fs::Permissions::from_mode(0o1750)).unwrap();
        fs::hard_link(root.join("etc/hosts"), root.join("etc/z-hosts")).unwrap();
        std::os::unix::fs::symlink("../missing", root.join("etc/dangling")).unwrap();
        std::os::unix::fs::symlink(".", root.join("self")).unwrap();
        let xattr = set_user_xattr(&root.join("etc/hosts"), "user.test", b"v");
        assert_eq!(detect(&root).unwrap(), SourceKind::Directory);

        let loaded = load_source(&root, &Options::default()).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let tree = &loaded.tree;
        let Some(Node::File {
            meta,
            size,
            content: Content::Host(host),
        }) = tree.get(Path::new("etc/hosts"))
        else {
            panic!("{tree:?}")
        };
        assert_eq!((meta.mode, *size), (0o640, 2));
        assert_eq!(host, &fs::canonicalize(root.join("etc/hosts")).unwrap());
        if xattr {
            assert_eq!(
                meta.xattrs.get("user.test").map(Vec::as_slice),
                Some(&b"v"[..])
            );
        } else {
            eprintln!(
                "note: {} has no user xattrs; not checked",
                d.path().display()
            );
        }
        assert_eq!(
            tree.get(Path::new("etc/z-hosts")),
            Some(&Node::HardLink {
                target: "etc/hosts".into()
            })
        );
        assert_eq!(mode_of(tree, "etc/sub"), 0o1750);
        assert_eq!(link_of(tree, "etc/dangling"), "../missing");
        assert_eq!(link_of(tree, "self"), ".");
        assert_eq!(loaded.text("etc/hosts"), "h\n");
        tree.check_hard_links().unwrap();
    }

    #[test]
    fn modification_times_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("dir")).unwrap();
        fs::write(root.join("dir/f"), "f").unwrap();
        std::os::unix::fs::symlink("dir/f", root.join("link")).unwrap();
        fs::write(root.join("before-1970"), "").unwrap();
        fs::write(root.join("after-2106"), "").unwrap();
        set_mtime(&root.join("dir/f"), 1_000_000_001);
        set_mtime(&root.join("link"), 1_000_000_002);
        let early = set_mtime(&root.join("before-1970"), -100);
        let late = set_mtime(&root.join("after-2106"), 1 << 33);
        // Directories last: adding entries changed their times.
        set_mtime(&root.join("dir"), 1_000_000_003);
        set_mtime(&root, 1_000_000_004);

        let tree = load_source(&root, &Options::default()).unwrap().tree;
        assert_eq!(mtime_of(&tree, "dir/f"), Some(1_000_000_001));
        assert_eq!(mtime_of(&tree, "link"), Some(1_000_000_002));
        assert_eq!(mtime_of(&tree, "dir"), Some(1_000_000_003));
        assert_eq!(mtime_of(&tree, ""), Some(1_000_000_004));
        // Out of SquashFS's range (unsigned 32-bit seconds): clamped, where
        // the host filesystem could hold the time at all.
        if early < 0 {
            assert_eq!(mtime_of(&tree, "before-1970"), Some(0));
        }
        if late > i64::from(u32::MAX) {
            assert_eq!(mtime_of(&tree, "after-2106"), Some(u32::MAX));
        }
        if early >= 0 || late <= i64::from(u32::MAX) {
            eprintln!(
                "note: {} kept {early} and {late}: clamping not fully checked",
                d.path().display()
            );
        }
    }

    #[test]
    fn source_given_as_a_symlink_is_followed_and_loops_are_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("real")).unwrap();
        fs::write(d.path().join("real/f"), "x").unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        let loaded = load_source(&d.path().join("link"), &Options::default()).unwrap();
        assert!(loaded.tree.get(Path::new("f")).is_some());

        std::os::unix::fs::symlink("loop", d.path().join("loop")).unwrap();
        let e = detect(&d.path().join("loop")).unwrap_err();
        assert!(e.to_string().contains("(ELOOP)"), "{e}");
        std::os::unix::fs::symlink("nowhere", d.path().join("dangling")).unwrap();
        let e = detect(&d.path().join("dangling")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("dangling: a dangling symbolic link (to nowhere)"),
            "{e}"
        );
        assert_eq!(e.exit_kind(), crate::exit::ExitKind::NoInput);
        let e = detect(&d.path().join("absent")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("absent: No such file or directory (ENOENT)"),
            "{e}"
        );
    }

    #[test]
    fn special_files_are_refused_or_skipped() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "x").unwrap();
        nix::unistd::mkfifo(
            &d.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(d.path().join("sock")).unwrap();
        let e = load_source(d.path(), &Options::default()).unwrap_err();
        let fifo = fs::canonicalize(d.path()).unwrap().join("fifo");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: FIFO: an unprivileged build cannot represent it in an image; \
                 use --skip-special to leave it out",
                fifo.display()
            )
        );
        assert_eq!(e.exit_kind(), crate::exit::ExitKind::BadImage);
        let skip = Options {
            skip_special: true,
            ..Options::default()
        };
        let loaded = load_source(d.path(), &skip).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                format!("{}: FIFO left out (--skip-special)", fifo.display()),
                format!(
                    "{}: socket left out (--skip-special)",
                    fifo.with_file_name("sock").display()
                ),
            ]
        );
        assert!(loaded.tree.get(Path::new("a")).is_some());
        assert!(loaded.tree.get(Path::new("fifo")).is_none());
    }

    #[test]
    fn unreadable_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("dir")).unwrap();
        fs::write(d.path().join("dir/secret"), "x").unwrap();
        fs::set_permissions(
            d.path().join("dir/secret"),
            fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root reads anything: the file is there, mode 0.
            let loaded = load_source(d.path(), &Options::default()).unwrap();
            assert_eq!(mode_of(&loaded.tree, "dir/secret"), 0);
            return;
        }
        let e = load_source(d.path(), &Options::default()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("dir/secret: Permission denied (EACCES)"),
            "{e}"
        );
        assert_eq!(e.exit_kind(), crate::exit::ExitKind::NoInput);
    }

    #[test]
    fn owners_other_than_the_caller_are_summarised() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), "x").unwrap();
        fs::write(d.path().join("b"), "x").unwrap();
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // Only root can give files away.
            std::os::unix::fs::lchown(d.path().join("a"), Some(1234), Some(1234)).unwrap();
            std::os::unix::fs::lchown(d.path().join("b"), Some(1234), None).unwrap();
        }
        let warnings = load_source(d.path(), &Options::default()).unwrap().warnings;
        if root {
            assert_eq!(
                warnings,
                [
                    "2 entries owned by other users are owned by root in the image \
                  (an unprivileged build cannot preserve owners)"
                ]
            );
        } else {
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }
}
