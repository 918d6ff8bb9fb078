//! The built-in FUSE server and warm mounts: launches of one image share one
//! mount while it lingers, a replaced image gets a fresh one, the linger
//! ends with nothing left, and the external squashfuse is still selectable.
//! Run as an unprivileged user (tests/run.sh does).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory with a site file of its own.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(text: &str) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("warm-test-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("site.toml"), text).unwrap();
        Site { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, tag: &str) -> Command {
        let mut cmd = command(tag);
        cmd.env("RFAKE_CONFIG", self.path("site.toml"))
            .stdin(Stdio::null());
        cmd
    }

    fn exec(&self, tag: &str, image: &Path, script: &str) -> Output {
        self.command(tag)
            .args(["exec", "--no-home"])
            .arg(image)
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Build an image holding `/v` (with `content`) and a hard link `/w`.
    fn image(&self, tag: &str, name: &str, content: &str) -> PathBuf {
        let src = self.path(&format!("{name}.src"));
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("v"), content).unwrap();
        std::fs::hard_link(src.join("v"), src.join("w")).unwrap();
        // The payload needs a shell: the test image's busybox.
        std::fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
        for tool in ["cat", "stat"] {
            std::os::unix::fs::symlink("busybox", src.join("bin").join(tool)).unwrap();
        }
        // Every default mount point, so the root needs no overlay and a
        // file's device is the image mount's own.
        for dir in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(src.join(dir)).unwrap();
        }
        for file in ["etc/passwd", "etc/group", "etc/resolv.conf", "etc/hosts"] {
            std::fs::write(src.join(file), "").unwrap();
        }
        let out = self.path(name);
        let built = self
            .command(tag)
            .arg("build")
            .arg(&out)
            .arg(&src)
            .output()
            .unwrap();
        assert_status(&built, 0);
        out
    }
}

/// What a launch reports: the device of the image's files (one per FUSE
/// mount), the inode numbers of the two names of the hard link, /v.
fn probe(site: &Site, tag: &str, image: &Path) -> (String, String, String, String) {
    let out = site.exec(
        tag,
        image,
        "stat -c %d /v; stat -c %i /v; stat -c %i /w; cat /v",
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut lines = text.lines().map(str::to_owned);
    let mut next = || lines.next().unwrap_or_default();
    (next(), next(), next(), next())
}

fn require() -> bool {
    setup().is_some() && Path::new("/bin/busybox").exists()
}

#[test]
fn launches_share_one_warm_mount_until_the_linger_ends() {
    if !require() {
        return;
    }
    let t = tag("warm-share");
    let site = Site::new("warm_linger = 2\n");
    let image = site.image(&t, "a.sqfs", "one\n");
    let (dev1, ino_v, ino_w, content) = probe(&site, &t, &image);
    assert_eq!(content, "one");
    assert_eq!(ino_v, ino_w, "hard links keep one inode");
    // The keeper and its server stay for the linger...
    let kept = processes_tagged(&t);
    assert!(!kept.is_empty(), "no warm keeper after the first launch");
    let (dev2, ..) = probe(&site, &t, &image);
    assert_eq!(dev1, dev2, "the second launch used another mount");
    assert_eq!(processes_tagged(&t), kept, "a second keeper or server");
    // ...and go when it has passed, leaving nothing.
    let start = Instant::now();
    assert_nothing_left(&t);
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "gone before the linger ended"
    );
    // The next launch starts a new keeper (device numbers may be reused).
    probe(&site, &t, &image);
    let again = processes_tagged(&t);
    assert!(!again.is_empty() && again.iter().all(|p| !kept.contains(p)));
    assert_nothing_left(&t);
}

