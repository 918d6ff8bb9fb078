//! Persistent overlays (`--overlay DIR[:ro]`, stacked) and `rfake overlay
//! create`, as an unprivileged user: what survives a run, who owns it on
//! the host, and the refusals.

mod common;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use rfake::exit::ExitKind;

use common::*;

/// A scratch directory on a disk-backed file system (ext4 on the test
/// hosts), removed when dropped: the kernel leaves `work/work` mode 0, so
/// it is opened up first (as the user guide tells users to).
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(self.0.path())
            .status();
    }
}

fn scratch(name: &str) -> Scratch {
    Scratch(
        tempfile::Builder::new()
            .prefix(&format!("ovl-test-{name}-"))
            .tempdir_in("/var/tmp")
            .unwrap(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Files written through the overlay persist across runs, land in
/// DIR/upper owned by the user (as fakeroot and with --keep-id), a removed
/// image file stays removed, and the image itself is untouched.
#[test]
fn a_directory_overlay_survives_two_runs() {
    let Some(env) = setup() else { return };
    for image in ["demo.sqfs", "demo.sif"] {
        let img = env.image(image);
        let dir = scratch("persist");
        let ov = dir.path().join("ov");
        std::fs::create_dir(&ov).unwrap();
        let t = tag("persist");
        let out = sh(
            &t,
            &["--overlay", s(&ov)],
            &img,
            "mkdir -p /opt/tool && printf '#!/bin/sh\\necho tool ran: $1\\n' > /opt/tool/run \
             && chmod 755 /opt/tool/run && rm /bin/arch && echo written",
        );
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "written\n");
        // As Apptainer lays a directory overlay out.
        let upper = ov.join("upper");
        let work = ov.join("work");
        assert!(
            upper.is_dir() && work.is_dir(),
            "{image}: upper and work made"
        );
        assert_eq!(
            std::fs::metadata(&work).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = upper.join("opt/tool/run");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            meta.uid(),
            me(),
            "{image}: written as fakeroot, owned by the user"
        );
        assert_eq!(meta.gid(), nix::unistd::getgid().as_raw());
        // The second run sees the first one's files, also with --keep-id.
        let out = sh(
            &t,
            &["--overlay", s(&ov), "--keep-id"],
            &img,
            "/opt/tool/run again; test -e /bin/arch || echo arch gone; \
             echo mine > /opt/tool/kept",
        );
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "tool ran: again\narch gone\n");
        assert_eq!(
            std::fs::metadata(upper.join("opt/tool/kept"))
                .unwrap()
                .uid(),
            me()
        );
        // Without the overlay, the image is as it was.
        let out = sh(
            &t,
            &[],
            &img,
            "test -e /opt/tool || test -e /bin/arch && echo intact",
        );
        assert_eq!(stdout(&out), "intact\n");
        assert_nothing_left(&t);
    }
}

/// `:ro` uses an overlay written earlier (its upper) without writing to
/// it; a plain directory given `:ro` is itself the layer.
#[test]
fn a_read_only_overlay_is_seen_and_not_written() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("ro");
    let ov = dir.path().join("ov");
    std::fs::create_dir(&ov).unwrap();
    let t = tag("ro");
    let out = sh(&t, &["-o", s(&ov)], &img, "echo first > /opt/f");
    assert_status(&out, 0);
    let arg = format!("{}:ro", s(&ov));
    let out = sh(&t, &["-o", &arg], &img, "cat /opt/f; echo x > /opt/g");
    assert_eq!(stdout(&out), "first\n");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert_status(&out, 1);
    assert!(!ov.join("upper/opt/g").exists());
    // A plain directory of files (no upper/): the directory is the layer.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(plain.join("data")).unwrap();
    std::fs::write(plain.join("data/input"), "from the host\n").unwrap();
    let arg = format!("{}:ro", s(&plain));
    let out = sh(&t, &["-o", &arg], &img, "cat /data/input");
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "from the host\n");
    assert_nothing_left(&t);
}

