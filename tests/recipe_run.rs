//! Recipes with `[[run]]` steps: the steps run as fakeroot in the recipe's
//! tree (the definition files' machinery), the result run with `rfake exec`
//! and read back with `unsquashfs -lln` and `rfake inspect`.

mod common;
use rfake::exit::ExitKind;

use common::*;
use std::path::PathBuf;

fn scratch() -> tempfile::TempDir {
    scratch_in_home("recipe-run-")
}

/// The demo tree as the base; a step that writes a file, chowns it to ids
/// outside the one-entry map (the filter lets that succeed) and uses what
/// `[files]` and `[inline]` put in; `[modes]` on what the step made; the
/// recipe's environment, labels and runscript kept. The image's entries are
/// root's (`unsquashfs -lln`).
#[test]
fn a_step_on_the_demo_tree() {
    let Some(env) = setup() else { return };
    if !have("unsquashfs") {
        missing("unsquashfs (squashfs-tools)");
        return;
    }
    let d = scratch();
    let t = tag("recipe-run");
    std::fs::write(d.path().join("greeting.txt"), "hello from [files]\n").unwrap();
    let recipe = format!(
        r##"[image]
base = "{}"
runscript = "#!/bin/sh\ncat /opt/app/made\n"

[files]
"/opt/app/greeting.txt" = "greeting.txt"

[inline]
"/opt/app/name" = "rfake\n"

[[run]]
script = """
cat /opt/app/greeting.txt /opt/app/name > /opt/app/made
echo "id $(id -u)" >> /opt/app/made
chown 1234:5678 /opt/app/made
mkdir -p /opt/app/private
"""

[modes]
"/opt/app/private" = "0700"

[env]
APP = "yes"

[labels]
"org.example.recipe" = "run"
"##,
        env.image("demo").display()
    );
    std::fs::write(d.path().join("app.toml"), recipe).unwrap();
    let o = build_in(&t, d.path(), &["app.sif", "app.toml"]);
    assert_status(&o, 0);
    let image = d.path().join("app.sif");
    let run = rfake(&t, &["run", image.to_str().unwrap()]);
    assert_status(&run, 0);
    assert_eq!(stdout(&run), "hello from [files]\nrfake\nid 0\n");
    let o = sh(&t, &[], &image, "echo $APP");
    assert_eq!(stdout(&o), "yes\n");
    let json = rfake(&t, &["inspect", "--json", image.to_str().unwrap()]);
    assert_status(&json, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["labels"]["org.example.recipe"], "run", "{v}");
    assert!(
        v["definition"]
            .as_str()
            .unwrap_or_default()
            .contains("[[run]]"),
        "{v}"
    );
    // The SquashFS part of the SIF, through rfake's own build to SquashFS.
    let o = build_in(&t, d.path(), &["app.sqfs", "app.toml"]);
    assert_status(&o, 0);
    let listing = host(
        "unsquashfs",
        &["-lln", d.path().join("app.sqfs").to_str().unwrap()],
    );
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} not in {listing}"))
            .to_string()
    };
    let made = line("/opt/app/made");
    assert!(made.starts_with("-rw-r--r-- 0/0 "), "{made}");
    let private = line("/opt/app/private");
    assert!(private.starts_with("drwx------ 0/0 "), "{private}");
    assert!(
        rfake_files(d.path()).is_empty(),
        "{:?}",
        rfake_files(d.path())
    );
    assert_nothing_left(&t);
}

/// The real thing: the Debian 12 root (its OCI layout, which the test
/// registry serves) as the base, `apt-get install` of a small package from
/// Debian's mirror in a step, with `--tmpdir` (and `--skip-special`: the
/// root has device nodes in `/dev`).
#[test]
fn apt_get_install_in_a_step() {
    let Some(_env) = setup() else { return };
    let Some(debian) = std::env::var_os("RFAKE_TEST_DEBIAN_OCI").map(PathBuf::from) else {
        missing("the Debian OCI layout: RFAKE_TEST_DEBIAN_OCI (tests/registry/setup.sh)");
        return;
    };
    let d = scratch();
    let t = tag("recipe-apt");
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let recipe = format!(
        r##"[image]
base = "{}"
cmd = ["hello"]

[[run]]
script = """
apt-get update
apt-get install -y --no-install-recommends hello
rm -rf /var/lib/apt/lists/*
"""

[[run]]
shell = "/bin/bash"
script = "[[ -x /usr/bin/hello ]]"
"##,
        debian.display()
    );
    std::fs::write(d.path().join("hello.toml"), recipe).unwrap();
    let o = build_in(
        &t,
        d.path(),
        &[
            "-q",
            "--skip-special",
            "--tmpdir",
            "work",
            "hello.sqfs",
            "hello.toml",
        ],
    );
    assert_status(&o, 0);
    let image = d.path().join("hello.sqfs");
    let o = rfake(&t, &["run", image.to_str().unwrap()]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "Hello, world!\n");
    let o = sh(&t, &[], &image, "dpkg-query -W -f '${Status}' hello");
    assert_eq!(stdout(&o), "install ok installed");
    assert!(rfake_files(&work).is_empty(), "{:?}", rfake_files(&work));
    assert_nothing_left(&t);
}

