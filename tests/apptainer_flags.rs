//! Apptainer's launch flags with Apptainer's meaning, end to end as an
//! unprivileged user: -c/-C, -H, --cwd, --no-mount, --mount, -W, -S,
//! --writable-tmpfs=SIZE, the PID/IPC/UTS/network namespaces (what `ps`,
//! `hostname`, `ipcs` and the namespace links show; the init passing
//! signals on and the status through; nothing left behind), the current
//! directory bound, and the refusals.

mod common;
use std::path::{Path, PathBuf};

use common::*;
use nix::sys::signal::Signal;
use rfake::exit::ExitKind;

/// A scratch directory of the test user's own, removed on drop.
fn workdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("aflags-{name}-"))
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The namespace `kind` of this (host) process, as `readlink` shows it.
fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// `-C`: the payload is process 2 under rfake's init, `ps` shows only the
/// container's processes, the IPC namespace is new and the environment
/// clean; the exit status passes through.
#[test]
fn containall_pid_ipc_cleanenv() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("containall");
    let mut cmd = command(&t);
    cmd.env("FROM_HOST", "1").args([
        "exec",
        "-C",
        s(&img),
        "sh",
        "-c",
        "echo pid=$$; ps -o pid,comm | tail -n +2; readlink /proc/self/ns/ipc /proc/self/ns/pid; \
         echo host=${FROM_HOST:-unset}; exit 7",
    ]);
    let out = cmd.output().unwrap();
    assert_status(&out, 7);
    let text = stdout(&out);
    assert!(text.contains("pid=2\n"), "{text}");
    let ps: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .collect();
    // rfake's init (1), sh (2), ps and tail: nothing of the host's.
    assert!(ps[0].trim_start().starts_with("1 "), "{text}");
    assert!(ps.len() <= 4, "only the container's processes: {text}");
    assert!(
        !text.contains(&host_ns("ipc")),
        "a new IPC namespace: {text}"
    );
    assert!(
        !text.contains(&host_ns("pid")),
        "a new PID namespace: {text}"
    );
    assert!(text.contains("host=unset"), "--cleanenv: {text}");
    assert_nothing_left(&t);
}

