//! The built-in FUSE server and warm mounts: launches of one image share one
//! mount while it lingers, a replaced image gets a fresh one, the linger
//! ends with nothing left, and the external squashfuse is still selectable.
//! Run as an unprivileged user (tests/run.sh does).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory with a site file of its own.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(text: &str) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("warm-test-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("site.toml"), text).unwrap();
        Site { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, tag: &str) -> Command {
        let mut cmd = command(tag);
        cmd.env("RFAKE_CONFIG", self.path("site.toml"))
            .stdin(Stdio::null());
        cmd
    }

    fn exec(&self, tag: &str, image: &Path, script: &str) -> Output {
        self.command(tag)
            // In /: no warning about the start directory.
            .args(["exec", "--no-mount", "home,cwd", "--pwd", "/"])
            .arg(image)
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Build an image holding `/v` (with `content`) and a hard link `/w`.
    fn image(&self, tag: &str, name: &str, content: &str) -> PathBuf {
        let src = self.path(&format!("{name}.src"));
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("v"), content).unwrap();
        std::fs::hard_link(src.join("v"), src.join("w")).unwrap();
        // The payload needs a shell: the test image's busybox.
        std::fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
        for tool in ["cat", "stat"] {
            std::os::unix::fs::symlink("busybox", src.join("bin").join(tool)).unwrap();
        }
        // Every default mount point, so the root needs no overlay and a
        // file's device is the image mount's own.
        for dir in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(src.join(dir)).unwrap();
        }
        for file in ["etc/passwd", "etc/group", "etc/resolv.conf", "etc/hosts"] {
            std::fs::write(src.join(file), "").unwrap();
        }
        let out = self.path(name);
        let built = self
            .command(tag)
            .arg("build")
            .arg(&out)
            .arg(&src)
            .output()
            .unwrap();
        assert_status(&built, 0);
        out
    }
}

/// What a launch reports: the device of the image's files (one per FUSE
/// mount), the inode numbers of the two names of the hard link, /v.
fn probe(site: &Site, tag: &str, image: &Path) -> (String, String, String, String) {
    let out = site.exec(
        tag,
        image,
        "stat -c %d /v; stat -c %i /v; stat -c %i /w; cat /v",
    );
    assert_status(&out, 0);
    let text = stdout(&out);
    let mut lines = text.lines().map(str::to_owned);
    let mut next = || lines.next().unwrap_or_default();
    (next(), next(), next(), next())
}

fn require() -> bool {
    if setup().is_none() {
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        // Fails under CI=true: tests/setup-host.sh installs busybox-static.
        missing("/bin/busybox (busybox-static), the warm test images' userland");
        return false;
    }
    true
}

#[test]
fn launches_share_one_warm_mount_until_the_linger_ends() {
    if !require() {
        return;
    }
    let t = tag("warm-share");
    let site = Site::new("warm_linger = 2\n");
    let image = site.image(&t, "a.sqfs", "one\n");
    let (dev1, ino_v, ino_w, content) = probe(&site, &t, &image);
    assert_eq!(content, "one");
    assert_eq!(ino_v, ino_w, "hard links keep one inode");
    // The keeper and its server stay for the linger...
    let kept = processes_tagged(&t);
    assert!(!kept.is_empty(), "no warm keeper after the first launch");
    let (dev2, ..) = probe(&site, &t, &image);
    assert_eq!(dev1, dev2, "the second launch used another mount");
    assert_eq!(processes_tagged(&t), kept, "a second keeper or server");
    // ...and go when it has passed, leaving nothing.
    let start = Instant::now();
    assert_nothing_left(&t);
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "gone before the linger ended"
    );
    // The next launch starts a new keeper (device numbers may be reused).
    probe(&site, &t, &image);
    let again = processes_tagged(&t);
    assert!(!again.is_empty() && again.iter().all(|p| !kept.contains(p)));
    assert_nothing_left(&t);
}