/// A failing step stops the build with the recipe's file:line of the step,
/// its status and last lines, and the log kept; nothing else is left. A
/// shell the image lacks is named.
#[test]
fn a_failing_step_stops_the_build() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let t = tag("recipe-run-fail");
    let recipe = format!(
        "[image]\nbase = \"{}\"\n\n[[run]]\nscript = \"echo first\"\n\n\
         [[run]]\nscript = \"\"\"\necho step two\necho broken >&2\nexit 3\n\"\"\"\n",
        env.image("demo").display()
    );
    std::fs::write(d.path().join("bad.toml"), recipe).unwrap();
    let o = build_in(&t, d.path(), &["bad.sif", "bad.toml"]);
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(
            "bad.toml:8: [[run]] failed (exit status 3); its last lines: step two | broken"
        ),
        "{err}"
    );
    // The step's output was shown as it ran, and its whole log is kept.
    assert!(err.contains("first\n"), "{err}");
    let log = d.path().join("bad.toml.run.log");
    assert!(last.contains(log.to_str().unwrap()), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "step two\nbroken\n");
    std::fs::remove_file(&log).unwrap();
    assert!(!d.path().join("bad.sif").exists());
    assert!(
        rfake_files(d.path()).is_empty(),
        "{:?}",
        rfake_files(d.path())
    );

    let recipe = format!(
        "[image]\nbase = \"{}\"\n\n[[run]]\nshell = \"/bin/bash\"\nscript = \"true\"\n",
        env.image("demo").display()
    );
    std::fs::write(d.path().join("bash.toml"), recipe).unwrap();
    let o = build_in(&t, d.path(), &["bash.sif", "bash.toml"]);
    assert_exit(&o, ExitKind::CommandNotFound);
    let err = stderr(&o);
    assert!(
        err.contains("bash.toml:6: [[run]]: /bin/bash: not found in the build tree"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["bad.toml", "bash.toml"]);
    assert_nothing_left(&t);
}

/// `--fakeroot-mode none`: only the user namespace, so a step's chown to
/// an id outside the one-entry map fails, as the kernel says, and stops the
/// build (with the filter, the same step passes: `a_step_on_the_demo_tree`).
#[test]
fn without_the_filter_a_chown_fails() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let t = tag("recipe-run-none");
    let recipe = format!(
        "[image]\nbase = \"{}\"\n\n[[run]]\nscript = \"touch /opt/f; chown 1234 /opt/f\"\n",
        env.image("demo").display()
    );
    std::fs::write(d.path().join("own.toml"), recipe).unwrap();
    let o = build_in(
        &t,
        d.path(),
        &["--fakeroot-mode", "none", "own.sqfs", "own.toml"],
    );
    assert_exit(&o, ExitKind::BadImage);
    let err = stderr(&o);
    assert!(
        err.contains("own.toml:5: [[run]] failed (exit status 1); its last lines: chown: /opt/f: "),
        "{err}"
    );
    assert!(!d.path().join("own.sqfs").exists());
    assert!(
        rfake_files(d.path()).is_empty(),
        "{:?}",
        rfake_files(d.path())
    );
    assert_status(&build_in(&t, d.path(), &["own.sqfs", "own.toml"]), 0);
    assert_nothing_left(&t);
}

/// ^C (SIGINT to the process group) while a step runs: the build ends as
/// killed by it and leaves nothing, the work directory included.
#[test]
fn an_interrupted_step_leaves_nothing() {
    let Some(env) = setup() else { return };
    let d = scratch();
    let t = tag("recipe-run-int");
    let recipe = format!(
        "[image]\nbase = \"{}\"\n\n[[run]]\nscript = \"echo started; sleep 60\"\n",
        env.image("demo").display()
    );
    std::fs::write(d.path().join("slow.toml"), recipe).unwrap();
    let mut c = command(&t);
    // Its own process group, as a job in a terminal: ^C reaches it all.
    use std::os::unix::process::CommandExt;
    c.current_dir(d.path())
        .args(["build", "slow.sif", "slow.toml"])
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    // The step has started when it says so.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    while line.trim() != "started" {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no step output");
    }
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
    assert!(!d.path().join("slow.sif").exists());
    assert!(
        rfake_files(d.path()).is_empty(),
        "{:?}",
        rfake_files(d.path())
    );
    assert_nothing_left(&t);
}
