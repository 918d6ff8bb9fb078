//! Cold start helpers of the built-in server: the node cache of
//! decompressed blocks (`node_cache_dir`) serves the next mount and never a
//! bad entry; prefetch profiles are recorded, replayed on the next cold
//! mount, and a garbage or foreign one is not used.
//! Run as an unprivileged user (tests/run.sh does).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch directory with a site file, a home and a node cache of its own.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(extra: &str) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("cold-test-")
            .tempdir()
            .unwrap();
        let shm = dir.path().join("shm");
        std::fs::create_dir(&shm).unwrap();
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(
            dir.path().join("site.toml"),
            format!(
                "warm_linger = 0\nnode_cache_dir = \"{}\"\n{extra}",
                shm.display()
            ),
        )
        .unwrap();
        Site { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, tag: &str) -> Command {
        let mut cmd = command(tag);
        cmd.env("RFAKE_CONFIG", self.path("site.toml"))
            .env("HOME", self.path("home"))
            .stdin(Stdio::null());
        cmd
    }

    /// `script` in `image`, with debug messages (`-vv`).
    fn exec(&self, tag: &str, image: &Path, script: &str) -> Output {
        self.command(tag)
            .args(["-vv", "exec", "--no-mount", "home,cwd", "--pwd", "/"])
            .arg(image)
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Build an image holding busybox (2 MiB: full blocks and a tail) and
    /// `/v` (with `content`: a fragment).
    fn image(&self, tag: &str, name: &str, content: &str) -> PathBuf {
        let src = self.path(&format!("{name}.src"));
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("v"), content).unwrap();
        std::fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
        for dir in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(src.join(dir)).unwrap();
        }
        for file in ["etc/passwd", "etc/group", "etc/resolv.conf", "etc/hosts"] {
            std::fs::write(src.join(file), "").unwrap();
        }
        let out = self.path(name);
        let tmp = self.path(&format!("{name}.new"));
        let built = self
            .command(tag)
            .arg("build")
            .arg(&tmp)
            .arg(&src)
            .output()
            .unwrap();
        assert_status(&built, 0);
        // Renamed into place: a new file (inode) where the old was.
        std::fs::rename(&tmp, &out).unwrap();
        out
    }

    /// The node cache's image directories.
    fn node_dirs(&self) -> Vec<PathBuf> {
        let user = self
            .path("shm")
            .join(format!("rfake-{}", nix::unistd::getuid().as_raw()));
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(user)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    fn profiles(&self) -> Vec<PathBuf> {
        let dir = self.path("home/.cache/rfake/profiles");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

fn require() -> bool {
    if setup().is_none() {
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        // Fails under CI=true: tests/setup-host.sh installs busybox-static.
        missing("/bin/busybox (busybox-static), the test images' userland");
        return false;
    }
    true
}

/// What the payload reads: busybox's checksum and /v.
const READ: &str = "busybox md5sum /bin/busybox | busybox cut -d' ' -f1; busybox cat /v";

fn expected(content: &str) -> String {
    let sum = host("md5sum", &["/bin/busybox"]);
    format!("{}\n{content}", sum.split_whitespace().next().unwrap())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_node_cache_serves_the_next_mount_and_never_a_bad_entry() {
    if !require() {
        return;
    }
    let t = tag("cold-node-cache");
    let site = Site::new("prefetch_profiles = false\n");
    let image = site.image(&t, "a.sqfs", "one\n");
    let out = site.exec(&t, &image, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("one\n"));
    let dirs = site.node_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let user = dirs[0].parent().unwrap();
    assert_eq!(
        std::fs::metadata(user).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let entries = files_in(&dirs[0]);
    // busybox's 128 KiB blocks, and the fragment block with /v and its tail.
    assert!(entries.len() >= 8, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| !e.file_name().unwrap().to_string_lossy().starts_with('.'))
    );
    assert_nothing_left(&t);

    // Every entry corrupted (a bit flipped, or torn): the next launch
    // still reads the image's bytes, and the bad entries are replaced.
    let mut bad = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut bytes = std::fs::read(e).unwrap();
        if i % 2 == 0 {
            let mid = bytes.len() / 2 + 7;
            bytes[mid] ^= 0x20;
        } else {
            bytes.truncate(bytes.len() - 1);
        }
        std::fs::write(e, &bytes).unwrap();
        bad.push(bytes);
    }
    let out = site.exec(&t, &image, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("one\n"), "{}", stderr(&out));
    for (e, bytes) in entries.iter().zip(&bad) {
        // Removed, then written again whole by the background writer.
        if let Ok(now) = std::fs::read(e) {
            assert_ne!(&now, bytes, "{} is still the bad entry", e.display());
        }
    }
    assert_nothing_left(&t);

    // A replaced image never gets the old one's blocks.
    let image = site.image(&t, "a.sqfs", "two\n");
    let out = site.exec(&t, &image, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("two\n"));
    assert_eq!(site.node_dirs().len(), 2);
    assert_nothing_left(&t);
}

#[test]
fn a_node_cache_others_may_write_is_not_used() {
    if !require() {
        return;
    }
    let t = tag("cold-node-foreign");
    let site = Site::new("prefetch_profiles = false\n");
    let image = site.image(&t, "a.sqfs", "one\n");
    let user = site
        .path("shm")
        .join(format!("rfake-{}", nix::unistd::getuid().as_raw()));
    std::fs::create_dir(&user).unwrap();
    std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = site.exec(&t, &image, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("one\n"));
    let err = stderr(&out);
    assert!(
        err.contains("warning: node cache") && err.contains("others may write to it; not used"),
        "{err}"
    );
    assert!(site.node_dirs().is_empty());
    assert_nothing_left(&t);
}

/// The debug line of the server's replay, if any: how many blocks.
fn replayed(err: &str) -> Option<usize> {
    let line = err
        .lines()
        .find(|l| l.contains("prefetch profile: replaying "))?;
    let rest = line.split("replaying ").nth(1)?;
    assert!(rest.ends_with(" blocks"), "{line}");
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn a_profile_is_recorded_replayed_and_a_garbage_or_foreign_one_is_not_used() {
    if !require() {
        return;
    }
    let t = tag("cold-profile");
    let site = Site::new("");
    let a = site.image(&t, "a.sqfs", "one\n");
    let out = site.exec(&t, &a, READ);
    assert_status(&out, 0);
    assert_eq!(replayed(&stderr(&out)), None, "nothing to replay yet");
    let profiles = site.profiles();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    let profile = &profiles[0];
    let recorded = std::fs::read(profile).unwrap();
    assert!(recorded.starts_with(b"rfake-profile 1\n"));
    assert!(recorded.len() >= 48 + 8 * 16, "{} bytes", recorded.len());
    assert_eq!(
        std::fs::metadata(profile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_nothing_left(&t);

    // The next cold mount replays it: every block the first launch read.
    let out = site.exec(&t, &a, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("one\n"));
    let n = replayed(&stderr(&out)).unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert_eq!(n, (recorded.len() - 48) / 16);
    assert_nothing_left(&t);

    // Garbage: not used, started again.
    std::fs::write(profile, vec![0x5a; 4096]).unwrap();
    let out = site.exec(&t, &a, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("one\n"));
    assert_eq!(replayed(&stderr(&out)), None, "{}", stderr(&out));
    let again = std::fs::read(profile).unwrap();
    assert_eq!(again[..48], recorded[..48], "not started again");
    assert_nothing_left(&t);

    // Another image's profile in its place: not used either.
    let b = site.image(&t, "b.sqfs", "a longer, other content\n");
    assert_status(&site.exec(&t, &b, "busybox cat /v"), 0);
    let of_b = site
        .profiles()
        .into_iter()
        .find(|p| p != profile)
        .expect("b's profile");
    std::fs::copy(&of_b, profile).unwrap();
    let out = site.exec(&t, &a, READ);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), expected("one\n"));
    assert_eq!(replayed(&stderr(&out)), None, "{}", stderr(&out));
    assert_eq!(std::fs::read(profile).unwrap()[..48], recorded[..48]);
    assert_nothing_left(&t);
}