/// Read-only overlays stack in command-line order, the first on top, as
/// Apptainer stacks them; the writable one is above them all and alone
/// receives the writes.
#[test]
fn overlays_stack_in_order_under_the_writable_one() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("stack");
    let [a, b, rw] = ["a", "b", "rw"].map(|n| dir.path().join(n));
    for (d, text) in [(&a, "a"), (&b, "b")] {
        std::fs::create_dir_all(d.join("opt")).unwrap();
        std::fs::write(d.join("opt/which"), format!("{text}\n")).unwrap();
        std::fs::write(d.join(format!("opt/only-{text}")), "").unwrap();
    }
    std::fs::create_dir(&rw).unwrap();
    let t = tag("stack");
    let (ra, rb) = (format!("{}:ro", s(&a)), format!("{}:ro", s(&b)));
    let opts = ["-o", &ra, "-o", s(&rw), "-o", &rb];
    let out = sh(
        &t,
        &opts,
        &img,
        "cat /opt/which; ls /opt | grep -e only -e which",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "a\nonly-a\nonly-b\nwhich\n");
    let out = sh(&t, &opts, &img, "echo top > /opt/which; rm /opt/only-b");
    assert_status(&out, 0);
    assert_eq!(
        std::fs::read_to_string(rw.join("upper/opt/which")).unwrap(),
        "top\n"
    );
    // The lower layers are untouched; the removal is a whiteout above them.
    assert_eq!(std::fs::read_to_string(a.join("opt/which")).unwrap(), "a\n");
    assert!(b.join("opt/only-b").exists());
    let out = sh(
        &t,
        &opts,
        &img,
        "cat /opt/which; ls /opt | grep -e only -e which",
    );
    assert_eq!(stdout(&out), "top\nonly-a\nwhich\n");
    // Two writable overlays: refused before anything is mounted.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let out = sh(&t, &["-o", s(&rw), "-o", s(&other)], &img, "true");
    assert_exit(&out, ExitKind::Usage);
    assert!(
        stderr(&out).contains("only one writable overlay per container"),
        "{}",
        stderr(&out)
    );
    assert!(!other.join("upper").exists());
    assert_nothing_left(&t);
}

/// One container at a time writes to an overlay directory: a second
/// writer is refused while the first runs; readers are not; once it
/// ends, the directory is free again.
#[test]
fn a_second_writer_is_refused_while_the_first_runs() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("busy");
    let ov = dir.path().join("ov");
    std::fs::create_dir(&ov).unwrap();
    let t = tag("busy");
    let first = spawn(
        &t,
        &[
            "exec",
            "-o",
            s(&ov),
            s(&img),
            "sh",
            "-c",
            "echo ready; sleep 30",
        ],
    );
    first.expect_line("ready");
    let out = sh(&t, &["-o", s(&ov)], &img, "echo second");
    assert_exit(&out, ExitKind::Refused);
    assert!(
        stderr(&out).contains("in use as the writable overlay of another container"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    let arg = format!("{}:ro", s(&ov));
    let out = sh(&t, &["-o", &arg], &img, "echo reader");
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "reader\n");
    first.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, _) = first.wait();
    assert_eq!(status.code(), Some(143), "{status:?}");
    let out = sh(&t, &["-o", s(&ov)], &img, "echo free");
    assert_eq!(stdout(&out), "free\n");
    assert_nothing_left(&t);
}

/// The lock goes with the container, not with the image's warm mount,
/// whose keeper (forked by the launch) lingers after it.
#[test]
fn the_overlay_is_free_while_the_warm_mount_lingers() {
    let Some(env) = setup() else { return };
    let dir = scratch("linger");
    // An image of this test's own: a warm mount is shared by every launch
    // of an image.
    let img = dir.path().join("own.sqfs");
    std::fs::copy(env.image("demo.sqfs"), &img).unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(&site, "warm_linger = 3\n").unwrap();
    let ov = dir.path().join("ov");
    std::fs::create_dir(&ov).unwrap();
    let t = tag("linger");
    for word in ["one", "two"] {
        let out = command(&t)
            .env("RFAKE_CONFIG", &site)
            .args(["exec", "-o", s(&ov), s(&img), "sh", "-c"])
            .arg(format!("echo {word} >> /log; cat /log"))
            .output()
            .unwrap();
        assert_status(&out, 0);
    }
    assert_eq!(
        std::fs::read_to_string(ov.join("upper/log")).unwrap(),
        "one\ntwo\n"
    );
    assert_nothing_left(&t);
}

