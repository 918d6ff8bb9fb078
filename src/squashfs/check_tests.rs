//! Corrupted images, table by table: every length, count and offset a
//! reader takes from an image is checked (against the file, its table,
//! the format's limits) before it sizes an allocation or a loop. Each case
//! goes through the [`Reader`] (what `rfake inspect` uses), which must fail
//! with a one-line "corrupt TABLE: ..." message, and through [`ImageFs`]
//! (the FUSE server), which must fail to open with that message or answer
//! EIO; neither may panic or abort (the test allocator aborts on any
//! allocation over 1 GiB).

use std::collections::HashSet;
use std::fs::File;

use super::test_image::{BLOCK_SIZE, Img, Table, fixture_bytes};
use super::*;
use crate::fuse::{self, Filesystem};

/// Write `bytes` to a temporary file and run `f` on it.
fn with_file<T>(bytes: &[u8], f: impl FnOnce(&std::path::Path) -> T) -> T {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("t.sqfs");
    std::fs::write(&path, bytes).unwrap();
    f(&path)
}

/// What `rfake inspect --list /` and `--cat` do with the Reader: open,
/// walk, read every file. The first error, if any.
pub(super) fn reader_error(bytes: &[u8]) -> Option<String> {
    with_file(bytes, |path| {
        let r = match Reader::open(File::open(path).unwrap(), 0) {
            Ok(r) => r,
            Err(e) => return Some(e.to_string()),
        };
        let mut files = Vec::new();
        let walked = r.walk("/", &mut |p, e| {
            if e.kind == EntryKind::File {
                files.push(p.to_owned());
            }
        });
        if let Err(e) = walked {
            return Some(e.to_string());
        }
        files
            .iter()
            .find_map(|f| r.read_file(f, 16 << 20).err().map(|e| e.to_string()))
    })
}

/// What the FUSE server does for a `find` and a read of everything:
/// open, then for every node reached from the root: getattr, xattrs,
/// listing and lookups, readlink, reads. The open's error, or the first
/// failed operation's errno ("errno 5").
pub(super) fn image_fs_error(bytes: &[u8]) -> Option<String> {
    with_file(bytes, |path| {
        let fs = match ImageFs::open(File::open(path).unwrap(), 0, 1 << 20, "test") {
            Ok(fs) => fs,
            Err(e) => return Some(e.to_string()),
        };
        walk_image_fs(&fs).err().map(|e| format!("errno {e}"))
    })
}

