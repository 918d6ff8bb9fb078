//! Fuzz harnesses for the build sources (driver: `src/fuzz.rs`).
//!
//! - `fuzz_tar_layer`: the tar framing (`tar_reader`) and the layer reader
//!   (`layer`: whiteouts, links, PAX records, GNU sparse members, the size
//!   limit), then the SquashFS writer on what it loaded. Inputs are seed
//!   archives split into members (header, sparse extension blocks, data)
//!   and edited as such: numeric fields (size, mode, uid, mtime, real size,
//!   sparse map entries) set to boundary values in octal or base-256, type
//!   flags, names and link names, PAX records set or added (with a right or
//!   wrong length), data cut or grown, members dropped or repeated; the
//!   checksums are recomputed unless an edit breaks one. Raw byte mutations
//!   of whole seeds (checksums fixed) are mixed in. Seeds: a kitchen-sink
//!   archive built here and the layers of the OCI fixtures
//!   (`$RFAKE_TEST_OCI`).
//! - `fuzz_oci`: OCI layouts, OCI archives and docker archives. An image is
//!   its documents (index, manifest, configuration, docker `manifest.json`)
//!   as JSON values plus its layers; edits set or remove fields chosen by
//!   JSON pointer to hostile values (huge, negative and fractional sizes,
//!   malformed or foreign digests, other media types, wrong types, deep
//!   nesting, long lists) or flip bytes of a serialized document; the
//!   digest chain is recomputed after the edits (so the edits reach the
//!   deeper documents) unless the case says not to. Seeds: images built
//!   here and the OCI fixtures.
//!
//! The check: loading returns (an error is fine) with a one-line message;
//! a loaded tree stays within the size limit, and is written as SquashFS
//! and read back equal, file by file.

use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{Value, json};

use super::super::spool::{Spool, Spooled, open_content};
use super::super::tree::{Content, Node, Tree};
use super::layer::{Blob, Origin, apply_layer};
use super::testutil::{TarMaker, compress, gnu_sparse_member, sha256_hex};
use super::{Compression, Cx, Options, SizeLimit, SourceKind, detect, load};
use crate::fuse::{Filesystem, ROOT};
use crate::fuzz;

/// The size limit of the fuzzed builds: big enough for sparse files of
/// every shape, small enough that writing one stays quick.
const FUZZ_MAX_SIZE: u64 = 1 << 30;

fn fuzz_options(skip_special: bool) -> Options {
    Options {
        skip_special,
        max_size: SizeLimit {
            bytes: FUZZ_MAX_SIZE,
            origin: "fuzz".into(),
        },
    }
}

// ----------------------------------------------------------------------
// Tar members

/// A member as stored: its header, old GNU sparse extension blocks, data.
#[derive(Clone, Debug)]
struct Raw {
    header: [u8; 512],
    ext: Vec<[u8; 512]>,
    data: Vec<u8>,
    /// Keep the header's size field as it is (a lie about the data).
    keep_size: bool,
    /// Leave the checksum wrong.
    bad_checksum: bool,
}

/// Split a well-formed archive (a seed) into its members.
fn split(tar: &[u8]) -> Vec<Raw> {
    let block = |at: usize| -> Option<[u8; 512]> { tar.get(at..at + 512)?.try_into().ok() };
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(header) = block(pos) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar::Header::from_byte_slice(&header)
            .entry_size()
            .unwrap_or(0) as usize;
        pos += 512;
        let mut ext = Vec::new();
        if header[156] == b'S' && header[482] != 0 {
            while let Some(e) = block(pos) {
                pos += 512;
                ext.push(e);
                if e[504] == 0 {
                    break;
                }
            }
        }
        let data = tar[pos.min(tar.len())..(pos + size).min(tar.len())].to_vec();
        pos += size.next_multiple_of(512);
        out.push(Raw {
            header,
            ext,
            data,
            keep_size: false,
            bad_checksum: false,
        });
    }
    out
}