/// Bad `--overlay` arguments: each refused with its exit code and a
/// message naming the path, nothing made.
#[test]
fn bad_overlays_are_refused() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("bad");
    let t = tag("bad");
    let not_fs = dir.path().join("notes.txt");
    std::fs::write(&not_fs, "hello").unwrap();
    let comma = dir.path().join("a,b");
    std::fs::create_dir(&comma).unwrap();
    let missing = dir.path().join("missing");
    let mode = format!("{}:rx", s(dir.path()));
    let cases: Vec<(&str, ExitKind, &str)> = vec![
        (s(&missing), ExitKind::NoInput, "does not exist"),
        (
            s(&not_fs),
            ExitKind::BadImage,
            "not a file system rfake can use",
        ),
        ("/usr", ExitKind::CannotCreate, "not writable by you"),
        (s(&comma), ExitKind::Usage, "has a ','"),
        (&mode, ExitKind::Usage, "unknown mode 'rx'"),
    ];
    for (arg, kind, want) in cases {
        let out = sh(&t, &["--overlay", arg], &img, "echo ran");
        assert_exit(&out, kind);
        let err = stderr(&out);
        assert!(
            err.contains(want) && err.contains("--overlay"),
            "{arg}: {err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
        assert_eq!(stdout(&out), "");
    }
    assert!(!comma.join("upper").exists());
    assert_nothing_left(&t);
}

