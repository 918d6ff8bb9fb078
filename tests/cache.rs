//! `rfake cache list` and `rfake cache clean` on a cache laid out by hand
//! as docs/admin-guide.md describes it (until pulls fill one).

mod common;
use rfake::exit::ExitKind;

use common::*;
use sha2::Digest as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn set_age(path: &Path, days: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(days * 86400))
        .unwrap();
}

/// A cache holding one pulled image: its manifest, config and two layers
/// (40 days unused), the converted image, the reference, and a partial
/// download a killed pull left.
struct Laid {
    dir: tempfile::TempDir,
    layers: [String; 2],
    manifest: String,
}

impl Laid {
    fn root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
}

fn lay_out() -> Laid {
    let dir = tempfile::Builder::new().prefix("cache-").tempdir().unwrap();
    let root = dir.path().join("cache");
    for d in [
        "blobs/sha256",
        "images/sha256",
        "refs/127.0.0.1:5000/demo",
        "tmp",
        "locks",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    let blob = |bytes: &[u8]| {
        let h = hex(bytes);
        fs::write(root.join("blobs/sha256").join(&h), bytes).unwrap();
        h
    };
    let config = blob(b"{\"config\":{}}");
    let layers = [blob(&[1u8; 3000]), blob(&[2u8; 4000])];
    let manifest_json = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{config}","size":13}},"layers":[{{"digest":"sha256:{}","size":3000}},{{"digest":"sha256:{}","size":4000}}]}}"#,
        layers[0], layers[1]
    );
    let manifest = blob(manifest_json.as_bytes());
    fs::write(
        root.join(format!("images/sha256/{manifest}.sqfs")),
        vec![0u8; 5000],
    )
    .unwrap();
    fs::write(
        root.join("refs/127.0.0.1:5000/demo/1.0@amd64.json"),
        format!(
            r#"{{"manifest":"sha256:{manifest}","index":null,"arch":"amd64","reference":"127.0.0.1:5000/demo:1.0","pulled":1700000000}}"#
        ),
    )
    .unwrap();
    fs::write(
        root.join(format!("tmp/{}@node1.partial", hex(b"unfinished"))),
        vec![3u8; 100],
    )
    .unwrap();
    for l in &layers {
        set_age(&root.join("blobs/sha256").join(l), 40);
    }
    Laid {
        dir,
        layers,
        manifest,
    }
}

fn cache(root: &Path, args: &[&str]) -> Output {
    command(&tag("cache"))
        .env("RFAKE_CACHEDIR", root)
        .arg("cache")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rfake")
}

#[test]
fn list_shows_a_table_of_entries_with_their_references_and_a_total() {
    let laid = lay_out();
    let out = cache(&laid.root(), &["list"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("KIND"), "{text}");
    for col in ["SIZE", "LAST USED", "DIGEST", "REFERENCES"] {
        assert!(lines[0].contains(col), "{text}");
    }
    let image = lines.iter().find(|l| l.starts_with("image")).unwrap();
    assert!(image.contains("4.9 KiB"), "{image}");
    assert!(
        image.contains(&format!("sha256:{}", &laid.manifest[..12])),
        "{image}"
    );
    assert!(image.contains("127.0.0.1:5000/demo:1.0 (amd64)"), "{image}");
    let layer = lines
        .iter()
        .find(|l| l.contains(&laid.layers[1][..12]))
        .unwrap();
    assert!(
        layer.starts_with("blob") && layer.contains("3.9 KiB"),
        "{layer}"
    );
    assert!(layer.contains("40 d ago"), "{layer}");
    assert!(layer.contains("127.0.0.1:5000/demo:1.0 (amd64)"), "{layer}");
    assert!(lines.iter().any(|l| l.starts_with("partial")), "{text}");
    let total = lines.last().unwrap();
    assert!(total.starts_with("total: 6 entries, "), "{total}");
    assert!(
        total.contains(&laid.root().display().to_string()),
        "{total}"
    );
}

#[test]
fn list_json_has_every_entry() {
    let laid = lay_out();
    let out = cache(&laid.root(), &["list", "--json"]);
    assert_status(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6);
    let mut kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["blob", "blob", "blob", "blob", "image", "partial"]);
    let sum: u64 = entries.iter().map(|e| e["size"].as_u64().unwrap()).sum();
    assert_eq!(v["total_size"].as_u64(), Some(sum));
    let image = entries.iter().find(|e| e["kind"] == "image").unwrap();
    assert_eq!(image["digest"], format!("sha256:{}", laid.manifest));
    assert_eq!(image["references"][0], "127.0.0.1:5000/demo:1.0 (amd64)");
}