#[test]
fn a_replaced_image_gets_a_fresh_mount() {
    if !require() {
        return;
    }
    let t = tag("warm-replaced");
    let site = Site::new("warm_linger = 3\n");
    let image = site.image(&t, "a.sqfs", "old\n");
    let (dev1, _, _, content) = probe(&site, &t, &image);
    assert_eq!(content, "old");
    // Replaced the usual way: a new file renamed over the old one.
    let new = site.image(&t, "b.sqfs", "new\n");
    std::fs::rename(&new, &image).unwrap();
    let (dev2, _, _, content) = probe(&site, &t, &image);
    assert_eq!(content, "new");
    assert_ne!(dev1, dev2);
    assert_nothing_left(&t);
}

#[test]
fn linger_zero_mounts_per_launch() {
    if !require() {
        return;
    }
    let t = tag("warm-off");
    let site = Site::new("warm_linger = 0\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    for _ in 0..2 {
        probe(&site, &t, &image);
        assert!(
            processes_tagged(&t).is_empty(),
            "something outlived the launch"
        );
    }
    assert_nothing_left(&t);
}

#[test]
fn the_external_squashfuse_is_still_selectable() {
    if !require() {
        return;
    }
    let t = tag("warm-squashfuse");
    for (config, subtype) in [
        (
            "image_server = \"squashfuse\"\nwarm_linger = 0\n",
            "squashfuse",
        ),
        ("image_server = \"builtin\"\nwarm_linger = 0\n", "rfake"),
    ] {
        let site = Site::new(config);
        let image = site.image(&t, "a.sqfs", "x\n");
        // The server's processes, seen from the host while a payload runs.
        let out = site.exec(&t, &image, "cat /v; sleep 1");
        assert_status(&out, 0);
        let (_, ino_v, ino_w, content) = probe(&site, &t, &image);
        assert_eq!((ino_v == ino_w, content.as_str()), (true, "x"));
        let dry = site
            .command(&t)
            .arg("exec")
            .arg("--dry-run")
            .arg(&image)
            .args(["sh", "-c", "true"])
            .output()
            .unwrap();
        assert_status(&dry, 0);
        let plan = stdout(&dry);
        let want = if subtype == "rfake" {
            "image server: builtin"
        } else {
            "image server: squashfuse"
        };
        assert!(plan.contains(want), "{plan}");
    }
    assert_nothing_left(&t);
}

