//! Shared helpers for the integration tests: they run the real rfake binary,
//! as an unprivileged user, in a scrubbed environment.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when running under CI, where a skip is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Skip (locally) or fail (under CI) when a prerequisite is missing.
pub fn missing(what: &str) {
    if under_ci() {
        panic!("prerequisite missing under CI=true: {what}");
    }
    eprintln!("SKIP: {what}");
}

pub fn rfake_bin() -> PathBuf {
    std::env::var_os("RFAKE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rfake")))
}

/// The directory of test images built by images/build-images.sh.
pub fn images_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RFAKE_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/images"));
    if dir.join("demo.sqfs").is_file() {
        Some(dir)
    } else {
        missing(&format!(
            "test images in {} (run images/build-images.sh DIR, set RFAKE_TEST_IMAGES)",
            dir.display()
        ));
        None
    }
}

/// The shared directory of real SIF files made by Apptainer's tools.
pub fn sif_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RFAKE_TEST_SIF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/sif"));
    if dir.join("busybox_amd64.sif").is_file() {
        Some(dir)
    } else {
        missing(&format!("SIF test data in {}", dir.display()));
        None
    }
}

/// Everything a launch test needs; `None` means skipped.
pub struct Env {
    pub images: PathBuf,
}

/// Launch tests must run rootless: as root they would prove nothing.
pub fn setup() -> Option<Env> {
    if nix::unistd::geteuid().is_root() {
        missing("an unprivileged user (tests/run.sh runs them as one)");
        return None;
    }
    if !Path::new("/dev/fuse").exists() {
        missing("/dev/fuse");
        return None;
    }
    Some(Env {
        images: images_dir()?,
    })
}

impl Env {
    pub fn image(&self, name: &str) -> PathBuf {
        self.images.join(name)
    }
}

/// rfake in a scrubbed environment: only what a login shell on a cluster
/// would have, plus the test's tag.
pub fn command(tag: &str) -> Command {
    scrubbed(rfake_bin(), tag)
}

/// `program` in the same scrubbed environment.
pub fn scrubbed(program: impl AsRef<std::ffi::OsStr>, tag: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("LANG", "C.UTF-8")
        .env("RFAKE_TEST_TAG", tag)
        // No site or user configuration unless a test writes one: a site
        // file that only sets the warm mounts' linger, and the user file
        // turned off.
        .env("RFAKE_CONFIG", test_site_config())
        .env("RFAKE_USER_CONFIG", "");
    for var in ["HOME", "USER", "LOGNAME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd
}

/// How long warm mounts outlive their last launch in tests (seconds): not
/// at all, except in tests/warm.rs, which uses images of its own. (A warm
/// mount is shared by every launch of an image, whatever test it is in,
/// and the tests account for processes per test.)
pub const TEST_LINGER: &str = "0";

/// The site file of every test that writes none: `warm_linger` only.
pub fn test_site_config() -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "linger-tests-{}.toml",
        nix::unistd::getuid().as_raw()
    ));
    let text = format!("warm_linger = {TEST_LINGER}\n");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        // Unique per call: the tests of one binary are threads of one
        // process, and two of them may install the file at once.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}.{n}.tmp", std::process::id()));
        std::fs::write(&tmp, &text).expect("write the test site file");
        std::fs::rename(&tmp, &path).expect("install the test site file");
    }
    path
}

/// A tag unique to one test, inherited by every process rfake starts.
pub fn tag(test: &str) -> String {
    format!("{test}-{}-{:?}", std::process::id(), Instant::now())
}

/// Run rfake with `args` to completion.
pub fn rfake(tag: &str, args: &[&str]) -> Output {
    command(tag)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rfake")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert an exit status, showing the output when it is wrong.
#[track_caller]
/// rfake's own failure of `kind` (its documented exit code).
pub fn assert_exit(out: &Output, kind: rfake::exit::ExitKind) {
    assert_status(out, i32::from(kind.code()));
}

pub fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Pids of this user's processes whose environment carries `tag`.
pub fn processes_tagged(tag: &str) -> Vec<u32> {
    let needle = format!("RFAKE_TEST_TAG={tag}");
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(entry.path().join("environ")) else {
            continue;
        };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            continue;
        }
        if buf.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Mounts in the host's (this process's) mount table that rfake could have