#[test]
fn list_of_a_missing_cache_is_empty_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("none");
    let out = cache(&root, &["list"]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        format!("the cache {} is empty\n", root.display())
    );
    assert!(!root.exists());
    let out = cache(&root, &["clean"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with("nothing to remove"),
        "{}",
        stdout(&out)
    );
    assert!(!root.exists());
}

#[test]
fn clean_removes_partials_and_the_layers_of_converted_images() {
    let laid = lay_out();
    let out = cache(&laid.root(), &["clean"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("removed blob sha256:{}", &laid.layers[0][..12])),
        "{text}"
    );
    assert!(text.contains("removed partial"), "{text}");
    assert!(text.contains("freed 6.9 KiB (3 entries)"), "{text}");
    let left = fs::read_dir(laid.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 2, "manifest and config stay");
    assert_eq!(fs::read_dir(laid.root().join("tmp")).unwrap().count(), 0);
    assert!(
        laid.root()
            .join(format!("images/sha256/{}.sqfs", laid.manifest))
            .exists()
    );
}

#[test]
fn clean_older_than_removes_what_was_not_used_since() {
    let laid = lay_out();
    let out = cache(&laid.root(), &["clean", "--older-than", "30d"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("freed 6.8 KiB (2 entries)"), "{text}");
    for l in &laid.layers {
        assert!(!laid.root().join("blobs/sha256").join(l).exists());
    }
    let out = cache(&laid.root(), &["clean", "--older-than", "30d"]);
    assert!(
        stdout(&out).contains("freed 0 B (0 entries)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn clean_all_empties_the_cache_references_included() {
    let laid = lay_out();
    let out = cache(&laid.root(), &["clean", "--all"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("(6 entries, 1 reference record(s))"),
        "{text}"
    );
    assert!(text.ends_with("the cache now holds 0 B\n"), "{text}");
    let out = cache(&laid.root(), &["list"]);
    assert!(stdout(&out).contains("is empty"), "{}", stdout(&out));
    assert!(laid.root().join("CACHEDIR.TAG").exists());
}

#[test]
fn a_bad_duration_is_a_usage_error() {
    let laid = lay_out();
    for args in [
        &["clean", "--older-than", "3w"][..],
        &["clean", "--older-than", "30"],
        &["clean", "--all", "--older-than", "1d"],
    ] {
        let out = cache(&laid.root(), args);
        assert_exit(&out, ExitKind::Usage);
        let err = stderr(&out);
        assert!(err.starts_with("rfake["), "{err}");
        if args.len() == 3 {
            assert!(
                err.contains("a whole number and a unit s, m, h or d"),
                "{err}"
            );
        }
    }
    // Nothing was removed.
    assert_eq!(
        fs::read_dir(laid.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        4
    );
}

#[test]
fn a_cache_that_cannot_be_written_is_71_naming_the_path_and_errno() {
    let laid = lay_out();
    if nix::unistd::geteuid().is_root() {
        missing("an unprivileged user (root ignores the directory's mode)");
        return;
    }
    let tmp = laid.root().join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o500)).unwrap();
    let out = cache(&laid.root(), &["clean"]);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
    assert_exit(&out, ExitKind::OsError);
    let err = stderr(&out);
    assert!(err.contains("image cache: cannot remove"), "{err}");
    assert!(err.contains(&tmp.display().to_string()), "{err}");
    assert!(err.contains("(EACCES)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