#[test]
fn a_killed_launch_on_a_warm_mount_leaves_nothing() {
    if !require() {
        return;
    }
    let t = tag("warm-killed");
    let site = Site::new("warm_linger = 0.5\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    let mut child = site
        .command(&t)
        .arg("exec")
        .arg(&image)
        .args(["sh", "-c", "echo up; sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 3];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"up\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert_nothing_left(&t);
}

#[test]
fn the_image_superblock_is_read_only() {
    // Read-only as a superblock, not only as a mount: on a writable
    // superblock every read marks the kernel's cached atime stale, and the
    // next stat of the file is a round trip to the server.
    if !require() {
        return;
    }
    let t = tag("warm-ro-super");
    for config in [
        "image_server = \"builtin\"\nwarm_linger = 0\n",
        "image_server = \"squashfuse\"\nwarm_linger = 0\n",
        "image_server = \"builtin\"\nwarm_linger = 1\n",
    ] {
        let site = Site::new(config);
        let image = site.image(&t, "a.sqfs", "x\n");
        let out = site.exec(&t, &image, "cat /v >/dev/null; cat /proc/self/mountinfo");
        assert_status(&out, 0);
        let text = stdout(&out);
        // "ID PARENT DEV ROOT MOUNTPOINT OPTIONS ... - TYPE SOURCE SUPER-OPTIONS"
        let root = text
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or_else(|| panic!("{config}: no root mount in\n{text}"));
        let (_, fs_part) = root.split_once(" - ").unwrap();
        let fields: Vec<&str> = fs_part.split(' ').collect();
        assert!(fields[0].starts_with("fuse."), "{config}: {root}");
        assert!(
            fields[2].split(',').any(|o| o == "ro"),
            "{config}: a writable superblock: {root}"
        );
    }
    assert_nothing_left(&t);
}

/// Pids of the image servers running for `tag`: rfake's own (named
/// rfake-fuse) or squashfuse.
fn servers(tag: &str) -> Vec<u32> {
    processes_tagged(tag)
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "rfake-fuse" || comm.starts_with("squashfuse")
        })
        .collect()
}

/// Whether process `pid` has ended (a zombie not reaped yet counts).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Wait (bounded) until `cond` holds; panics naming `what`.
#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The one line naming the image server's end that rfake prints for a
/// server killed under a running payload.
fn server_killed_line(rfake_pid: u32, server: u32, image: &Path) -> String {
    format!(
        "rfake[{rfake_pid}]: error: the image server (pid {server}) for {} was killed by SIGKILL; \
         the container's files are gone",
        std::fs::canonicalize(image).unwrap().display()
    )
}

/// A launch whose payload prints "up", then waits for its stdin to close;
/// its stderr is read line by line.
struct Waiting {
    child: std::process::Child,
    err: std::sync::mpsc::Receiver<String>,
}

impl Waiting {
    fn start(mut cmd: Command) -> Waiting {
        use std::io::BufRead;
        let mut child = cmd
            .args(["sh", "-c", "echo up; read x; echo done"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "up\n", "the payload did not start");
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

#[test]
fn a_dead_server_is_not_handed_out_again() {
    // Issue 19, defect 4: the warm keeper's server killed (or OOM-killed,
    // or crashed), every later launch got the dead mount (ENOTCONN, exit
    // 71) until the keeper's linger ended.
    if !require() {
        return;
    }
    let t = tag("warm-dead-server");
    let site = Site::new("warm_linger = 3\n");
    let image = site.image(&t, "a.sqfs", "one\n");
    probe(&site, &t, &image);
    let before = processes_tagged(&t);
    let old = servers(&t);
    assert_eq!(old.len(), 1, "one warm server: {before:?}");
    kill9(old[0]);
    wait_for("the server to die", || ended(old[0]));
    // A listing never read before: the kernel's caches cannot answer it.
    let out = site.exec(&t, &image, "echo /bin/*; cat /v");
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "/bin/busybox /bin/cat /bin/sh /bin/stat\none\n"
    );
    let new = servers(&t);
    assert_eq!(new.len(), 1, "one fresh server");
    assert_ne!(new, old);
    // The old keeper went when its server died, not after its linger.
    wait_for("the old keeper to go", || {
        before
            .iter()
            .all(|p| ended(*p) || !processes_tagged(&t).contains(p))
    });
    assert_nothing_left(&t);
}

#[test]
fn a_server_killed_under_a_payload_is_reported_once() {
    // Issue 19, defect 4: rfake printed nothing when the image server died
    // under a running payload, warm mount or a mount of the launch's own.
    if !require() {
        return;
    }
    let t = tag("warm-server-killed");
    for config in ["warm_linger = 1\n", "warm_linger = 0\n"] {
        let site = Site::new(config);
        let image = site.image(&t, "a.sqfs", "x\n");
        let mut cmd = site.command(&t);
        cmd.args(["exec", "--no-mount", "home,cwd", "--pwd", "/"])
            .arg(&image);
        let run = Waiting::start(cmd);
        let server = servers(&t);
        assert_eq!(server.len(), 1, "{config}");
        kill9(server[0]);
        let line = run.err_line("image server");
        assert_eq!(
            line,
            server_killed_line(run.child.id(), server[0], &image),
            "{config}"
        );
        let rest = run.finish();
        assert!(
            rest.iter().all(|l| !l.contains("image server")),
            "{config}: said twice: {rest:?}"
        );
        assert_nothing_left(&t);
    }
}

#[test]
fn a_warm_keeper_killed_under_a_payload_is_reported_once() {
    // Its server goes with it (parent-death signal); the launch, which is
    // not the server's parent, learns it from the server's pidfd.
    if !require() {
        return;
    }
    let t = tag("warm-keeper-killed");
    let site = Site::new("warm_linger = 1\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    let mut cmd = site.command(&t);
    cmd.args(["exec", "--no-mount", "home,cwd", "--pwd", "/"])
        .arg(&image);
    let run = Waiting::start(cmd);
    let server = servers(&t);
    assert_eq!(server.len(), 1);
    let keeper: Vec<u32> = processes_tagged(&t)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
                == "rfake-warm\n"
        })
        .collect();
    assert_eq!(keeper.len(), 1);
    kill9(keeper[0]);
    let line = run.err_line("image server");
    assert_eq!(
        line,
        format!(
            "rfake[{}]: error: the image server (pid {}) for {} ended with its keeper; \
             the container's files are gone",
            run.child.id(),
            server[0],
            std::fs::canonicalize(&image).unwrap().display()
        )
    );
    let rest = run.finish();
    assert!(
        rest.iter().all(|l| !l.contains("image server")),
        "said twice: {rest:?}"
    );
    assert_nothing_left(&t);
}

/// The warm socket's name, from `--dry-run`.
fn warm_socket(site: &Site, tag: &str, image: &Path, home: Option<&Path>) -> String {
    let mut cmd = site.command(tag);
    if let Some(home) = home {
        cmd.env("HOME", home);
    }
    let out = cmd
        .args(["exec", "--dry-run", "--no-mount", "home,cwd", "--pwd", "/"])
        .arg(image)
        .args(["sh", "-c", "true"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    let plan = stdout(&out);
    plan.lines()
        .find_map(|l| l.strip_prefix("warm mount: socket @"))
        .and_then(|rest| rest.split_once(", linger"))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| panic!("no warm socket in the plan:\n{plan}"))
}

/// Lines of rfake's warnings (not their repetition at exit).
fn warnings(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains(": warning: ")).collect()
}

/// The first subordinate uid of the test user (/etc/subuid), to play
/// another user: a process of the test user's can take that uid in a user
/// namespace of its own (newuidmap), and the kernel then reports it as that
/// uid to everyone outside, like any other user.
fn subordinate_ids() -> Option<(u32, u32)> {
    let user = std::env::var("USER").unwrap_or_default();
    let first = |file: &str| {
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let (who, start) = (f.next()?, f.next()?);
                (who == user || who == nix::unistd::getuid().to_string()).then_some(start)
            })
            .find_map(|s| s.parse::<u32>().ok())
    };
    match (first("/etc/subuid"), first("/etc/subgid")) {
        (Some(u), Some(g)) if have("newuidmap") && have("python3") => Some((u, g)),
        _ => {
            missing(&format!(
                "a subordinate uid and gid range for {user} in /etc/subuid and /etc/subgid, \
                 newuidmap and python3 (tests/setup-host.sh provides them)"
            ));
            None
        }
    }
}

