//! An image's files written out as a directory on the host: the writable
//! root a definition file's `%post` runs in. Everything is owned by the
//! invoking user (who is root inside the build's user namespace); modes,
//! symbolic links, hard links and modification times are kept, sparse files
//! stay sparse.
//!
//! Two sources: a [`Tree`] (what a bootstrap from an OCI image, an archive
//! or a registry gives), whose file data comes from the spool, the layers or
//! the host; and a SquashFS or SIF image (`Bootstrap: localimage`), read
//! in-process with the project's SquashFS reader.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::spool::{Spooled, open_content};
use super::tree::{Content, Meta, Node, Tree};
use crate::squashfs::{EntryKind, Reader};

/// Why the files could not be written out: the path and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}", crate::text::shown(.path), crate::text::io_text(.error))]
pub struct MaterializeError {
    pub path: PathBuf,
    pub error: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> MaterializeError + '_ {
    move |error| MaterializeError {
        path: path.to_path_buf(),
        error,
    }
}

/// Write `tree` into the empty directory `dest`. File data is copied in
/// the order of the layers it comes from, so each layer is read forward
/// once; directories get their modes last (a read-only one is filled
/// first).
pub fn tree_to_dir(
    tree: &Tree,
    spooled: Option<&Spooled>,
    dest: &Path,
) -> Result<(), MaterializeError> {
    let mut files: Vec<(PathBuf, Meta, u64, Content)> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut result = Ok(());
    tree.visit(&mut |path, node| {
        if result.is_err() {
            return;
        }
        let target = dest.join(path);
        result = match node {
            Node::Dir { meta, .. } => {
                dirs.push((target.clone(), meta.clone()));
                match fs::create_dir(&target) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(at(&target)(e)),
                    _ => Ok(()),
                }
            }
            Node::File {
                meta,
                size,
                content,
            } => {
                files.push((target, meta.clone(), *size, content.clone()));
                Ok(())
            }
            Node::Symlink { meta, target: to } => symlink(to, &target)
                .map_err(at(&target))
                .and_then(|()| set_mtime(&target, meta.mtime, true)),
            Node::HardLink { target: to } => {
                links.push((target, dest.join(to)));
                Ok(())
            }
        };
    });
    result?;
    // Layer data in layer order: each layer is then read forward once.
    files.sort_by_key(|(_, _, _, content)| match content {
        Content::Layer { layer, offset, .. } => (1, *layer, *offset),
        Content::LayerSparse { layer, extents, .. } => {
            (1, *layer, extents.first().map_or(0, |e| e.spool))
        }
        _ => (0, 0, 0),
    });
    for (path, meta, size, content) in files {
        write_file(&path, size, &content, spooled)?;
        finish(&path, meta.mode, meta.mtime)?;
    }
    for (path, to) in links {
        fs::hard_link(&to, &path).map_err(at(&path))?;
    }
    // Deepest first, so a parent's time is not changed by its children.
    for (path, meta) in dirs.into_iter().rev() {
        finish(&path, meta.mode | 0o700, meta.mtime)?;
    }
    Ok(())
}

fn write_file(
    path: &Path,
    size: u64,
    content: &Content,
    spooled: Option<&Spooled>,
) -> Result<(), MaterializeError> {
    let reader = open_content(content, size, spooled).map_err(at(path))?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(at(path))?;
    let mut buf = vec![0u8; 1 << 20];
    for (start, len) in reader.data_extents() {
        let mut done = 0;
        while done < len {
            let want = buf.len().min((len - done) as usize);
            let n = reader
                .read_at(&mut buf[..want], start + done)
                .map_err(at(path))?;
            if n == 0 {
                break;
            }
            out.write_all_at(&buf[..n], start + done)
                .map_err(at(path))?;
            done += n as u64;
        }
    }
    // Holes at the end are the file's size, not data.
    out.set_len(size).map_err(at(path))
}

/// Give `path` its mode (the owner may always write: the build's commands
/// run as the owner, and the tree is removed afterwards) and time.
fn finish(path: &Path, mode: u16, mtime: Option<u32>) -> Result<(), MaterializeError> {
    let mode = u32::from(mode) & 0o7777;
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o200)).map_err(at(path))?;
    set_mtime(path, mtime, false)
}

fn set_mtime(path: &Path, mtime: Option<u32>, symlink: bool) -> Result<(), MaterializeError> {
    let Some(secs) = mtime else { return Ok(()) };
    let time = nix::sys::time::TimeSpec::new(i64::from(secs), 0);
    let flag = if symlink {
        nix::sys::stat::UtimensatFlags::NoFollowSymlink
    } else {
        nix::sys::stat::UtimensatFlags::FollowSymlink
    };
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &time, &time, flag)
        .map_err(|e| at(path)(io::Error::from(e)))
}

