use std::path::Path;

use super::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn modes_are_split_off_the_end_only() {
    assert_eq!(split_mode("/a/b").unwrap(), ("/a/b", false));
    assert_eq!(split_mode("/a/b:ro").unwrap(), ("/a/b", true));
    assert_eq!(split_mode("/a/b:rw").unwrap(), ("/a/b", false));
    assert_eq!(split_mode("rel:ro").unwrap(), ("rel", true));
    // A colon inside the path is part of it (refused later by check_path).
    assert_eq!(split_mode("/a:b/c").unwrap(), ("/a:b/c", false));
    assert!(matches!(
        split_mode("/a/b:wr"),
        Err(OverlayError::BadMode { .. })
    ));
}

#[test]
fn paths_the_overlay_options_cannot_carry_are_refused() {
    for bad in ["/a:b", "/a,b", "/a\\b", "/a\nb"] {
        assert!(
            matches!(
                check_path(Path::new(bad)),
                Err(OverlayError::BadPath { .. })
            ),
            "{bad:?}"
        );
    }
    check_path(Path::new("/scratch/me/overlay-1 (copy)")).unwrap();
}

#[test]
fn a_directory_is_parsed_relative_to_cwd_and_canonical() {
    let t = tmp();
    std::fs::create_dir_all(t.path().join("real/upper")).unwrap();
    std::os::unix::fs::symlink("real", t.path().join("link")).unwrap();
    let l = parse("link", t.path()).unwrap();
    let real = std::fs::canonicalize(t.path().join("real")).unwrap();
    assert_eq!(l.path, real);
    assert_eq!(l.kind, Kind::Dir);
    assert!(!l.readonly);
    assert_eq!(l.lower_dir, real);
    // Read-only: an earlier overlay's upper, else the directory itself.
    let l = parse("link:ro", t.path()).unwrap();
    assert_eq!(l.lower_dir, real.join("upper"));
    std::fs::create_dir(t.path().join("plain")).unwrap();
    let l = parse("plain:ro", t.path()).unwrap();
    assert_eq!(l.lower_dir, l.path);
}

#[test]
fn files_must_be_ext_images() {
    let t = tmp();
    let f = t.path().join("f");
    std::fs::write(&f, b"not a file system").unwrap();
    let err = parse(f.to_str().unwrap(), t.path()).unwrap_err();
    assert!(matches!(err, OverlayError::NotAnOverlay { .. }), "{err}");
    assert_eq!(err.exit_kind(), ExitKind::BadImage);
    let mut sb = vec![0u8; 2048];
    sb[1024 + 56..1024 + 58].copy_from_slice(&EXT_MAGIC);
    std::fs::write(&f, &sb).unwrap();
    assert_eq!(
        parse(f.to_str().unwrap(), t.path()).unwrap().kind,
        Kind::Ext3
    );
    let err = parse("missing", t.path()).unwrap_err();
    assert!(matches!(err, OverlayError::Missing { .. }));
    assert_eq!(err.exit_kind(), ExitKind::NoInput);
}

#[test]
fn stacking_keeps_order_and_one_writable() {
    let t = tmp();
    for d in ["a", "b", "c", "d"] {
        std::fs::create_dir(t.path().join(d)).unwrap();
    }
    let specs: Vec<String> = ["a:ro", "b", "c:ro"].map(String::from).to_vec();
    let o = plan(&specs, t.path()).unwrap();
    let names: Vec<_> = o
        .readonly
        .iter()
        .map(|l| l.path.file_name().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(o.writable.unwrap().path.file_name().unwrap(), "b");
    let specs: Vec<String> = ["b", "d"].map(String::from).to_vec();
    let err = plan(&specs, t.path()).unwrap_err();
    assert!(matches!(err, OverlayError::TwoWritable { .. }), "{err}");
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(plan(&[], t.path()).unwrap().is_empty());
}