/// An upper directory on a file system overlayfs cannot write to (here a
/// FUSE mount, as an NFS or Lustre directory may be): the kernel refuses
/// it or would quietly mount it read-only; rfake refuses, naming the file
/// system.
#[test]
fn an_upper_on_an_unusable_file_system_is_refused() {
    let Some(env) = setup() else { return };
    if !have("fuse2fs") || !have("fusermount") {
        missing("fuse2fs and fusermount (tests/setup-host.sh installs them)");
        return;
    }
    let img = env.image("demo.sqfs");
    let dir = scratch("fuse-upper");
    let t = tag("fuse-upper");
    let image = dir.path().join("ov.img");
    let out = rfake(&t, &["overlay", "create", "--sparse", s(&image)]);
    assert_status(&out, 0);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // fakeroot: upper/ is uid 0's inside the image (the user's inside
    // rfake's namespace), which this mount outside any shows as root's.
    host("fuse2fs", &[s(&image), s(&mnt), "-o", "fakeroot"]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("fusermount")
                .arg("-u")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let upper = mnt.join("upper");
    let out = sh(&t, &["--overlay", s(&upper)], &img, "echo ran");
    assert_exit(&out, ExitKind::HostUnavailable);
    let err = stderr(&out);
    assert!(
        // Read-only when the kernel cannot use the work directory, refused
        // when it can and finds the features missing (Linux 6.x).
        (err.contains("could only mount it read-only")
            || err.contains("the kernel refused it as an overlay layer"))
            && err.contains("it is on FUSE"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
    // Read-only, the same directory is fine.
    let arg = format!("{}:ro", s(&upper));
    let out = sh(&t, &["--overlay", &arg], &img, "echo ran");
    assert_status(&out, 0);
    drop(_unmount);
    assert_nothing_left(&t);
}

/// `rfake overlay create`: an ext3 image of the asked size with upper/
/// (holding --create-dir) and work/, owned by the user on the host and by
/// uid 0 inside; refusals leave nothing behind.
#[test]
fn overlay_create_makes_an_ext3_image() {
    let Some(_env) = setup() else { return };
    if !Path::new("/usr/sbin/debugfs").exists() && !Path::new("/sbin/debugfs").exists() {
        missing("debugfs (e2fsprogs)");
        return;
    }
    let dir = scratch("create");
    let t = tag("create");
    let image = dir.path().join("overlay.img");
    let out = rfake(
        &t,
        &[
            "overlay",
            "create",
            "--size",
            "80",
            "--create-dir",
            "/data/in",
            s(&image),
        ],
    );
    assert_status(&out, 0);
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 80 << 20);
    assert_eq!(meta.uid(), me());
    // Allocated, not sparse (a full disk shows at creation).
    assert!(meta.blocks() * 512 >= 80 << 20, "blocks {}", meta.blocks());
    let ls = |path: &str| {
        host(
            "/sbin/debugfs",
            &["-R", &format!("ls -l {path}"), s(&image)],
        )
    };
    let root = ls("/");
    assert!(root.contains(" upper") && root.contains(" work"), "{root}");
    let work = ls("/work");
    let upper = ls("/upper/data");
    assert!(upper.contains(" in"), "{upper}");
    assert!(
        root.lines()
            .any(|l| l.contains(" work") && l.contains("40700")),
        "work is 0700: {root}{work}"
    );
    // Owned by uid 0 inside: the user is root of the namespace fuse2fs
    // serves it in (their own uid there is one it cannot map).
    for (dir, listing) in [("upper", &root), ("work", &root)] {
        assert!(
            listing.lines().any(
                |l| l.ends_with(&format!(" {dir}")) && l.split_whitespace().nth(3) == Some("0")
            ),
            "{dir} owned by uid 0 inside: {listing}"
        );
    }
    assert!(
        upper
            .lines()
            .any(|l| l.ends_with(" in") && l.split_whitespace().nth(3) == Some("0")),
        "--create-dir owned by uid 0 inside: {upper}"
    );
    let out = rfake(&t, &["overlay", "create", s(&image)]);
    assert_exit(&out, ExitKind::CannotCreate);
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    let small = dir.path().join("small.img");
    let out = rfake(&t, &["overlay", "create", "--size", "1", s(&small)]);
    assert_exit(&out, ExitKind::Usage);
    assert!(!small.exists());
    let sparse = dir.path().join("sparse.img");
    let out = rfake(
        &t,
        &["overlay", "create", "--sparse", "--size", "200", s(&sparse)],
    );
    assert_status(&out, 0);
    let meta = std::fs::metadata(&sparse).unwrap();
    assert_eq!(meta.len(), 200 << 20);
    assert!(meta.blocks() * 512 < 100 << 20, "sparse: {}", meta.blocks());
    // Only the image files are in the directory (mkfs's tree is gone).
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["overlay.img", "sparse.img"]);
    assert_nothing_left(&t);
}

/// An ext3 overlay image made by `rfake overlay create`.
fn image_overlay(dir: &Scratch, t: &str, name: &str) -> PathBuf {
    let image = dir.path().join(name);
    let out = rfake(t, &["overlay", "create", "--size", "64", s(&image)]);
    assert_status(&out, 0);
    image
}

/// The processes (any user's we can see) that hold `image` open: the
/// fuse2fs serving it.
fn holding(image: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == image))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Nothing holds `image` any more (bounded wait), and no mount of it is
/// on the host.
#[track_caller]
fn image_released(image: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = holding(image);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = holding(image);
    }
    assert!(
        left.is_empty(),
        "{} still open in {left:?}",
        image.display()
    );
    // (Other tests mount fuse2fs on the host themselves.)
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("overlay-image-") && !mounts.contains("fuse-overlayfs"),
        "{mounts}"
    );
}