/// The header checksum (POSIX: the bytes summed, the field as spaces).
fn set_checksum(header: &mut [u8; 512]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn serialize(members: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut header = m.header;
        if !m.keep_size {
            put_number(&mut header[124..136], m.data.len() as u64, false);
        }
        if m.bad_checksum {
            header[148] ^= 1;
        } else {
            set_checksum(&mut header);
        }
        out.extend_from_slice(&header);
        for e in &m.ext {
            out.extend_from_slice(e);
        }
        out.extend_from_slice(&m.data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Write `value` into a numeric header field: octal when it fits (and
/// `base256` is not asked), else GNU base-256 (first byte 0x80).
fn put_number(field: &mut [u8], value: u64, base256: bool) {
    let digits = field.len() - 1;
    let octal = format!("{value:0digits$o}");
    if !base256 && octal.len() <= digits {
        field[..digits].copy_from_slice(octal.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = bytes.len().min(field.len() - 1);
        let len = field.len();
        field[len - n..].copy_from_slice(&bytes[8 - n..]);
    }
}

/// Header fields holding numbers: (offset, length).
const NUMBER_FIELDS: &[(usize, usize)] = &[
    (100, 8),  // mode
    (108, 8),  // uid
    (116, 8),  // gid
    (124, 12), // size
    (136, 12), // mtime
    (483, 12), // GNU real size
    (386, 12), // GNU sparse entries: offset, length (4 pairs)
    (398, 12),
    (410, 12),
    (422, 12),
    (434, 12),
    (446, 12),
    (458, 12),
    (470, 12),
];

const TYPE_FLAGS: &[u8] = b"0\x00125367gxLKSDVMN?";

const PAX_KEYS: &[&str] = &[
    "path",
    "linkpath",
    "size",
    "uid",
    "mtime",
    "GNU.sparse.major",
    "GNU.sparse.minor",
    "GNU.sparse.name",
    "GNU.sparse.realsize",
    "GNU.sparse.size",
    "GNU.sparse.map",
    "GNU.sparse.offset",
    "GNU.sparse.numbytes",
    "GNU.sparse.numblocks",
    "SCHILY.xattr.user.x",
    "SCHILY.xattr.security.capability",
    "SCHILY.xattr.system.posix_acl_access",
    "comment",
];

fn pax_values() -> Vec<String> {
    [
        "0",
        "1",
        "-1",
        "512",
        "1099511627776",
        "18446744073709551615",
        "99999999999999999999",
        "1.5",
        "abc",
        "",
        "0,3,100,2",
        "0,3,100",
        "100,2,0,3",
        "0,0",
        "1,2,3,4,5,6",
        "../../etc/passwd",
        "/abs/path",
        "a/.wh.b",
        "d/.wh..wh..opq",
        ".",
        "a\nb",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "x".repeat(300),
        format!("{}", FUZZ_MAX_SIZE + 1),
        (0..200).map(|i| format!("{},1,", i * 4096)).collect(),
    ])
    .collect()
}

fn numbers() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            0u64,
            1,
            7,
            511,
            512,
            513,
            4095,
            4096,
            1 << 20,
            1 << 30,
            (1 << 30) + 1,
            (1 << 33) - 1,
            1 << 33,
            1 << 40,
            1 << 50,
            1 << 62,
            u64::MAX / 2,
            u64::MAX,
        ]),
        1 => any::<u64>(),
        1 => 0u64..10_000,
    ]
}

/// An edit of a seed's members; indexes are taken modulo the count.
#[derive(Clone, Debug)]
enum Edit {
    Number {
        member: usize,
        field: usize,
        value: u64,
        base256: bool,
    },
    /// A sparse entry (offset, length) in an extension block.
    ExtSparse {
        member: usize,
        slot: usize,
        offset: u64,
        len: u64,
        more: bool,
    },
    Type {
        member: usize,
        flag: u8,
    },
    /// Overwrite the name (0) or link name (157) with `text`.
    Name {
        member: usize,
        link: bool,
        text: String,
    },
    Pax {
        member: usize,
        key: usize,
        value: String,
        bad_length: bool,
    },
    Data {
        member: usize,
        len: usize,
        fill: u8,
    },
    SizeLie {
        member: usize,
        value: u64,
    },
    Drop {
        member: usize,
    },
    Repeat {
        member: usize,
    },
    BadChecksum {
        member: usize,
    },
}

fn edits() -> impl Strategy<Value = Edit> {
    let m = 0usize..64;
    prop_oneof![
        4 => (m.clone(), 0..NUMBER_FIELDS.len(), numbers(), proptest::bool::weighted(0.2))
            .prop_map(|(member, field, value, base256)| Edit::Number { member, field, value, base256 }),
        2 => (m.clone(), 0usize..21, numbers(), numbers(), any::<bool>())
            .prop_map(|(member, slot, offset, len, more)| Edit::ExtSparse { member, slot, offset, len, more }),
        2 => (m.clone(), proptest::sample::select(TYPE_FLAGS.to_vec()))
            .prop_map(|(member, flag)| Edit::Type { member, flag }),
        2 => (m.clone(), any::<bool>(), proptest::sample::select(vec![
                "..", "../x", "a/../../b", "/", "", ".", "./", "etc/.wh.passwd", ".wh..wh..opq",
                "a/.wh..wh..opq", "x/.wh..wh.plnk", "dir/", "a//b", "hosts", "etc/hosts",
                "usr/bin", "\u{ff}\u{fe}", "self",
            ]).prop_map(str::to_string))
            .prop_map(|(member, link, text)| Edit::Name { member, link, text }),
        3 => (m.clone(), 0..PAX_KEYS.len(), proptest::sample::select(pax_values()), proptest::bool::weighted(0.1))
            .prop_map(|(member, key, value, bad_length)| Edit::Pax { member, key, value, bad_length }),
        1 => (m.clone(), 0usize..4096, any::<u8>())
            .prop_map(|(member, len, fill)| Edit::Data { member, len, fill }),
        1 => (m.clone(), numbers()).prop_map(|(member, value)| Edit::SizeLie { member, value }),
        1 => m.clone().prop_map(|member| Edit::Drop { member }),
        1 => m.clone().prop_map(|member| Edit::Repeat { member }),
        1 => m.prop_map(|member| Edit::BadChecksum { member }),
    ]
}

