//! Bad input: one clear line naming the file and the cause, rfake's own
//! documented exit code, and nothing left behind.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const BAD_IMAGE: i32 = 65;
const NO_INPUT: i32 = 66;
const HOST_UNAVAILABLE: i32 = 69;
const USAGE: i32 = 64;

/// Run `rfake exec IMAGE true`; assert the status, a single error line that
/// names the image and contains each of `phrases`, and no leftovers.
#[track_caller]
fn refused(image: &Path, code: i32, phrases: &[&str]) {
    let t = tag("bad");
    let out = rfake(&t, &["exec", image.to_str().unwrap(), "true"]);
    assert_status(&out, code);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("rfake["), "{err}");
    assert!(err.contains(": error: "), "{err}");
    assert!(
        err.contains(&image.display().to_string()),
        "message must name {}: {err}",
        image.display()
    );
    for p in phrases {
        assert!(err.contains(p), "message must say {p:?}: {err}");
    }
    assert!(stdout(&out).is_empty());
    assert_nothing_left(&t);
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bad-input-")
        .tempdir()
        .unwrap()
}

#[test]
fn missing_and_unreadable_images() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    refused(&d.path().join("nope.sif"), NO_INPUT, &["no such file"]);
    let unreadable = d.path().join("secret.sqfs");
    std::fs::write(&unreadable, b"hsqs").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    refused(&unreadable, NO_INPUT, &["Permission denied"]);
}

#[test]
fn neither_squashfs_nor_sif_nor_directory() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let junk = d.path().join("junk.img");
    std::fs::write(
        &junk,
        b"this is not an image at all, just text\n".repeat(10),
    )
    .unwrap();
    refused(&junk, BAD_IMAGE, &["not a SquashFS, SIF or directory"]);
    let empty = d.path().join("empty.sqfs");
    std::fs::write(&empty, b"").unwrap();
    refused(&empty, BAD_IMAGE, &[]);
}

#[test]
fn truncated_and_corrupt_squashfs() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let good = std::fs::read(env.image("demo.sqfs")).unwrap();

    let truncated = d.path().join("truncated.sqfs");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    refused(&truncated, BAD_IMAGE, &["truncated"]);

    // A valid superblock over garbage tables: found when the image server
    // opens the image (its table checks, src/squashfs/layout.rs).
    // Garbage over the inode table, which holds the root inode.
    let mut corrupt = good.clone();
    let field = |at: usize| u64::from_le_bytes(good[at..at + 8].try_into().unwrap()) as usize;
    let (inode_table, directory_table) = (field(64), field(72));
    for b in &mut corrupt[inode_table..directory_table] {
        *b = 0x5a;
    }
    let corrupt_path = d.path().join("corrupt.sqfs");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    refused(&corrupt_path, BAD_IMAGE, &[]);

    let mut bad_version = good;
    bad_version[28] = 3; // version_major
    let bad_version_path = d.path().join("v3.sqfs");
    std::fs::write(&bad_version_path, &bad_version).unwrap();
    refused(&bad_version_path, BAD_IMAGE, &["version"]);
}

fn shared(name: &str) -> Option<PathBuf> {
    sif_dir().map(|d| d.join(name))
}

#[test]
fn sif_without_a_root_filesystem() {
    let Some(_env) = setup() else { return };
    let Some(dir) = sif_dir() else { return };
    for name in [
        "empty.sif",
        "empty-id.sif",
        "empty-launch-script.sif",
        "one-object-generic-json.sif",
        "one-object-crypt-message.sif",
        "one-object-sbom.sif",
        "one-object-oci-root-index.sif",
        "one-object-oci-blob.sif",
        "one-object-time.sif",
    ] {
        refused(&dir.join(name), BAD_IMAGE, &["no root filesystem"]);
    }
}

#[test]
fn sif_whose_partition_is_not_squashfs() {
    let Some(_env) = setup() else { return };
    for name in [
        "one-group-signed-legacy.sif",
        "one-group-signed-legacy-all.sif",
        "one-group-signed-legacy-group.sif",
        "two-groups-signed-legacy.sif",
    ] {
        let Some(path) = shared(name) else { return };
        refused(&path, BAD_IMAGE, &["not a SquashFS"]);
    }
}

