//! [`ImageFs`] (served by node ID) against [`Reader`] (by path) on the same
//! images: every entry's attributes, listing, link target, xattrs and
//! contents, read in pieces that straddle block boundaries.

use std::fs::File;
use std::path::Path;

use super::*;
use crate::fuse::{self, Filesystem};

/// The node at `path` (no symlinks followed), looked up name by name.
fn node_at(fs: &ImageFs, path: &str) -> (u64, fuse::Attr) {
    let mut node = fuse::ROOT;
    let mut attr = fs.getattr(node).unwrap();
    for name in path.split('/').filter(|c| !c.is_empty()) {
        (node, attr) = fs
            .lookup(node, name.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{path}: {name} not found"));
    }
    (node, attr)
}

/// Read all of `node` in chunks of `chunk` bytes.
fn read_all(fs: &ImageFs, node: u64, size: u64, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let before = out.len();
        fs.read(node, before as u64, chunk, &mut out).unwrap();
        assert!(out.len() > before, "no progress at {before} of {size}");
    }
    let mut past = Vec::new();
    fs.read(node, size, chunk, &mut past).unwrap();
    assert!(past.is_empty(), "data past the end");
    out
}

/// Compare everything `fs` serves with what `r` reads.
pub(super) fn check_image_fs(img: &Path, offset: u64, r: &Reader, cache_bytes: u64) {
    let fs = ImageFs::open(File::open(img).unwrap(), offset, cache_bytes, "test").unwrap();
    assert!(fs.lookup(fuse::ROOT, b"no-such-entry").unwrap().is_none());
    let mut entries = vec![("/".to_owned(), r.stat("/").unwrap())];
    r.walk("/", &mut |p, e| entries.push((p.to_owned(), e.clone())))
        .unwrap();
    let mut nodes_by_inode = std::collections::HashMap::new();
    for (path, e) in &entries {
        let (node, attr) = node_at(&fs, path);
        assert_eq!(attr.ino, u64::from(e.inode), "{path}");
        assert_eq!(attr.mode, u32::from(e.mode) | e.kind.type_bits(), "{path}");
        assert_eq!((attr.uid, attr.gid), (e.uid, e.gid), "{path}");
        assert_eq!((attr.size, attr.nlink), (e.size, e.nlink), "{path}");
        assert_eq!(attr.mtime, i64::from(e.mtime), "{path}");
        assert_eq!(fs.getattr(node).unwrap(), attr, "{path}");
        // Hard links: one inode, one node.
        let first = *nodes_by_inode.entry(attr.ino).or_insert(node);
        assert_eq!(first, node, "{path}: hard links share a node");
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = e
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone()))
            .collect();
        assert_eq!(fs.xattrs(node).unwrap(), xattrs, "{path}");
        match e.kind {
            EntryKind::Dir => {
                let names: Vec<Vec<u8>> = fs
                    .dir(node)
                    .unwrap()
                    .entries
                    .iter()
                    .map(|d| d.name.to_vec())
                    .collect();
                let expected: Vec<Vec<u8>> = r
                    .list(path)
                    .unwrap()
                    .into_iter()
                    .map(|c| c.name.into_bytes())
                    .collect();
                assert_eq!(names, expected, "{path}");
                assert_eq!(fs.read(node, 0, 10, &mut Vec::new()), Err(libc::EISDIR));
            }
            EntryKind::Symlink => {
                assert_eq!(
                    fs.readlink(node).unwrap(),
                    e.symlink_target.clone().unwrap().into_bytes(),
                    "{path}"
                );
            }
            EntryKind::File => {
                let whole = r.read_file(path, u64::MAX).unwrap();
                for chunk in [4096, 131_072, 1000, 1 << 20] {
                    assert!(
                        read_all(&fs, node, e.size, chunk) == whole,
                        "{path}: chunks of {chunk}"
                    );
                }
                // A read from the middle, across a block boundary.
                if whole.len() > 5000 {
                    let mut mid = Vec::new();
                    fs.read(node, 3000, 2000, &mut mid).unwrap();
                    assert!(mid == whole[3000..5000], "{path}: middle");
                }
                assert_eq!(fs.dir(node).unwrap_err(), libc::ENOTDIR);
                assert_eq!(fs.readlink(node), Err(libc::EINVAL));
            }
            _ => {}
        }
    }
    let stats = fs.stats();
    assert_eq!(stats.files, u64::from(r.info().inode_count));
}

#[test]
fn image_fs_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ImageFs>();
}

#[test]
fn image_fs_refuses_what_is_not_a_squashfs() {
    let scratch = tempfile::tempdir().unwrap();
    let junk = scratch.path().join("junk");
    std::fs::write(&junk, vec![0x42; 8192]).unwrap();
    let err = ImageFs::open(File::open(&junk).unwrap(), 0, 0, "junk")
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a SquashFS"), "{err}");
}
