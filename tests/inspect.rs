//! `rfake inspect`: every real SIF file gets a sensible answer or a clear
//! error, without mounting anything.

mod common;

use common::*;
use rfake::exit::ExitKind;

#[test]
fn every_shared_sif_file() {
    let Some(dir) = sif_dir() else { return };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sif"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        let path = dir.join(&name);
        let t = tag("inspect");
        let out = rfake(&t, &["inspect", path.to_str().unwrap()]);
        assert_status(&out, 0);
        let text = stdout(&out);
        assert!(text.contains("format:       SIF"), "{name}: {text}");
        let expect = if name.starts_with("empty") || name.starts_with("one-object") {
            "root:         none: "
        } else if name.contains("legacy") {
            "is not a SquashFS"
        } else {
            "root:         SquashFS at offset"
        };
        assert!(text.contains(expect), "{name}: {text}");
        let json = rfake(&t, &["inspect", "--json", path.to_str().unwrap()]);
        assert_status(&json, 0);
        let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
        assert_eq!(v["format"], "SIF", "{name}");
        assert_nothing_left(&t);
    }
}

#[test]
fn busybox_sif_contents_without_mounting() {
    let Some(dir) = sif_dir() else { return };
    for (name, arch) in [
        ("busybox_amd64.sif", "amd64"),
        ("busybox_arm64.sif", "arm64"),
        ("busybox_ppc64le.sif", "ppc64le"),
    ] {
        let img = dir.join(name);
        let out = rfake(&tag("bb"), &["inspect", "--json", img.to_str().unwrap()]);
        assert_status(&out, 0);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["sif"]["arch"], arch);
        assert!(v["runscript"].as_str().is_some(), "{name}: {v}");
        assert!(v["definition"].as_str().is_some(), "{name}");
        let objects = v["sif"]["objects"].as_array().unwrap();
        assert!(
            objects.iter().any(|o| o["name"] == "oci-config.json"),
            "{name}"
        );
        let out = rfake(
            &tag("bb"),
            &["inspect", "--list", "/bin", img.to_str().unwrap()],
        );
        assert_status(&out, 0);
        assert!(stdout(&out).contains("/bin/busybox"), "{}", stdout(&out));
        let out = rfake(
            &tag("bb"),
            &[
                "inspect",
                "--cat",
                "/.singularity.d/runscript",
                img.to_str().unwrap(),
            ],
        );
        assert_status(&out, 0);
        assert!(stdout(&out).starts_with("#!/bin/sh"), "{}", stdout(&out));
    }
    let img = dir.join("busybox_amd64.sif");
    let out = rfake(
        &tag("bb"),
        &["inspect", "--cat", "/no/such/file", img.to_str().unwrap()],
    );
    assert_exit(&out, ExitKind::NoInput);
    assert!(stderr(&out).contains("/no/such/file"), "{}", stderr(&out));
}

#[test]
fn demo_images_and_bad_input() {
    let Some(env) = setup() else { return };
    for name in ["demo.sqfs", "demo.sif", "demo"] {
        let out = rfake(
            &tag("demo"),
            &[
                "inspect",
                "--cat",
                "/etc/rfake-demo.txt",
                env.image(name).to_str().unwrap(),
            ],
        );
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "hello from the demo image\n", "{name}");
    }
    let out = rfake(&tag("demo"), &["inspect", "/nonexistent.sif"]);
    assert_exit(&out, ExitKind::NoInput);
    let out = rfake(&tag("demo"), &["inspect", "/etc/passwd"]);
    assert_exit(&out, ExitKind::BadImage);
    assert!(
        stderr(&out).contains("not a SquashFS, SIF or directory"),
        "{}",
        stderr(&out)
    );
}

/// An image built by `rfake build` from a directory: `/f` with
/// `user.a=1` (one xattr ID entry) and `/g` without. Returns its bytes and
/// where the entry's count field is.
fn image_with_one_xattr(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize) {
    let root = dir.join("xattr-root");
    std::fs::create_dir(&root).unwrap();
    for name in ["f", "g"] {
        std::fs::write(root.join(name), "hello\n").unwrap();
    }
    let c_path =
        std::ffi::CString::new(root.join("f").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and a value buffer of the length given.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"user.a".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    let path = dir.join("xattr.sqfs");
    let out = rfake(
        &tag("xattr-build"),
        &["build", path.to_str().unwrap(), root.to_str().unwrap()],
    );
    assert_status(&out, 0);
    let bytes = std::fs::read(&path).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
    // The super block's xattr ID table start; there, the table's header
    // (key/value table start, ID count, padding) and its index: where the
    // one metadata block of ID entries is.
    let table = u64_at(56);
    assert_eq!(
        u32::from_le_bytes(bytes[table + 8..table + 12].try_into().unwrap()),
        1
    );
    let block = u64_at(table + 16);
    let header = u16::from_le_bytes([bytes[block], bytes[block + 1]]);
    // 16 bytes do not compress: the block is stored as is (bit 15).
    assert_eq!(header, 0x8000 | 16, "an uncompressed block of one entry");
    // The entry: key/value position (8 bytes), count (4), size (4).
    (path, bytes, block + 2 + 8)
}

/// Issue 19, defect 2: a corrupted xattr ID entry (its count) made
/// `inspect --list` allocate 206 GB and abort (SIGABRT, 134). It is a
/// corrupt image: exit 65, one line naming the image and the table.
#[test]
fn corrupt_xattr_id_entry_is_a_bad_image() {
    let scratch = tempfile::Builder::new()
        .prefix("inspect-xattr-")
        .tempdir()
        .unwrap();
    let (good, mut bytes, count_at) = image_with_one_xattr(scratch.path());
    let t = tag("xattr");
    let out = rfake(&t, &["inspect", "--list", "/", good.to_str().unwrap()]);
    assert_status(&out, 0);
    assert!(stdout(&out).contains("/f"), "{}", stdout(&out));
    for count in [u32::MAX, 100_000] {
        bytes[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        let bad = scratch.path().join("bad.sqfs");
        std::fs::write(&bad, &bytes).unwrap();
        let out = rfake(&t, &["inspect", "--list", "/", bad.to_str().unwrap()]);
        assert_status(&out, ExitKind::BadImage.code() as i32);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(": error: image "), "{err}");
        assert!(err.contains(bad.to_str().unwrap()), "{err}");
        assert!(err.contains("corrupt xattr id table: "), "{err}");
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
        // What does not touch the xattrs still works.
        let out = rfake(&t, &["inspect", "--cat", "/g", bad.to_str().unwrap()]);
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "hello\n");
    }
    assert_nothing_left(&t);
}
