//! `rfake build` from every kind of source, checked by an independent
//! reader (unsquashfs) and by running the result with `rfake exec`.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(home())
        .unwrap()
}

/// Build OUT from SOURCE with extra options; asserts success.
#[track_caller]
fn build(t: &str, out: &Path, source: &Path, opts: &[&str]) -> String {
    let mut args = vec!["build"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[out.to_str().unwrap(), source.to_str().unwrap()]);
    let o = rfake(t, &args);
    assert_status(&o, 0);
    stdout(&o)
}

#[track_caller]
fn run_in(t: &str, image: &Path, script: &str) -> String {
    let o = rfake(t, &["exec", image.to_str().unwrap(), "sh", "-c", script]);
    assert_status(&o, 0);
    stdout(&o)
}

/// `unsquashfs -lln` of a SquashFS (at `offset` in a SIF).
fn unsquashfs_list(image: &Path, offset: u64) -> String {
    let off = offset.to_string();
    let mut args = vec!["-lln"];
    if offset > 0 {
        args.extend_from_slice(&["-o", &off]);
    }
    args.push(image.to_str().unwrap());
    host("unsquashfs", &args)
}

fn sif_offset(image: &Path) -> u64 {
    rfake::image::open(image)
        .expect("rfake reads the SIF it wrote")
        .squashfs_offset
        .unwrap()
}

#[test]
fn from_a_directory_to_squashfs_and_sif() {
    let Some(env) = setup() else { return };
    if !have("unsquashfs") {
        missing("unsquashfs (squashfs-tools)");
        return;
    }
    let d = scratch();
    let t = tag("build-dir");
    let sqfs = d.path().join("demo.sqfs");
    let summary = build(&t, &sqfs, &env.image("demo"), &[]);
    assert!(summary.contains("wrote"), "{summary}");
    let listing = unsquashfs_list(&sqfs, 0);
    assert!(
        listing.contains("squashfs-root/etc/rfake-demo.txt"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .all(|l| !l.contains("squashfs-root") || l.contains(" 0/0 ")),
        "root-owned: {listing}"
    );
    assert!(
        listing.contains("squashfs-root/bin/sh -> busybox"),
        "{listing}"
    );
    assert_eq!(
        run_in(&t, &sqfs, "cat /etc/rfake-demo.txt"),
        "hello from the demo image\n"
    );

    let sif = d.path().join("demo.sif");
    build(&t, &sif, &env.image("demo"), &[]);
    let offset = sif_offset(&sif);
    assert_eq!(offset % 4096, 0);
    assert!(unsquashfs_list(&sif, offset).contains("squashfs-root/etc/rfake-demo.txt"));
    assert_eq!(
        run_in(&t, &sif, "cat /etc/rfake-demo.txt"),
        "hello from the demo image\n"
    );
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        2,
        "only the two outputs, no temporary files"
    );
    assert_nothing_left(&t);
}

#[test]
fn builds_are_reproducible() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let t = tag("repro");
    for name in ["a.sqfs", "b.sqfs", "a.sif", "b.sif"] {
        build(&t, &d.path().join(name), &env.image("demo"), &[]);
    }
    for (x, y) in [("a.sqfs", "b.sqfs"), ("a.sif", "b.sif")] {
        assert_eq!(
            std::fs::read(d.path().join(x)).unwrap(),
            std::fs::read(d.path().join(y)).unwrap(),
            "{x} and {y} differ"
        );
    }
    // A different SOURCE_DATE_EPOCH changes the timestamps, nothing else:
    // it is the image's time, and no entry is later.
    let out = command(&t)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "build",
            d.path().join("c.sqfs").to_str().unwrap(),
            env.image("demo").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_status(&out, 0);
    let c = std::fs::read(d.path().join("c.sqfs")).unwrap();
    assert_eq!(
        u32::from_le_bytes(c[8..12].try_into().unwrap()),
        1_700_000_000
    );

    // Entries keep their source's modification times (Python's .pyc files
    // record their .py's); SOURCE_DATE_EPOCH caps them, and is the image's
    // own time.
    let src = d.path().join("times");
    std::fs::create_dir(&src).unwrap();
    let at = |name: &str, secs: u64| {
        let f = std::fs::File::create(src.join(name)).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    };
    at("old.py", 1_000_000_000);
    at("new.py", 1_800_000_000);
    let times = |name: &str, epoch: Option<&str>| {
        let image = d.path().join(name);
        let mut cmd = command(&t);
        if let Some(epoch) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch);
        }
        let out = cmd
            .args(["build", image.to_str().unwrap(), src.to_str().unwrap()])
            .output()
            .unwrap();
        assert_status(&out, 0);
        let r = rfake::sqfs::Reader::open(std::fs::File::open(&image).unwrap(), 0).unwrap();
        let mtime = |p: &str| r.stat(p).unwrap().mtime;
        (mtime("/old.py"), mtime("/new.py"), r.info().mtime)
    };
    assert_eq!(times("t.sqfs", None), (1_000_000_000, 1_800_000_000, 0));
    assert_eq!(
        times("u.sqfs", Some("1700000000")),
        (1_000_000_000, 1_700_000_000, 1_700_000_000)
    );
}

