//! `rfake build OUT app.def`: Apptainer definition files built without
//! root, their `%post` run as fakeroot, the result run with `rfake run` and
//! read back with `rfake inspect`.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::Path;

fn scratch() -> tempfile::TempDir {
    scratch_in_home("definition-")
}

/// The real busybox SIF as a `localimage` base, every section but `%post`'s
/// package manager: `%files`, `%post` (with a chown to a user the one-entry
/// map does not have, which the filter lets succeed), `%environment`,
/// `%runscript`, `%labels`, `%help`, `%test`.
#[test]
fn a_definition_on_a_local_sif() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-local");
    std::fs::write(d.path().join("greeting.txt"), "hello from %files\n").unwrap();
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n\
         %files\n    greeting.txt /opt/greeting.txt\n\n\
         %post\n    echo built > /opt/built\n    chown 1234:5678 /opt/built\n    \
         mkdir -p /var/app && chmod 0555 /var/app\n\n\
         %environment\n    export GREETING=hi\n\n\
         %runscript\n    echo \"run $GREETING $*\"\n\n\
         %labels\n    Author rfake-tests\n    Version 1.0\n\n\
         %help\n    This image says hello.\n\n\
         %test\n    test -f /opt/built\n",
        sifs.join("busybox_amd64.sif").display()
    );
    std::fs::write(d.path().join("app.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["app.sif", "app.def"]);
    assert_status(&o, 0);
    let image = d.path().join("app.sif");
    let run = rfake(&t, &["run", image.to_str().unwrap(), "a", "b"]);
    assert_status(&run, 0);
    assert_eq!(stdout(&run), "run hi a b\n");
    let cat = rfake(
        &t,
        &[
            "exec",
            image.to_str().unwrap(),
            "cat",
            "/opt/greeting.txt",
            "/opt/built",
        ],
    );
    assert_status(&cat, 0);
    assert_eq!(stdout(&cat), "hello from %files\nbuilt\n");
    let json = rfake(&t, &["inspect", "--json", image.to_str().unwrap()]);
    assert_status(&json, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["labels"]["Author"], "rfake-tests", "{v}");
    assert!(
        v["definition"]
            .as_str()
            .unwrap_or_default()
            .contains("Bootstrap: localimage"),
        "{v}"
    );
    let help = rfake(
        &t,
        &[
            "inspect",
            "--cat",
            "/.singularity.d/runscript.help",
            image.to_str().unwrap(),
        ],
    );
    assert_eq!(stdout(&help).trim(), "This image says hello.");
    // rfake run-help and rfake test read the same sections.
    let help = rfake(&t, &["run-help", image.to_str().unwrap()]);
    assert_status(&help, 0);
    assert_eq!(stdout(&help).trim(), "This image says hello.");
    assert_status(&rfake(&t, &["test", image.to_str().unwrap()]), 0);
    assert_build_left_nothing(d.path(), "nothing");
    assert_nothing_left(&t);
}

/// A failing `%post` stops the build with its status and last lines;
/// nothing is left.
#[test]
fn a_failing_post_stops_the_build() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-fail");
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n%post\n    echo step one\n    echo broken >&2\n    exit 3\n",
        sifs.join("busybox_amd64.sif").display()
    );
    std::fs::write(d.path().join("bad.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["bad.sif", "bad.def"]);
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("bad.def:4: %post failed (exit status 3)") && last.contains("broken"),
        "{err}"
    );
    // The step's whole log is kept beside OUT, and named.
    let log = d.path().join("bad.def.post.log");
    assert!(last.contains("bad.def.post.log"), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("step one") && text.contains("broken"),
        "{text}"
    );
    assert_build_left_nothing(d.path(), "bad.sif");
    assert_nothing_left(&t);
}

