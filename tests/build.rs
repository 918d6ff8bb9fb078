//! `rfake build` from every kind of source, checked by an independent
//! reader (unsquashfs) and by running the result with `rfake exec`.

mod common;
use rfake::exit::ExitKind;

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
        let r = rfake::squashfs::Reader::open(std::fs::File::open(&image).unwrap(), 0).unwrap();
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
    // Interrupt it in the middle: once it has read a quarter of its 160 MiB
    // source (rchar in /proc/PID/io), long before it can be done.
    let io = format!("/proc/{}/io", child.id());
    let read = || -> u64 {
        std::fs::read_to_string(&io)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("rchar: ").map(|v| v.trim().parse().ok()))
            })
            .flatten()
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while read() < 40 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it was interrupted"
        );
        assert!(start.elapsed().as_secs() < 60, "the build read nothing");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    // Killed by the signal, as documented (docs/build.md): not a crash, not
    // an error exit.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "the build should end killed by SIGINT: {status:?}"
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
    assert_exit(&o, ExitKind::Usage);
    assert_nothing_left(&t);
}

// Sparse tarballs, zero runs and the size limit (issue 19, defect 3).

/// A GNU tar header for `name`: type `kind`, mode 0644, `size` bytes of
/// data in the archive; `edit` changes it before the checksum is set.
fn tar_header(
    name: &str,
    kind: tar::EntryType,
    size: u64,
    edit: impl FnOnce(&mut tar::Header),
) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    edit(&mut h);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// `bytes` padded to whole 512-byte blocks.
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().next_multiple_of(512), 0);
    bytes
}

/// 1 TiB, the size of the sparse files below.
const TIB: u64 = 1 << 40;

/// Where the sparse files' data is, and what: 25 chunks (so that an old
/// GNU header needs extension blocks), at offsets a multiple of 4 KiB and
/// 512 bytes long, as GNU tar writes them (the crate that read tar members
/// before checked that), the last 5 bytes at the very end of the file.
fn sparse_chunks() -> Vec<(u64, Vec<u8>)> {
    let mut chunks: Vec<(u64, Vec<u8>)> = (0..24u64)
        .map(|i| {
            let mut bytes = vec![b'a' + i as u8; 512];
            bytes[..4].copy_from_slice(format!("c{i:03}").as_bytes());
            (i * (37 << 30) + i * 4096, bytes)
        })
        .collect();
    chunks.push((TIB - 5, b"tail!".to_vec()));
    chunks
}

/// An old GNU sparse member (`tar --sparse --format=gnu`): type `S`, four
/// (offset, length) pairs in the header, the rest in extension blocks of
/// 21 after it, the real size at byte 483; the data is the chunks' bytes.
fn gnu_sparse_member(name: &str, size: u64, chunks: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let data: Vec<u8> = chunks.iter().flat_map(|c| c.1.clone()).collect();
    let (first, rest) = chunks.split_at(4);
    let mut out = tar_header(name, tar::EntryType::GNUSparse, data.len() as u64, |h| {
        let gnu = h.as_gnu_mut().unwrap();
        for (entry, (offset, bytes)) in gnu.sparse.iter_mut().zip(first) {
            entry.set_offset(*offset);
            entry.set_length(bytes.len() as u64);
        }
        gnu.set_real_size(size);
        gnu.set_is_extended(true);
    });
    let blocks: Vec<_> = rest.chunks(21).collect();
    for (i, block) in blocks.iter().enumerate() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (entry, (offset, bytes)) in ext.sparse_mut().iter_mut().zip(block.iter()) {
            entry.set_offset(*offset);
            entry.set_length(bytes.len() as u64);
        }
        ext.set_is_extended(i + 1 < blocks.len());
        out.extend_from_slice(ext.as_bytes());
    }
    out.extend(padded(data));
    out
}