/// A PAX record, `LEN key=value\n` with LEN counting itself (or off by
/// one when `bad_length`).
fn pax_record(key: &str, value: &str, bad_length: bool) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    if bad_length {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

fn apply_edit(members: &mut Vec<Raw>, edit: &Edit) {
    if members.is_empty() {
        return;
    }
    let n = members.len();
    match edit {
        Edit::Number {
            member,
            field,
            value,
            base256,
        } => {
            let (at, len) = NUMBER_FIELDS[*field];
            put_number(
                &mut members[member % n].header[at..at + len],
                *value,
                *base256,
            );
            if at == 124 {
                members[member % n].keep_size = true;
            }
        }
        Edit::ExtSparse {
            member,
            slot,
            offset,
            len,
            more,
        } => {
            let m = &mut members[member % n];
            m.header[482] = 1;
            if m.ext.is_empty() {
                m.ext.push([0; 512]);
            }
            let last = m.ext.len() - 1;
            let e = &mut m.ext[last];
            put_number(&mut e[slot * 24..slot * 24 + 12], *offset, false);
            put_number(&mut e[slot * 24 + 12..slot * 24 + 24], *len, false);
            e[504] = u8::from(*more);
            if *more {
                m.ext.push([0; 512]);
            }
        }
        Edit::Type { member, flag } => members[member % n].header[156] = *flag,
        Edit::Name { member, link, text } => {
            let at = if *link { 157 } else { 0 };
            let field = &mut members[member % n].header[at..at + 100];
            field.fill(0);
            let bytes = text.as_bytes();
            field[..bytes.len().min(100)].copy_from_slice(&bytes[..bytes.len().min(100)]);
        }
        Edit::Pax {
            member,
            key,
            value,
            bad_length,
        } => {
            let i = member % n;
            let record = pax_record(PAX_KEYS[*key], value, *bad_length);
            if i > 0 && members[i - 1].header[156] == b'x' {
                members[i - 1].data.extend_from_slice(&record);
            } else {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::XHeader);
                h.set_path("PaxHeaders/x").unwrap();
                h.set_mode(0o644);
                members.insert(
                    i,
                    Raw {
                        header: *h.as_bytes(),
                        ext: Vec::new(),
                        data: record,
                        keep_size: false,
                        bad_checksum: false,
                    },
                );
            }
        }
        Edit::Data { member, len, fill } => members[member % n].data.resize(*len, *fill),
        Edit::SizeLie { member, value } => {
            let m = &mut members[member % n];
            put_number(&mut m.header[124..136], *value, false);
            m.keep_size = true;
        }
        Edit::Drop { member } => {
            members.remove(member % n);
        }
        Edit::Repeat { member } => {
            let m = members[member % n].clone();
            members.insert(member % n, m);
        }
        Edit::BadChecksum { member } => members[member % n].bad_checksum = true,
    }
}