/// What rfake does not do yet, or never (`%setup`), is refused with the
/// file, the line and the section.
#[test]
fn refused_sections_name_file_and_line() {
    let Some(_env) = setup() else { return };
    let d = scratch();
    let t = tag("def-refused");
    for (text, want) in [
        (
            "Bootstrap: scratch\n\n%setup\n    touch ${SINGULARITY_ROOTFS}/x\n",
            "x.def:3: %setup",
        ),
        ("Bootstrap: nosuch\nFrom: x\n", "x.def:1"),
    ] {
        std::fs::write(d.path().join("x.def"), text).unwrap();
        let o = build_in(&t, d.path(), &["x.sif", "x.def"]);
        assert_exit(&o, ExitKind::BadImage);
        let err = stderr(&o);
        assert!(err.contains(want), "{text:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_build_left_nothing(d.path(), "x.sif");
    }
    assert_nothing_left(&t);
}

/// ^C (SIGINT to the process group) while `%post` runs: the build ends as
/// killed by it, at once, and leaves nothing.
#[test]
fn an_interrupted_build_leaves_nothing() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-int");
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n%post\n    echo started\n    sleep 60\n",
        sifs.join("busybox_amd64.sif").display()
    );
    std::fs::write(d.path().join("slow.def"), def).unwrap();
    let mut c = command(&t);
    // Its own process group, as a job in a terminal: ^C reaches it all.
    use std::os::unix::process::CommandExt;
    c.current_dir(d.path())
        .args(["build", "slow.sif", "slow.def"])
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Wait for the work directory, then a little for %post to start.
    while std::time::Instant::now() < deadline {
        let started = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".rfake-build-"));
        if started {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() == Some(2) || status.code() == Some(130),
        "{status:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_build_left_nothing(d.path(), "slow.sif");
    assert_nothing_left(&t);
}