/// `--overlay IMG`: what a run writes (a package-like tree, an executable,
/// a removed image file) is in the image for the next run, fakeroot and
/// `--keep-id`, and inside the image as uid 0; nothing is left running.
#[test]
fn an_image_overlay_survives_two_runs() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("img-persist");
    let t = tag("img-persist");
    let image = image_overlay(&dir, &t, "ov.img");
    // As `pip install` writes a package and its console script.
    let out = sh(
        &t,
        &["--overlay", s(&image)],
        &img,
        "mkdir -p /usr/local/lib/site-packages/pkg /usr/local/bin \
         && echo 'VERSION = \"1.0\"' > /usr/local/lib/site-packages/pkg/__init__.py \
         && printf '#!/bin/sh\\necho tool ran: $1\\n' > /usr/local/bin/tool \
         && chmod 755 /usr/local/bin/tool && rm /bin/arch && echo written",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "written\n");
    image_released(&image);
    for opts in [
        vec!["--overlay", s(&image)],
        vec!["--overlay", s(&image), "--keep-id"],
    ] {
        let out = sh(
            &t,
            &opts,
            &img,
            "cat /usr/local/lib/site-packages/pkg/__init__.py; /usr/local/bin/tool second; \
             test -e /bin/arch || echo arch gone; id -u",
        );
        assert_status(&out, 0);
        let uid = if opts.contains(&"--keep-id") { me() } else { 0 };
        assert_eq!(
            stdout(&out),
            format!("VERSION = \"1.0\"\ntool ran: second\narch gone\n{uid}\n"),
            "{opts:?}"
        );
    }
    // In the image: upper/ holds them, owned by uid 0 (the user inside).
    let ls = host(
        "/sbin/debugfs",
        &["-R", "ls -l /upper/usr/local/bin", s(&image)],
    );
    assert!(
        ls.lines()
            .any(|l| l.ends_with(" tool") && l.split_whitespace().nth(3) == Some("0")),
        "{ls}"
    );
    // The image file itself stays the user's.
    assert_eq!(std::fs::metadata(&image).unwrap().uid(), me());
    // Without it, the image is as it was.
    let out = sh(&t, &[], &img, "test -e /usr/local/bin/tool || echo clean");
    assert_eq!(stdout(&out), "clean\n");
    image_released(&image);
    assert_nothing_left(&t);
}

/// The Python test image (images/python/): RFAKE_PYTHON_IMAGE, else
/// `python.sqfs` beside RFAKE_MPI_IMAGE (tests/run.sh installs both).
fn python_image() -> Option<PathBuf> {
    let image = std::env::var_os("RFAKE_PYTHON_IMAGE")
        .map(PathBuf::from)
        .or_else(|| {
            let mpi = PathBuf::from(std::env::var_os("RFAKE_MPI_IMAGE")?);
            Some(mpi.with_file_name("python.sqfs"))
        });
    match image {
        Some(image) if image.is_file() => Some(image),
        other => {
            missing(&format!(
                "the Python test image (images/python/build-python-image.sh) at {other:?}: set \
                 RFAKE_PYTHON_IMAGE"
            ));
            None
        }
    }
}