/// A kitchen-sink layer: every member type and extension rfake reads.
fn kitchen_sink() -> Vec<u8> {
    let mut v1 = b"2\n0\n3\n100\n2\n".to_vec();
    v1.resize(512, 0);
    v1.extend_from_slice(b"abcde");
    let tar = TarMaker::default()
        .at(1_600_000_000)
        .dir("./", 0o755)
        .dir("etc/", 0o750)
        .file("etc/hosts", b"127.0.0.1 localhost\n", 0o644)
        .hard_link("etc/hosts2", "etc/hosts")
        .symlink("bin", "usr/bin")
        .file("usr/bin/tool", b"#!/bin/sh\n", 0o4755)
        .file_with_xattrs(
            "usr/bin/ping",
            b"elf",
            &[("security.capability", b"\x01\x02"), ("user.note", b"n")],
        )
        .long_named(&format!("{}/deep", "d".repeat(150)), b"long")
        .with_pax(&[("mtime", b"1500000000.5"), ("uid", b"1000")], "pax", b"p")
        .file("var/cache/a", b"a", 0o644)
        .file("var/cache/.wh..wh..opq", b"", 0o644)
        .file("etc/.wh.old", b"", 0o644)
        .with_pax(
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"sparse-v1"),
                ("GNU.sparse.realsize", b"110"),
            ],
            "GNUSparseFile.1/sparse-v1",
            &v1,
        )
        .with_pax(
            &[
                ("GNU.sparse.size", b"110"),
                ("GNU.sparse.numblocks", b"2"),
                ("GNU.sparse.name", b"sparse-v01"),
                ("GNU.sparse.map", b"0,3,100,2"),
            ],
            "GNUSparseFile.1/sparse-v01",
            b"abcde",
        )
        .with_pax(
            &[
                ("GNU.sparse.size", b"110"),
                ("GNU.sparse.offset", b"0"),
                ("GNU.sparse.numbytes", b"3"),
                ("GNU.sparse.offset", b"100"),
                ("GNU.sparse.numbytes", b"2"),
            ],
            "sparse-v00",
            b"abcde",
        )
        .special("dev/null", tar::EntryType::Char)
        .finish();
    let chunks: Vec<(u64, u64)> = (0..26).map(|i| (i * 8192, 3)).collect();
    let data = vec![b's'; 78];
    let mut tar = tar[..tar.len() - 1024].to_vec();
    tar.extend(gnu_sparse_member("sparse-old", 300_000, &chunks, &data));
    tar.extend(gnu_sparse_member(
        "sparse-huge",
        1 << 29,
        &[(0, 1), ((1 << 29) - 1, 1)],
        b"hi",
    ));
    tar.extend([0; 1024]);
    tar
}

/// The layers of the OCI fixtures, decompressed (raw tars).
fn fixture_layers() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for image in ["layered-oci-dir", "fixture-oci-dir"] {
        let Some(index) = fuzz::seed_file(
            "RFAKE_TEST_OCI",
            "target/oci",
            &format!("{image}/index.json"),
        ) else {
            continue;
        };
        let Some(dir) = std::env::var_os("RFAKE_TEST_OCI").map(PathBuf::from) else {
            continue;
        };
        let _ = index;
        let blobs = dir.join(image).join("blobs/sha256");
        for entry in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let compression = super::detect::compression_of(&bytes).unwrap_or(Compression::None);
            let mut raw = Vec::new();
            let Ok(mut reader) = super::detect::decoder(compression, &bytes[..]) else {
                continue;
            };
            if reader.read_to_end(&mut raw).is_ok()
                && super::detect::is_tar_header(raw.get(..512).unwrap_or_default())
            {
                out.push(raw);
            }
        }
    }
    out
}

/// Load `tar` as a layer, then write and read back what it gave.
fn check_layer(tar: &[u8], skip_special: bool) {
    let opts = fuzz_options(skip_special);
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let mut tree = Tree::default();
    let origin = Origin {
        archive: Path::new("fuzz.tar"),
        inner: Some("layer 1 of 1".into()),
    };
    // A layer is read in place, and again when the image is written.
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, tar).unwrap();
    let blob = Blob {
        file: Arc::new(file),
        offset: 0,
        len: tar.len() as u64,
    };
    let result = {
        let mut cx = Cx::new(&opts, &mut spool);
        apply_layer(&mut cx, &origin, &blob, None, &mut tree)
    };
    match result {
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "two lines: {message}");
            let _ = e.exit_kind();
        }
        Ok(()) => {
            let (_, bytes) = tree.totals();
            assert!(bytes <= FUZZ_MAX_SIZE, "{bytes} bytes over the limit");
            write_and_compare(&tree, &spool.finish().unwrap());
        }
    }
}