/// `--pid` with `--keep-id`: the init mounts the namespace's /proc before
/// the payload becomes the user; statuses pass through exactly (code,
/// 128+signal); background processes of the payload are killed with it.
#[test]
fn pid_namespace_statuses_and_leftovers() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let me = nix::unistd::getuid().as_raw();
    let t = tag("pid-keep-id");
    let out = rfake(
        &t,
        &[
            "exec",
            "--pid",
            "--keep-id",
            s(&img),
            "sh",
            "-c",
            "id -u; ls /proc | grep -c '^[0-9]'",
        ],
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], me.to_string(), "{text}");
    let count: u32 = lines[1].parse().unwrap();
    assert!(count <= 4, "init, sh, ls, grep only: {text}");

    for (script, want) in [
        ("exit 0", 0),
        ("exit 42", 42),
        ("kill -KILL $$", 137),
        ("kill -TERM $$", 143),
    ] {
        let out = rfake(&t, &["exec", "-p", "-u", s(&img), "sh", "-c", script]);
        assert_status(&out, want);
    }
    // Processes left running in the background end with the payload.
    let out = rfake(
        &t,
        &[
            "exec",
            "--pid",
            s(&img),
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & echo started",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "started\n");
    assert_nothing_left(&t);
}

/// SIGTERM to rfake reaches the payload through the init (a payload that
/// traps it exits as it chooses; one that does not dies of it), and a
/// SIGKILL of rfake takes the whole namespace with it.
#[test]
fn pid_namespace_signals() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("pid-signals");
    let run = spawn(
        &t,
        &[
            "exec",
            "--pid",
            s(&img),
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    run.expect_line("ready");
    run.signal(Signal::SIGTERM);
    let (status, rest, err) = run.wait();
    assert_eq!(status.code(), Some(3), "{rest:?} {err}");
    assert_eq!(rest, ["got TERM"], "{err}");

    let run = spawn(
        &t,
        &[
            "exec",
            "--pid",
            s(&img),
            "sh",
            "-c",
            "echo ready; exec sleep 1000",
        ],
    );
    run.expect_line("ready");
    run.signal(Signal::SIGTERM);
    let (status, _, err) = run.wait();
    assert_eq!(status.code(), Some(143), "{err}");

    let run = spawn(
        &t,
        &[
            "exec",
            "--pid",
            s(&img),
            "sh",
            "-c",
            "sleep 1000 & echo ready; wait",
        ],
    );
    run.expect_line("ready");
    run.signal(Signal::SIGKILL);
    let (status, _, _) = run.wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_nothing_left(&t);
}

/// `--uts`/`--hostname`, `--ipc` and `--net --network none`: the host
/// name is the one given, the namespaces are new, only loopback is there
/// and up; the host's System V segments are not visible with --ipc.
#[test]
fn uts_ipc_net() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("uts-net");
    let out = rfake(
        &t,
        &[
            "exec",
            "--hostname",
            "box-1",
            "-n",
            "--network",
            "none",
            s(&img),
            "sh",
            "-c",
            "hostname; readlink /proc/self/ns/uts /proc/self/ns/net; \
             ip -o link | cut -d' ' -f2,3",
        ],
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("box-1\n"), "{text}");
    assert!(
        !text.contains(&host_ns("uts")) && !text.contains(&host_ns("net")),
        "{text}"
    );
    assert!(
        text.ends_with("lo: <LOOPBACK,UP,LOWER_UP>\n"),
        "only loopback, up: {text}"
    );
    // --uts alone keeps the host's name in a namespace of its own.
    let out = rfake(&t, &["exec", "--uts", s(&img), "hostname"]);
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        nix::unistd::gethostname().unwrap().to_str().unwrap()
    );

    // ipcs: a segment the user made on the host is seen without --ipc only.
    let Some(mpi) = std::env::var_os("RFAKE_MPI_IMAGE").map(PathBuf::from) else {
        missing("the MPI test image (ipcs), RFAKE_MPI_IMAGE unset");
        return;
    };
    if !have("ipcmk") {
        missing("ipcmk (util-linux) on the host");
        return;
    }
    let made = host("ipcmk", &["-M", "4096"]);
    let id = made.split_whitespace().last().unwrap().to_string();
    let seen = |flags: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend([s(&mpi), "ipcs", "-m"]);
        let out = rfake(&t, &args);
        assert_status(&out, 0);
        stdout(&out).split_whitespace().any(|w| w == id)
    };
    let without = seen(&[]);
    let with = seen(&["-i"]);
    host("ipcrm", &["-m", &id]);
    assert!(without, "the host's segment {id} without --ipc");
    assert!(!with, "no host segment with --ipc");
    assert_nothing_left(&t);
}

/// Ranks sharing a container (`--join-key`) with `-C --hostname` share
/// one set of namespaces: each sees the other's payload in `ps` (and no
/// host process), the same PID, IPC and UTS namespaces; statuses pass
/// through per rank; nothing is left when both are done.
#[test]
fn joined_ranks_share_the_namespaces() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("joined-ns");
    let w = workdir("joined");
    let release = w.path().join("release");
    let key = format!("ns-{}", std::process::id());
    let script = |name: &str, other: &str, code: u32| {
        format!(
            "echo {name} $(hostname) $(readlink /proc/self/ns/pid) $(readlink /proc/self/ns/ipc) \
             $(readlink /proc/self/ns/uts); ps -o comm,args | grep -c '^sh .*[e]cho {other} '; i=0; \
             while [ ! -e {rel} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; exit {code}",
            rel = "/rel/release"
        )
    };
    // -C hides the host's /tmp, /var/tmp and home: the release file comes
    // through a bind.
    let bind = format!("{}:/rel", w.path().display());
    let rank = |name: &str, code: u32| {
        spawn(
            &t,
            &[
                "exec",
                "-B",
                &bind,
                "-C",
                "--hostname",
                "nodebox",
                "--join-key",
                &key,
                s(&img),
                "sh",
                "-c",
                &script(name, if name == "a" { "b" } else { "a" }, code),
            ],
        )
    };
    let a = rank("a", 3);
    let first_a = a.next_line("rank a");
    let shells_a = a.next_line("rank a's ps");
    let b = rank("b", 4);
    let first_b = b.next_line("rank b");
    let shells_b = b.next_line("rank b's ps");
    std::fs::write(&release, "").unwrap();
    let (status_a, rest_a, err_a) = a.wait();
    let (status_b, rest_b, err_b) = b.wait();
    assert_eq!(status_a.code(), Some(3), "{err_a}");
    assert_eq!(status_b.code(), Some(4), "{err_b}");
    let words_a: Vec<&str> = first_a.split(' ').collect();
    let words_b: Vec<&str> = first_b.split(' ').collect();
    assert_eq!(words_a[1], "nodebox", "{first_a}");
    assert_eq!(
        words_a[2..],
        words_b[2..],
        "one set of namespaces: {first_a} / {first_b}"
    );
    for ns in ["pid", "ipc", "uts"] {
        assert!(
            !first_a.contains(&host_ns(ns)),
            "a new {ns} namespace: {first_a}"
        );
    }
    // Rank b's ps sees rank a's shell (waiting for the release); rank a,
    // alone then, none of b's.
    assert_eq!((shells_a.as_str(), shells_b.as_str()), ("0", "1"));
    assert!(
        rest_a.is_empty() && rest_b.is_empty(),
        "{rest_a:?} {rest_b:?}"
    );
    assert_nothing_left(&t);
}