/// made: FUSE mounts, the staging tmpfs.
pub fn host_rfake_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("squashfuse") || l.contains("rfake"))
        .map(str::to_string)
        .collect()
}

/// Entries of this user's in the temporary directories whose name says
/// rfake (rfake itself must never create any).
pub fn rfake_temp_files() -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::getuid().as_raw();
    let mut dirs: Vec<PathBuf> = ["/tmp", "/var/tmp", "/dev/shm"]
        .iter()
        .map(PathBuf::from)
        .collect();
    dirs.extend(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let mine = e.metadata().map(|m| m.uid() == me).unwrap_or(false);
            if mine && e.file_name().to_string_lossy().starts_with("rfake") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Wait (bounded) until nothing tagged `tag` runs any more, then assert that
/// no process, mount or temporary file of rfake's is left behind.
#[track_caller]
pub fn assert_nothing_left(tag: &str) {
    // Warm mounts linger 5 s by default (tests that write their own site
    // file), then go.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut left = processes_tagged(tag);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = processes_tagged(tag);
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert_eq!(host_rfake_mounts(), Vec::<String>::new(), "host mounts");
    assert_eq!(rfake_temp_files(), Vec::<PathBuf>::new(), "temporary files");
}

/// A running rfake whose stdout is read line by line.
pub struct Running {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

/// Start rfake with `args`, stdout piped and read in a thread.
pub fn spawn(tag: &str, args: &[&str]) -> Running {
    let mut child = command(tag)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rfake");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

impl Running {
    /// Wait (bounded) for a line equal to `want`; panics on timeout.
    #[track_caller]
    pub fn expect_line(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let done = line == want;
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        panic!("did not see line {want:?}; saw {seen:?}");
    }

    /// Wait (bounded) for the next line, whatever it is; panics naming
    /// `what` on timeout.
    #[track_caller]
    pub fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{what}: no line ({e})"))
    }

    /// Wait (bounded) for rfake to exit; returns its status and stderr.
    #[track_caller]
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let rest: Vec<String> = self.lines.try_iter().collect();
                return (status, rest, err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("rfake did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal rfake");
    }
}

/// The test user's home directory (tests/run.sh sets HOME).
pub fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME set"))
}

/// Run `sh -c SCRIPT` in `image` with extra rfake options.
pub fn sh(tag: &str, opts: &[&str], image: &Path, script: &str) -> Output {
    let mut args: Vec<&str> = vec!["exec"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[image.to_str().unwrap(), "sh", "-c", script]);
    rfake(tag, &args)
}

/// SHA-256 of a file, via sha256sum (coreutils).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The OCI fixtures made by tests/make-oci-fixtures.sh (podman).
pub fn oci_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RFAKE_TEST_OCI").map(PathBuf::from)?;
    if dir.join("layered-docker.tar").is_file() {
        Some(dir)
    } else {
        None
    }
    .or_else(|| {
        missing("OCI fixtures (tests/make-oci-fixtures.sh, RFAKE_TEST_OCI)");
        None
    })
}

/// Whether a host tool is installed.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Run a host command, asserting success; its stdout.
#[track_caller]
pub fn host(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory in the test user's home, its name starting with
/// `prefix`, removed when dropped.
pub fn scratch_in_home(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(home())
        .unwrap()
}

/// `rfake build ARGS` run in `dir` (relative paths in a definition file or
/// a recipe are taken from there, as Apptainer takes them).
pub fn build_in(t: &str, dir: &Path, args: &[&str]) -> Output {
    let mut c = command(t);
    c.current_dir(dir).arg("build").args(args);
    c.output().unwrap()
}

/// What rfake left in `dir` whose name starts with `.rfake` (work
/// directories, temporary outputs).
pub fn rfake_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".rfake")
        })
        .collect()
}

/// What a failed or interrupted build must not leave: OUT, or a work
/// directory beside it (a kept log may stay).
pub fn assert_build_left_nothing(dir: &Path, out: &str) {
    assert!(!dir.join(out).exists(), "{out} was written");
    let left = rfake_files(dir);
    assert!(left.is_empty(), "left behind: {left:?}");
}