/// A pure-Python wheel, `rfake_probe-1.0-py3-none-any.whl`, with a module
/// and a console script, written in `dir` by the host's python3 (a wheel is
/// a zip file with its metadata: no build tool needed, and pip installs it
/// without the network).
fn probe_wheel(dir: &Path) -> PathBuf {
    let script = r#"
import base64, hashlib, sys, zipfile
files = {
    "rfake_probe/__init__.py": "VERSION = '1.0'\n\ndef main():\n    print('probe', VERSION)\n",
    "rfake_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: rfake-probe\nVersion: 1.0\n",
    "rfake_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: rfake-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "rfake_probe-1.0.dist-info/entry_points.txt": "[console_scripts]\nrfake-probe = rfake_probe:main\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("rfake_probe-1.0.dist-info/RECORD,,")
    z.writestr("rfake_probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let wheel = dir.join("rfake_probe-1.0-py3-none-any.whl");
    host("python3", &["-c", script, s(&wheel)]);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    wheel
}

/// `--overlay IMG` keeps a real `pip install --user` (Debian 12's pip, in
/// the Python test image) for the next run: the module imports and its
/// console script runs. `--no-home`, so that `~/.local` is in the
/// container's root, hence in the overlay, not in the host's home.
#[test]
fn an_image_overlay_keeps_a_pip_install() {
    let Some(_env) = setup() else { return };
    let Some(py) = python_image() else { return };
    let dir = scratch("img-pip");
    let t = tag("img-pip");
    let image = image_overlay(&dir, &t, "ov.img");
    let wheel = probe_wheel(dir.path());
    let bind = format!("{}:/wheels:ro", s(dir.path()));
    let name = wheel.file_name().unwrap().to_str().unwrap();
    // Debian marks its Python externally managed (PEP 668): pip refuses
    // even --user installs without --break-system-packages.
    let out = sh(
        &t,
        &["--no-home", "--overlay", s(&image), "-B", &bind],
        &py,
        &format!(
            "python3 -m pip install --user --no-index --no-cache-dir --break-system-packages \
             /wheels/{name} >/dev/null && echo installed"
        ),
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "installed\n", "{}", stderr(&out));
    image_released(&image);
    let out = sh(
        &t,
        &["--no-home", "--overlay", s(&image)],
        &py,
        "python3 -c 'import rfake_probe; print(rfake_probe.VERSION)'; \
         \"$HOME/.local/bin/rfake-probe\"",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "1.0\nprobe 1.0\n", "{}", stderr(&out));
    // Without the overlay the image has no such module.
    let out = sh(
        &t,
        &["--no-home"],
        &py,
        "python3 -c 'import rfake_probe' 2>/dev/null || echo absent",
    );
    assert_eq!(stdout(&out), "absent\n");
    image_released(&image);
    assert_nothing_left(&t);
}

/// `IMG:ro`: the image's files are seen, writes are refused, the image is
/// not changed; a writer and readers exclude each other.
#[test]
fn a_read_only_image_overlay_refuses_writes() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("img-ro");
    let t = tag("img-ro");
    let image = image_overlay(&dir, &t, "ov.img");
    let out = sh(&t, &["--overlay", s(&image)], &img, "echo kept > /kept");
    assert_status(&out, 0);
    let before = sha256(&image);
    let ro = format!("{}:ro", s(&image));
    let out = sh(
        &t,
        &["--overlay", &ro],
        &img,
        "cat /kept; echo new > /new && echo wrote; echo x >> /kept && echo appended; true",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "kept\n");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sha256(&image), before, "a :ro image is not written");
    // A writer holds it: a reader is refused, and another writer.
    let first = spawn(
        &t,
        &[
            "exec",
            "--overlay",
            s(&image),
            s(&img),
            "sh",
            "-c",
            "echo ready; sleep 30",
        ],
    );
    first.expect_line("ready");
    let out = sh(&t, &["--overlay", &ro], &img, "echo reader");
    assert_exit(&out, ExitKind::Refused);
    assert!(
        stderr(&out).contains("another container writes to this image"),
        "{}",
        stderr(&out)
    );
    let out = sh(&t, &["--overlay", s(&image)], &img, "echo writer");
    assert_exit(&out, ExitKind::Refused);
    assert!(
        stderr(&out).contains("in use as the writable overlay of another container"),
        "{}",
        stderr(&out)
    );
    first.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, _) = first.wait();
    assert_eq!(status.code(), Some(143), "{status:?}");
    image_released(&image);
    assert_nothing_left(&t);
}