#[test]
fn sif_for_another_architecture() {
    let Some(env) = setup() else { return };
    if std::env::consts::ARCH != "x86_64" {
        missing("an amd64 host for the architecture-mismatch test");
        return;
    }
    let Some(arm) = shared("busybox_arm64.sif") else {
        return;
    };
    refused(&arm, BAD_IMAGE, &["arm64", "amd64"]);
    refused(&env.image("demo-arm64.sif"), BAD_IMAGE, &["arm64", "amd64"]);
    let Some(ppc) = shared("busybox_ppc64le.sif") else {
        return;
    };
    refused(&ppc, BAD_IMAGE, &["ppc64le", "amd64"]);
}

#[test]
fn missing_squashfuse_says_what_to_install() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("nosquashfuse");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(&site, "image_server = \"squashfuse\"\nwarm_linger = 0\n").unwrap();
    let out = command(&t)
        .env("PATH", "/nonexistent")
        .env("RFAKE_CONFIG", &site)
        .args(["exec", img.to_str().unwrap(), "true"])
        .output()
        .unwrap();
    assert_status(&out, HOST_UNAVAILABLE);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("apt-get install squashfuse"), "{err}");

    let out = command(&t)
        .env("RFAKE_SQUASHFUSE", "/nonexistent/squashfuse_ll")
        .args(["exec", img.to_str().unwrap(), "true"])
        .output()
        .unwrap();
    assert_status(&out, HOST_UNAVAILABLE);
    assert!(
        stderr(&out).contains("/nonexistent/squashfuse_ll"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&t);
}

#[test]
fn usage_errors_have_their_own_code() {
    let out = rfake(&tag("usage"), &["exec"]);
    assert_status(&out, USAGE);
    let out = rfake(&tag("usage"), &["frobnicate"]);
    assert_status(&out, USAGE);
    let out = rfake(&tag("usage"), &["--help"]);
    assert_status(&out, 0);
    assert!(stdout(&out).contains("Exit status"));
}

#[test]
fn doctor_reports_a_ready_host() {
    let Some(_env) = setup() else { return };
    let out = rfake(&tag("doctor"), &["doctor"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    for check in [
        "configuration",
        "kernel",
        "user namespaces",
        "/dev/fuse",
        "squashfuse",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check}: {text}"
        );
    }
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sif");
    let t = tag("dry");
    let out = rfake(&t, &["exec", "--dry-run", img.to_str().unwrap(), "id"]);
    assert_status(&out, 0);
    let text = stdout(&out);
    let offset = rfake::image::open(&img).unwrap().squashfs_offset.unwrap();
    assert!(
        text.contains(&format!("squashfs offset: {offset}\n")),
        "{text}"
    );
    assert!(text.contains("identity: uid 0 gid 0 inside"), "{text}");
    assert!(text.contains("pivot_root into the image"), "{text}");
    assert_nothing_left(&t);
}

#[test]
fn verbose_shows_each_step_with_its_duration() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let out = rfake(
        &tag("verbose"),
        &["-v", "exec", img.to_str().unwrap(), "true"],
    );
    assert_status(&out, 0);
    let err = stderr(&out);
    for needle in [
        "user namespace",
        "serve the image",
        "attach the image",
        "pivot_root into the image",
        "total",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("rfake[") && l.contains(needle)),
            "{needle}: {err}"
        );
    }
}

#[test]
fn disabled_user_namespaces_name_the_sysctl() {
    // user.max_user_namespaces is per user namespace: set to 0 in an outer
    // one (util-linux unshare), rfake's own unshare(2) really fails.
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("nouserns");
    let rfake = rfake_bin();
    let limit_then_run = |args: &[&str]| {
        scrubbed("unshare", &t)
            .args([
                "-Ur",
                "sh",
                "-c",
                "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"",
                "sh",
            ])
            .arg(&rfake)
            .args(args)
            .output()
            .expect("run unshare (util-linux)")
    };
    let out = limit_then_run(&["exec", img.to_str().unwrap(), "true"]);
    assert_status(&out, HOST_UNAVAILABLE);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot create a user namespace"), "{err}");
    assert!(err.contains("sysctl -w user.max_user_namespaces="), "{err}");

    let out = limit_then_run(&["doctor"]);
    assert_status(&out, HOST_UNAVAILABLE);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("user namespaces")),
        "{}",
        stdout(&out)
    );
    assert_nothing_left(&t);
}