/// Write the files of the SquashFS `reader` (a SquashFS file, or a SIF's
/// root partition) into the empty directory `dest`. Device nodes, FIFOs and
/// sockets cannot be made by an unprivileged user and are left out; their
/// paths are returned, for the caller to report.
pub fn image_to_dir(reader: &Reader, dest: &Path) -> Result<Vec<String>, MaterializeError> {
    let mut skipped = Vec::new();
    let mut dirs: Vec<(PathBuf, u16, u32)> = Vec::new();
    let mut seen: HashMap<u32, PathBuf> = HashMap::new();
    let mut result = Ok(());
    let image_err = |path: &Path, e: crate::squashfs::SqfsError| MaterializeError {
        path: path.to_path_buf(),
        error: io::Error::other(e.to_string()),
    };
    let walked = reader.walk("/", &mut |inner, entry| {
        if result.is_err() {
            return;
        }
        let rel = inner.trim_start_matches('/');
        let target = if rel.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(rel)
        };
        result = (|| -> Result<(), MaterializeError> {
            match entry.kind {
                EntryKind::Dir => {
                    if !rel.is_empty() {
                        fs::create_dir(&target).map_err(at(&target))?;
                    }
                    dirs.push((target, entry.mode, entry.mtime));
                }
                EntryKind::Symlink => {
                    let to = entry.symlink_target.clone().unwrap_or_default();
                    symlink(OsStr::new(&to), &target).map_err(at(&target))?;
                    set_mtime(&target, Some(entry.mtime), true)?;
                }
                EntryKind::File if entry.nlink > 1 && seen.contains_key(&entry.inode) => {
                    fs::hard_link(&seen[&entry.inode], &target).map_err(at(&target))?;
                }
                EntryKind::File => {
                    let mut out = File::create(&target).map_err(at(&target))?;
                    reader
                        .copy_file(inner, &mut out, inner)
                        .map_err(|e| image_err(&target, e))?;
                    out.flush().map_err(at(&target))?;
                    finish(&target, entry.mode, Some(entry.mtime))?;
                    if entry.nlink > 1 {
                        seen.insert(entry.inode, target);
                    }
                }
                _ => skipped.push(inner.to_string()),
            }
            Ok(())
        })();
    });
    result?;
    walked.map_err(|e| image_err(dest, e))?;
    for (path, mode, mtime) in dirs.into_iter().rev() {
        finish(&path, mode | 0o700, Some(mtime))?;
    }
    Ok(skipped)
}

/// Remove the directory tree at `path`, also where the build's commands
/// left directories without write permission: each is made writable
/// (it is the user's own) before it is emptied. Symbolic links are
/// removed, never followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::source::testutil::{OciMaker, TarMaker, compress, load_source};
    use crate::build::source::{Compression, Options};
    use std::os::unix::fs::MetadataExt;

    /// A two-layer OCI image written out: layer data in place, modes,
    /// links and times kept, a whiteout applied.
    #[test]
    fn a_tree_from_layers_as_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let oci = OciMaker::new(&d.path().join("layout"));
        let layer1 = TarMaker::default()
            .at(1_000_000_001)
            .dir("etc", 0o755)
            .file("etc/old", b"old", 0o644)
            .file("bin/tool", b"#!/bin/sh\n", 0o755)
            .symlink("bin/alias", "tool")
            .hard_link("bin/again", "bin/tool")
            .dir("ro", 0o555)
            .file("ro/inside", b"x", 0o444)
            .finish();
        let layer2 = TarMaker::default()
            .at(1_000_000_002)
            .file("etc/.wh.old", b"", 0o644)
            .file("etc/new", b"new", 0o600)
            .finish();
        let config = serde_json::json!({"architecture": "amd64", "os": "linux"});
        let m = oci.image(
            &config,
            &[
                compress(&layer1, Compression::Gzip),
                compress(&layer2, Compression::Gzip),
            ],
        );
        oci.index(&[m]);
        let loaded = load_source(&oci.dir, &Options::default()).unwrap();
        let out = d.path().join("root");
        fs::create_dir(&out).unwrap();
        tree_to_dir(&loaded.tree, Some(loaded.spooled()), &out).unwrap();
        assert_eq!(fs::read(out.join("etc/new")).unwrap(), b"new");
        assert!(!out.join("etc/old").exists());
        let tool = fs::metadata(out.join("bin/tool")).unwrap();
        assert_eq!(tool.mode() & 0o7777, 0o755);
        assert_eq!(tool.nlink(), 2);
        assert_eq!(tool.mtime(), 1_000_000_001);
        assert_eq!(
            fs::read_link(out.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        // Read-only in the image, writable by its owner here.
        let ro = fs::metadata(out.join("ro")).unwrap();
        assert_eq!(ro.mode() & 0o777, 0o755);
        assert_eq!(
            fs::metadata(out.join("ro/inside")).unwrap().mode() & 0o777,
            0o644
        );
        remove_tree(&out).unwrap();
        assert!(!out.exists());
    }

    /// The demo SquashFS written out and read back.
    #[test]
    fn a_squashfs_image_as_a_directory() {
        let Some(dir) = crate::testing::data_dir("RFAKE_TEST_IMAGES", "target/images") else {
            return;
        };
        let image = dir.join("demo.sqfs");
        let reader = Reader::open(File::open(&image).unwrap(), 0).unwrap();
        let d = tempfile::tempdir().unwrap();
        let skipped = image_to_dir(&reader, d.path()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            fs::read_to_string(d.path().join("etc/rfake-demo.txt")).unwrap(),
            "hello from the demo image\n"
        );
        let mut entries = 0;
        reader.walk("/", &mut |_, _| entries += 1).unwrap();
        let mut found = 0;
        fn count(p: &Path, n: &mut usize) {
            *n += 1;
            if fs::symlink_metadata(p).unwrap().is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    count(&e.unwrap().path(), n);
                }
            }
        }
        count(d.path(), &mut found);
        // The walk does not visit the root itself.
        assert_eq!(found - 1, entries);
    }

    /// Directories the build's commands made read-only are removed too.
    #[test]
    fn removing_read_only_trees() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        symlink("/etc", root.join("a/link")).unwrap();
        fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(Path::new("/etc").exists());
    }
}