/// Without fuse2fs (or, for a writable image, fuse-overlayfs) on the host:
/// one line naming the tool and its Debian package, exit 69, nothing made.
#[test]
fn a_missing_fuse_tool_is_named() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("img-tool");
    let t = tag("img-tool");
    let image = image_overlay(&dir, &t, "ov.img");
    // A PATH with fuse2fs only (the sbin directories have neither).
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/fuse2fs", bin.join("fuse2fs")).unwrap();
    let run = |path: &str, arg: &str| {
        command(&t)
            .env("PATH", path)
            .args(["exec", "--overlay", arg, s(&img), "sh", "-c", "echo ran"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(s(&dir.path().join("nothing")), s(&image));
    assert_exit(&out, ExitKind::HostUnavailable);
    let err = stderr(&out);
    assert!(
        err.contains("fuse2fs not found") && err.contains("install the Debian package fuse2fs"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let out = run(s(&bin), s(&image));
    assert_exit(&out, ExitKind::HostUnavailable);
    assert!(
        stderr(&out).contains("install the Debian package fuse-overlayfs"),
        "{}",
        stderr(&out)
    );
    // Read-only, fuse2fs is enough.
    let out = run(s(&bin), &format!("{}:ro", s(&image)));
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "ran\n");
    image_released(&image);
    assert_nothing_left(&t);
}

/// Nothing is left behind (no fuse2fs or fuse-overlayfs, no mount, the
/// image not held) after a payload that fails and after rfake is killed
/// with SIGKILL; the image is usable again and holds what was written.
#[test]
fn an_image_overlay_leaves_nothing_behind() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("img-left");
    let t = tag("img-left");
    let image = image_overlay(&dir, &t, "ov.img");
    let out = sh(
        &t,
        &["--overlay", s(&image)],
        &img,
        "echo one > /one; exit 3",
    );
    assert_status(&out, 3);
    image_released(&image);
    let running = spawn(
        &t,
        &[
            "exec",
            "--overlay",
            s(&image),
            s(&img),
            "sh",
            "-c",
            "echo two > /two; sync; echo ready; sleep 60",
        ],
    );
    running.expect_line("ready");
    assert!(!holding(&image).is_empty(), "served while it runs");
    running.signal(nix::sys::signal::Signal::SIGKILL);
    let (status, _, _) = running.wait();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    image_released(&image);
    // fuse2fs ended cleanly on its parent-death signal: the file system
    // is consistent.
    let fsck = std::process::Command::new("/sbin/e2fsck")
        .args(["-fn", s(&image)])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let out = sh(&t, &["--overlay", s(&image)], &img, "cat /one /two");
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "one\ntwo\n");
    image_released(&image);
    assert_nothing_left(&t);
}

/// A SIF file with an ext3 overlay partition (as Apptainer's `overlay
/// create IMG.sif` adds one): the demo image's SquashFS as its root and
/// an image from `rfake overlay create` as the partition, written with
/// rfake's SIF writer.
fn sif_with_overlay(env: &Env, dir: &Scratch, t: &str) -> PathBuf {
    use rfake::image::sif::write::{Object, ObjectData, write};
    use rfake::image::sif::{Arch, DataType, FsType, PartType};
    let ext3 = image_overlay(dir, t, "part.img");
    let sif = dir.path().join("with-overlay.sif");
    let mut out = std::fs::File::create_new(&sif).unwrap();
    let root = std::fs::File::open(env.image("demo.sqfs")).unwrap();
    let part = std::fs::File::open(&ext3).unwrap();
    write(
        &mut out,
        Arch::host(),
        [0; 16],
        0,
        vec![
            Object::root_squashfs(root),
            Object {
                data_type: DataType::Partition,
                name: "overlay.img".into(),
                data: ObjectData::File(part),
                partition: Some((FsType::Ext3, PartType::Overlay)),
            },
        ],
    )
    .unwrap();
    std::fs::remove_file(&ext3).unwrap();
    sif
}

/// `--overlay IMG.sif`: the SIF's own ext3 overlay partition (fuse2fs at
/// its offset), here on the same SIF as the image: written, then read back
/// `:ro`; a SIF without one is refused.
#[test]
fn a_sif_overlay_partition_is_used() {
    let Some(env) = setup() else { return };
    let dir = scratch("sif-part");
    let t = tag("sif-part");
    let sif = sif_with_overlay(&env, &dir, &t);
    let out = sh(
        &t,
        &["--overlay", s(&sif)],
        &sif,
        "echo in-sif > /opt/kept 2>/dev/null || { mkdir -p /opt && echo in-sif > /opt/kept; }; echo done",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "done\n");
    image_released(&sif);
    let ro = format!("{}:ro", s(&sif));
    let out = sh(
        &t,
        &["--overlay", &ro],
        &sif,
        "cat /opt/kept; touch /x 2>/dev/null || echo ro",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "in-sif\nro\n");
    // Run without --overlay, the SIF's partition is there read-only, as
    // Apptainer mounts it.
    let out = sh(
        &t,
        &[],
        &sif,
        "cat /opt/kept; touch /x 2>/dev/null || echo ro",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "in-sif\nro\n");
    // Apptainer's -w/--writable on a SIF: its partition, writable.
    let out = sh(
        &t,
        &["-w"],
        &sif,
        "cat /opt/kept; echo by-w > /opt/kept2; echo done",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "in-sif\ndone\n");
    image_released(&sif);
    let out = sh(&t, &[], &sif, "cat /opt/kept2");
    assert_eq!(stdout(&out), "by-w\n");
    // Another SIF, the demo image: it has none.
    let plain = env.image("demo.sif");
    let out = sh(&t, &["--overlay", s(&plain)], &plain, "echo ran");
    assert_exit(&out, ExitKind::BadImage);
    assert!(
        stderr(&out).contains("has no ext3 overlay partition"),
        "{}",
        stderr(&out)
    );
    // --writable there (or on a SquashFS) is refused: rfake never writes
    // into an image.
    for img in [plain.clone(), env.image("demo.sqfs")] {
        let out = sh(&t, &["--writable"], &img, "echo ran");
        assert_exit(&out, ExitKind::Refused);
        let err = stderr(&out);
        assert!(
            err.contains("has no overlay partition to write into") && err.lines().count() == 1,
            "{err}"
        );
    }
    image_released(&sif);
    assert_nothing_left(&t);
}

/// A joined container (`--join-key`, as MPI ranks share one) with an image
/// overlay: its keeper, which ignores SIGTERM, still stops the servers at
/// once when the last rank leaves (they end on SIGHUP), so the image is
/// free again within moments.
#[test]
fn a_joined_container_frees_its_image_overlay() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("img-join");
    let t = tag("img-join");
    let image = image_overlay(&dir, &t, "ov.img");
    let key = format!("ovl-join-{}", std::process::id());
    let out = sh(
        &t,
        &["--join-key", &key, "--overlay", s(&image)],
        &img,
        "echo joined > /joined",
    );
    assert_status(&out, 0);
    let start = std::time::Instant::now();
    let out = loop {
        let out = sh(&t, &["--overlay", s(&image)], &img, "cat /joined");
        if out.status.code() != Some(77) || start.elapsed() > std::time::Duration::from_secs(5) {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "joined\n");
    image_released(&image);
    assert_nothing_left(&t);
}

/// An image laid out as `apptainer overlay create` makes it as a user:
/// `upper/` and `work/` owned by the user's host uid inside, which rfake's
/// namespace cannot map. Writable: refused, naming the fix (77), nothing
/// left; read-only, its files are seen.
#[test]
fn an_apptainer_made_image_is_refused_writable_and_read_ro() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = scratch("img-appt");
    let t = tag("img-appt");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("upper/opt")).unwrap();
    std::fs::create_dir(tree.join("work")).unwrap();
    std::fs::write(tree.join("upper/opt/from-apptainer"), "theirs\n").unwrap();
    let image = dir.path().join("appt.img");
    let out = std::process::Command::new("/sbin/mkfs.ext3")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("64M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sh(&t, &["--overlay", s(&image)], &img, "echo ran");
    assert_exit(&out, ExitKind::Refused);
    let err = stderr(&out);
    assert!(
        err.contains("its upper/ is not owned by uid 0 inside the image")
            && err.contains("rfake overlay create"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
    image_released(&image);
    let ro = format!("{}:ro", s(&image));
    let out = sh(&t, &["--overlay", &ro], &img, "cat /opt/from-apptainer");
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "theirs\n");
    image_released(&image);
    assert_nothing_left(&t);
}
