//! The fuzz harness for SIF files (the driver: `crate::fuzz`):
//! `fuzz_sif` mutates SIF files and hands each to what reads them: the
//! SIF reader (header, descriptor table, partition metadata),
//! [`open_for_arch`] (which also checks the root partition's SquashFS
//! super block, as every launch does), and `rfake inspect` (which also
//! reads the objects and the SquashFS inside).
//!
//! Seeds: a SIF built here around the SquashFS fixture of
//! `sqfs/test_image.rs`, the test image demo.sif and the shared real SIF
//! files. Hot offsets: the header's counts, offsets and sizes, every
//! descriptor's type, used flag, ids, offset, sizes and partition fields,
//! and the root partition's super block fields.

use std::io::Cursor;

use super::sif::{Arch, DESCRIPTOR_LEN, FsType, Sif};
use super::test_support::SifBuilder;
use super::*;
use crate::fuzz;

/// The header's fields from the creation time on (8 bytes each).
const HEADER_FIELDS: [usize; 8] = [64, 72, 80, 88, 96, 104, 112, 120];
/// A descriptor's fields: data type, used, id, group, link, offset, size,
/// size with padding, then the partition's fstype, parttype, arch.
const DESCRIPTOR_FIELDS: [usize; 11] = [0, 4, 5, 9, 13, 17, 25, 33, 201, 205, 209];
/// The SquashFS super block's fields.
const SUPERBLOCK_FIELDS: [usize; 18] = [
    4, 8, 12, 16, 20, 22, 24, 26, 28, 30, 32, 40, 48, 56, 64, 72, 80, 88,
];

/// Where a sound SIF keeps its lengths, counts and offsets.
fn hot_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = HEADER_FIELDS.to_vec();
    let Ok(sif) = Sif::read(Cursor::new(bytes)) else {
        return out;
    };
    let table = sif.header.descriptors_offset as usize;
    let slots = (sif.header.descriptors_total as usize).min(16);
    for slot in 0..slots {
        out.extend(
            DESCRIPTOR_FIELDS
                .iter()
                .map(|f| table + slot * DESCRIPTOR_LEN + f),
        );
    }
    if let Ok(root) = sif.primary_partition() {
        out.extend(SUPERBLOCK_FIELDS.iter().map(|f| root.offset as usize + f));
    }
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let squashfs =
        crate::squashfs::test_image::fixture_bytes_with(crate::squashfs::Compression::Gzip);
    let mut seeds = vec![
        SifBuilder::new(Arch::host())
            .object(sif::DataType::Labels, br#"{"a": "b"}"#.to_vec())
            .primary(FsType::Squashfs, squashfs)
            .build(),
    ];
    seeds.extend(fuzz::seed_file(
        "RFAKE_TEST_IMAGES",
        "target/images",
        "demo.sif",
    ));
    for name in [
        "busybox_amd64.sif",
        "one-group.sif",
        "two-groups.sif",
        "one-group-signed-pgp.sif",
        "one-object-sbom.sif",
        "empty.sif",
    ] {
        seeds.extend(fuzz::seed_file(
            "RFAKE_TEST_SIF_DIR",
            "../shared/testdata/sif",
            name,
        ));
    }
    seeds
}

/// Everything that reads a SIF file.
fn read_sif(bytes: &[u8], path: &Path) {
    if let Ok(sif) = Sif::read(Cursor::new(bytes)) {
        let _ = sif.root_partition();
        for d in &sif.descriptors {
            let _ = (d.partition(), d.linked_group(), d.linked_object());
            let _ = sif.descriptor(d.id);
        }
    }
    std::fs::write(path, bytes).unwrap();
    let _ = open_for_arch(path, Arch::host());
    let _ = crate::inspect::inspect(path, Some("/"));
}

#[test]
fn fuzz_sif() {
    use proptest::prelude::*;
    let seeds = seeds();
    let strategies: Vec<_> = seeds
        .into_iter()
        .map(|s| {
            let hot = hot_offsets(&s);
            fuzz::mutations(s, hot, 4).boxed()
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("case.sif");
    fuzz::run(
        "fuzz_sif",
        proptest::strategy::Union::new(strategies),
        Vec::clone,
        |bytes| read_sif(bytes, &path),
    );
}

/// The seeds read cleanly: the harness starts from sound files.
#[test]
fn fuzz_sif_seeds_are_sound() {
    for s in seeds() {
        let sif = Sif::read(Cursor::new(&s)).unwrap();
        assert!(!sif.descriptors.is_empty() || s.len() < 40_000);
        assert!(hot_offsets(&s).len() >= HEADER_FIELDS.len());
    }
}
