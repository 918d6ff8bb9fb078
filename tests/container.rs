//! Binds, the container environment and identity files, as an
//! unprivileged user: what an HPC user expects to find inside.

mod common;
use rfake::exit::ExitKind;

use common::*;

#[test]
fn home_is_bound_read_write_and_the_payload_starts_in_cwd() {
    let Some(env) = setup() else { return };
    let home = home();
    let dir = tempfile::Builder::new()
        .prefix("home-test-")
        .tempdir_in(&home)
        .unwrap();
    let t = tag("home");
    let out = command(&t)
        .current_dir(dir.path())
        .args(["exec", env.image("demo.sqfs").to_str().unwrap(), "sh", "-c"])
        .arg("pwd; echo $HOME; echo from-inside > written.txt; cat seed.txt")
        .env("HOME", &home)
        .output()
        .unwrap();
    std::fs::write(dir.path().join("seed.txt"), "seed\n").unwrap_or(());
    assert_status(&out, 1); // seed.txt did not exist yet when it ran
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(dir.path().to_str().unwrap()));
    assert_eq!(lines.next(), Some(home.to_str().unwrap()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("written.txt")).unwrap(),
        "from-inside\n"
    );
    // Now the seed file written on the host is readable inside.
    let out = command(&t)
        .current_dir(dir.path())
        .args([
            "exec",
            env.image("demo.sqfs").to_str().unwrap(),
            "cat",
            "seed.txt",
        ])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "seed\n");
    assert_nothing_left(&t);
}

#[test]
fn outside_any_bind_the_payload_starts_in_home_with_a_warning() {
    let Some(env) = setup() else { return };
    let out = command(&tag("cwd"))
        .current_dir("/usr")
        .args(["exec", env.image("demo.sqfs").to_str().unwrap(), "pwd"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert_eq!(stdout(&out).trim(), home().to_str().unwrap());
    assert!(
        stderr(&out).contains("/usr is not bound into the container"),
        "{}",
        stderr(&out)
    );
    let out = command(&tag("pwd"))
        .current_dir("/usr")
        .args([
            "exec",
            "--pwd",
            "/etc",
            env.image("demo.sqfs").to_str().unwrap(),
            "pwd",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "/etc");
}

#[test]
fn bind_to_a_missing_destination_leaves_the_image_untouched() {
    let Some(env) = setup() else { return };
    let d = tempfile::Builder::new()
        .prefix("bind-src-")
        .tempdir_in(home())
        .unwrap();
    std::fs::write(d.path().join("data.txt"), "bound data\n").unwrap();
    let file = d.path().join("single.txt");
    std::fs::write(&file, "single file\n").unwrap();
    for name in ["demo.sqfs", "demo.sif", "demo"] {
        let img = env.image(name);
        let before = if img.is_file() {
            sha256(&img)
        } else {
            String::new()
        };
        let binds = format!(
            "{}:/data/in/deep,{}:/opt/new-file.txt:ro",
            d.path().display(),
            file.display()
        );
        let t = tag("missingdst");
        let out = sh(
            &t,
            &["--bind", &binds],
            &img,
            "cat /data/in/deep/data.txt /opt/new-file.txt; touch /usr/x 2>&1 | grep -o 'Read-only file system'",
        );
        assert_status(&out, 0);
        assert_eq!(
            stdout(&out),
            "bound data\nsingle file\nRead-only file system\n",
            "{name}"
        );
        if img.is_file() {
            assert_eq!(sha256(&img), before, "{name} changed");
        } else {
            assert!(!img.join("data").exists(), "created in the image directory");
        }
        assert_nothing_left(&t);
    }
}

#[test]
fn ro_binds_are_read_only_for_real() {
    let Some(env) = setup() else { return };
    let d = tempfile::Builder::new()
        .prefix("ro-")
        .tempdir_in(home())
        .unwrap();
    let spec = format!("{}:/mnt/ro:ro", d.path().display());
    let out = sh(
        &tag("ro"),
        &["-B", &spec],
        &env.image("demo.sqfs"),
        "echo x > /mnt/ro/file; echo status=$?; grep ' /mnt/ro ' /proc/self/mountinfo",
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("status=1"), "{text}");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(text.contains(" ro,"), "{text}");
    assert!(!d.path().join("file").exists());
    // /tmp's submounts come along ro too: a ro bind of a tree with a mount.
    let out = sh(
        &tag("ro-sub"),
        &["-B", "/dev:/mnt/dev:ro"],
        &env.image("demo.sqfs"),
        "touch /mnt/dev/shm/rfake-ro-probe 2>&1; grep ' /mnt/dev/shm ' /proc/self/mountinfo",
    );
    let text = stdout(&out);
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.contains(" ro,"), "{text}");
}

#[test]
fn escaping_destinations_are_refused() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    for (spec, why) in [
        ("/tmp:/opt/up/etc", "climbs out of the container root"),
        ("/tmp:/../../etc", "climbs out of the container root"),
    ] {
        let t = tag("escape");
        let out = rfake(&t, &["exec", "-B", spec, img.to_str().unwrap(), "true"]);
        assert_exit(&out, ExitKind::Refused);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{spec}: {err}");
        assert!(err.contains("--bind"), "{err}");
        assert_nothing_left(&t);
    }
    // An absolute symlink in the image resolves inside the image.
    let out = sh(
        &tag("abs-link"),
        &["-B", "/etc/hostname:/opt/etc-link/host-name"],
        &img,
        "cat /etc/host-name",
    );
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        std::fs::read_to_string("/etc/hostname").unwrap()
    );
}

