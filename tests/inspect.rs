//! `rfake inspect`: every real SIF file gets a sensible answer or a clear
//! error, without mounting anything.

mod common;

use common::*;

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
    assert_status(&out, 66);
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
    assert_status(&out, 66);
    let out = rfake(&tag("demo"), &["inspect", "/etc/passwd"]);
    assert_status(&out, 65);
    assert!(
        stderr(&out).contains("not a SquashFS, SIF or directory"),
        "{}",
        stderr(&out)
    );
}
