//! `rfake build OUT app.def`: Apptainer definition files built without
//! root, their `%post` run as fakeroot, the result run with `rfake run` and
//! read back with `rfake inspect`.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("definition-")
        .tempdir_in(home())
        .unwrap()
}

/// `rfake build` run in `dir` (relative paths in the definition are from
/// there, as Apptainer takes them).
fn build_in(t: &str, dir: &Path, args: &[&str]) -> Output {
    let mut c = command(t);
    c.current_dir(dir).arg("build").args(args);
    c.output().unwrap()
}

/// What a failed or interrupted build must not leave: OUT, or a work
/// directory beside it.
fn assert_clean(dir: &Path, out: &str) {
    assert!(!dir.join(out).exists(), "{out} was written");
    let left: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".rfake")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
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
    assert_clean(d.path(), "nothing");
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
    assert_clean(d.path(), "bad.sif");
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
        assert_clean(d.path(), "x.sif");
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
    assert_clean(d.path(), "slow.sif");
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
    assert_clean(d.path(), "nothing");
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