// Degenerate inputs (issue 19, defect 6). Each run is bounded in time (a
// hang fails the test instead of blocking it) and in memory (an endless
// read fails instead of exhausting the machine).

/// Run rfake with `envs` and `args`, killed if it has not ended within
/// 20 s, with its address space capped at 2 GiB.
fn bounded(t: &str, envs: &[(&str, &Path)], args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut cmd = command(t);
    for (name, value) in envs {
        cmd.env(name, value);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run rfake");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rfake {args:?} with {envs:?} did not end within 20 s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Assert the status and one error line that ends with `message`.
#[track_caller]
fn fails_with(out: &std::process::Output, code: i32, message: &str) {
    assert_status(out, code);
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("rfake["), "{err}");
    assert!(
        err.trim_end().ends_with(&format!(": error: {message}")),
        "expected ': error: {message}', got: {err}"
    );
}

/// `-B` (and `--home`) values with nothing to bind or an empty field: a
/// usage error naming the value and what is empty.
#[test]
fn empty_and_degenerate_bind_specifications_are_usage_errors() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let img = img.to_str().unwrap();
    let t = tag("bind-empty");
    let syntax = "(expected SRC[:DST[:ro|rw]])";
    for (option, value, message) in [
        (
            "-B",
            "",
            format!("bind '' (from --bind): empty bind specification {syntax}"),
        ),
        (
            "-B",
            " ",
            format!("bind ' ' (from --bind): empty bind specification {syntax}"),
        ),
        (
            "-B",
            ",",
            format!("bind ',' (from --bind): empty bind specification {syntax}"),
        ),
        (
            "-B",
            ":",
            format!("bind ':' (from --bind): the source is empty {syntax}"),
        ),
        (
            "-B",
            "::ro",
            format!("bind '::ro' (from --bind): the source is empty {syntax}"),
        ),
        (
            "-B",
            ":/mnt",
            format!("bind ':/mnt' (from --bind): the source is empty {syntax}"),
        ),
        (
            "-B",
            "/tmp:",
            "bind '/tmp:' (from --bind): the destination after ':' is empty \
             (give SRC alone to bind it at the same path)"
                .into(),
        ),
        (
            "-B",
            "/tmp::",
            "bind '/tmp::' (from --bind): the mode after the second ':' is empty \
             (expected ro or rw)"
                .into(),
        ),
        (
            "--home",
            "",
            format!("bind '' (from --home): empty bind specification {syntax}"),
        ),
        (
            "--home",
            "/tmp:",
            "bind '/tmp:' (from --home): the destination after ':' is empty \
             (give SRC alone to bind it at the same path)"
                .into(),
        ),
    ] {
        let out = bounded(&t, &[], &["exec", "--dry-run", option, value, img, "true"]);
        fails_with(&out, USAGE, &message);
    }
    // Still fine: `/tmp::ro` (a mode, DST the same), empty entries between
    // commas, an empty RFAKE_BIND (as good as unset).
    for args in [
        ["-B", "/tmp::ro"],
        ["-B", "/tmp,,/tmp:/mnt"],
        ["--pwd", "/"],
    ] {
        let mut all = vec!["exec", "--dry-run"];
        all.extend(args);
        all.extend([img, "true"]);
        let out = command(&t)
            .env("RFAKE_BIND", "")
            .args(&all)
            .output()
            .unwrap();
        assert_status(&out, 0);
    }
    assert_nothing_left(&t);
}

// Endless and non-regular inputs: whatever a path names, rfake reads only
// regular files, never blocks opening one, and reads at most a bounded
// amount.

const CONFIG: i32 = 78;

fn fifo(path: &Path) -> PathBuf {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path.to_path_buf()
}

#[test]
fn configuration_files_that_are_not_regular_files_fail_fast() {
    let d = scratch();
    let fifo = fifo(&d.path().join("fifo.toml"));
    let zero = Path::new("/dev/zero");
    let empty = d.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let t = tag("cfg-special");
    for (path, cause) in [
        (zero, "a character device, not a regular file"),
        (fifo.as_path(), "a FIFO, not a regular file"),
        (d.path(), "a directory, not a regular file"),
    ] {
        let message = format!("{}: {cause}", path.display());
        // As the site file, and as the user file.
        let out = bounded(&t, &[("RFAKE_CONFIG", path)], &["config"]);
        fails_with(&out, CONFIG, &message);
        let out = bounded(
            &t,
            &[("RFAKE_CONFIG", &empty), ("RFAKE_USER_CONFIG", path)],
            &["config"],
        );
        fails_with(&out, CONFIG, &message);
    }
    // A launch reads the configuration first.
    let out = bounded(
        &t,
        &[("RFAKE_CONFIG", zero)],
        &["exec", "/nonexistent.sqfs", "true"],
    );
    fails_with(
        &out,
        CONFIG,
        "/dev/zero: a character device, not a regular file",
    );
    assert_nothing_left(&t);
}