#[test]
fn from_tarballs() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let t = tag("tarballs");
    let demo = env.image("demo");
    for (name, flag) in [
        ("r.tar", ""),
        ("r.tar.gz", "-z"),
        ("r.tar.xz", "-J"),
        ("r.tar.zst", "--zstd"),
    ] {
        let tarball = d.path().join(name);
        let mut args = vec![
            "-C",
            demo.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
        ];
        if !flag.is_empty() {
            args.insert(0, flag);
        }
        args.push(".");
        host("tar", &args);
        let out = d.path().join(format!("{name}.sqfs"));
        build(&t, &out, &tarball, &[]);
        assert_eq!(
            run_in(&t, &out, "cat /etc/rfake-demo.txt"),
            "hello from the demo image\n",
            "{name}"
        );
    }
    assert_nothing_left(&t);
}

#[test]
fn from_oci_images_made_by_podman() {
    let Some(_env) = setup() else { return };
    let Some(oci) = oci_dir() else { return };
    let d = scratch();
    let t = tag("oci");
    for source in ["layered-docker.tar", "layered-oci.tar", "layered-oci-dir"] {
        let out = d.path().join(format!("{source}.sif"));
        build(&t, &out, &oci.join(source), &[]);
        // Cmd honoured by rfake run; WorkingDir; Env from both layers.
        let o = rfake(&t, &["run", out.to_str().unwrap()]);
        assert_status(&o, 0);
        assert_eq!(stdout(&o), "from-cmd\n", "{source}");
        let o = rfake(&t, &["run", out.to_str().unwrap(), "pwd"]);
        assert_eq!(stdout(&o), "/etc\n", "{source}: WorkingDir");
        assert_eq!(
            run_in(&t, &out, "echo $GREETING $LAYER"),
            "hello-from-oci two\n",
            "{source}: Env"
        );
        // Whiteouts: the second layer deleted a file and replaced /opt.
        assert_eq!(
            run_in(
                &t,
                &out,
                "test -e /etc/rfake-demo.txt || echo deleted; ls /opt"
            ),
            "deleted\nnew.txt\n",
            "{source}: whiteouts"
        );
        let o = rfake(&t, &["inspect", "--json", out.to_str().unwrap()]);
        assert_status(&o, 0);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["labels"]["org.example.fixture"], "layered", "{source}");
    }
    assert_nothing_left(&t);
}

#[test]
fn from_a_recipe() {
    let Some(_env) = setup() else { return };
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/recipes/demo.toml");
    let recipe = std::env::var_os("RFAKE_TEST_RECIPES")
        .map(|d| PathBuf::from(d).join("demo.toml"))
        .unwrap_or(recipe);
    if !recipe.is_file() {
        missing(&format!("recipe {}", recipe.display()));
        return;
    }
    let d = scratch();
    let t = tag("recipe");
    let out = d.path().join("recipe.sif");
    build(&t, &out, &recipe, &[]);
    assert_eq!(
        run_in(&t, &out, "cat /etc/rfake-demo.txt"),
        "hello from the demo image\n"
    );
    let o = rfake(&t, &["run", out.to_str().unwrap()]);
    assert_status(&o, 0);
    assert!(
        stdout(&o).contains("rfake demo image: runscript"),
        "{}",
        stdout(&o)
    );
    let o = rfake(&t, &["inspect", out.to_str().unwrap()]);
    assert!(stdout(&o).contains("definition:"), "{}", stdout(&o));
}

