//! Ranks on one node sharing one container: one user and mount namespace,
//! one squashfuse, torn down after the last member, whoever crashes.

mod common;
use rfake::exit::ExitKind;

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
    assert_exit(&out, ExitKind::NoInput);
    let err = stderr(&out);
    assert!(err.contains("/no/such/dir"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = rfake(&t, &["exec", "--join", img.to_str().unwrap(), "true"]);
    assert_exit(&out, ExitKind::Usage);
    assert!(stderr(&out).contains("--join-key"), "{}", stderr(&out));
    assert_nothing_left(&t);
}

/// A rank whose payload prints "up", then waits for its stdin to close;
/// its stderr is read line by line.
struct Waiting {
    child: std::process::Child,
    err: std::sync::mpsc::Receiver<String>,
}

impl Waiting {
    fn start(t: &str, config: &Path, key: &str, img: &Path) -> Waiting {
        use std::io::BufRead;
        let mut child = command(t)
            .env("RFAKE_CONFIG", config)
            .args(["exec", "--join-key", key])
            .arg(img)
            .args(["sh", "-c", "echo up; read x; echo done"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "up\n", "the rank did not start");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Waiting { child, err: rx }
    }

    /// Wait (bounded) for a stderr line containing `needle`.
    #[track_caller]
    fn err_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.err.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
                seen.push(line);
            }
        }
        panic!("no stderr line with {needle:?}; saw {seen:?}");
    }

    /// Let the payload end; the rest of stderr.
    fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        self.err.iter().collect()
    }
}

fn server_pids(tag: &str) -> Vec<u32> {
    processes_tagged(tag)
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "rfake-fuse"
        })
        .collect()
}

#[test]
fn a_dead_server_is_reported_to_every_rank_and_not_handed_out_again() {
    // Issue 19, defect 4: the image server of a joined container killed,
    // its ranks said nothing, and a later rank of the step joined the dead
    // container (ENOTCONN). With warm mounts on, the joined container is
    // built on the warm mount and the warm keeper's server is the one.
    let Some(env) = setup() else { return };
    let dir = tempfile::Builder::new()
        .prefix("join-dead-")
        .tempdir()
        .unwrap();
    // An image of this test's own: a warm mount is shared by every launch of
    // an image, whatever test it is in.
    let img = dir.path().join("demo.sqfs");
    std::fs::copy(env.image("demo.sqfs"), &img).unwrap();
    let img = std::fs::canonicalize(img).unwrap();
    for linger in ["0", "1"] {
        let config = dir.path().join(format!("site-{linger}.toml"));
        std::fs::write(&config, format!("warm_linger = {linger}\n")).unwrap();
        let t = tag("joindead");
        let key = format!("dead-{linger}-{}", std::process::id());
        let ranks: Vec<Waiting> = (0..2)
            .map(|_| Waiting::start(&t, &config, &key, &img))
            .collect();
        let server = server_pids(&t);
        assert_eq!(server.len(), 1, "linger {linger}: one server");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server[0] as i32),
            Signal::SIGKILL,
        )
        .unwrap();
        for r in &ranks {
            let line = r.err_line("image server");
            assert_eq!(
                line,
                format!(
                    "rfake[{}]: error: the image server (pid {}) for {} was killed by SIGKILL; \
                     the container's files are gone",
                    r.child.id(),
                    server[0],
                    img.display()
                ),
                "linger {linger}"
            );
        }
        // A rank of the same step arriving now gets a working container.
        let out = command(&t)
            .env("RFAKE_CONFIG", &config)
            .args(["exec", "--join-key", &key])
            .arg(&img)
            .args(["cat", "/etc/rfake-demo.txt"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "hello from the demo image\n");
        for r in ranks {
            let rest = r.finish();
            assert!(
                rest.iter().all(|l| !l.contains("image server")),
                "linger {linger}: said twice: {rest:?}"
            );
        }
        assert_nothing_left(&t);
    }
}
