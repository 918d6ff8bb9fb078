//! Round trips through the writer and the reader, checked against
//! squashfs-tools (`unsquashfs`) where it is installed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::build::spool::{Spool, Spooled, open_content};
use crate::build::tree::{Content, Meta, Node, Tree};

/// The options' time: the super block's, and the entries' without their own.
const MTIME: u32 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

fn file(mode: u32, data: &[u8]) -> Node {
    Node::File {
        meta: Meta::with_mode(mode),
        size: data.len() as u64,
        content: Content::Bytes(Arc::new(data.to_vec())),
    }
}

fn with_xattr(mut node: Node, key: &str, value: &[u8]) -> Node {
    match &mut node {
        Node::File { meta, .. } | Node::Dir { meta, .. } | Node::Symlink { meta, .. } => {
            meta.xattrs.insert(key.into(), value.to_vec());
        }
        Node::HardLink { .. } => panic!("hard links have no metadata"),
    }
    node
}

fn symlink(target: &str) -> Node {
    Node::Symlink {
        meta: Meta::with_mode(0o777),
        target: target.into(),
    }
}

/// `node` with a modification time of its own.
fn at(mut node: Node, mtime: u32) -> Node {
    match &mut node {
        Node::File { meta, .. } | Node::Dir { meta, .. } | Node::Symlink { meta, .. } => {
            meta.mtime = Some(mtime);
        }
        Node::HardLink { .. } => panic!("hard links have no metadata"),
    }
    node
}

/// The time an entry should have in the image: its own, else `MTIME`; a
/// hard link has its target's.
fn expected_mtime(tree: &Tree, node: &Node) -> u32 {
    match node {
        Node::File { meta, .. } | Node::Dir { meta, .. } | Node::Symlink { meta, .. } => {
            meta.mtime.unwrap_or(MTIME)
        }
        Node::HardLink { target } => expected_mtime(tree, tree.get(target).unwrap()),
    }
}