#[test]
fn hard_links_modes_symlinks_and_xattrs_survive() {
    let Some(_env) = setup() else { return };
    if !have("unsquashfs") {
        missing("unsquashfs (squashfs-tools)");
        return;
    }
    let d = scratch();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::hard_link(src.join("bin/tool"), src.join("bin/tool-again")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        src.join("bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("tool", src.join("bin/link")).unwrap();
    std::fs::create_dir(src.join("private")).unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let xattr_ok = std::process::Command::new("setfattr")
        .args([
            "-n",
            "user.rfake",
            "-v",
            "yes",
            src.join("bin/tool").to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let out = d.path().join("x.sqfs");
    let t = tag("links");
    build(&t, &out, &src, &[]);
    let listing = unsquashfs_list(&out, 0);
    assert!(listing.contains("-rwsr-xr-x 0/0"), "{listing}");
    assert!(listing.contains("drwx------ 0/0"), "{listing}");
    assert!(
        listing.contains("squashfs-root/bin/link -> tool"),
        "{listing}"
    );
    // Both names are one inode: unsquashfs extracts them as one file.
    let inodes = host(
        "sh",
        &[
            "-c",
            &format!(
                "unsquashfs -d {0}/x -no-progress {1} >/dev/null && stat -c %i:%h {0}/x/bin/tool {0}/x/bin/tool-again",
                d.path().display(),
                out.display()
            ),
        ],
    );
    let lines: Vec<&str> = inodes.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], lines[1], "hard link kept: {inodes}");
    assert!(lines[0].ends_with(":2"), "{inodes}");
    if xattr_ok && have("getfattr") {
        let x = host(
            "getfattr",
            &[
                "-n",
                "user.rfake",
                "--only-values",
                d.path().join("x/bin/tool").to_str().unwrap(),
            ],
        );
        assert_eq!(x, "yes");
    }
}

#[test]
fn compression_choices() {
    let Some(env) = setup() else { return };
    if !have("unsquashfs") {
        missing("unsquashfs (squashfs-tools)");
        return;
    }
    let d = scratch();
    let t = tag("compress");
    for comp in ["gzip", "zstd", "xz", "lz4"] {
        let out = d.path().join(format!("{comp}.sqfs"));
        build(
            &t,
            &out,
            &env.image("demo"),
            &["--compress", comp, "--block-size", "64K"],
        );
        let stat = host("unsquashfs", &["-s", out.to_str().unwrap()]);
        assert!(stat.contains(&format!("Compression {comp}")), "{stat}");
        assert!(stat.contains("Block size 65536"), "{stat}");
    }
    assert_eq!(
        run_in(&t, &d.path().join("zstd.sqfs"), "cat /etc/rfake-demo.txt"),
        "hello from the demo image\n"
    );
}

#[test]
fn an_interrupted_build_leaves_nothing() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let src = d.path().join("big");
    std::fs::create_dir(&src).unwrap();
    // Incompressible data, so the build takes a while.
    host(
        "sh",
        &[
            "-c",
            &format!(
                "for i in $(seq 1 40); do head -c 4M /dev/urandom > {}/f$i; done",
                src.display()
            ),
        ],
    );
    let outdir = d.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("big.sif");
    let t = tag("interrupt");
    let mut cmd = command(&t);
    cmd.args(["build", out.to_str().unwrap(), src.to_str().unwrap()]);
    // A test run started in the background (no job control) inherits
    // SIGINT ignored, and rfake respects that, like any program: give the
    // build the default disposition a terminal's ^C would meet.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the build should have been interrupted: {status:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_nothing_left(&t);
}

#[test]
fn bad_sources_are_named() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let t = tag("badsrc");
    let out = d.path().join("o.sqfs");
    let refuse = |source: &Path, code: i32, phrase: &str| {
        let o = rfake(
            &t,
            &["build", out.to_str().unwrap(), source.to_str().unwrap()],
        );
        assert_status(&o, code);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(phrase), "{phrase:?}: {err}");
        assert!(!out.exists());
    };
    refuse(&d.path().join("missing"), 66, "missing");
    let junk = d.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01junk").unwrap();
    refuse(&junk, 65, "junk.bin");
    // A FIFO: refused, or skipped with --skip-special.
    let src = d.path().join("withfifo");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok"), "ok").unwrap();
    nix::unistd::mkfifo(
        &src.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    refuse(&src, 65, "pipe");
    let o = rfake(
        &t,
        &[
            "build",
            "--skip-special",
            out.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    assert_status(&o, 0);
    assert!(stderr(&o).contains("pipe"), "{}", stderr(&o));
    std::fs::remove_file(&out).unwrap();
    // An unreadable file inside the source.
    let src = d.path().join("unreadable");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("secret"), "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    refuse(&src, 66, "secret");
    // A docker-archive missing a layer.
    if let Some(oci) = oci_dir() {
        let broken = d.path().join("broken.tar");
        std::fs::copy(oci.join("layered-docker.tar"), &broken).unwrap();
        let members = host("tar", &["-tf", broken.to_str().unwrap()]);
        let layer = members
            .lines()
            .find(|m| m.ends_with(".tar"))
            .unwrap()
            .to_string();
        host("tar", &["--delete", "-f", broken.to_str().unwrap(), &layer]);
        refuse(&broken, 65, layer.trim_end_matches(".tar"));
    }
    // A bad block size is a usage error.
    let o = rfake(
        &t,
        &[
            "build",
            "--block-size",
            "3K",
            out.to_str().unwrap(),
            env.image("demo").to_str().unwrap(),
        ],
    );
    assert_status(&o, 64);
    assert_nothing_left(&t);
}