/// Another uid listening on the abstract socket `name` until dropped.
struct Squatter(std::process::Child);

impl Squatter {
    fn start(name: &str, (uid, gid): (u32, u32)) -> Squatter {
        use std::io::BufRead;
        let script = "import socket, sys\n\
                      s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                      s.bind('\\0' + sys.argv[1]); s.listen(16)\n\
                      print('ready', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = Command::new("unshare")
            .args(["--user", "--map-root-user"])
            .arg(format!("--map-users={uid},1,1"))
            .arg(format!("--map-groups={gid},1,1"))
            .args([
                "setpriv",
                "--reuid=1",
                "--regid=1",
                "--clear-groups",
                "python3",
                "-c",
                script,
                name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n", "the squatter did not start");
        Squatter(child)
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_squatted_warm_socket_gives_a_mount_of_the_launchs_own() {
    // Issue 19, defect 5: another user listening on the warm socket's name
    // (seen in /proc/net/unix, say) made every launch of the image fail
    // with exit 77; a warm mount is only an optimisation.
    if !require() {
        return;
    }
    let Some(ids) = subordinate_ids() else { return };
    let t = tag("warm-squat");
    let site = Site::new("warm_linger = 0.5\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    probe(&site, &t, &image);
    assert_nothing_left(&t);
    let name = warm_socket(&site, &t, &image, None);
    let squatter = Squatter::start(&name, ids);
    let out = site.exec(&t, &image, "cat /v");
    assert_status(&out, 0);
    assert_eq!(stdout(&out), "x\n");
    let err = stderr(&out);
    let warned = warnings(&err);
    assert_eq!(warned.len(), 1, "{err}");
    let want = format!(
        ": warning: the warm mount of {}: its rendezvous socket @{name} belongs to uid {}, \
         not to you (another user took the name); this launch makes a mount of its own",
        std::fs::canonicalize(&image).unwrap().display(),
        ids.0
    );
    assert!(warned[0].ends_with(&want), "{err}");
    assert!(processes_tagged(&t).is_empty(), "a keeper was started");
    drop(squatter);
    assert_nothing_left(&t);
}

/// A directory only the test user may enter, as a home or runtime dir.
fn private_dir(site: &Site, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = site.path(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn warm_socket_names_are_keyed_by_a_per_user_secret() {
    // Issue 19, defect 5: the name hashed only the image and the uid, so any
    // user could compute another's and take it first.
    if !require() {
        return;
    }
    let t = tag("warm-secret");
    let site = Site::new("warm_linger = 0.5\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    let homes = [private_dir(&site, "home1"), private_dir(&site, "home2")];
    let mut names = Vec::new();
    for home in &homes {
        let out = site
            .command(&t)
            .env("HOME", home)
            .args(["exec", "--no-mount", "home,cwd", "--pwd", "/"])
            .arg(&image)
            .args(["sh", "-c", "true"])
            .output()
            .unwrap();
        assert_status(&out, 0);
        assert_eq!(warnings(&stderr(&out)), Vec::<&str>::new());
        names.push(warm_socket(&site, &t, &image, Some(home)));
    }
    assert_ne!(names[0], names[1], "the same name for two secrets");
    assert_eq!(names[0], warm_socket(&site, &t, &image, Some(&homes[0])));
    for home in &homes {
        let dir = home.join(".cache/rfake");
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        assert_eq!(mode(&dir.join("secret")), 0o600);
        // The secret, and the image's prefetch profile.
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "profiles")
            .collect();
        assert_eq!(entries.len(), 1, "left behind in {}", dir.display());
    }
    // A runtime directory of the user's own (0700) is preferred to the home.
    let runtime = private_dir(&site, "run");
    let out = site
        .command(&t)
        .env("HOME", &homes[0])
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["exec", "--no-mount", "home,cwd", "--pwd", "/"])
        .arg(&image)
        .args(["sh", "-c", "true"])
        .output()
        .unwrap();
    assert_status(&out, 0);
    assert_eq!(mode(&runtime.join("rfake/secret")), 0o600);
    assert_nothing_left(&t);
}

#[test]
fn a_secret_others_can_read_is_refused() {
    // Issue 19, defect 5: a secret that group or others can read (or a
    // directory they can enter) is no secret: one warning, and the launch
    // mounts the image for itself.
    use std::os::unix::fs::PermissionsExt;
    if !require() {
        return;
    }
    let t = tag("warm-secret-mode");
    let site = Site::new("warm_linger = 0.5\n");
    let image = site.image(&t, "a.sqfs", "x\n");
    let home = private_dir(&site, "home");
    let launch = || {
        site.command(&t)
            .env("HOME", &home)
            .args(["exec", "--no-mount", "home,cwd", "--pwd", "/"])
            .arg(&image)
            .args(["cat", "/v"])
            .output()
            .unwrap()
    };
    assert_status(&launch(), 0);
    assert_nothing_left(&t);
    let dir = home.join(".cache/rfake");
    let secret = dir.join("secret");
    for (path, bad, good) in [(&dir, 0o750, 0o700), (&secret, 0o640, 0o600)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(bad)).unwrap();
        let out = launch();
        assert_status(&out, 0);
        assert_eq!(stdout(&out), "x\n");
        let err = stderr(&out);
        let warned = warnings(&err);
        assert_eq!(warned.len(), 1, "{err}");
        let want = format!(
            "is off: {}: group or others have access (mode 0{bad:o})",
            path.display()
        );
        assert!(
            warned[0].contains(&want)
                && warned[0].ends_with("this launch makes a mount of its own"),
            "{err}"
        );
        assert!(processes_tagged(&t).is_empty(), "a keeper was started");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(good)).unwrap();
    }
    assert_nothing_left(&t);
}