/// Issue 19, defect 1: an image (or a `-B` destination) leading through a
/// procfs magic link (`/proc/self/root` and the like) made rfake bind the
/// host directory over the container root and create `etc/passwd` in it,
/// on the host. Every such path is refused before anything is mounted, for
/// single-file and directory images alike.
#[test]
fn procfs_links_in_images_and_binds_cannot_reach_the_host() {
    let Some(_env) = setup() else { return };
    let work = tempfile::Builder::new()
        .prefix("proclink-")
        .tempdir_in(home())
        .unwrap();
    let src = work.path().join("bind-src");
    std::fs::create_dir(&src).unwrap();
    let targets = [
        "/proc/self/root",
        "/proc/1/root",
        "/proc/self/cwd",
        "/proc/self/fd/3",
        "/proc/thread-self/root",
        "/dev/fd/3",
    ];
    let mut images = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let root = work.path().join(format!("root{i}"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(target, root.join("x")).unwrap();
        let sqfs = work.path().join(format!("img{i}.sqfs"));
        let t = tag("proclink-build");
        let out = rfake(
            &t,
            &["build", sqfs.to_str().unwrap(), root.to_str().unwrap()],
        );
        assert_status(&out, 0);
        images.push((target.to_string(), sqfs));
        images.push((target.to_string(), root));
    }
    let bind = format!("{}:/x", src.display());
    for (target, img) in &images {
        let t = tag("proclink");
        let out = rfake(&t, &["exec", "-B", &bind, img.to_str().unwrap(), "true"]);
        assert_exit(&out, ExitKind::Refused);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{target}: {err}");
        assert!(err.contains("symbolic link in /proc"), "{target}: {err}");
        assert!(err.contains("--bind"), "{target}: {err}");
        assert!(
            std::fs::read_dir(&src).unwrap().next().is_none(),
            "{target}: rfake created files in the bind source on the host"
        );
        assert_nothing_left(&t);
    }
    // The same paths as `-B` destinations, on the demo image.
    let demo = _env.image("demo.sqfs");
    for target in targets {
        let t = tag("proclink-dst");
        let spec = format!("{}:{target}", src.display());
        let out = rfake(&t, &["exec", "-B", &spec, demo.to_str().unwrap(), "true"]);
        assert_exit(&out, ExitKind::Refused);
        let err = stderr(&out);
        assert!(err.contains("symbolic link in /proc"), "{target}: {err}");
        assert!(
            std::fs::read_dir(&src).unwrap().next().is_none(),
            "{target}: rfake created files in the bind source on the host"
        );
        assert_nothing_left(&t);
    }
}

#[test]
fn bind_errors_name_the_path_and_the_option() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("badbind");
    let out = rfake(
        &t,
        &[
            "exec",
            "-B",
            "/no/such/dir:/x",
            img.to_str().unwrap(),
            "true",
        ],
    );
    assert_exit(&out, ExitKind::NoInput);
    let err = stderr(&out);
    assert!(err.contains("/no/such/dir"), "{err}");
    assert!(err.contains("--bind"), "{err}");
    let out = command(&t)
        .env("RFAKE_BIND", "relative/path")
        .args(["exec", img.to_str().unwrap(), "true"])
        .output()
        .unwrap();
    assert_exit(&out, ExitKind::Usage);
    assert!(stderr(&out).contains("RFAKE_BIND"), "{}", stderr(&out));
    let out = rfake(
        &t,
        &["exec", "-B", "/tmp:/x:rx", img.to_str().unwrap(), "true"],
    );
    assert_exit(&out, ExitKind::Usage);
    assert!(stderr(&out).contains("unknown bind mode 'rx'"));
    assert_nothing_left(&t);
}