/// Every node of `fs` reached from the root, each operation once; reads
/// of at most 1 MiB per file.
pub(super) fn walk_image_fs(fs: &ImageFs) -> Result<(), fuse::Errno> {
    let mut todo = vec![fuse::ROOT];
    let mut seen = HashSet::new();
    while let Some(node) = todo.pop() {
        if !seen.insert(node) {
            continue;
        }
        let attr = fs.getattr(node)?;
        fs.xattrs(node)?;
        match attr.mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let dir = fs.dir(node)?;
                for e in &dir.entries {
                    if let Some((child, _)) = fs.lookup(node, &e.name)? {
                        todo.push(child);
                    }
                }
            }
            libc::S_IFLNK => {
                fs.readlink(node)?;
            }
            libc::S_IFREG => {
                let mut out = Vec::new();
                let mut at = 0;
                while at < attr.size.min(1 << 20) {
                    out.clear();
                    fs.read(node, at, 64 << 10, &mut out)?;
                    if out.is_empty() {
                        break;
                    }
                    at += out.len() as u64;
                }
                // The tail (a fragment, or the last block), and past the end.
                fs.read(node, attr.size.saturating_sub(5000), 10_000, &mut out)?;
                fs.read(node, u64::MAX - 10, 100, &mut out)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Both readers refuse `bytes` as a corrupt `table`.
#[track_caller]
fn refused(bytes: &[u8], table: &str) {
    refused_by_reader(bytes, table);
    let want = format!("corrupt {table}: ");
    let err = image_fs_error(bytes).unwrap_or_else(|| panic!("ImageFs accepted it"));
    assert!(
        err == "errno 5" || err.contains(&want),
        "ImageFs: {err:?}: neither EIO nor {want:?}"
    );
}

/// The Reader refuses `bytes` as a corrupt `table`.
#[track_caller]
fn refused_by_reader(bytes: &[u8], table: &str) {
    let want = format!("corrupt {table}: ");
    let err = reader_error(bytes).unwrap_or_else(|| panic!("the Reader accepted it"));
    assert!(err.contains(&want), "Reader: {err:?} does not say {want:?}");
    assert!(!err.contains('\n'), "{err:?}");
}

/// The inode reference of `path` in the image `img` (from its listings).
fn iref_of(img: &Img, path: &str) -> u64 {
    with_file(&img.bytes, |p| {
        let fs = ImageFs::open(File::open(p).unwrap(), 0, 0, "test").unwrap();
        let mut node = fuse::ROOT;
        for name in path.split('/').filter(|c| !c.is_empty()) {
            node = fs.lookup(node, name.as_bytes()).unwrap().unwrap().0;
        }
        if node == fuse::ROOT {
            img.sb().root_inode_ref
        } else {
            node - 2
        }
    })
}

/// Change the inode of `path` (its bytes from the inode on; the
/// fixture's inode table is one metadata block).
fn edit_inode(img: &mut Img, path: &str, edit: impl FnOnce(&mut [u8])) {
    let iref = iref_of(img, path);
    assert_eq!(iref >> 16, 0, "the fixture's inode table is one block");
    let at = img.sb().inode_table_start as usize;
    img.edit_meta(at, |d| edit(&mut d[(iref & 0xffff) as usize..]));
}

/// Change the (one-block) directory table.
fn edit_dirs(img: &mut Img, edit: impl FnOnce(&mut Vec<u8>)) {
    let at = img.sb().directory_table_start as usize;
    img.edit_meta(at, edit);
}

fn put_u16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(d: &mut [u8], at: usize, v: u64) {
    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Where `name` is in a decompressed block.
fn find(d: &[u8], name: &[u8]) -> usize {
    d.windows(name.len())
        .position(|w| w == name)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(name)))
}

#[test]
fn the_fixture_reads_cleanly() {
    let bytes = fixture_bytes();
    assert_eq!(reader_error(&bytes), None);
    assert_eq!(image_fs_error(&bytes), None);
    let img = Img::new(bytes);
    assert!(img.index(Table::XattrId).is_some());
    assert!(img.index(Table::Fragment).is_some());
}

/// Issue 19, defect 2: an xattr ID entry's count sized an allocation
/// (`Vec::with_capacity(count)`, 206 GB for u32::MAX): SIGABRT.
#[test]
fn xattr_id_entry_with_a_huge_count() {
    for count in [u32::MAX, 1 << 20, 10923] {
        let mut img = Img::new(fixture_bytes());
        let block = img.table_block(Table::XattrId, 0);
        img.edit_meta(block, |d| put_u32(d, 8, count));
        refused(&img.bytes, "xattr id table");
    }
}

#[test]
fn xattr_id_entry_pointing_past_its_table() {
    let mut img = Img::new(fixture_bytes());
    let block = img.table_block(Table::XattrId, 0);
    img.edit_meta(block, |d| put_u64(d, 16, 0x7fff_0000_0000));
    refused(&img.bytes, "xattr id table");
}

/// The xattr ID count in the table's header sizes its index.
#[test]
fn xattr_id_count_past_its_index() {
    let mut img = Img::new(fixture_bytes());
    let at = img.sb().xattr_id_table_start as usize;
    img.put(at + 8, &u32::MAX.to_le_bytes());
    refused(&img.bytes, "xattr id table");
}

/// An inode naming an xattr ID the table does not have.
#[test]
fn xattr_index_past_the_table() {
    let mut img = Img::new(fixture_bytes());
    // The symlink with an xattr has an extended inode: its xattr index
    // follows the target.
    edit_inode(&mut img, "link", |d| {
        let target = u32::from_le_bytes(d[20..24].try_into().unwrap()) as usize;
        put_u32(d, 24 + target, 1000);
    });
    refused(&img.bytes, "xattr id table");
}

#[test]
fn xattr_value_and_name_too_large() {
    let fixture = Img::new(fixture_bytes());
    let kv = fixture.u64_at(fixture.sb().xattr_id_table_start as usize) as usize;
    // "user.a" = "1": key (type 0, size 1, "a"), value (size 1, "1").
    let key = find(&fixture.meta(kv).0, &[0, 0, 1, 0, b'a', 1, 0, 0, 0, b'1']);
    for (at, value) in [(key + 5, u32::MAX), (key + 5, 65537), (key + 2, 300)] {
        let mut img = Img::new(fixture.bytes.clone());
        img.edit_meta(kv, |d| {
            if at == key + 2 {
                put_u16(d, at, value as u16);
            } else {
                put_u32(d, at, value);
            }
        });
        refused(&img.bytes, "xattr table");
    }
}

#[test]
fn id_count_past_its_index() {
    let mut img = Img::new(fixture_bytes());
    let mut sb = img.sb();
    sb.id_count = u16::MAX;
    img.set_sb(&sb);
    refused(&img.bytes, "ID table");
}

#[test]
fn id_index_pointing_elsewhere() {
    let mut img = Img::new(fixture_bytes());
    let (at, _) = img.index(Table::Id).unwrap();
    let inodes = img.sb().inode_table_start;
    img.put(at, &inodes.to_le_bytes());
    refused(&img.bytes, "ID table");
}

#[test]
fn fragment_count_past_its_index() {
    for count in [u32::MAX, 1 << 16] {
        let mut img = Img::new(fixture_bytes());
        let mut sb = img.sb();
        sb.fragment_entry_count = count;
        img.set_sb(&sb);
        refused(&img.bytes, "fragment table");
    }
}

#[test]
fn fragment_index_of_a_file_past_the_table() {
    let mut img = Img::new(fixture_bytes());
    edit_inode(&mut img, "dir/inner.txt", |d| put_u32(d, 20, 7));
    refused(&img.bytes, "inode table");
}

/// The export table is not read, but its index is checked all the same.
#[test]
fn export_table_that_does_not_fit() {
    let mut img = Img::new(fixture_bytes());
    let mut sb = img.sb();
    sb.export_table_start = sb.id_table_start;
    img.set_sb(&sb);
    refused(&img.bytes, "export table");
}

#[test]
fn directory_listing_outside_its_table() {
    let mut img = Img::new(fixture_bytes());
    edit_inode(&mut img, "dir", |d| put_u32(d, 16, 1 << 20));
    refused(&img.bytes, "directory table");
}

/// A directory that contains its own ancestor: the Reader's walk recursed
/// until the stack overflowed. (The FUSE server serves it: the kernel
/// refuses a second name for a directory by itself.)
#[test]
fn directory_loop() {
    let mut img = Img::new(fixture_bytes());
    let root = img.sb().root_inode_ref;
    assert_eq!(root >> 16, 0);
    // dir/deeper -> the root directory's inode.
    edit_dirs(&mut img, |d| {
        let name = find(d, b"deeper");
        // An entry: offset u16, inode number diff i16, type u16, name size
        // - 1 u16, then the name.
        put_u16(d, name - 8, root as u16);
    });
    refused_by_reader(&img.bytes, "directory table");
    assert_eq!(image_fs_error(&img.bytes), None);
}

#[test]
fn directory_entry_names() {
    for (from, to) in [
        (&b"deeper"[..], &b"de/per"[..]),
        (b"inner.txt", b"inner\0txt"),
    ] {
        let mut img = Img::new(fixture_bytes());
        edit_dirs(&mut img, |d| {
            let at = find(d, from);
            d[at..at + to.len()].copy_from_slice(to);
        });
        refused(&img.bytes, "directory table");
    }
    // "." and "..": a name of two bytes.
    let mut img = Img::new(fixture_bytes());
    edit_dirs(&mut img, |d| {
        let at = find(d, b"abs");
        put_u16(d, at - 2, 1);
        d[at..at + 3].copy_from_slice(b"..s");
    });
    refused(&img.bytes, "directory table");
}

/// A file's size says how many block sizes its inode lists.
#[test]
fn file_size_past_its_block_list() {
    let mut img = Img::new(fixture_bytes());
    edit_inode(&mut img, "big.bin", |d| put_u32(d, 28, 0xffff_f000));
    refused(&img.bytes, "inode table");
}

#[test]
fn symlink_target_too_long() {
    for size in [u32::MAX, 4097] {
        let mut img = Img::new(fixture_bytes());
        edit_inode(&mut img, "abs", |d| put_u32(d, 20, size));
        refused(&img.bytes, "inode table");
    }
}

#[test]
fn inode_reference_past_the_inode_table() {
    let mut img = Img::new(fixture_bytes());
    let mut sb = img.sb();
    sb.root_inode_ref = 1 << 40;
    img.set_sb(&sb);
    refused(&img.bytes, "inode table");
    let mut img = Img::new(fixture_bytes());
    let mut sb = img.sb();
    sb.root_inode_ref = 0xfff0;
    img.set_sb(&sb);
    refused(&img.bytes, "inode table");
}

#[test]
fn unknown_inode_type() {
    let mut img = Img::new(fixture_bytes());
    edit_inode(&mut img, "empty", |d| put_u16(d, 0, 99));
    refused(&img.bytes, "inode table");
}

#[test]
fn data_block_outside_the_data_area() {
    let mut img = Img::new(fixture_bytes());
    let inodes = img.sb().inode_table_start as u32;
    edit_inode(&mut img, "big.bin", |d| put_u32(d, 16, inodes));
    refused(&img.bytes, "file data");
}

#[test]
fn tables_out_of_order() {
    let mut img = Img::new(fixture_bytes());
    let mut sb = img.sb();
    (sb.inode_table_start, sb.directory_table_start) =
        (sb.directory_table_start, sb.inode_table_start);
    img.set_sb(&sb);
    refused(&img.bytes, "inode table");
}

#[test]
fn bytes_used_past_the_file() {
    let mut img = Img::new(fixture_bytes());
    let mut sb = img.sb();
    sb.bytes_used = img.bytes.len() as u64 + 1;
    img.set_sb(&sb);
    let err = reader_error(&img.bytes).unwrap();
    assert!(err.starts_with("truncated: "), "{err}");
    let err = image_fs_error(&img.bytes).unwrap();
    assert!(err.starts_with("truncated: "), "{err}");
}

/// The block size is the fixture's: a reminder for the offsets above.
#[test]
fn fixture_block_size() {
    assert_eq!(Img::new(fixture_bytes()).sb().block_size, BLOCK_SIZE);
}
