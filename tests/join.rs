//! Ranks on one node sharing one container: one user and mount namespace,
//! one squashfuse, torn down after the last member, whoever crashes.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `sh -c` printing the namespaces, waiting for `release` to exist.
fn member_script(release: &str) -> String {
    format!(
        "echo $(id -u) $(readlink /proc/self/ns/user) $(readlink /proc/self/ns/mnt); \
         i=0; while [ ! -e {release} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done"
    )
}

/// Image servers running for `tag`: rfake's own (named rfake-fuse) or
/// squashfuse.
fn server_count(tag: &str) -> usize {
    processes_tagged(tag)
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "rfake-fuse" || comm.starts_with("squashfuse")
        })
        .count()
}

/// One rank: `rfake exec --join-key KEY IMAGE sh -c SCRIPT`.
fn rank(t: &str, key: &str, img: &Path, script: &str) -> Running {
    spawn(
        t,
        &[
            "exec",
            "--join-key",
            key,
            img.to_str().unwrap(),
            "sh",
            "-c",
            script,
        ],
    )
}

#[test]
fn ranks_with_one_key_share_one_container_and_one_server() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = tempfile::Builder::new()
        .prefix("join-")
        .tempdir_in(home())
        .unwrap();
    let release = dir.path().join("release");
    let t = tag("join");
    let key = format!("test-{}", std::process::id());
    let script = member_script(release.to_str().unwrap());
    let ranks: Vec<Running> = (0..3).map(|_| rank(&t, &key, &img, &script)).collect();
    let lines: Vec<String> = ranks.iter().map(|r| r.next_line("a rank")).collect();
    assert!(
        lines.iter().all(|l| l == &lines[0]),
        "one container: {lines:?}"
    );
    assert!(
        lines[0].starts_with("0 "),
        "fakeroot without a launcher: {lines:?}"
    );
    assert_eq!(server_count(&t), 1, "one server for all ranks");
    std::fs::write(&release, "").unwrap();
    for r in ranks {
        let (status, _, err) = r.wait();
        assert_eq!(status.code(), Some(0), "{err}");
    }
    assert_nothing_left(&t);
}

#[test]
fn the_first_rank_crashing_does_not_take_the_others_down() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let dir = tempfile::Builder::new()
        .prefix("join-crash-")
        .tempdir_in(home())
        .unwrap();
    let release = dir.path().join("release");
    let t = tag("joincrash");
    let key = format!("crash-{}", std::process::id());
    let script = format!(
        "{}; cat /etc/rfake-demo.txt",
        member_script(release.to_str().unwrap())
    );
    let first = rank(&t, &key, &img, &script);
    first.next_line("first rank up");
    let second = rank(&t, &key, &img, &script);
    second.next_line("second rank up");
    first.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let (status, _, _) = first.wait();
    assert_eq!(status.code(), None);
    // Its stderr ends with it: nothing the keeper started (the image
    // server) holds it open while the second rank still runs.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "the first rank's stderr stayed open for {:.1?} after it was killed",
        killed.elapsed()
    );
    std::fs::write(&release, "").unwrap();
    let (status, rest, err) = second.wait();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(rest, vec!["hello from the demo image".to_string()]);
    assert_nothing_left(&t);
}

#[test]
fn every_rank_killed_leaves_nothing() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("joinkill");
    let key = format!("kill-{}", std::process::id());
    let ranks: Vec<Running> = (0..2)
        .map(|_| rank(&t, &key, &img, "echo up; sleep 60"))
        .collect();
    for r in &ranks {
        r.expect_line("up");
    }
    for r in ranks {
        r.signal(Signal::SIGKILL);
        r.wait();
    }
    assert_nothing_left(&t);
}

#[test]
fn launchers_keep_the_uid_and_join_by_default() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let me = nix::unistd::getuid().as_raw();
    let step = format!("{}", std::process::id());
    let run = |extra: &[&str]| {
        let t = tag("launcher");
        let out = command(&t)
            .env("SLURM_JOB_ID", "7")
            .env("SLURM_STEP_ID", &step)
            .env("SLURM_PROCID", "0")
            .args(["-v", "exec"])
            .args(extra)
            .args([
                img.to_str().unwrap(),
                "sh",
                "-c",
                "id -u; readlink /proc/self/ns/user",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_nothing_left(&t);
        out
    };
    let out = run(&[]);
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with(&format!("{me}\n")),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("keeping your uid"), "{err}");
    assert!(
        err.contains(&format!("slurm.7.{step}")),
        "joined by the step: {err}"
    );
    let out = run(&["--fakeroot"]);
    assert!(stdout(&out).starts_with("0\n"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("PMIx server may refuse"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--no-join"]);
    assert_status(&out, 0);
    assert!(
        !stderr(&out).contains("joining") && !stderr(&out).contains("first rank"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_container_that_cannot_be_built_fails_every_rank_clearly() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("joinfail");
    let key = format!("fail-{}", std::process::id());
    let out = rfake(
        &t,
        &[
            "exec",
            "--join-key",
            &key,
            "-B",
            "/no/such/dir:/x",
            img.to_str().unwrap(),
            "true",
        ],
    );
    assert_status(&out, 66);
    let err = stderr(&out);
    assert!(err.contains("/no/such/dir"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = rfake(&t, &["exec", "--join", img.to_str().unwrap(), "true"]);
    assert_status(&out, 64);
    assert!(stderr(&out).contains("--join-key"), "{}", stderr(&out));
    assert_nothing_left(&t);
}