#[test]
fn a_fifo_as_the_image_fails_fast() {
    let d = scratch();
    let image = fifo(&d.path().join("image.sqfs"));
    let shown = image.display();
    let t = tag("fifo-image");
    let out = bounded(&t, &[], &["inspect", image.to_str().unwrap()]);
    fails_with(
        &out,
        BAD_IMAGE,
        &format!(
            "image {shown}: unsupported file type: FIFO (expected a regular file or a directory)"
        ),
    );
    let out = bounded(&t, &[], &["exec", image.to_str().unwrap(), "true"]);
    fails_with(
        &out,
        BAD_IMAGE,
        &format!(
            "image {shown}: unsupported file type: FIFO (expected a regular file or a directory)"
        ),
    );
    let out = bounded(&t, &[], &["inspect", "/dev/zero"]);
    fails_with(
        &out,
        BAD_IMAGE,
        "image /dev/zero: unsupported file type: character device (expected a regular file or a directory)",
    );
    assert_nothing_left(&t);
}

#[test]
fn a_fifo_as_the_env_file_fails_fast() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let file = fifo(&d.path().join("job.env"));
    let t = tag("fifo-env");
    let img = env.image("demo.sqfs");
    let out = bounded(
        &t,
        &[],
        &[
            "exec",
            "--env-file",
            file.to_str().unwrap(),
            img.to_str().unwrap(),
            "true",
        ],
    );
    fails_with(
        &out,
        NO_INPUT,
        &format!(
            "{}: cannot read: a FIFO, not a regular file",
            file.display()
        ),
    );
    assert_nothing_left(&t);
}

/// An image whose `/etc/passwd` or environment script is a FIFO: the
/// launch does not wait for a writer. The FIFO script is skipped as the
/// shell skips it (`[ -f ]`), the FIFO passwd is ignored as a missing one
/// is (with a warning).
#[test]
fn fifos_inside_an_image_do_not_block_the_launch() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let root = d.path().join("img");
    host(
        "cp",
        &[
            "-a",
            env.image("demo").to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    fifo(&root.join(".singularity.d/env/50-fifo.sh"));
    let t = tag("fifo-inside");
    let out = bounded(
        &t,
        &[],
        &[
            "exec",
            root.to_str().unwrap(),
            "sh",
            "-c",
            "echo $RFAKE_DEMO",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "1\n");

    std::fs::remove_file(root.join("etc/passwd")).unwrap();
    fifo(&root.join("etc/passwd"));
    let out = bounded(
        &t,
        &[],
        &[
            "exec",
            "--keep-id",
            root.to_str().unwrap(),
            "sh",
            "-c",
            "id -un",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out).trim(), std::env::var("USER").unwrap());
    let err = stderr(&out);
    assert!(
        err.contains("the image's /etc/passwd ignored: a FIFO, not a regular file"),
        "{err}"
    );
    assert_nothing_left(&t);
}

/// An OCI layout whose blob is a FIFO: `rfake build` refuses it at once.
#[test]
fn a_fifo_blob_in_an_oci_layout_fails_fast() {
    let d = scratch();
    let layout = d.path().join("layout");
    let digest = "a".repeat(64);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{digest}","size":100}}]}}"#
        ),
    )
    .unwrap();
    let blob = fifo(&layout.join("blobs/sha256").join(&digest));
    let out_image = d.path().join("out.sqfs");
    let t = tag("fifo-blob");
    let out = bounded(
        &t,
        &[],
        &[
            "build",
            out_image.to_str().unwrap(),
            layout.to_str().unwrap(),
        ],
    );
    fails_with(
        &out,
        BAD_IMAGE,
        &format!("{}: a FIFO, not a regular file", blob.display()),
    );
    assert!(!out_image.exists());
    assert_nothing_left(&t);
}
