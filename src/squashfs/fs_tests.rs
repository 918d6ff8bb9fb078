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
    // Shared: reads queue read-ahead for background threads, which then
    // race the reads below for the same blocks.
    let fs = ImageFs::open(File::open(img).unwrap(), offset, cache_bytes, "test")
        .unwrap()
        .into_shared();
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

/// Poll `cond` for up to 20 s (the background threads share the machine).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < until, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The fixture, opened with a block cache, and big.bin's inode reference.
fn fixture_fs(dir: &Path, shared: bool) -> (std::sync::Arc<ImageFs>, u64, fuse::Attr) {
    let img = test_image::fixture_with(dir, Compression::Gzip);
    let fs = ImageFs::open(File::open(&img).unwrap(), 0, 1 << 20, "test").unwrap();
    let fs = if shared {
        fs.into_shared()
    } else {
        std::sync::Arc::new(fs)
    };
    let (node, attr) = node_at(&fs, "big.bin");
    (fs, node - 2, attr)
}

#[test]
fn prefetch_decompresses_the_keys_in_the_background_and_drops_the_wrong_ones() {
    let scratch = tempfile::tempdir().unwrap();
    let (fs, iref, attr) = fixture_fs(scratch.path(), false);
    let blocks: Vec<BlockKey> = (0..3).map(|i| (iref, i)).collect();
    assert!(blocks.iter().all(|&k| !fs.is_cached(k)));
    // Keys of no block: past the file's full blocks, an inode reference
    // the inode table does not hold, a fragment the table does not have,
    // a directory's "block".
    let root_ref = fs.node_of(fuse::ROOT).unwrap().0;
    let wrong = [
        (iref, 3),
        (iref, u32::MAX),
        (1 << 40, 0),
        (FRAGMENT_BLOCKS, 9999),
        (root_ref, 0),
    ];
    fs.prefetch(wrong.iter().copied().chain(blocks.iter().copied()));
    eventually("the blocks are cached", || {
        blocks.iter().all(|&k| fs.is_cached(k))
    });
    assert!(wrong.iter().all(|&k| !fs.is_cached(k)));
    // The fragment holding the file's tail, by its index.
    fs.prefetch([(FRAGMENT_BLOCKS, 0)]);
    eventually("the fragment is cached", || {
        fs.is_cached((FRAGMENT_BLOCKS, 0))
    });
    // What was decompressed in the background is what a read gives.
    let img = test_image::fixture_with(scratch.path(), Compression::Gzip);
    let r = Reader::open(File::open(&img).unwrap(), 0).unwrap();
    let whole = r.read_file("/big.bin", u64::MAX).unwrap();
    assert!(read_all(&fs, iref + 2, attr.size, 4096) == whole);
}

#[test]
fn reads_of_a_shared_image_queue_the_next_blocks() {
    let scratch = tempfile::tempdir().unwrap();
    let (fs, iref, _) = fixture_fs(scratch.path(), true);
    fs.read(iref + 2, 0, 10, &mut Vec::new()).unwrap();
    eventually("blocks 1 and 2 are read ahead", || {
        fs.is_cached((iref, 1)) && fs.is_cached((iref, 2))
    });
}

#[test]
fn reads_of_an_image_not_shared_start_no_threads() {
    let scratch = tempfile::tempdir().unwrap();
    let img = test_image::fixture_with(scratch.path(), Compression::Gzip);
    let fs = ImageFs::open(File::open(&img).unwrap(), 0, 1 << 20, "test").unwrap();
    let (node, _) = node_at(&fs, "big.bin");
    fs.read(node, 0, 10, &mut Vec::new()).unwrap();
    assert!(fs.is_cached((node - 2, 0)));
    assert!(!fs.is_cached((node - 2, 1)));
}

#[test]
fn prefetch_without_a_block_cache_does_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let img = test_image::fixture_with(scratch.path(), Compression::Gzip);
    let fs = ImageFs::open(File::open(&img).unwrap(), 0, 0, "test")
        .unwrap()
        .into_shared();
    let (node, attr) = node_at(&fs, "big.bin");
    fs.prefetch([(node - 2, 0)]);
    assert!(!fs.is_cached((node - 2, 0)));
    let r = Reader::open(File::open(&img).unwrap(), 0).unwrap();
    assert!(read_all(&fs, node, attr.size, 1000) == r.read_file("/big.bin", u64::MAX).unwrap());
}