/// Write `tree` as SquashFS and compare every regular file read back (the
/// first and last KiB of big ones) with its content.
fn write_and_compare(tree: &Tree, spool: &Spooled) {
    if tree.check_hard_links().is_err() {
        return;
    }
    let img = tempfile::NamedTempFile::new().unwrap();
    let opts = crate::squashfs::WriteOptions {
        block_size: 4096,
        workers: 1,
        ..Default::default()
    };
    crate::squashfs::write_image(img.path(), tree, Some(spool), &opts, &mut |_| {})
        .unwrap_or_else(|e| panic!("writing what loaded: {e}"));
    // Read back as the FUSE server does: names are bytes.
    let fs = crate::squashfs::ImageFs::open(File::open(img.path()).unwrap(), 0, 1 << 20, "fuzz")
        .unwrap_or_else(|e| panic!("opening what was written: {e}"));
    tree.visit(&mut |path, node| {
        let Node::File { size, content, .. } = node else {
            return;
        };
        let c = open_content(content, *size, Some(spool)).unwrap();
        for (at, len) in c.data_extents() {
            assert!(
                at.checked_add(len).is_some_and(|end| end <= *size),
                "{path:?}"
            );
        }
        let mut node_id = ROOT;
        for name in path.iter() {
            node_id = match fs.lookup(node_id, name.as_bytes()) {
                Ok(Some((id, _))) => id,
                other => panic!("{path:?}: {name:?}: {other:?}"),
            };
        }
        let attr = fs.getattr(node_id).unwrap();
        assert_eq!(attr.size, *size, "{path:?}");
        // All of a small file; the first and last KiB of a big one.
        let ranges = if *size <= 1 << 20 {
            vec![(0, *size)]
        } else {
            vec![(0, 1024), (*size - 1024, 1024)]
        };
        for (at, len) in ranges {
            let mut want = vec![0u8; len as usize];
            let mut done = 0;
            while done < want.len() {
                let n = c.read_at(&mut want[done..], at + done as u64).unwrap();
                assert!(n > 0, "{path:?}: content ends early");
                done += n;
            }
            // A sparse file's bytes once more, from its extents directly.
            let sparse = match content {
                Content::Sparse { extents, .. } => Some((None, extents)),
                Content::LayerSparse { layer, extents, .. } => Some((Some(*layer), extents)),
                _ => None,
            };
            if let Some((layer, extents)) = sparse {
                let mut again = vec![0u8; len as usize];
                for e in extents.iter() {
                    let (from, to) = (e.at.max(at), (e.at + e.len).min(at + len));
                    if from < to {
                        let out = &mut again[(from - at) as usize..(to - at) as usize];
                        let stored = e.spool + (from - e.at);
                        match layer {
                            None => spool.file().read_exact_at(out, stored).unwrap(),
                            Some(layer) => {
                                let mut done = 0;
                                while done < out.len() {
                                    done += spool
                                        .read_layer(layer, stored + done as u64, &mut out[done..])
                                        .unwrap();
                                }
                            }
                        }
                    }
                }
                assert!(
                    again == want,
                    "{path:?} at {at}: the content reader differs"
                );
            }
            let mut got = Vec::new();
            fs.read(node_id, at, len as usize, &mut got)
                .unwrap_or_else(|e| panic!("{path:?} at {at}: errno {e}"));
            assert!(got == want, "{path:?} at {at}: differs");
        }
    });
}

#[test]
fn fuzz_tar_layer() {
    let mut seeds = vec![
        kitchen_sink(),
        TarMaker::default().file("one", b"1", 0o644).finish(),
    ];
    seeds.extend(fixture_layers());
    // Parsed once; each case edits a copy.
    let split_seeds: Vec<Vec<Raw>> = seeds.iter().map(|s| split(s)).collect();
    let structured = (
        0..split_seeds.len(),
        proptest::collection::vec(edits(), 0..8),
        any::<bool>(),
    )
        .prop_map(move |(seed, edits, skip)| {
            let mut members = split_seeds[seed].clone();
            for edit in &edits {
                apply_edit(&mut members, edit);
            }
            (serialize(&members), skip)
        });
    // Raw byte edits at the header fields of the seeds, checksums fixed.
    let raw = Union::new(seeds.iter().map(|seed| {
        let headers: Vec<usize> = header_offsets(seed);
        let hot: Vec<usize> = headers
            .iter()
            .flat_map(|&h| {
                [100, 108, 124, 136, 156, 157, 257, 345, 386, 398, 482, 483].map(|f| h + f)
            })
            .collect();
        fuzz::mutations(seed.clone(), hot, 6)
            .prop_map(move |mut bytes| {
                for &h in &headers {
                    if let Some(block) = bytes.get_mut(h..h + 512) {
                        let block: &mut [u8; 512] = block.try_into().unwrap();
                        set_checksum(block);
                    }
                }
                (bytes, false)
            })
            .boxed()
    }));
    let strategy = prop_oneof![3 => structured, 1 => raw];
    fuzz::run(
        "fuzz_tar_layer",
        strategy,
        |(tar, _)| tar.clone(),
        |(tar, skip)| check_layer(tar, *skip),
    );
}

/// Where a seed's headers are (extension blocks are not headers).
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    for m in split(tar) {
        out.push(pos);
        pos += 512 * (1 + m.ext.len()) + m.data.len().next_multiple_of(512);
    }
    out
}

// ----------------------------------------------------------------------
// OCI images

/// How an image is stored.
#[derive(Clone, Copy, Debug)]
enum Format {
    Layout,
    OciArchive,
    Docker,
}

/// An image as documents and layers.
#[derive(Clone, Debug)]
struct Image {
    index: Value,
    manifest: Value,
    config: Value,
    layers: Vec<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    Index,
    Manifest,
    Config,
    DockerManifest,
}