#[test]
fn contain_hides_the_host_and_writable_tmpfs_forgets() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let marker = home().join("contain-marker");
    std::fs::write(&marker, "host").unwrap();
    let script = format!(
        "ls -A /tmp | wc -l; ls -A $HOME | wc -l; test -e {} && echo visible; echo ok",
        marker.display()
    );
    let out = sh(&tag("contain"), &["--contain"], &img, &script);
    std::fs::remove_file(&marker).unwrap();
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "ok"]
    );

    let t = tag("writable");
    let out = sh(
        &t,
        &["--writable-tmpfs"],
        &img,
        "echo new > /usr/new-file && cat /usr/new-file && rm /bin/cat && echo removed",
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "new\nremoved\n");
    let out = sh(
        &t,
        &[],
        &img,
        "test -e /usr/new-file || test ! -e /bin/cat || echo gone",
    );
    assert_eq!(stdout(&out), "gone\n");
    assert_nothing_left(&t);
}

#[test]
fn identity_files_show_the_container_user() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let out = sh(
        &tag("id-root"),
        &[],
        &img,
        "whoami; grep '^root:' /etc/passwd; ls -ld /etc/rfake-demo.txt",
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("root"));
    assert_eq!(
        lines.next().unwrap(),
        format!("root:x:0:0:root:{}:/bin/sh", home().display())
    );
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap();
    let out = sh(
        &tag("id-keep"),
        &["--keep-id"],
        &img,
        "whoami; id -gn; echo $HOME; grep \"^$(whoami):\" /etc/passwd",
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], me.name);
    assert_eq!(lines[2], home().to_str().unwrap());
    assert!(
        lines[3].starts_with(&format!("{}:x:{}:{}:", me.name, me.uid, me.gid)),
        "{text}"
    );
    assert!(
        lines[3].contains(&format!(":{}:", home().display())),
        "{text}"
    );
    // The image's own passwd file is untouched.
    let out = sh(&tag("id-image"), &["--no-home"], &env.image("demo"), "true");
    assert_status(&out, 0);
    let image_passwd = std::fs::read_to_string(env.image("demo").join("etc/passwd")).unwrap();
    assert!(
        image_passwd.starts_with("root:x:0:0:root:/root:"),
        "{image_passwd}"
    );
}

