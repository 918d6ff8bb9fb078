//! The launcher core, end to end, as an unprivileged user: identity, image
//! contents, exit statuses, signals, stdin, and nothing left behind.

mod common;
use rfake::exit::ExitKind;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn fakeroot_inside_same_user_outside() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("fakeroot");
    let out = rfake(&t, &["exec", img.to_str().unwrap(), "id"]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with("uid=0(root) gid=0(root)"),
        "{}",
        stdout(&out)
    );

    // Outside: every process rfake started runs as the invoking user.
    let me = nix::unistd::getuid().as_raw();
    let t = tag("outside");
    let run = spawn(
        &t,
        &[
            "exec",
            img.to_str().unwrap(),
            "sh",
            "-c",
            "echo ready; sleep 30",
        ],
    );
    run.expect_line("ready");
    let pids = processes_tagged(&t);
    assert!(pids.len() >= 3, "rfake, squashfuse, sh: {pids:?}");
    for pid in &pids {
        // A process that ended since it was listed has nothing to check.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uids: Vec<u32> = uid_line
            .split_whitespace()
            .skip(1)
            .map(|u| u.parse().unwrap())
            .collect();
        assert!(uids.iter().all(|u| *u == me), "pid {pid}: {uid_line}");
        // Capabilities shown in /proc are those of the process's own user
        // namespace; check it is not the host's, so they grant nothing here.
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
        let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
        let no_caps = status.lines().any(|l| l == "CapEff:\t0000000000000000");
        assert!(
            ns != host_ns || no_caps,
            "pid {pid} is privileged on the host"
        );
    }
    // The host never sees the container's mounts, even while it runs.
    assert_eq!(host_rfake_mounts(), Vec::<String>::new());
    run.signal(Signal::SIGTERM);
    let (status, _, _) = run.wait();
    assert_eq!(status.code(), Some(143));
    assert_nothing_left(&t);
}

#[test]
fn keep_id_keeps_the_users_uid() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let out = rfake(
        &tag("keepid"),
        &["exec", "--keep-id", img.to_str().unwrap(), "id", "-u"],
    );
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        nix::unistd::getuid().as_raw().to_string()
    );
}

#[test]
fn reads_a_file_of_the_image_in_every_format() {
    let Some(env) = setup() else { return };
    for name in ["demo.sqfs", "demo.sif", "demo"] {
        let img = env.image(name);
        let t = tag("read");
        let out = rfake(
            &t,
            &["exec", img.to_str().unwrap(), "cat", "/etc/rfake-demo.txt"],
        );
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "hello from the demo image\n", "{name}");
        assert_nothing_left(&t);
    }
}

#[test]
fn real_apptainer_sif_runs_busybox() {
    let Some(_env) = setup() else { return };
    let Some(sifs) = sif_dir() else { return };
    if std::env::consts::ARCH != "x86_64" {
        missing("an amd64 host for busybox_amd64.sif");
        return;
    }
    let img = sifs.join("busybox_amd64.sif");
    let t = tag("busybox");
    let out = rfake(
        &t,
        &[
            "exec",
            img.to_str().unwrap(),
            "busybox",
            "echo",
            "hello from SIF",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "hello from SIF\n");
    assert_nothing_left(&t);
}

#[test]
fn exit_statuses_pass_through() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let img = img.to_str().unwrap();
    let cases: [(&[&str], i32); 7] = [
        (&["true"], 0),
        (&["false"], 1),
        (&["sh", "-c", "exit 42"], 42),
        (&["/bin/not-executable"], 126),
        (&["no-such-command"], 127),
        (&["sh", "-c", "kill -KILL $$"], 128 + 9),
        (&["sh", "-c", "kill -TERM $$"], 128 + 15),
    ];
    for (cmd, code) in cases {
        let t = tag("status");
        let mut args = vec!["exec", img];
        args.extend_from_slice(cmd);
        let out = rfake(&t, &args);
        assert_status(&out, code);
        assert_nothing_left(&t);
    }
}

#[test]
fn command_errors_name_the_command() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let out = rfake(
        &tag("nf"),
        &["exec", img.to_str().unwrap(), "no-such-command"],
    );
    assert_exit(&out, ExitKind::CommandNotFound);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("rfake["), "{err}");
    assert!(
        err.contains("no-such-command: command not found in the image"),
        "{err}"
    );

    let out = rfake(
        &tag("nx"),
        &["exec", img.to_str().unwrap(), "/bin/not-executable"],
    );
    assert_exit(&out, ExitKind::CannotExecute);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/bin/not-executable: found in the image"),
        "{err}"
    );
    assert!(err.contains("not executable"), "{err}");
}