#[derive(Clone, Debug)]
enum JsonEdit {
    Set {
        doc: Doc,
        pointer: &'static str,
        value: Value,
    },
    Remove {
        doc: Doc,
        pointer: &'static str,
    },
    /// Flip bits of the serialized document at a position (a fraction of
    /// its length), before (`rehash`) or after its digest is taken.
    Bytes {
        doc: Doc,
        at: f64,
        xor: u8,
        rehash: bool,
    },
}

const POINTERS: &[(Doc, &str)] = &[
    (Doc::Index, "/manifests"),
    (Doc::Index, "/manifests/0"),
    (Doc::Index, "/manifests/0/size"),
    (Doc::Index, "/manifests/0/digest"),
    (Doc::Index, "/manifests/0/mediaType"),
    (Doc::Index, "/manifests/0/platform"),
    (Doc::Index, "/manifests/0/annotations"),
    (Doc::Index, "/manifests/1"),
    (Doc::Index, "/schemaVersion"),
    (Doc::Manifest, "/config"),
    (Doc::Manifest, "/config/size"),
    (Doc::Manifest, "/config/digest"),
    (Doc::Manifest, "/layers"),
    (Doc::Manifest, "/layers/0"),
    (Doc::Manifest, "/layers/0/size"),
    (Doc::Manifest, "/layers/0/digest"),
    (Doc::Manifest, "/layers/0/mediaType"),
    (Doc::Manifest, "/layers/1"),
    (Doc::Manifest, "/schemaVersion"),
    (Doc::Manifest, "/manifests"),
    (Doc::Config, "/config"),
    (Doc::Config, "/config/Env"),
    (Doc::Config, "/config/Env/0"),
    (Doc::Config, "/config/Cmd"),
    (Doc::Config, "/config/Entrypoint"),
    (Doc::Config, "/config/WorkingDir"),
    (Doc::Config, "/config/Labels"),
    (Doc::Config, "/config/Labels/x"),
    (Doc::Config, "/architecture"),
    (Doc::DockerManifest, ""),
    (Doc::DockerManifest, "/0"),
    (Doc::DockerManifest, "/0/Config"),
    (Doc::DockerManifest, "/0/Layers"),
    (Doc::DockerManifest, "/0/Layers/0"),
    (Doc::DockerManifest, "/0/RepoTags"),
    (Doc::DockerManifest, "/1"),
];

fn hostile_values() -> Vec<Value> {
    let mut deep = json!([]);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let descriptor = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", "0".repeat(64)),
        "size": 2,
    });
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1u64 << 53),
        json!(1u64 << 40),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x".repeat(5000)),
        json!(format!("sha256:{}", "0".repeat(64))),
        json!(format!("sha512:{}", "a".repeat(128))),
        json!("sha256:../../../etc/passwd"),
        json!("md5:abc"),
        json!("sha256:"),
        json!("application/vnd.oci.image.index.v1+json"),
        json!("application/vnd.oci.image.manifest.v1+json"),
        json!("application/vnd.docker.distribution.manifest.list.v2+json"),
        json!("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
        json!("../../etc/passwd"),
        json!("/abs"),
        json!("A=1"),
        json!(["/bin/sh", 3]),
        json!([]),
        json!({}),
        json!({"a": 1}),
        json!({"architecture": "s390x", "os": "linux"}),
        json!({"vnd.docker.reference.type": "attestation-manifest"}),
        deep,
        descriptor.clone(),
        Value::Array(vec![descriptor; 2000]),
    ]
}

fn json_edits() -> impl Strategy<Value = JsonEdit> {
    let docs = proptest::sample::select(vec![
        Doc::Index,
        Doc::Manifest,
        Doc::Config,
        Doc::DockerManifest,
    ]);
    prop_oneof![
        6 => (proptest::sample::select(POINTERS.to_vec()), proptest::sample::select(hostile_values()))
            .prop_map(|((doc, pointer), value)| JsonEdit::Set { doc, pointer, value }),
        1 => proptest::sample::select(POINTERS.to_vec())
            .prop_map(|(doc, pointer)| JsonEdit::Remove { doc, pointer }),
        2 => (docs, 0.0..1.0f64, 1u8..=255, any::<bool>())
            .prop_map(|(doc, at, xor, rehash)| JsonEdit::Bytes { doc, at, xor, rehash }),
    ]
}