/// Refusals, each with its status and reason: other networks, --net alone,
/// --app, a bad --hostname, a bad --no-mount word.
#[test]
fn refusals() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("refusals");
    for (args, kind, want) in [
        (
            vec!["--net"],
            ExitKind::Refused,
            "--net: Apptainer's default network is a bridge",
        ),
        (
            vec!["--network", "bridge"],
            ExitKind::Refused,
            "--network bridge: rfake makes only --network none",
        ),
        (
            vec!["--app", "foo"],
            ExitKind::Refused,
            "--app foo: SCIF apps are not supported",
        ),
        (
            vec!["--hostname", "a b"],
            ExitKind::Usage,
            "--hostname a b: a host name is",
        ),
        (
            vec!["--no-mount", "home,bogus"],
            ExitKind::Usage,
            "--no-mount bogus: unknown mount",
        ),
        (
            vec!["--mount", "type=volume,src=/a,dst=/b"],
            ExitKind::Usage,
            "only type=bind",
        ),
        (
            vec!["-S", "rel"],
            ExitKind::Usage,
            "--scratch rel: must be an absolute path",
        ),
        (
            vec!["-W", "/nonexistent/w"],
            ExitKind::Usage,
            "--workdir /nonexistent/w: not an existing directory",
        ),
        (
            vec!["--writable-tmpfs=12Q"],
            ExitKind::Usage,
            "--writable-tmpfs=12Q:",
        ),
    ] {
        let mut a = vec!["exec"];
        a.extend(args.iter().copied());
        a.extend([s(&img), "true"]);
        let out = rfake(&t, &a);
        assert_exit(&out, kind);
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert_nothing_left(&t);
}