/// Deterministic bytes that compress somewhat (runs of text between
/// random stretches).
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if seed % 4 == 0 {
            out.extend_from_slice(b"some repeated text, ");
        } else {
            out.extend_from_slice(&seed.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A tree with one of everything; returns it with its spool.
fn sample_tree(block_size: u32) -> (Tree, Spooled) {
    let bs = block_size as usize;
    let mut t = Tree::default();
    let mut ins = |p: &str, n: Node| t.insert(Path::new(p), n).unwrap();
    ins("empty", file(0o644, b""));
    ins(
        "small.txt",
        at(
            with_xattr(file(0o644, b"hello\n"), "user.test", b"value"),
            1_000_000_000,
        ),
    );
    ins("big.bin", file(0o644, &pseudo_random(3 * bs + 1234, 1)));
    let dup = pseudo_random(bs + 5000, 2);
    ins("dup1", file(0o644, &dup));
    ins(
        "dir",
        at(
            with_xattr(Node::dir(0o755), "user.dir", b"d"),
            1_600_000_000,
        ),
    );
    ins("dir/dup2", file(0o600, &dup));
    ins(
        "dir/hard",
        Node::HardLink {
            target: "small.txt".into(),
        },
    );
    let mut sparse = vec![0u8; 3 * bs];
    sparse.extend_from_slice(b"end");
    ins("sparse", file(0o644, &sparse));
    ins("bin/tool", file(0o4755, b"#!/bin/sh\necho tool\n"));
    ins("private", Node::dir(0o700));
    ins("private/secret", file(0o600, b"secret\n"));
    ins("a/b/c/d/file", file(0o644, b"deep"));
    // A hard link met before its file (z/ sorts after a/).
    ins(
        "a/hl",
        Node::HardLink {
            target: "/z/target".into(),
        },
    );
    // Before and after the options' time, and the last one SquashFS holds.
    ins(
        "z/target",
        at(file(0o640, b"target content"), 1_800_000_000),
    );
    ins("link", at(symlink("small.txt"), u32::MAX));
    ins("abs", symlink("/a/b/c/d/file"));
    ins("dirlink", symlink("a/b"));
    ins("loop1", symlink("loop2"));
    ins("loop2", symlink("loop1"));
    ins("sticky", at(Node::dir(0o1777), 0));
    // More entries than one directory header (256) and one meta data
    // block (8 KiB) hold.
    for i in 0..1000 {
        let name = format!("many/entry-with-a-longish-name-{i:04}");
        ins(&name, file(0o644, name.as_bytes()));
    }
    let mut spool = Spool::new(tempfile::tempfile().unwrap());
    let spooled = pseudo_random(70_000, 3);
    let content = spool
        .append(&mut spooled.as_slice(), spooled.len() as u64)
        .unwrap();
    ins(
        "spooled",
        Node::File {
            meta: Meta::with_mode(0o644),
            size: spooled.len() as u64,
            content,
        },
    );
    let spool = spool.finish().unwrap();
    (t, spool)
}

fn opts(compression: Compression, block_size: u32, workers: usize) -> WriteOptions {
    WriteOptions {
        compression,
        block_size,
        mtime: MTIME,
        workers,
    }
}

fn write(
    dir: &Path,
    name: &str,
    tree: &Tree,
    spool: &Spooled,
    o: &WriteOptions,
) -> (PathBuf, WriteSummary) {
    let path = dir.join(name);
    File::create(&path).unwrap();
    let mut last = Progress::default();
    let summary = write_image(&path, tree, Some(spool), o, &mut |p| {
        assert!(p.bytes_done >= last.bytes_done && p.files_done >= last.files_done);
        last = p;
    })
    .unwrap();
    let (_, bytes) = tree.totals();
    assert_eq!(last.bytes_done, bytes);
    (path, summary)
}

fn content_of(node: &Node, spool: &Spooled) -> Vec<u8> {
    let Node::File { content, size, .. } = node else {
        panic!("not a file")
    };
    let mut out = Vec::new();
    open_content(content, *size, Some(spool))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Expected link counts of regular files, by normalized path.
fn link_counts(tree: &Tree) -> HashMap<PathBuf, u32> {
    let mut counts = HashMap::new();
    tree.visit(&mut |path, node| match node {
        Node::File { .. } => {
            *counts.entry(path.to_path_buf()).or_insert(0) += 1;
        }
        Node::HardLink { target } => {
            let target: PathBuf = target
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect();
            *counts.entry(target).or_insert(0) += 1;
        }
        _ => {}
    });
    counts
}

fn abs(path: &Path) -> String {
    format!("/{}", path.display())
}

/// Compare everything the reader says with the tree.
fn check_reader(
    r: &Reader,
    tree: &Tree,
    spool: &Spooled,
    o: &WriteOptions,
    summary: &WriteSummary,
) {
    let info = r.info();
    assert_eq!(info.compression, o.compression.name());
    assert_eq!(info.block_size, o.block_size);
    assert_eq!(info.mtime, MTIME);
    assert_eq!(u64::from(info.inode_count), summary.inodes);
    assert!(info.bytes_used <= summary.bytes && summary.bytes % 4096 == 0);
    assert!(summary.bytes - info.bytes_used < 4096);
    assert!(info.has_xattrs());
    assert_eq!(info.id_count, 1);

    let links = link_counts(tree);
    let mut inodes = HashMap::new();
    let mut expected_walk = Vec::new();
    tree.visit(&mut |path, node| {
        let p = abs(path);
        if !path.as_os_str().is_empty() {
            expected_walk.push(p.clone());
        }
        let e = r.stat(&p).unwrap_or_else(|e| panic!("stat {p}: {e}"));
        assert_eq!(
            (e.uid, e.gid, e.mtime),
            (0, 0, expected_mtime(tree, node)),
            "{p}"
        );
        let want_name = path
            .file_name()
            .map_or("/".into(), |n| n.to_string_lossy().into_owned());
        assert_eq!(e.name, want_name);
        let xattrs = |meta: &Meta| -> Vec<(String, Vec<u8>)> {
            meta.xattrs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        match node {
            Node::Dir { meta, children } => {
                assert_eq!(e.kind, EntryKind::Dir, "{p}");
                assert_eq!(e.mode, meta.mode, "{p}");
                let subdirs = children.values().filter(|c| c.is_dir()).count() as u32;
                assert_eq!(e.nlink, 2 + subdirs, "{p}");
                assert_eq!(e.xattrs, xattrs(meta), "{p}");
                let names: Vec<String> = r.list(&p).unwrap().into_iter().map(|e| e.name).collect();
                let want: Vec<String> = children
                    .keys()
                    .map(|k| k.to_string_lossy().into_owned())
                    .collect();
                assert_eq!(names, want, "{p}");
            }
            Node::File { meta, size, .. } => {
                assert_eq!(e.kind, EntryKind::File, "{p}");
                assert_eq!(e.mode, meta.mode, "{p}");
                assert_eq!(e.size, *size, "{p}");
                assert_eq!(e.xattrs, xattrs(meta), "{p}");
                assert_eq!(e.nlink, links[path], "{p}");
                assert_eq!(
                    r.read_file(&p, u64::MAX).unwrap(),
                    content_of(node, spool),
                    "{p}"
                );
                inodes.insert(path.to_path_buf(), e.inode);
            }
            Node::Symlink { meta, target } => {
                assert_eq!(e.kind, EntryKind::Symlink, "{p}");
                assert_eq!(e.mode, meta.mode, "{p}");
                assert_eq!(e.symlink_target.as_deref(), target.to_str(), "{p}");
                assert_eq!(e.size, target.as_os_str().len() as u64);
                assert_eq!(e.nlink, 1);
            }
            Node::HardLink { target } => {
                let t = r.stat(&format!("/{}", target.display())).unwrap();
                assert_eq!(e.kind, EntryKind::File, "{p}");
                assert_eq!(
                    (e.inode, e.nlink, e.size, e.mode),
                    (t.inode, 2, t.size, t.mode),
                    "{p}"
                );
                assert_eq!(e.xattrs, t.xattrs, "{p}");
                let target_node = tree.get(target).unwrap();
                assert_eq!(
                    r.read_file(&p, u64::MAX).unwrap(),
                    content_of(target_node, spool),
                    "{p}"
                );
            }
        }
    });
    // Inode numbers: unique per inode, 1..=count.
    let mut numbers = Vec::new();
    r.walk("/", &mut |_, e| numbers.push(e.inode)).unwrap();
    numbers.push(r.stat("/").unwrap().inode);
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len() as u64, summary.inodes);
    assert_eq!(
        (numbers[0], *numbers.last().unwrap()),
        (1, summary.inodes as u32)
    );

    let mut walked = Vec::new();
    r.walk("/", &mut |p, e| {
        assert_eq!(p.rsplit('/').next().unwrap(), e.name);
        walked.push(p.to_owned());
    })
    .unwrap();
    assert_eq!(walked, expected_walk);
    let mut sub = Vec::new();
    r.walk("/dirlink", &mut |p, _| sub.push(p.to_owned()))
        .unwrap();
    assert_eq!(sub, ["/a/b/c", "/a/b/c/d", "/a/b/c/d/file"]);

    // Symlinks are followed inside the image.
    assert_eq!(r.read_file("/link", 100).unwrap(), b"hello\n");
    assert_eq!(r.read_file("abs", 100).unwrap(), b"deep");
    assert_eq!(r.read_file("/dirlink/c/d/file", 100).unwrap(), b"deep");
    assert_eq!(
        r.read_file("/dirlink/../hl", 100).unwrap(),
        b"target content"
    );
    assert_eq!(
        r.read_file("/a/b/c/d/../../../../small.txt", 100).unwrap(),
        b"hello\n"
    );
    assert_eq!(r.read_file("/../../small.txt", 100).unwrap(), b"hello\n");
    assert_eq!(r.stat("/dirlink").unwrap().kind, EntryKind::Symlink);
    assert_eq!(r.stat("/dirlink/c").unwrap().kind, EntryKind::Dir);
    assert_eq!(r.stat("/").unwrap().name, "/");
    assert_eq!(r.list("/dirlink").unwrap().len(), 1);
    assert_eq!(r.stat("/loop1").unwrap().kind, EntryKind::Symlink);
    assert!(matches!(
        r.read_file("/loop1", 100),
        Err(SqfsError::SymlinkLoop { .. })
    ));
    assert!(matches!(r.stat("/nope"), Err(SqfsError::NotFound { .. })));
    assert!(matches!(
        r.stat("/many/nope"),
        Err(SqfsError::NotFound { .. })
    ));
    assert!(matches!(
        r.stat("/small.txt/x"),
        Err(SqfsError::NotDir { .. })
    ));
    assert!(matches!(
        r.list("/small.txt"),
        Err(SqfsError::NotDir { .. })
    ));
    assert!(matches!(
        r.read_file("/dir", 100),
        Err(SqfsError::NotFile { .. })
    ));
    assert!(matches!(
        r.read_file("/big.bin", 10),
        Err(SqfsError::TooLarge { .. })
    ));
    assert_eq!(
        r.read_file("/many/entry-with-a-longish-name-0777", 100)
            .unwrap(),
        b"many/entry-with-a-longish-name-0777"
    );
}

/// Whether `tool` is installed; a missing tool skips the checks that use
/// it, except under CI=true, where it is a failure.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("-version").output().is_ok();
    if !found {
        crate::testing::missing(&format!("{tool} (squashfs-tools)"));
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ls -l`-style mode string.
fn mode_string(kind: char, mode: u16) -> String {
    let mut s = String::from(kind);
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, shift) in [6, 3, 0].into_iter().enumerate() {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let (flag, set, unset) = special[i];
        s.push(match (mode & flag != 0, bits & 1 != 0) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid C strings and a buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// `secs` as `unsquashfs -lln` shows it under TZ=UTC ("2023-11-14 22:13"),
/// from date(1).
fn utc_minute(secs: u32) -> String {
    run(Command::new("date")
        .env("TZ", "UTC")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg("+%Y-%m-%d %H:%M"))
    .trim()
    .to_owned()
}

/// `unsquashfs -lln`, `-stat` and a full extraction agree with the tree.
fn check_unsquashfs(img: &Path, tree: &Tree, spool: &Spooled, o: &WriteOptions, scratch: &Path) {
    if !have("unsquashfs") {
        return;
    }
    let stat = run(Command::new("unsquashfs").arg("-stat").arg(img));
    assert!(
        stat.contains(&format!("Compression {}", o.compression.name())),
        "{stat}"
    );
    assert!(
        stat.contains(&format!("Block size {}", o.block_size)),
        "{stat}"
    );
    assert!(stat.contains("Xattrs are compressed"), "{stat}");

    let listing = run(Command::new("unsquashfs")
        .env("TZ", "UTC")
        .arg("-lln")
        .arg(img));
    let mut listed = HashMap::new();
    for line in listing.lines().filter(|l| l.contains("squashfs-root")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "0/0", "{line}");
        let path = f[5].strip_prefix("squashfs-root").unwrap().to_owned();
        let target = (f.len() == 8 && f[6] == "->").then(|| f[7].to_owned());
        listed.insert(
            if path.is_empty() { "/".into() } else { path },
            (
                f[0].to_owned(),
                f[2].to_owned(),
                target,
                format!("{} {}", f[3], f[4]),
            ),
        );
    }
    let mut shown_times = HashMap::new();
    let mut expected = 0;
    tree.visit(&mut |path, node| {
        expected += 1;
        let p = if path.as_os_str().is_empty() {
            "/".into()
        } else {
            abs(path)
        };
        let (mode, size, target, time) = listed
            .get(&p)
            .unwrap_or_else(|| panic!("{p} not listed:\n{listing}"));
        let mtime = expected_mtime(tree, node);
        let want = shown_times
            .entry(mtime)
            .or_insert_with(|| utc_minute(mtime));
        assert_eq!(time, want, "{p}");
        match node {
            Node::Dir { meta, .. } => assert_eq!(mode, &mode_string('d', meta.mode), "{p}"),
            Node::File { meta, size: s, .. } => {
                assert_eq!(mode, &mode_string('-', meta.mode), "{p}");
                assert_eq!(size, &s.to_string(), "{p}");
            }
            Node::Symlink { target: t, .. } => {
                assert!(mode.starts_with('l'), "{p}");
                assert_eq!(target.as_deref(), t.to_str(), "{p}");
            }
            Node::HardLink { .. } => assert!(mode.starts_with('-'), "{p}"),
        }
    });
    assert_eq!(listed.len(), expected);

    let out = scratch.join("extracted");
    let _ = std::fs::remove_dir_all(&out);
    // unsquashfs keeps setuid/setgid/sticky bits only when run as root
    // (the listing above checked them).
    // SAFETY: geteuid has no preconditions.
    let special = if unsafe { libc::geteuid() } == 0 {
        0o7777
    } else {
        0o777
    };
    run(Command::new("unsquashfs")
        .arg("-no-progress")
        .arg("-d")
        .arg(&out)
        .arg(img));
    tree.visit(&mut |path, node| {
        let p = out.join(path);
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if !matches!(node, Node::Symlink { .. }) {
            assert_eq!(
                md.mtime(),
                i64::from(expected_mtime(tree, node)),
                "{}",
                p.display()
            );
        }
        match node {
            Node::Dir { meta, .. } => {
                assert!(md.is_dir());
                assert_eq!(
                    md.permissions().mode() & special,
                    u32::from(meta.mode) & special,
                    "{}",
                    p.display()
                );
            }
            Node::File { meta, .. } => {
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    content_of(node, spool),
                    "{}",
                    p.display()
                );
                assert_eq!(
                    md.permissions().mode() & special,
                    u32::from(meta.mode) & special,
                    "{}",
                    p.display()
                );
                for (k, v) in &meta.xattrs {
                    assert_eq!(lgetxattr(&p, k).as_ref(), Some(v), "{}", p.display());
                }
            }
            Node::Symlink { target, .. } => {
                assert_eq!(&std::fs::read_link(&p).unwrap(), target);
            }
            Node::HardLink { target } => {
                let t =
                    std::fs::symlink_metadata(out.join(target.strip_prefix("/").unwrap_or(target)))
                        .unwrap();
                assert_eq!((md.ino(), md.nlink()), (t.ino(), 2), "{}", p.display());
            }
        }
    });
    assert_eq!(
        lgetxattr(&out.join("dir"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
    std::fs::remove_dir_all(&out).unwrap();
}

fn round_trip(compression: Compression, block_size: u32) {
    let scratch = tempfile::tempdir().unwrap();
    let (tree, spool) = sample_tree(block_size);
    let o = opts(compression, block_size, 2);
    let (img, summary) = write(scratch.path(), "a.sqfs", &tree, &spool, &o);
    let (entries, _) = tree.totals();
    assert_eq!(summary.inodes, entries - 2, "two hard links share inodes");
    assert_eq!(summary.bytes, std::fs::metadata(&img).unwrap().len());

    // (1) our reader
    let r = Reader::open(File::open(&img).unwrap(), 0).unwrap();
    check_reader(&r, &tree, &spool, &o, &summary);
    // (1b) the same through the FUSE server's view, with and without cache
    super::fs_tests::check_image_fs(&img, 0, &r, 0);
    super::fs_tests::check_image_fs(&img, 0, &r, 1 << 20);

    // (3) the same bytes again, with any number of threads
    let first = std::fs::read(&img).unwrap();
    for (i, workers) in [2, 1, 3].into_iter().enumerate() {
        let (again, _) = write(
            scratch.path(),
            &format!("again{i}.sqfs"),
            &tree,
            &spool,
            &opts(compression, block_size, workers),
        );
        assert!(
            std::fs::read(&again).unwrap() == first,
            "{workers} workers: output differs"
        );
        std::fs::remove_file(again).unwrap();
    }

    // (4) inside a bigger file, at an offset
    let embedded = scratch.path().join("embedded.sif");
    let mut f = File::create(&embedded).unwrap();
    f.write_all(&pseudo_random(36864, 9)).unwrap();
    f.write_all(&first).unwrap();
    f.write_all(&pseudo_random(10_000, 10)).unwrap();
    drop(f);
    let r = Reader::open(File::open(&embedded).unwrap(), 36864).unwrap();
    check_reader(&r, &tree, &spool, &o, &summary);
    super::fs_tests::check_image_fs(&embedded, 36864, &r, 1 << 20);
    assert!(Reader::open(File::open(&embedded).unwrap(), 0).is_err());
    assert!(Reader::open(File::open(&embedded).unwrap(), 1 << 40).is_err());

    // (2, 5) squashfs-tools
    check_unsquashfs(&img, &tree, &spool, &o, scratch.path());
}

/// A damaged data area: every read of a damaged compressed block (data or
/// fragment) is EIO, nothing panics, and names and attributes, which live
/// in the metadata, are still served.
#[test]
fn image_fs_reports_damaged_blocks_as_eio() {
    use crate::fuse::{Filesystem, ROOT};
    for compression in [Compression::Gzip, Compression::Zstd] {
        let scratch = tempfile::tempdir().unwrap();
        let (tree, spool) = sample_tree(DEFAULT_BLOCK_SIZE);
        let o = opts(compression, DEFAULT_BLOCK_SIZE, 1);
        let (img, _) = write(scratch.path(), "a.sqfs", &tree, &spool, &o);
        let mut bytes = std::fs::read(&img).unwrap();
        let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        let inode_table = u64::from_le_bytes(bytes[64..72].try_into().unwrap()) as usize;
        // The data area: after the super block (96 bytes) and, when the
        // flags say so, the compressor's options (a metadata block).
        let mut start = 96;
        if u16_at(&bytes, 24) & ffi::SQFS_FLAG_COMPRESSOR_OPTIONS as usize != 0 {
            start += 2 + (u16_at(&bytes, 96) & 0x7fff);
        }
        for (i, b) in bytes[start..inode_table].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151) ^ 0xa5;
        }
        let damaged = scratch.path().join("damaged.sqfs");
        std::fs::write(&damaged, &bytes).unwrap();
        for cache in [0, 1 << 20] {
            let fs = ImageFs::open(File::open(&damaged).unwrap(), 0, cache, "damaged").unwrap();
            let (node, attr) = fs.lookup(ROOT, b"small.txt").unwrap().unwrap();
            assert_eq!(attr.size, 6, "{compression}");
            let mut out = Vec::new();
            // In a fragment block.
            assert_eq!(
                fs.read(node, 0, 4096, &mut out),
                Err(libc::EIO),
                "{compression}"
            );
            // Holes read as zeros; the tail after them is in a fragment.
            let (sparse, _) = fs.lookup(ROOT, b"sparse").unwrap().unwrap();
            out.clear();
            fs.read(sparse, 0, 4096, &mut out).unwrap();
            assert!(out.iter().all(|&b| b == 0), "{compression}");
            let tail = 3 * u64::from(DEFAULT_BLOCK_SIZE);
            assert_eq!(fs.read(sparse, tail, 4096, &mut out), Err(libc::EIO));
            // Every other file: an answer, never a panic.
            let (many, _) = fs.lookup(ROOT, b"many").unwrap().unwrap();
            for e in fs.dir(many).unwrap().entries.iter().take(20) {
                out.clear();
                assert_eq!(fs.read(e.node, 0, 4096, &mut out), Err(libc::EIO));
            }
        }
    }
}

#[test]
fn round_trip_gzip() {
    round_trip(Compression::Gzip, DEFAULT_BLOCK_SIZE);
}

#[test]
fn round_trip_xz() {
    round_trip(Compression::Xz, 64 * 1024);
}

#[test]
fn round_trip_lz4() {
    round_trip(Compression::Lz4, MIN_BLOCK_SIZE);
}

#[test]
fn round_trip_zstd() {
    round_trip(Compression::Zstd, MAX_BLOCK_SIZE);
}

#[test]
fn empty_tree() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("e.sqfs");
    File::create(&path).unwrap();
    let summary = write_image(
        &path,
        &Tree::default(),
        None,
        &WriteOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.inodes, 1);
    let r = Reader::open(File::open(&path).unwrap(), 0).unwrap();
    assert!(r.list("/").unwrap().is_empty());
    assert!(!r.info().has_xattrs());
    assert_eq!(r.stat("/").unwrap().nlink, 2);
    if have("unsquashfs") {
        run(Command::new("unsquashfs").arg("-lln").arg(&path));
    }
}

#[test]
fn bad_input() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("x.sqfs");
    File::create(&path).unwrap();
    let mut tree = Tree::default();
    tree.insert(
        Path::new("l"),
        Node::HardLink {
            target: "missing".into(),
        },
    )
    .unwrap();
    let err = write_image(&path, &tree, None, &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, SqfsError::BadHardLink { .. }), "{err}");

    for bs in [0, 2048, 5000, 2 << 20] {
        let o = WriteOptions {
            block_size: bs,
            ..WriteOptions::default()
        };
        let err = write_image(&path, &Tree::default(), None, &o, &mut |_| {}).unwrap_err();
        assert!(matches!(err, SqfsError::Options(_)), "{err}");
    }

    // Content shorter than announced.
    let mut tree = Tree::default();
    tree.insert(
        Path::new("f"),
        Node::File {
            meta: Meta::with_mode(0o644),
            size: 10,
            content: Content::Bytes(Arc::new(b"abc".to_vec())),
        },
    )
    .unwrap();
    let err = write_image(&path, &tree, None, &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, SqfsError::ShortContent { got: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("/f: "), "{err}");

    // A missing host file names the step and the path.
    let mut tree = Tree::default();
    tree.insert(
        Path::new("h"),
        Node::File {
            meta: Meta::with_mode(0o644),
            size: 1,
            content: Content::Host("/nonexistent/rfake".into()),
        },
    )
    .unwrap();
    let err = write_image(&path, &tree, None, &WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("opening the content of /h"),
        "{err}"
    );

    // Not a SquashFS: refused by the super block check, as `rfake exec`
    // refuses it.
    use crate::squashfs::superblock::SquashfsError;
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let err = Reader::open(File::open(&path).unwrap(), 0).err().unwrap();
    assert!(
        matches!(err, SqfsError::Superblock(SquashfsError::BadMagic { .. })),
        "{err}"
    );
    assert!(err.to_string().starts_with("not a SquashFS"), "{err}");
    std::fs::write(&path, b"").unwrap();
    let err = Reader::open(File::open(&path).unwrap(), 0).err().unwrap();
    assert!(
        matches!(
            err,
            SqfsError::Superblock(SquashfsError::TooShort { len: 0 })
        ),
        "{err}"
    );
}

#[test]
fn compression_names() {
    for c in Compression::ALL {
        assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        assert_eq!(c.to_string(), c.name());
    }
    assert!(matches!(
        "lzo".parse::<Compression>(),
        Err(SqfsError::UnknownCompression(_))
    ));
    let d = WriteOptions::default();
    assert_eq!(
        (d.compression, d.block_size, d.mtime),
        (Compression::Gzip, 131072, 0)
    );
    assert!(d.workers >= 1);
}

#[test]
fn unsupported_xattrs_are_skipped() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("x.sqfs");
    File::create(&path).unwrap();
    let mut tree = Tree::default();
    let f = with_xattr(file(0o644, b"x"), "system.posix_acl_access", b"\x02\0\0\0");
    tree.insert(Path::new("f"), with_xattr(f, "security.capability", b"cap"))
        .unwrap();
    write_image(&path, &tree, None, &WriteOptions::default(), &mut |_| {}).unwrap();
    let r = Reader::open(File::open(&path).unwrap(), 0).unwrap();
    assert_eq!(
        r.stat("/f").unwrap().xattrs,
        [("security.capability".to_owned(), b"cap".to_vec())]
    );
}

/// Reads a host directory into a tree (regular files as `Content::Host`,
/// hard links detected by inode), for the comparisons with mksquashfs.
pub(crate) fn tree_from_dir(root: &Path) -> Tree {
    fn walk(dir: &Path, rel: &Path, tree: &mut Tree, seen: &mut HashMap<(u64, u64), PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = rel.join(e.file_name());
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let meta = Meta::with_mode(md.mode());
            let node = if md.is_dir() {
                tree.insert(
                    &rel,
                    Node::Dir {
                        meta,
                        children: BTreeMap::new(),
                    },
                )
                .unwrap();
                walk(&path, &rel, tree, seen);
                continue;
            } else if md.file_type().is_symlink() {
                Node::Symlink {
                    meta,
                    target: std::fs::read_link(&path).unwrap(),
                }
            } else if md.is_file() {
                if md.nlink() > 1 {
                    if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                        tree.insert(
                            &rel,
                            Node::HardLink {
                                target: first.clone(),
                            },
                        )
                        .unwrap();
                        continue;
                    }
                    seen.insert((md.dev(), md.ino()), rel.clone());
                }
                Node::File {
                    meta,
                    size: md.len(),
                    content: Content::Host(path),
                }
            } else {
                continue;
            };
            tree.insert(&rel, node).unwrap();
        }
    }
    let mut tree = Tree::default();
    let md = std::fs::metadata(root).unwrap();
    tree.insert(Path::new("/"), Node::dir(md.mode())).unwrap();
    walk(root, Path::new(""), &mut tree, &mut HashMap::new());
    tree
}

#[test]
fn host_directory_round_trip() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("d/e")).unwrap();
    std::fs::write(s.join("d/e/f"), pseudo_random(300_000, 4)).unwrap();
    std::fs::write(s.join("g"), b"gee").unwrap();
    std::fs::hard_link(s.join("g"), s.join("d/g2")).unwrap();
    std::os::unix::fs::symlink("../g", s.join("d/sym")).unwrap();
    let tree = tree_from_dir(s);
    assert!(matches!(
        tree.get(Path::new("g")),
        Some(Node::HardLink { .. })
    ));
    let scratch = tempfile::tempdir().unwrap();
    let img = scratch.path().join("h.sqfs");
    File::create(&img).unwrap();
    let summary = write_image(&img, &tree, None, &WriteOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(summary.inodes, 6);
    let r = Reader::open(File::open(&img).unwrap(), 0).unwrap();
    assert_eq!(
        r.read_file("/d/e/f", u64::MAX).unwrap(),
        std::fs::read(s.join("d/e/f")).unwrap()
    );
    assert_eq!(r.read_file("/d/sym", 10).unwrap(), b"gee");
    assert_eq!(r.stat("/g").unwrap().inode, r.stat("/d/g2").unwrap().inode);
    assert_eq!(r.stat("/g").unwrap().nlink, 2);
}

/// Not a test: times `write_image` against `mksquashfs` on a host tree
/// and checks that two writes give the same bytes. Run with
/// `RFAKE_SQFS_SPEED=/usr/share cargo test --release --lib -- --ignored
/// --nocapture speed`.
#[test]
#[ignore]
fn speed_against_mksquashfs() {
    let src = PathBuf::from(std::env::var_os("RFAKE_SQFS_SPEED").unwrap_or_else(|| "/usr".into()));
    let scratch = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let tree = tree_from_dir(&src);
    let (entries, bytes) = tree.totals();
    eprintln!(
        "tree of {}: {entries} entries, {bytes} bytes, read in {:.1?}",
        src.display(),
        t.elapsed()
    );
    let o = WriteOptions {
        compression: Compression::Gzip,
        ..WriteOptions::default()
    };
    let mut images = Vec::new();
    for run in 0..2 {
        let img = scratch.path().join(format!("rfake{run}.sqfs"));
        File::create(&img).unwrap();
        let t = std::time::Instant::now();
        let s = write_image(&img, &tree, None, &o, &mut |_| {}).unwrap();
        eprintln!(
            "write_image gzip, {} workers: {:.1?}, {} bytes, {} inodes",
            o.workers,
            t.elapsed(),
            s.bytes,
            s.inodes
        );
        images.push(img);
    }
    assert!(
        std::fs::read(&images[0]).unwrap() == std::fs::read(&images[1]).unwrap(),
        "two writes differ"
    );
    let out = scratch.path().join("mksquashfs.sqfs");
    let t = std::time::Instant::now();
    run(Command::new("mksquashfs").arg(&src).arg(&out).args([
        "-comp",
        "gzip",
        "-noappend",
        "-all-root",
        "-no-progress",
        "-quiet",
    ]));
    eprintln!(
        "mksquashfs gzip: {:.1?}, {} bytes",
        t.elapsed(),
        std::fs::metadata(&out).unwrap().len()
    );
}

/// A file over 4 GiB (extended inode, 64-bit size) that is mostly a hole
/// (sparse blocks), with a hard link.
#[test]
fn large_sparse_file() {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("big");
    let size = (4u64 << 30) + 5;
    let f = File::create(&src).unwrap();
    f.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tail!", 4 << 30).unwrap();
    drop(f);
    let mut tree = Tree::default();
    let node = Node::File {
        meta: Meta::with_mode(0o644),
        size,
        content: Content::Host(src.clone()),
    };
    tree.insert(Path::new("big"), node).unwrap();
    tree.insert(
        Path::new("link"),
        Node::HardLink {
            target: "big".into(),
        },
    )
    .unwrap();
    let img = scratch.path().join("s.sqfs");
    File::create(&img).unwrap();
    let o = WriteOptions {
        block_size: MAX_BLOCK_SIZE,
        ..WriteOptions::default()
    };
    let s = write_image(&img, &tree, None, &o, &mut |_| {}).unwrap();
    assert!(s.bytes < 1 << 20, "{} bytes: holes were stored", s.bytes);
    let r = Reader::open(File::open(&img).unwrap(), 0).unwrap();
    let e = r.stat("/link").unwrap();
    assert_eq!((e.size, e.nlink), (size, 2));
    assert!(matches!(
        r.read_file("/big", 1 << 20),
        Err(SqfsError::TooLarge { .. })
    ));
    if have("unsquashfs") {
        let listing = run(Command::new("unsquashfs").arg("-lln").arg(&img));
        assert!(listing.contains(&format!(" {size} ")), "{listing}");
    }
}

#[test]
fn duplicates_are_stored_once() {
    let scratch = tempfile::tempdir().unwrap();
    let data = pseudo_random(3 * DEFAULT_BLOCK_SIZE as usize + 777, 5);
    let used = |names: &[&str]| {
        let mut tree = Tree::default();
        for n in names {
            tree.insert(Path::new(n), file(0o644, &data)).unwrap();
        }
        let img = scratch.path().join("d.sqfs");
        File::create(&img).unwrap();
        write_image(&img, &tree, None, &WriteOptions::default(), &mut |_| {}).unwrap();
        Reader::open(File::open(&img).unwrap(), 0)
            .unwrap()
            .info()
            .bytes_used
    };
    let one = used(&["a"]);
    let three = used(&["a", "b", "c/d"]);
    assert!(three - one < 200, "{one} -> {three}: the copies took space");
}

#[test]
fn reader_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Reader>();
    send_sync::<SqfsError>();
}

/// The reader on images made by mksquashfs (export table, its own inode
/// numbering and layout), with hard links, symlinks, xattrs and an offset.
#[test]
fn reads_mksquashfs_images() {
    if !have("mksquashfs") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("d/e")).unwrap();
    let big = pseudo_random(500_000, 6);
    std::fs::write(s.join("d/e/f"), &big).unwrap();
    std::fs::write(s.join("g"), b"gee").unwrap();
    std::fs::set_permissions(s.join("g"), std::fs::Permissions::from_mode(0o4711)).unwrap();
    std::fs::hard_link(s.join("g"), s.join("d/g2")).unwrap();
    std::os::unix::fs::symlink("/g", s.join("d/sym")).unwrap();
    let xattr_ok = {
        let p = CString::new(s.join("d/e/f").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and a 3-byte value.
        unsafe {
            libc::setxattr(
                p.as_ptr(),
                c"user.test".as_ptr(),
                b"xyz".as_ptr().cast(),
                3,
                0,
            ) == 0
        }
    };
    let scratch = tempfile::tempdir().unwrap();
    for c in Compression::ALL {
        let img = scratch.path().join(format!("{c}.sqfs"));
        run(Command::new("mksquashfs").arg(s).arg(&img).args([
            "-comp",
            c.name(),
            "-noappend",
            "-all-root",
            "-no-progress",
            "-quiet",
        ]));
        let bytes = std::fs::read(&img).unwrap();
        let mut embedded = vec![0x5a; 4096];
        embedded.extend_from_slice(&bytes);
        let sif = scratch.path().join("x.sif");
        std::fs::write(&sif, &embedded).unwrap();
        for (path, offset) in [(&img, 0), (&sif, 4096)] {
            let r = Reader::open(File::open(path).unwrap(), offset).unwrap();
            assert_eq!(r.info().compression, c.name());
            assert!(r.info().exportable());
            assert_eq!(r.read_file("/d/e/f", u64::MAX).unwrap(), big);
            assert_eq!(r.read_file("/d/sym", 10).unwrap(), b"gee");
            let (g, g2) = (r.stat("/g").unwrap(), r.stat("/d/g2").unwrap());
            assert_eq!((g.inode, g.nlink, g.mode, g.uid), (g2.inode, 2, 0o4711, 0));
            assert_eq!(
                r.stat("/d/sym").unwrap().symlink_target.as_deref(),
                Some("/g")
            );
            let names: Vec<String> = r.list("/d").unwrap().into_iter().map(|e| e.name).collect();
            assert_eq!(names, ["e", "g2", "sym"]);
            if xattr_ok {
                let xattrs = r.stat("/d/e/f").unwrap().xattrs;
                assert_eq!(xattrs, [("user.test".to_owned(), b"xyz".to_vec())]);
            }
            let mut n = 0;
            r.walk("/", &mut |_, _| n += 1).unwrap();
            assert_eq!(n, 6);
            super::fs_tests::check_image_fs(path, offset, &r, 1 << 20);
        }
    }
}

// Mounting with squashfuse_ll is left out on purpose: tests may run as
// root or without a usable /dev/fuse, and must not mount anything.