/// Set (or remove, with `None`) the value at `pointer`, creating objects
/// and extending arrays on the way when they are missing.
fn set_pointer(doc: &mut Value, pointer: &str, value: Option<Value>) {
    if pointer.is_empty() {
        if let Some(v) = value {
            *doc = v;
        }
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let Some(parent) = (if parent.is_empty() {
        Some(&mut *doc)
    } else {
        doc.pointer_mut(parent)
    }) else {
        return;
    };
    match (parent, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(last.to_string(), v);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), value) => {
            let Ok(i) = last.parse::<usize>() else { return };
            match value {
                Some(v) if i < items.len() => items[i] = v,
                Some(v) => items.push(v),
                None if i < items.len() => {
                    items.remove(i);
                }
                None => {}
            }
        }
        (other, Some(v)) => *other = json!({ last: v }),
        _ => {}
    }
}

fn descriptor(media: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media,
        "digest": format!("sha256:{}", sha256_hex(bytes)),
        "size": bytes.len(),
    })
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The documents' bytes after `edits`, with the digests of the edited
/// documents put back into those that name them (the chain).
struct Stored {
    files: Vec<(String, Vec<u8>)>,
    docker_manifest: Vec<u8>,
    /// The OCI layout's file names of the image (for the docker format).
    config_name: String,
    layer_names: Vec<String>,
}

fn bytes_edit(bytes: &mut [u8], at: f64, xor: u8) {
    if !bytes.is_empty() {
        let i = ((bytes.len() - 1) as f64 * at) as usize;
        bytes[i] ^= xor;
    }
}

fn store(image: &Image, edits: &[JsonEdit]) -> Stored {
    let edits_of = |doc: Doc| {
        edits.iter().filter(move |e| match e {
            JsonEdit::Set { doc: d, .. }
            | JsonEdit::Remove { doc: d, .. }
            | JsonEdit::Bytes { doc: d, .. } => *d == doc,
        })
    };
    let edited = |doc: Doc, mut value: Value| {
        let mut late = Vec::new();
        for e in edits_of(doc) {
            match e {
                JsonEdit::Set {
                    pointer, value: v, ..
                } => set_pointer(&mut value, pointer, Some(v.clone())),
                JsonEdit::Remove { pointer, .. } => set_pointer(&mut value, pointer, None),
                JsonEdit::Bytes { .. } => {}
            }
        }
        let mut bytes = serde_json::to_vec(&value).unwrap();
        for e in edits_of(doc) {
            if let JsonEdit::Bytes {
                at, xor, rehash, ..
            } = e
            {
                if *rehash {
                    bytes_edit(&mut bytes, *at, *xor);
                } else {
                    late.push((*at, *xor));
                }
            }
        }
        (bytes, late)
    };
    let blob = |bytes: &[u8]| format!("blobs/sha256/{}", sha256_hex(bytes));
    let mut files = Vec::new();
    let layer_names: Vec<String> = image.layers.iter().map(|l| blob(l)).collect();
    for (l, name) in image.layers.iter().zip(&layer_names) {
        files.push((name.clone(), l.clone()));
    }
    let (mut config, late) = edited(Doc::Config, image.config.clone());
    let config_name = blob(&config);
    let mut manifest = image.manifest.clone();
    set_pointer(
        &mut manifest,
        "/config",
        Some(descriptor(
            "application/vnd.oci.image.config.v1+json",
            &config,
        )),
    );
    let layers: Vec<Value> = image
        .layers
        .iter()
        .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
        .collect();
    set_pointer(&mut manifest, "/layers", Some(Value::Array(layers)));
    for (at, xor) in late {
        bytes_edit(&mut config, at, xor);
    }
    files.push((config_name.clone(), config));
    let (mut manifest, late) = edited(Doc::Manifest, manifest);
    let mut index = image.index.clone();
    set_pointer(
        &mut index,
        "/manifests/0",
        Some(descriptor(MANIFEST, &manifest)),
    );
    let manifest_name = blob(&manifest);
    for (at, xor) in late {
        bytes_edit(&mut manifest, at, xor);
    }
    files.push((manifest_name, manifest));
    let (mut index, late) = edited(Doc::Index, index);
    for (at, xor) in late {
        bytes_edit(&mut index, at, xor);
    }
    files.push(("index.json".into(), index));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    let docker = json!([{
        "Config": config_name,
        "RepoTags": ["localhost/fuzz:1"],
        "Layers": layer_names,
    }]);
    let (mut docker_manifest, late) = edited(Doc::DockerManifest, docker);
    for (at, xor) in late {
        bytes_edit(&mut docker_manifest, at, xor);
    }
    Stored {
        files,
        docker_manifest,
        config_name,
        layer_names,
    }
}