/// The real thing: a Debian image from the test registry, `%post` with
/// `apt-get install` of packages whose scripts make system users and chown
/// files to them (openssh-server), from Debian's mirror. Without the
/// filter (`--fakeroot-mode none`) dpkg fails at those calls.
#[test]
fn apt_get_install_in_post() {
    let Some(_env) = setup() else { return };
    let Ok(registry) = std::env::var("RFAKE_TEST_REGISTRY") else {
        missing("the test registry: RFAKE_TEST_REGISTRY");
        return;
    };
    let d = scratch();
    let t = tag("def-apt");
    let def = format!(
        "Bootstrap: docker\nFrom: {registry}/debian:12\n\n\
         %post\n    apt-get update\n    \
         apt-get install -y --no-install-recommends openssh-server\n    \
         rm -rf /var/lib/apt/lists/*\n\n\
         %runscript\n    exec /usr/sbin/sshd -V 2>&1 || true\n\n\
         %test\n    getent passwd sshd\n"
    );
    std::fs::write(d.path().join("ssh.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["-q", "ssh.sif", "ssh.def"]);
    assert_status(&o, 0);
    let image = d.path().join("ssh.sif");
    let o = rfake(
        &t,
        &[
            "exec",
            image.to_str().unwrap(),
            "sh",
            "-c",
            "getent passwd sshd >/dev/null && ls /usr/sbin/sshd",
        ],
    );
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "/usr/sbin/sshd\n");
    assert_build_left_nothing(d.path(), "nothing");
    assert_nothing_left(&t);
}

/// `--notest` skips `%test` at build time; `rfake test` runs it later and
/// exits with its status; an image without one passes.
#[test]
fn rfake_test_runs_the_test_section() {
    let Some(env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-test");
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n%test\n    echo checking\n    exit 4\n",
        sifs.join("busybox_amd64.sif").display()
    );
    std::fs::write(d.path().join("t.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["t.sif", "t.def"]);
    assert_exit(&o, ExitKind::BadImage);
    assert!(
        stderr(&o).contains("t.def:4: %test failed (exit status 4)"),
        "{}",
        stderr(&o)
    );
    assert_status(&build_in(&t, d.path(), &["--notest", "t.sif", "t.def"]), 0);
    let image = d.path().join("t.sif");
    let o = rfake(&t, &["test", image.to_str().unwrap()]);
    assert_status(&o, 4);
    assert_eq!(stdout(&o), "checking\n");
    let demo = env.image("demo.sqfs");
    let o = rfake(&t, &["test", demo.to_str().unwrap()]);
    assert_status(&o, 0);
    assert!(stdout(&o).contains("has no test"), "{}", stdout(&o));
    let o = rfake(&t, &["run-help", demo.to_str().unwrap()]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "No help sections were defined for this image\n");
    assert_nothing_left(&t);
}

/// The busybox SIF, as a definition's `From:`.
fn busybox(sifs: &Path) -> String {
    sifs.join("busybox_amd64.sif").display().to_string()
}

/// A two-stage build (and a third stage nobody copies from): `%files from
/// STAGE` with a plain path, a wildcard into a directory and a path through
/// the stage's own absolute link (followed inside that stage, never on the
/// host); a host wildcard. Only the last stage is the image; a stage's
/// root goes as soon as no later stage needs it.
#[test]
fn stages_and_files_from_a_stage() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-stages");
    std::fs::write(d.path().join("w1.conf"), "one\n").unwrap();
    std::fs::write(d.path().join("w2.conf"), "two\n").unwrap();
    std::fs::write(d.path().join(".hidden.conf"), "hidden\n").unwrap();
    let base = busybox(&sifs);
    let def = format!(
        "Bootstrap: localimage\nFrom: {base}\nStage: build\n\n\
         %post\n    mkdir -p /opt/out\n    echo 'echo hello from build' > /opt/out/hello\n    \
         echo a > /opt/out/a.txt\n    echo b > /opt/out/b.txt\n    ln -s /opt/out /opt/abs\n\n\
         Bootstrap: localimage\nFrom: {base}\nStage: unused\n\n\
         %post\n    echo nobody copies me > /unused\n\n\
         Bootstrap: localimage\nFrom: {base}\n\n\
         %files from build\n    /opt/out/hello /usr/bin/hello\n    /opt/out/*.txt /data/\n    \
         /opt/abs/a.txt /via-link\n\n\
         %files\n    *.conf /etc/confs/\n\n\
         %runscript\n    sh /usr/bin/hello\n"
    );
    std::fs::write(d.path().join("app.def"), &def).unwrap();
    let o = build_in(&t, d.path(), &["-v", "app.sif", "app.def"]);
    assert_status(&o, 0);
    let err = stderr(&o);
    // The unused stage is removed before the last starts; `build` after
    // the last stage has copied from it.
    let at = |what: &str| {
        err.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in {err}"))
    };
    assert!(
        at("stage 2 of 3: unused") < at("stage 2's root removed"),
        "{err}"
    );
    assert!(at("stage 2's root removed") < at("stage 3 of 3"), "{err}");
    assert!(at("stage 3 of 3") < at("stage 1's root removed"), "{err}");
    let image = d.path().join("app.sif");
    let image = image.to_str().unwrap();
    let run = rfake(&t, &["run", image]);
    assert_status(&run, 0);
    assert_eq!(stdout(&run), "hello from build\n");
    let cat = rfake(
        &t,
        &[
            "exec",
            image,
            "sh",
            "-c",
            "cat /data/a.txt /data/b.txt /via-link /etc/confs/*; ls -a /etc/confs; \
             test -e /opt/out || test -e /unused || echo only-the-last",
        ],
    );
    assert_status(&cat, 0);
    assert_eq!(
        stdout(&cat),
        "a\nb\na\none\ntwo\n.\n..\nw1.conf\nw2.conf\nonly-the-last\n"
    );
    assert_build_left_nothing(d.path(), "nothing");
    assert_nothing_left(&t);
}

/// `%files from` naming no stage, or a later one, and a wildcard that
/// matches nothing: file:line, exit 65, nothing left.
#[test]
fn files_from_and_wildcard_errors() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-from-err");
    let base = busybox(&sifs);
    for (text, want) in [
        (
            format!(
                "Bootstrap: localimage\nFrom: {base}\nStage: one\n\n%files from two\n    /x\n\n\
                     Bootstrap: localimage\nFrom: {base}\nStage: two\n"
            ),
            "x.def:5: %files: from `two`: no such stage (no earlier stage has a Stage: name)",
        ),
        (
            format!(
                "Bootstrap: localimage\nFrom: {base}\nStage: one\n\n\
                     Bootstrap: localimage\nFrom: {base}\n\n%files from nosuch\n    /x\n"
            ),
            "x.def:8: %files: from `nosuch`: no such stage (the earlier stages are one)",
        ),
        (
            format!("Bootstrap: localimage\nFrom: {base}\n\n%files\n    nothing-*.conf /etc/\n"),
            "x.def:5: %files: nothing-*.conf: no file matches the pattern",
        ),
        (
            format!(
                "Bootstrap: localimage\nFrom: {base}\nStage: one\n\n\
                     Bootstrap: localimage\nFrom: {base}\n\n%files from one\n    /opt/none*\n"
            ),
            "x.def:9: %files: /opt/none*: no file matches the pattern",
        ),
    ] {
        std::fs::write(d.path().join("x.def"), &text).unwrap();
        let o = build_in(&t, d.path(), &["x.sif", "x.def"]);
        assert_exit(&o, ExitKind::BadImage);
        let err = stderr(&o);
        assert!(err.contains(want), "{text}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_build_left_nothing(d.path(), "x.sif");
    }
    assert_nothing_left(&t);
}

/// `--sandbox OUTDIR`: the built tree kept as a directory that `rfake run`,
/// `exec` and `inspect` take as an image; OUTDIR may be an empty directory;
/// one with something in it, or a file, is refused (exit 73) and kept; a
/// SOURCE that is no definition file is a usage error.
#[test]
fn sandbox_keeps_the_tree() {
    let Some(env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-sandbox");
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n\
         %post\n    mkdir -p /opt\n    echo built > /opt/built\n\n\
         %runscript\n    echo \"run $*\"\n\n%labels\n    Author rfake-tests\n",
        busybox(&sifs)
    );
    std::fs::write(d.path().join("app.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["--sandbox", "box", "app.def"]);
    assert_status(&o, 0);
    assert!(
        stdout(&o).contains("(a sandbox directory)"),
        "{}",
        stdout(&o)
    );
    let sandbox = d.path().join("box");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("opt/built")).unwrap(),
        "built\n"
    );
    let image = sandbox.to_str().unwrap();
    let run = rfake(&t, &["run", image, "x"]);
    assert_status(&run, 0);
    assert_eq!(stdout(&run), "run x\n");
    let json = rfake(&t, &["inspect", "--json", image]);
    assert_status(&json, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["labels"]["Author"], "rfake-tests", "{v}");
    // An empty directory is filled.
    std::fs::create_dir(d.path().join("empty")).unwrap();
    assert_status(
        &build_in(&t, d.path(), &["--sandbox", "empty", "app.def"]),
        0,
    );
    assert!(d.path().join("empty/opt/built").is_file());
    // A directory with something in it (the first sandbox), or a file.
    std::fs::write(d.path().join("file"), "mine").unwrap();
    for taken in ["box", "file"] {
        let o = build_in(&t, d.path(), &["--sandbox", taken, "app.def"]);
        assert_exit(&o, ExitKind::CannotCreate);
        assert!(
            stderr(&o).contains(&format!("{taken}: exists")),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read_to_string(d.path().join("file")).unwrap(),
        "mine"
    );
    assert!(sandbox.join("opt/built").is_file());
    let demo = env.image("demo.sqfs");
    let o = build_in(
        &t,
        d.path(),
        &["--sandbox", "other", demo.to_str().unwrap()],
    );
    assert_exit(&o, ExitKind::Usage);
    assert!(
        stderr(&o).contains("--sandbox: only for a definition file"),
        "{}",
        stderr(&o)
    );
    assert_build_left_nothing(d.path(), "other");
    assert_nothing_left(&t);
}

/// A `%post` that leaves files its owner cannot read (`chmod 000`): the
/// build stops before reading, naming the first one and `--fix-perms`;
/// with `--fix-perms` it builds, the modes owner-readable in the image.
#[test]
fn fix_perms_for_unreadable_files() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let d = scratch();
    let t = tag("def-perms");
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n\
         %post\n    mkdir /secret /opt\n    echo key > /secret/key\n    chmod 000 /secret/key\n    \
         echo x > /opt/tool\n    chmod 4511 /opt/tool\n",
        busybox(&sifs)
    );
    std::fs::write(d.path().join("p.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["p.sif", "p.def"]);
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    assert!(
        err.contains("p.def:4: %post: /secret/key (mode 0000) cannot be read")
            && err.contains("--fix-perms"),
        "{err}"
    );
    assert_build_left_nothing(d.path(), "p.sif");
    let o = build_in(&t, d.path(), &["--fix-perms", "p.sif", "p.def"]);
    assert_status(&o, 0);
    let image = d.path().join("p.sif");
    let o = rfake(
        &t,
        &["inspect", "--cat", "/secret/key", image.to_str().unwrap()],
    );
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "key\n");
    // Read by unsquashfs too (the SIF's partition is a SquashFS at an
    // offset; the SquashFS build is the same tree).
    let o = build_in(&t, d.path(), &["--fix-perms", "p.sqfs", "p.def"]);
    assert_status(&o, 0);
    let listing = host(
        "unsquashfs",
        &["-ll", "-d", "", d.path().join("p.sqfs").to_str().unwrap()],
    );
    let mode_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(path) || l.contains(&format!("{path} -> ")))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("{path} not in {listing}"))
    };
    assert_eq!(mode_of("/secret/key"), "-rw-------");
    assert_eq!(mode_of("/secret"), "drwxr-xr-x");
    // Other bits are kept: u+w added to a setuid 4511.
    assert_eq!(mode_of("/opt/tool"), "-rws--x--x");
    assert_build_left_nothing(d.path(), "nothing");
    assert_nothing_left(&t);
}