#[test]
fn environment_order_on_a_real_sif() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    if std::env::consts::ARCH != "x86_64" {
        missing("an amd64 host for busybox_amd64.sif");
        return;
    }
    let img = sifs.join("busybox_amd64.sif");
    let show = "echo PATH=$PATH; echo FOO=$FOO; echo LD=$LD_LIBRARY_PATH; echo SLURM=$SLURM_JOB_ID; echo \"PS1=$PS1\"; echo NAME=$RFAKE_NAME";
    let run = |envs: &[(&str, &str)], opts: &[&str]| {
        let mut cmd = command(&tag("envorder"));
        cmd.envs(envs.iter().copied()).arg("exec").args(opts).args([
            img.to_str().unwrap(),
            "/bin/sh",
            "-c",
            show,
        ]);
        let out = cmd.output().unwrap();
        assert_status(&out, 0);
        stdout(&out)
    };
    // Steps 1, 2 and 4: host variables pass (minus host libraries), the
    // image's env script sets PATH and PS1, rfake completes PATH, keeps the
    // image's prompt (as Apptainer does) and sets NAME.
    let text = run(
        &[
            ("LD_LIBRARY_PATH", "/host/lib"),
            ("SLURM_JOB_ID", "42"),
            ("PATH", "/host/bin:/usr/bin"),
        ],
        &[],
    );
    assert!(
        text.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{text}"
    );
    // The host's LD_LIBRARY_PATH is dropped; the image's own script sets
    // Apptainer's /.singularity.d/libs.
    assert!(text.contains("LD=/.singularity.d/libs\n"), "{text}");
    assert!(text.contains("SLURM=42\n"), "{text}");
    assert!(
        text.contains("PS1=Singularity> \n") && text.contains("NAME=busybox_amd64.sif\n"),
        "{text}"
    );
    // Step 3 overrides the image: RFAKE_ENV_, then --env-file, then --env.
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("vars.env");
    std::fs::write(&file, "# comment\nFOO=from-file\n").unwrap();
    let text = run(
        &[
            ("RFAKE_ENV_PATH", "/custom/bin"),
            ("RFAKE_ENV_FOO", "from-host"),
        ],
        &[],
    );
    assert!(text.contains("PATH=/custom/bin:/usr/local/sbin"), "{text}");
    assert!(text.contains("FOO=from-host\n"), "{text}");
    let text = run(
        &[("RFAKE_ENV_FOO", "from-host")],
        &["--env-file", file.to_str().unwrap()],
    );
    assert!(text.contains("FOO=from-file\n"), "{text}");
    let text = run(
        &[("RFAKE_ENV_FOO", "from-host")],
        &[
            "--env-file",
            file.to_str().unwrap(),
            "--env",
            "FOO=from-flag",
        ],
    );
    assert!(text.contains("FOO=from-flag\n"), "{text}");
}

#[test]
fn environment_on_the_demo_image_and_cleanenv() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sif");
    let out = command(&tag("cleanenv"))
        .env("SLURM_JOB_ID", "42")
        .env("TERM", "xterm")
        .args(["exec", "--cleanenv", img.to_str().unwrap(), "env"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    let mut names: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    // A shell running the image's scripts may add PWD; nothing else.
    names.retain(|n| n != "PWD");
    names.sort();
    assert_eq!(
        names,
        [
            "APPTAINER_CONTAINER",
            "APPTAINER_ENVIRONMENT",
            "APPTAINER_NAME",
            "HOME",
            "LANG",
            "PATH",
            "PS1",
            "RFAKE_CONTAINER",
            "RFAKE_DEMO",
            "RFAKE_NAME",
            "SINGULARITY_CONTAINER",
            "SINGULARITY_ENVIRONMENT",
            "SINGULARITY_NAME",
            "TERM",
            "USER"
        ],
        "{}",
        stdout(&out)
    );
    let out = sh(
        &tag("demoenv"),
        &[],
        &img,
        "echo $RFAKE_DEMO $RFAKE_CONTAINER",
    );
    assert_eq!(stdout(&out).trim(), format!("1 {}", img.display()));
    let out = sh(&tag("badenv"), &["--env", "1BAD=x"], &img, "true");
    assert_exit(&out, ExitKind::Usage);
    assert!(
        stderr(&out).contains("'1BAD=x' is not NAME=value"),
        "{}",
        stderr(&out)
    );
    let out = sh(
        &tag("badenvfile"),
        &["--env-file", "/no/such.env"],
        &img,
        "true",
    );
    assert_exit(&out, ExitKind::NoInput);
    assert!(stderr(&out).contains("/no/such.env"), "{}", stderr(&out));
}