/// A PAX sparse member in GNU format 1.0 (`tar --sparse --format=pax`):
/// a PAX header naming the real file and size, then a member whose data
/// is the map (decimal lines, padded to 512 bytes) and the chunks.
fn pax_sparse_member(name: &str, size: u64, chunks: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut records = Vec::new();
    for (key, value) in [
        ("GNU.sparse.major", "1".to_string()),
        ("GNU.sparse.minor", "0".to_string()),
        ("GNU.sparse.name", name.to_string()),
        ("GNU.sparse.realsize", size.to_string()),
    ] {
        // "LEN key=value\n", LEN counting itself.
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        records.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    let mut map = format!("{}\n", chunks.len());
    for (offset, bytes) in chunks {
        map.push_str(&format!("{offset}\n{}\n", bytes.len()));
    }
    let mut data = padded(map.into_bytes());
    for (_, bytes) in chunks {
        data.extend_from_slice(bytes);
    }
    let mut out = tar_header(
        "pax-header",
        tar::EntryType::XHeader,
        records.len() as u64,
        |_| {},
    );
    out.extend(padded(records));
    out.extend(tar_header(
        &format!("GNUSparseFile.0/{name}"),
        tar::EntryType::Regular,
        data.len() as u64,
        |_| {},
    ));
    out.extend(padded(data));
    out
}

/// Run `rfake build` with `opts` as `rfake(...)` does, but unable to write
/// a file over `fsize_limit` bytes (RLIMIT_FSIZE, SIGXFSZ ignored: the
/// write fails with EFBIG) and killed after `seconds`: code that writes
/// holes as zeros fails fast instead of filling the disk.
fn build_bounded(
    t: &str,
    out: &Path,
    source: &Path,
    opts: &[&str],
    fsize_limit: u64,
    seconds: u64,
) -> (std::process::Output, std::time::Duration) {
    let mut cmd = command(t);
    cmd.arg("build").args(opts).arg(out).arg(source);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let limit = libc::rlimit {
                rlim_cur: fsize_limit,
                rlim_max: fsize_limit,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let start = std::time::Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let watchdog = std::thread::spawn(move || {
        let deadline = start + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // Gone (reaped by wait_with_output below): nothing to kill.
            if nix::sys::signal::kill(pid, None).is_err() {
                return;
            }
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let output = child.wait_with_output().unwrap();
    let took = start.elapsed();
    drop(watchdog);
    (output, took)
}

/// Read `len` bytes at `offset` of `/name` in the SquashFS `image`, as the
/// FUSE server does.
fn read_image(fs: &rfake::squashfs::ImageFs, name: &str, offset: u64, len: usize) -> Vec<u8> {
    use rfake::fuse::Filesystem;
    let (node, _) = fs
        .lookup(rfake::fuse::ROOT, name.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("/{name} missing"));
    let mut out = Vec::new();
    fs.read(node, offset, len, &mut out).unwrap();
    out
}

/// A tarball of a 1 TiB sparse file (old GNU `S` member with extension
/// blocks, and PAX GNU.sparse 1.0) builds in seconds into a small image,
/// writing no zeros anywhere (the build may not write a file over 64 MiB);
/// the file reads back, through the FUSE server's reader, with its size,
/// its data where it was and zeros in the holes.
#[test]
fn sparse_tarballs_stay_sparse() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let t = tag("sparse-tar");
    let chunks = sparse_chunks();
    let mut tar = gnu_sparse_member("gnu", TIB, &chunks);
    // The PAX one ends in a hole.
    tar.extend(pax_sparse_member("pax", TIB + (1 << 30), &chunks));
    tar.extend(vec![0; 1024]);
    let source = d.path().join("sparse.tar");
    std::fs::write(&source, &tar).unwrap();
    assert!(tar.len() < 64 << 10, "{} bytes", tar.len());
    let out = d.path().join("sparse.sqfs");
    let (o, took) = build_bounded(&t, &out, &source, &[], 64 << 20, 120);
    assert_status(&o, 0);
    assert!(took.as_secs() < 60, "took {took:?}");
    let image_len = std::fs::metadata(&out).unwrap().len();
    assert!(image_len < 2 << 20, "{image_len} bytes: holes were stored");

    let fs = rfake::squashfs::ImageFs::open(std::fs::File::open(&out).unwrap(), 0, 1 << 20, "t")
        .unwrap();
    let r = rfake::squashfs::Reader::open(std::fs::File::open(&out).unwrap(), 0).unwrap();
    for (name, size) in [("gnu", TIB), ("pax", TIB + (1 << 30))] {
        assert_eq!(r.stat(&format!("/{name}")).unwrap().size, size, "{name}");
        for (offset, bytes) in &chunks {
            // The chunk with up to 3 bytes of hole on each side.
            let at = offset.saturating_sub(3);
            let mut want = vec![0u8; (offset - at) as usize];
            want.extend_from_slice(bytes);
            want.extend_from_slice(&[0; 3]);
            let asked = want.len();
            want.truncate(asked.min((size - at) as usize));
            assert_eq!(read_image(&fs, name, at, asked), want, "{name} at {offset}");
        }
        // Deep in holes: zeros.
        for at in [1u64 << 20, 500 << 30, TIB - (1 << 20)] {
            assert!(
                read_image(&fs, name, at, 4096).iter().all(|&b| b == 0),
                "{name} at {at}"
            );
        }
    }
    assert!(read_image(&fs, "pax", TIB + (1 << 30) - 10, 100) == vec![0; 10]);
    if have("unsquashfs") {
        let listing = unsquashfs_list(&out, 0);
        assert!(listing.contains(&format!(" {TIB} ")), "{listing}");
    }
    assert_nothing_left(&t);
}

/// Zero runs cost nothing: an ordinary tar member with 512 MiB of zeros
/// between its data, and a host file with a 1 TiB hole, build without
/// writing the zeros (no file over 64 MiB may be written) into images whose
/// zero blocks are sparse blocks (512 MiB of zeros stored as compressed
/// blocks would take 600 KB).
#[test]
fn zero_runs_become_sparse_blocks() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let t = tag("zero-runs");
    // The tar itself is a sparse file on disk: its zeros are a hole.
    let zeros = 512u64 << 20;
    let size = 4096 + zeros + 4096;
    let source = d.path().join("zeros.tar");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&source).unwrap();
        f.write_all_at(&tar_header("z", tar::EntryType::Regular, size, |_| {}), 0)
            .unwrap();
        f.write_all_at(&[7u8; 4096], 512).unwrap();
        f.write_all_at(&[9u8; 4096], 512 + 4096 + zeros).unwrap();
        // The padding is nothing (a multiple of 512), then the end blocks.
        f.set_len(512 + size + 1024).unwrap();
    }
    let out = d.path().join("zeros.sqfs");
    let (o, took) = build_bounded(&t, &out, &source, &[], 64 << 20, 300);
    assert_status(&o, 0);
    eprintln!("zero run tar: {took:?}");
    let image_len = std::fs::metadata(&out).unwrap().len();
    assert!(
        image_len < 64 << 10,
        "{image_len} bytes: zero blocks were stored"
    );
    let fs = rfake::squashfs::ImageFs::open(std::fs::File::open(&out).unwrap(), 0, 1 << 20, "t")
        .unwrap();
    assert_eq!(read_image(&fs, "z", 4090, 12), [[7; 6], [0; 6]].concat());
    assert_eq!(
        read_image(&fs, "z", 4096 + zeros - 6, 12),
        [[0; 6], [9; 6]].concat()
    );

    // A directory with a sparse host file: its hole is not read.
    let dir = d.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(dir.join("big")).unwrap();
        f.set_len(TIB).unwrap();
        f.write_all_at(b"middle", TIB / 2).unwrap();
    }
    let out = d.path().join("dir.sqfs");
    let (o, took) = build_bounded(&t, &out, &dir, &[], 64 << 20, 120);
    assert_status(&o, 0);
    assert!(took.as_secs() < 60, "took {took:?}");
    let image_len = std::fs::metadata(&out).unwrap().len();
    assert!(image_len < 2 << 20, "{image_len} bytes");
    let fs = rfake::squashfs::ImageFs::open(std::fs::File::open(&out).unwrap(), 0, 1 << 20, "t")
        .unwrap();
    assert_eq!(read_image(&fs, "big", TIB / 2 - 2, 8), b"\0\0middle");
    assert_nothing_left(&t);
}

