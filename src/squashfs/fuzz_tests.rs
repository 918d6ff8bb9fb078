//! Fuzz harnesses for reading SquashFS images (the driver: `crate::fuzz`).
//!
//! - `fuzz_squashfs_reader`: what `rfake inspect` does: the report, the
//!   listing of everything, `stat`, `list` and reads of every entry
//!   through [`Reader`].
//! - `fuzz_image_fs`: what the FUSE server does, driven directly (no
//!   mount): open, then lookups, listings, reads, readlink and getxattr of
//!   every node, and node IDs the kernel never sends.
//!
//! Inputs are mutations of seeds: the fixture of `test_image.rs` (xattrs,
//! some out of line, symlinks, fragments, sparse and full blocks, hard
//! links; gzip and zstd) and the test image demo.sqfs. Two generators: byte
//! edits at the super block's fields, the table indexes and the metadata
//! block headers (or anywhere), and edits of fields *inside* a metadata
//! block (inode, directory, xattr, fragment, ID tables), decompressed,
//! changed and stored again, which byte edits of compressed data rarely
//! reach.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::check_tests::walk_image_fs;
use super::test_image::{Img, fixture_bytes_with};
use super::*;
use crate::fuse::{self, Filesystem};
use crate::fuzz;

struct Seed {
    bytes: Vec<u8>,
    hot: Vec<usize>,
    /// Metadata blocks, when they are zlib streams (gzip images).
    blocks: Vec<usize>,
}

fn seeds() -> Arc<Vec<Seed>> {
    let mut images = vec![
        (fixture_bytes_with(Compression::Gzip), true),
        (fixture_bytes_with(Compression::Zstd), false),
    ];
    // The demo image: gzip, 128 KiB blocks, 300 entries.
    if let Some(demo) = fuzz::seed_file("RFAKE_TEST_IMAGES", "target/images", "demo.sqfs") {
        images.push((demo, true));
    }
    let seeds = images
        .into_iter()
        .map(|(bytes, gzip)| {
            let img = Img::new(bytes);
            Seed {
                hot: img.hot_offsets(),
                blocks: if gzip { img.meta_blocks() } else { Vec::new() },
                bytes: img.bytes,
            }
        })
        .collect();
    Arc::new(seeds)
}

/// Values that lengths, counts and offsets go wrong with.
fn field_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        select(vec![
            0u64,
            1,
            2,
            3,
            0x7f,
            0xff,
            0x100,
            0xfff,
            0x1000,
            0x1fff,
            0x2000,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0xffff_ffff,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

/// Images made from the seeds: byte edits, or field edits inside a
/// metadata block.
fn images(seeds: Arc<Vec<Seed>>) -> BoxedStrategy<Vec<u8>> {
    let n = seeds.len();
    let raw = {
        let seeds = seeds.clone();
        (0..n)
            .prop_flat_map(move |i| {
                let s = &seeds[i];
                fuzz::mutations(s.bytes.clone(), s.hot.clone(), 4)
            })
            .boxed()
    };
    let gzip: Vec<usize> = (0..n).filter(|&i| !seeds[i].blocks.is_empty()).collect();
    let edit = (any::<Index>(), select(vec![1usize, 2, 4, 8]), field_value());
    let inside = (
        select(gzip),
        any::<Index>(),
        proptest::collection::vec(edit, 1..=3),
    )
        .prop_map(move |(i, block, edits)| {
            let s = &seeds[i];
            let mut img = Img::new(s.bytes.clone());
            let at = s.blocks[block.index(s.blocks.len())];
            img.edit_meta(at, |d| {
                for (pos, width, value) in edits {
                    let pos = pos.index(d.len());
                    for (b, v) in d[pos..].iter_mut().zip(&value.to_le_bytes()[..width]) {
                        *b = *v;
                    }
                }
            });
            img.bytes
        })
        .boxed();
    prop_oneof![raw, inside].boxed()
}

/// Run `check` on each generated image, written to a file.
fn fuzz_images(harness: &str, check: impl Fn(&Path)) {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("case.sqfs");
    fuzz::run(harness, images(seeds()), Vec::clone, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        check(&path);
    });
}

/// What `rfake inspect --list /` and friends do with an image.
fn read_like_inspect(path: &Path) {
    let _ = crate::inspect::inspect(path, Some("/"));
    let Ok(r) = Reader::open(File::open(path).unwrap(), 0) else {
        return;
    };
    let mut entries = Vec::new();
    let _ = r.walk("/", &mut |p, e| entries.push((p.to_owned(), e.kind)));
    for (p, kind) in entries.iter().take(2000) {
        let _ = r.stat(p);
        match kind {
            EntryKind::Dir => {
                let _ = r.list(p);
            }
            EntryKind::File | EntryKind::Symlink => {
                let _ = r.read_file(p, 1 << 20);
            }
            _ => {}
        }
    }
    let _ = r.stat("/../no/such/../../x");
}

/// What the FUSE server does with an image.
fn serve_like_fuse(path: &Path) {
    let Ok(fs) = ImageFs::open(File::open(path).unwrap(), 0, 1 << 20, "fuzz") else {
        return;
    };
    let _ = walk_image_fs(&fs);
    let _ = fs.lookup(fuse::ROOT, b"no-such-name");
    let _ = fs.stats();
    let _ = fs.has_xattrs();
    for node in [0, 2, 3, u64::MAX, u64::MAX / 2, 1 << 20] {
        let _ = fs.getattr(node);
        let _ = fs.dir(node);
        let _ = fs.readlink(node);
        let _ = fs.xattrs(node);
        let _ = fs.read(node, 0, 4096, &mut Vec::new());
    }
}

#[test]
fn fuzz_squashfs_reader() {
    fuzz_images("fuzz_squashfs_reader", read_like_inspect);
}

#[test]
fn fuzz_image_fs() {
    fuzz_images("fuzz_image_fs", serve_like_fuse);
}

/// The seeds themselves read cleanly (the harnesses start from sound
/// images), and the generators make images that differ from them.
#[test]
fn fuzz_seeds_are_sound() {
    for s in seeds().iter() {
        assert_eq!(super::check_tests::reader_error(&s.bytes), None);
        assert_eq!(super::check_tests::image_fs_error(&s.bytes), None);
        let img = Img::new(s.bytes.clone());
        for &at in &s.blocks {
            let (data, _) = img.meta(at);
            assert!(!data.is_empty() && data.len() <= 8192, "block at {at}");
        }
    }
}