/// `-c -W DIR`: /tmp, /var/tmp and the home are DIR/tmp, DIR/var_tmp and
/// DIR/home on disk, owned by the user; `-S` directories are under
/// DIR/scratch, or tmpfs without -W.
#[test]
fn workdir_and_scratch() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("workdir");
    let w = workdir("w");
    let out = rfake(
        &t,
        &[
            "exec",
            "-c",
            "-W",
            s(w.path()),
            "-S",
            "/scratch/a,/s2",
            s(&img),
            "sh",
            "-c",
            "echo t > /tmp/t && echo v > /var/tmp/v && echo h > ~/h && echo a > /scratch/a/a \
             && echo b > /s2/b",
        ],
    );
    assert_status(&out, 0);
    let me = nix::unistd::getuid().as_raw();
    for (file, text) in [
        ("tmp/t", "t\n"),
        ("var_tmp/v", "v\n"),
        ("home/h", "h\n"),
        ("scratch/scratch/a/a", "a\n"),
        ("scratch/s2/b", "b\n"),
    ] {
        let path = w.path().join(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "{file}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), me, "{file}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.path().join("tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o1777);

    // Without -W: -S is an empty tmpfs; -c gives /var/tmp a private tmpfs.
    let out = rfake(
        &t,
        &[
            "exec",
            "-c",
            "-S",
            "/s3",
            s(&img),
            "sh",
            "-c",
            "ls -A /s3 | wc -l; df /s3 /var/tmp | tail -n +2 | cut -d' ' -f1",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "0\nrfake-tmpfs\nrfake-tmpfs\n");
    assert_nothing_left(&t);
}

/// `--mount`: Docker's form, read-only, a path with ',' (CSV-quoted) and
/// ':'; `--no-mount` leaves home, tmp and dev out; `-H` and `--cwd` are
/// the short and Apptainer spellings of --home and --pwd.
#[test]
fn mount_no_mount_and_spellings() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("mount");
    let w = workdir("m");
    let odd = w.path().join("a,b:c");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("f"), "x").unwrap();
    let spec = format!(
        "type=bind,\"source={}\",destination=/data,readonly",
        odd.display()
    );
    let out = rfake(
        &t,
        &[
            "exec",
            "--mount",
            &spec,
            s(&img),
            "sh",
            "-c",
            "cat /data/f; touch /data/g",
        ],
    );
    assert_status(&out, 1);
    assert_eq!(stdout(&out), "x");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );

    // From /: the current directory (the home, where the tests run) would
    // be bound as such (as Apptainer does with --no-home).
    let out = command(&t)
        .current_dir("/")
        .args([
            "exec",
            "--no-mount",
            "home,tmp",
            "--no-mount",
            "dev",
            s(&img),
            "sh",
            "-c",
            "ls -A ~ /tmp /dev 2>&1 | wc -l; cat /proc/self/mountinfo",
        ])
        .output()
        .unwrap();
    assert_status(&out, 0);
    let text = stdout(&out);
    let home = home();
    for gone in [
        format!(" {} ", home.display()),
        " /tmp ".into(),
        " /dev ".into(),
    ] {
        assert!(!text.contains(&gone), "{gone} not mounted: {text}");
    }

    let out = rfake(
        &t,
        &[
            "exec",
            "-H",
            &format!("{}:/myhome", s(w.path())),
            "--cwd",
            "/myhome",
            s(&img),
            "sh",
            "-c",
            "pwd; ls /myhome",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "/myhome\na,b:c\n");
    assert_nothing_left(&t);
}

/// The current directory outside home is bound at its own path (as
/// Apptainer), so `cd DIR && rfake exec img ./prog` works; not with
/// --no-mount cwd, --contain or mount_cwd = false.
#[test]
fn current_directory_is_bound() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("cwd");
    let w = workdir("cwd");
    let run = w.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("prog"), "#!/bin/sh\necho prog in $(pwd)\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(run.join("prog"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let in_run = |args: &[&str]| command(&t).current_dir(&run).args(args).output().unwrap();
    let out = in_run(&["exec", s(&img), "./prog"]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), format!("prog in {}\n", run.display()));
    assert!(!stderr(&out).contains("not bound"), "{}", stderr(&out));

    let out = in_run(&["exec", "--no-mount", "cwd", s(&img), "pwd"]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), format!("{}\n", home().display()));
    assert!(
        stderr(&out).contains("is not bound into the container"),
        "{}",
        stderr(&out)
    );
    let out = in_run(&["exec", "-c", s(&img), "pwd"]);
    assert_status(&out, 0);
    assert_eq!(stdout(&out), format!("{}\n", home().display()));
    // A site (or user) file with mount_cwd = false: not bound, and -v says
    // why.
    let site = w.path().join("site.toml");
    std::fs::write(&site, "warm_linger = 0\nmount_cwd = false\n").unwrap();
    let out = command(&t)
        .current_dir(&run)
        .env("RFAKE_CONFIG", &site)
        .args(["-vv", "exec", s(&img), "pwd"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert_eq!(stdout(&out), format!("{}\n", home().display()));
    assert!(
        stderr(&out).contains(&format!(
            "the current directory {} is not bound: mount_cwd = false in {}:2",
            run.display(),
            site.display()
        )),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&t);
}

/// `--writable-tmpfs=SIZE` sizes the writable layer; `--no-privs` leaves
/// root inside no capability.
#[test]
fn writable_tmpfs_size_and_no_privs() {
    let Some(env) = setup() else { return };
    let img = env.image("demo.sqfs");
    let t = tag("wtmpfs");
    let out = rfake(
        &t,
        &[
            "exec",
            "--writable-tmpfs=2M",
            s(&img),
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1M count=3 2>/dev/null; echo $?",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "1\n", "the 3rd MiB does not fit");
    let out = rfake(
        &t,
        &[
            "exec",
            "--writable-tmpfs",
            s(&img),
            "sh",
            "-c",
            "touch /new && echo ok",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "ok\n");

    let out = rfake(
        &t,
        &[
            "exec",
            "--no-privs",
            s(&img),
            "sh",
            "-c",
            "grep CapEff /proc/self/status; id -u",
        ],
    );
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "CapEff:\t0000000000000000\n0\n");
    let out = rfake(
        &t,
        &[
            "exec",
            "--keep-privs",
            s(&img),
            "sh",
            "-c",
            "grep CapEff /proc/self/status",
        ],
    );
    assert_status(&out, 0);
    assert_ne!(stdout(&out), "CapEff:\t0000000000000000\n");
    assert_nothing_left(&t);
}