/// Write the image in `format` under `dir`; the SOURCE path.
fn materialize(stored: &Stored, format: Format, dir: &Path) -> PathBuf {
    match format {
        Format::Layout => {
            let root = dir.join("layout");
            for (name, bytes) in &stored.files {
                let path = root.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            root
        }
        Format::OciArchive | Format::Docker => {
            let mut t = TarMaker::default();
            for (name, bytes) in &stored.files {
                if matches!(format, Format::Docker)
                    && (name == "index.json" || name == "oci-layout")
                {
                    continue;
                }
                t = t.file(name, bytes, 0o444);
            }
            if matches!(format, Format::Docker) {
                t = t.file("manifest.json", &stored.docker_manifest, 0o444);
                let _ = (&stored.config_name, &stored.layer_names);
            }
            let path = dir.join("image.tar");
            std::fs::write(&path, t.finish()).unwrap();
            path
        }
    }
}

fn check_image(image: &Image, edits: &[JsonEdit], format: Format) {
    let dir = tempfile::tempdir().unwrap();
    let stored = store(image, edits);
    let source = materialize(&stored, format, dir.path());
    let Ok(kind) = detect(&source) else { return };
    let opts = fuzz_options(true);
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let mut tree = Tree::default();
    let mut meta = super::super::ImageMeta::default();
    match load(&source, kind, &opts, &mut spool, &mut tree, &mut meta) {
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "two lines: {message}");
        }
        Ok(_) => {
            assert!(
                matches!(
                    kind,
                    SourceKind::OciLayout
                        | SourceKind::OciArchive
                        | SourceKind::DockerArchive
                        | SourceKind::Tarball(_)
                ),
                "{kind:?}"
            );
            let (_, bytes) = tree.totals();
            assert!(bytes <= FUZZ_MAX_SIZE);
        }
    }
}

/// The images of the fuzz: one built here, and the OCI fixtures'
/// documents with the layers built here (`fuzz_tar_layer` fuzzes layers;
/// the fixtures' own are megabytes, which would only slow this down).
fn seed_images() -> Vec<Image> {
    let layer1 = TarMaker::default()
        .dir("etc", 0o755)
        .file("etc/a", b"a", 0o644)
        .file("etc/old", b"o", 0o644)
        .finish();
    let layer2 = compress(
        &TarMaker::default()
            .file("etc/.wh.old", b"", 0o644)
            .file("etc/.wh..wh..opq", b"", 0o644)
            .file("etc/b", b"b", 0o644)
            .finish(),
        Compression::Gzip,
    );
    let layers = vec![layer1, layer2];
    let mut images = vec![Image {
        index: json!({"schemaVersion": 2, "manifests": [{}]}),
        manifest: json!({"schemaVersion": 2, "mediaType": MANIFEST}),
        config: json!({
            "architecture": "amd64",
            "config": {"Env": ["A=1", "PATH=/bin"], "Cmd": ["/bin/sh"], "Entrypoint": null,
                       "WorkingDir": "/etc", "Labels": {"l": "v"}},
        }),
        layers: layers.clone(),
    }];
    for name in ["layered-oci-dir", "fixture-oci-dir"] {
        if let Some((index, manifest, config)) = fixture_documents(name) {
            images.push(Image {
                index,
                manifest,
                config,
                layers: layers.clone(),
            });
        }
    }
    images
}

/// A fixture's index, manifest and configuration.
fn fixture_documents(name: &str) -> Option<(Value, Value, Value)> {
    let file = |path: String| fuzz::seed_file("RFAKE_TEST_OCI", "target/oci", &path);
    let index: Value = serde_json::from_slice(&file(format!("{name}/index.json"))?).ok()?;
    let blob = |digest: Option<&Value>| -> Option<Value> {
        let hex = digest?.as_str()?.strip_prefix("sha256:")?;
        serde_json::from_slice(&file(format!("{name}/blobs/sha256/{hex}"))?).ok()
    };
    let manifest = blob(index.pointer("/manifests/0/digest"))?;
    let config = blob(manifest.pointer("/config/digest"))?;
    Some((index, manifest, config))
}

#[test]
fn fuzz_oci() {
    let images = seed_images();
    let strategy = (
        proptest::sample::select(images),
        proptest::collection::vec(json_edits(), 0..5),
        proptest::sample::select(vec![Format::Layout, Format::OciArchive, Format::Docker]),
    );
    fuzz::run(
        "fuzz_oci",
        strategy,
        |(image, edits, format)| {
            // What is kept of a crasher: the stored documents and the case.
            let stored = store(image, edits);
            let mut out = format!("{format:?}\n{edits:?}\n").into_bytes();
            for (name, bytes) in &stored.files {
                if !name.starts_with("blobs/") || bytes.len() < 64 << 10 {
                    out.extend_from_slice(format!("--- {name}\n").as_bytes());
                    out.extend_from_slice(bytes);
                    out.push(b'\n');
                }
            }
            out
        },
        |(image, edits, format)| check_image(image, edits, *format),
    );
}