#[test]
fn a_replaced_image_gets_a_fresh_mount() {
    if !require() {
        return;
    }
    let t = tag("warm-replaced");
    let site = Site::new("warm_linger = 3\n");
    let image = site.image(&t, "a.sqfs", "old\n");
    let (dev1, _, _, content) = probe(&site, &t, &image);
    assert_eq!(content, "old");
    // Replaced the usual way: a new file renamed over the old one.
    let new = site.image(&t, "b.sqfs", "new\n");
    std::fs::rename(&new, &image).unwrap();
    let (dev2, _, _, content) = probe(&site, &t, &image);
    assert_eq!(content, "new");
    assert_ne!(dev1, dev2);
    assert_nothing_left(&t);
}

#[test]
fn linger_zero_mounts_per_launch() {
    if !require() {
        return;
    }
    let t = tag("warm-off");
    let site = Site::new("warm_linger = 0\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    for _ in 0..2 {
        probe(&site, &t, &image);
        assert!(
            processes_tagged(&t).is_empty(),
            "something outlived the launch"
        );
    }
    assert_nothing_left(&t);
}

#[test]
fn the_external_squashfuse_is_still_selectable() {
    if !require() {
        return;
    }
    let t = tag("warm-squashfuse");
    for (config, subtype) in [
        (
            "image_server = \"squashfuse\"\nwarm_linger = 0\n",
            "squashfuse",
        ),
        ("image_server = \"builtin\"\nwarm_linger = 0\n", "rfake"),
    ] {
        let site = Site::new(config);
        let image = site.image(&t, "a.sqfs", "x\n");
        // The server's processes, seen from the host while a payload runs.
        let out = site.exec(&t, &image, "cat /v; sleep 1");
        assert_status(&out, 0);
        let (_, ino_v, ino_w, content) = probe(&site, &t, &image);
        assert_eq!((ino_v == ino_w, content.as_str()), (true, "x"));
        let dry = site
            .command(&t)
            .arg("exec")
            .arg("--dry-run")
            .arg(&image)
            .arg("true")
            .output()
            .unwrap();
        assert_status(&dry, 0);
        let plan = stdout(&dry);
        let want = if subtype == "rfake" {
            "image server: builtin"
        } else {
            "image server: squashfuse"
        };
        assert!(plan.contains(want), "{plan}");
    }
    assert_nothing_left(&t);
}

#[test]
fn a_killed_launch_on_a_warm_mount_leaves_nothing() {
    if !require() {
        return;
    }
    let t = tag("warm-killed");
    let site = Site::new("warm_linger = 0.5\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    let mut child = site
        .command(&t)
        .arg("exec")
        .arg(&image)
        .args(["sh", "-c", "echo up; sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 3];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"up\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert_nothing_left(&t);
}

#[test]
fn the_image_superblock_is_read_only() {
    // Read-only as a superblock, not only as a mount: on a writable
    // superblock every read marks the kernel's cached atime stale, and the
    // next stat of the file is a round trip to the server.
    if !require() {
        return;
    }
    let t = tag("warm-ro-super");
    for config in [
        "image_server = \"builtin\"\nwarm_linger = 0\n",
        "image_server = \"squashfuse\"\nwarm_linger = 0\n",
        "image_server = \"builtin\"\nwarm_linger = 1\n",
    ] {
        let site = Site::new(config);
        let image = site.image(&t, "a.sqfs", "x\n");
        let out = site.exec(&t, &image, "cat /v >/dev/null; cat /proc/self/mountinfo");
        assert_status(&out, 0);
        let text = stdout(&out);
        // "ID PARENT DEV ROOT MOUNTPOINT OPTIONS ... - TYPE SOURCE SUPER-OPTIONS"
        let root = text
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("{config}: no root mount in\n{text}"));
        let (_, fs_part) = root.split_once(" - ").unwrap();
        let fields: Vec<&str> = fs_part.split(' ').collect();
        assert!(fields[0].starts_with("fuse."), "{config}: {root}");
        assert!(
            fields[2].split(',').any(|o| o == "ro"),
            "{config}: a writable superblock: {root}"
        );
    }
    assert_nothing_left(&t);
}