/// The work area is checked for room before anything is written: on a
/// small file system (an 8 MiB tmpfs, mounted in a user namespace of the
/// test's own) the build is refused at once, naming the directory, what it
/// needs and has, and --tmpdir; nothing is written there.
#[test]
fn too_little_space_for_the_work_area() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    if !have("unshare") {
        missing("unshare (util-linux)");
        return;
    }
    let d = scratch();
    let t = tag("def-space");
    let def = format!("Bootstrap: localimage\nFrom: {}\n", busybox(&sifs));
    std::fs::write(d.path().join("s.def"), def).unwrap();
    std::fs::create_dir(d.path().join("small")).unwrap();
    let mut c = scrubbed("unshare", &t);
    c.current_dir(d.path())
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=8m tmpfs small && \"$0\" build --tmpdir small s.sif s.def; \
             status=$?; ls -A small; exit $status",
        )
        .arg(rfake_bin());
    let o = c.output().unwrap();
    assert_exit(&o, ExitKind::CannotCreate);
    let err = stderr(&o);
    assert!(
        err.contains("small: not enough free space for the build's work area: about ")
            && err.contains(" MiB needed, 8.0 MiB free")
            && err.contains("--tmpdir DIR or RFAKE_TMPDIR=DIR"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(stdout(&o), "", "left in the work area");
    assert_build_left_nothing(d.path(), "s.sif");
    assert_nothing_left(&t);
}

/// `%post -c /bin/bash` runs the script with bash (on a Debian base from
/// the test registry); `-c` with arguments after the shell is refused
/// before anything is built (exit 65); a shell the image lacks is named
/// (exit 127, as for a command not found).
#[test]
fn post_with_another_shell() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    let Ok(registry) = std::env::var("RFAKE_TEST_REGISTRY") else {
        missing("the test registry: RFAKE_TEST_REGISTRY");
        return;
    };
    let d = scratch();
    let t = tag("def-shell");
    let def = format!(
        "Bootstrap: docker\nFrom: {registry}/debian:12\n\n\
         %post -c /bin/bash\n    [[ -n $BASH_VERSION ]]\n    shopt -s extglob\n    \
         echo \"${{BASH_VERSINFO[0]}}\" > /bash-major\n"
    );
    std::fs::write(d.path().join("b.def"), def).unwrap();
    let o = build_in(&t, d.path(), &["-q", "b.sqfs", "b.def"]);
    assert_status(&o, 0);
    let image = d.path().join("b.sqfs");
    let o = rfake(
        &t,
        &["inspect", "--cat", "/bash-major", image.to_str().unwrap()],
    );
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "5\n");
    for (shell, exit, want) in [
        (
            "/bin/bash -l",
            ExitKind::BadImage,
            "x.def:4: %post: -c `/bin/bash -l`: arguments to the shell are not supported",
        ),
        (
            "/bin/zsh",
            ExitKind::CommandNotFound,
            "x.def:4: %post: /bin/zsh: not found in the build tree",
        ),
    ] {
        std::fs::write(
            d.path().join("x.def"),
            format!(
                "Bootstrap: localimage\nFrom: {}\n\n%post -c {shell}\n    true\n",
                busybox(&sifs)
            ),
        )
        .unwrap();
        let o = build_in(&t, d.path(), &["x.sif", "x.def"]);
        assert_exit(&o, exit);
        let err = stderr(&o);
        assert!(err.contains(want), "{shell}: {err}");
        assert_build_left_nothing(d.path(), "x.sif");
    }
    assert_nothing_left(&t);
}