/// The build size limit: `--max-size` or `build_max_size` refuses a build
/// whose files add up to more, with one line naming the member, the limit
/// and where it was set, exit 77, and no output; `--max-size 0` lifts it.
#[test]
fn the_size_limit_refuses_big_builds() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let t = tag("max-size");
    let refused = rfake::exit::ExitKind::Refused.code() as i32;
    let mut tar = tar_header("small", tar::EntryType::Regular, 1000, |_| {});
    tar.extend(padded(vec![1; 1000]));
    tar.extend(tar_header("big", tar::EntryType::Regular, 2 << 20, |_| {}));
    tar.extend(vec![2; 2 << 20]);
    tar.extend(vec![0; 1024]);
    let source = d.path().join("two.tar");
    std::fs::write(&source, &tar).unwrap();
    let out = d.path().join("two.sqfs");
    let args = |opts: &[&str]| {
        let mut a = vec!["build"];
        a.extend_from_slice(opts);
        a.extend([out.to_str().unwrap(), source.to_str().unwrap()]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |cmd: &mut std::process::Command, opts: &[&str]| {
        cmd.args(args(opts))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&mut command(&t), &["--max-size", "1M"]);
    assert_status(&o, refused);
    assert_eq!(
        stderr(&o).trim_end().split_once("error: ").map(|(_, m)| m),
        Some(
            format!(
                "{}: big: the image's files would exceed the build size limit of 1M \
                 (--max-size); raise it with --max-size SIZE or build_max_size in rfake.toml",
                source.display()
            )
            .as_str()
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("two.tar")]);

    // From the site file.
    let site = d.path().join("site.toml");
    std::fs::write(&site, "# limits\nbuild_max_size = \"1M\"\n").unwrap();
    let o = run(command(&t).env("RFAKE_CONFIG", &site), &[]);
    assert_status(&o, refused);
    assert!(
        stderr(&o).contains(&format!(
            "limit of 1M (build_max_size, {}:2)",
            site.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    // No limit, and a bad one.
    let o = run(command(&t).env("RFAKE_CONFIG", &site), &["--max-size", "0"]);
    assert_status(&o, 0);
    let o = run(&mut command(&t), &["--max-size", "1X"]);
    assert_status(&o, rfake::exit::ExitKind::Usage.code() as i32);
    assert!(stderr(&o).contains("--max-size 1X: "), "{}", stderr(&o));
    assert_nothing_left(&t);
}