#[test]
fn signals_reach_the_payload() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    for (sig, name) in [
        (Signal::SIGTERM, "TERM"),
        (Signal::SIGINT, "INT"),
        (Signal::SIGHUP, "HUP"),
        (Signal::SIGQUIT, "QUIT"),
        (Signal::SIGUSR1, "USR1"),
        (Signal::SIGUSR2, "USR2"),
    ] {
        let t = tag("signal");
        let script = format!(
            "trap 'echo got-{name}; exit 7' {name}; echo ready; while true; do sleep 0.05; done"
        );
        let run = spawn(&t, &["exec", img.to_str().unwrap(), "sh", "-c", &script]);
        run.expect_line("ready");
        run.signal(sig);
        let (status, rest, err) = run.wait();
        assert_eq!(status.code(), Some(7), "{name}: {err}");
        assert_eq!(rest, vec![format!("got-{name}")], "{name}");
        assert_nothing_left(&t);
    }
}

#[test]
fn stdin_is_piped_through() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let mut child = command(&tag("stdin"))
        .args([
            "exec",
            img.to_str().unwrap(),
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped data\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "PIPED DATA\ndone\n");
}

#[test]
fn run_uses_the_runscript_and_shell_reads_stdin() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sif");
    let out = rfake(&tag("run"), &["run", img.to_str().unwrap(), "echo", "arg"]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "rfake demo image: runscript\narg\n");

    let mut child = command(&tag("shell"))
        .args(["shell", img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo $((6*7))\nexit 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_status(&out, 3);
    assert_eq!(stdout(&out), "42\n");
}

#[test]
fn container_mounts_are_nosuid_and_share_dev_shm() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let marker = format!("shm-marker-{}", std::process::id());
    let host_file = std::path::Path::new("/dev/shm").join(&marker);
    std::fs::write(&host_file, "shared").unwrap();
    let script = format!("cat /dev/shm/{marker}; echo; cat /proc/self/mountinfo");
    let out = rfake(
        &tag("mounts"),
        &["exec", img.to_str().unwrap(), "sh", "-c", &script],
    );
    std::fs::remove_file(&host_file).unwrap();
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("shared"));
    let mounts: Vec<&str> = lines.collect();
    let root = mounts
        .iter()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("root mount");
    // The image itself, or an overlay over it when a mount point (the home
    // directory) is missing from the image.
    assert!(
        root.contains("fuse.squashfuse") || root.contains(" - overlay rfake-root "),
        "{root}"
    );
    assert!(root.contains(" ro,"), "the root is read-only: {root}");
    for line in &mounts {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mount_point, opts) = (fields[4], fields[5]);
        assert!(opts.contains("nosuid"), "{line}");
        let device_ok = mount_point == "/dev" || mount_point.starts_with("/dev/");
        if !device_ok {
            assert!(opts.contains("nodev"), "{line}");
        }
        assert!(!mount_point.starts_with("/oldroot"), "{line}");
    }
    assert!(
        mounts
            .iter()
            .any(|l| l.split_whitespace().nth(4) == Some("/proc"))
    );
    assert!(
        mounts
            .iter()
            .any(|l| l.split_whitespace().nth(4) == Some("/dev/shm"))
    );
}

#[test]
fn teardown_after_sigkill_of_rfake() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("sigkill");
    let run = spawn(
        &t,
        &[
            "exec",
            img.to_str().unwrap(),
            "sh",
            "-c",
            "echo ready; sleep 60",
        ],
    );
    run.expect_line("ready");
    assert!(processes_tagged(&t).len() >= 3);
    run.signal(Signal::SIGKILL);
    let (status, _, _) = run.wait();
    assert_eq!(status.signal_number(), Some(9));
    assert_nothing_left(&t);
}

#[test]
fn orphans_of_the_payload_do_not_survive() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("orphans");
    let out = rfake(
        &t,
        &[
            "exec",
            img.to_str().unwrap(),
            "sh",
            "-c",
            "sleep 60 & exit 5",
        ],
    );
    assert_status(&out, 5);
    assert_nothing_left(&t);
}

trait SignalNumber {
    fn signal_number(&self) -> Option<i32>;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.signal()
    }
}

#[test]
fn images_and_squashfuse_under_tmp_work() {
    // /tmp is where rfake's staging tmpfs goes in its own namespace; the
    // host's /tmp must still be reachable for the image and the server.
    let Some(env) = setup() else { return };
    let d = tempfile::Builder::new()
        .prefix("under-tmp-")
        .tempdir_in("/tmp")
        .unwrap();
    let img = d.path().join("copy.sqfs");
    std::fs::copy(env.image("demo.sqfs"), &img).unwrap();
    let wrapper = d.path().join("my-squashfuse");
    let real = ["/usr/bin/squashfuse_ll", "/usr/bin/squashfuse"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("squashfuse installed");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {real} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = tag("undertmp");
    let out = command(&t)
        .env("RFAKE_SQUASHFUSE", &wrapper)
        .args(["exec", img.to_str().unwrap(), "cat", "/etc/rfake-demo.txt"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "hello from the demo image\n");
    assert_nothing_left(&t);
}
