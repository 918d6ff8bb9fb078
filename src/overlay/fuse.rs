//! Image overlays served by the host's FUSE programs, inside the
//! container's mount namespace: `fuse2fs` for each ext3 image, and
//! `fuse-overlayfs` stacking the root over a writable image's `upper/`.
//!
//! Both are started while the host's root is still `/` (their programs and
//! libraries are found there), each in a mount namespace of its own made
//! from the container's, and mount into the staging tmpfs, which is shared
//! meanwhile so the mounts reach the container's namespace (then made
//! private again, as `pivot_root` wants). The container's pivots leave
//! their roots at the host's: a server whose root became the container's
//! root would look up what it opens later (glibc's libgcc_s when a libfuse
//! thread ends; fuse-overlayfs's `/proc/self/fd`) through the mount it
//! serves itself, and wait for itself. Nothing of them is ever visible on
//! the host, and their namespaces end with them.
//! fuse2fs is handed the image rfake opened when it planned the launch
//! (`/proc/self/fd/N`): the staging tmpfs at /tmp may hide its path.
//!
//! They are tied to rfake: parent-death signal SIGHUP (libfuse's handler
//! ends the session, and fuse2fs writes its caches back and closes the file
//! system), their own session (no terminal sends them SIGHUP or ^C),
//! SIGINT/SIGTERM/SIGQUIT ignored, so during a job's cancellation (Slurm
//! sends SIGTERM to every process of the step) the payload can still
//! write while it cleans up. rfake stops them after the payload, the stack
//! first: SIGHUP, then SIGKILL if one has not ended in time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigHandler, Signal, kill, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Layer, OverlayError};

/// How long a server may take to mount (its FUSE INIT answered).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to end after SIGHUP (fuse2fs writes its
/// caches back) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running overlay server.
#[derive(Debug)]
struct Proc {
    pid: Pid,
    tool: &'static str,
}

/// The servers this process started, in start order.
static SERVERS: Mutex<Vec<Proc>> = Mutex::new(Vec::new());

fn servers() -> std::sync::MutexGuard<'static, Vec<Proc>> {
    SERVERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pids of the running overlay servers (not leftovers of the payload).
pub fn server_pids() -> Vec<u32> {
    servers().iter().map(|p| p.pid.as_raw() as u32).collect()
}

/// Stop every overlay server, the last started first (fuse-overlayfs
/// before the fuse2fs under it), and reap them.
pub fn stop_servers() {
    let mut list = std::mem::take(&mut *servers());
    while let Some(p) = list.pop() {
        let _ = kill(p.pid, Signal::SIGHUP);
        let start = Instant::now();
        loop {
            match waitpid(p.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if start.elapsed() < STOP_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(WaitStatus::StillAlive) => {
                    log::warn!("{} (pid {}) did not end: killed", p.tool, p.pid);
                    let _ = kill(p.pid, Signal::SIGKILL);
                    let _ = waitpid(p.pid, None);
                    break;
                }
                Err(nix::errno::Errno::EINTR) => {}
                _ => break,
            }
        }
        log::debug!(
            "{} (pid {}) stopped ({:.1?})",
            p.tool,
            p.pid,
            start.elapsed()
        );
    }
}

/// Serve the ext3 image of `layer` with fuse2fs at `mountpoint` (an empty
/// directory of ours), read-only for a `:ro` layer.
pub fn serve_image(fuse2fs: &Path, layer: &Layer, mountpoint: &Path) -> Result<(), OverlayError> {
    let file = layer.file.as_ref().ok_or_else(|| OverlayError::Unusable {
        path: layer.path.clone(),
        what: "the image was not opened when the launch was planned".into(),
    })?;
    let fd = file.0.as_raw_fd();
    let mut cmd = Command::new(fuse2fs);
    cmd.arg(format!("/proc/self/fd/{fd}"))
        .arg(mountpoint)
        .arg("-f");
    if layer.readonly {
        cmd.args(["-o", "ro"]);
    }
    if layer.offset > 0 {
        // A SIF's overlay partition.
        cmd.arg("-o").arg(format!("offset={}", layer.offset));
    }
    start(cmd, "fuse2fs", Some(fd), mountpoint, &layer.path)
}

/// Stack `lowers` (the topmost first) under the writable `upper` with
/// fuse-overlayfs at `target`.
pub fn stack(
    fuse_overlayfs: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    layer: &Path,
) -> Result<(), OverlayError> {
    let mut opts = std::ffi::OsString::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            opts.push(":");
        }
        opts.push(l);
    }
    opts.push(",upperdir=");
    opts.push(upper);
    opts.push(",workdir=");
    opts.push(work);
    opts.push(",nosuid,nodev");
    let mut cmd = Command::new(fuse_overlayfs);
    cmd.arg("-f").arg("-o").arg(opts).arg(target);
    start(cmd, "fuse-overlayfs", None, target, layer)
}

/// Start `cmd` and wait until its file system is mounted at `mountpoint`.
fn start(
    mut cmd: Command,
    tool: &'static str,
    keep_fd: Option<i32>,
    mountpoint: &Path,
    layer: &Path,
) -> Result<(), OverlayError> {
    let failed = |message: String| OverlayError::Server {
        path: layer.to_path_buf(),
        tool,
        message,
    };
    let io = |e: std::io::Error| failed(e.to_string());
    let before = rustix::fs::stat(mountpoint)
        .map_err(|e| io(e.into()))?
        .st_dev;
    let log = File::from(
        memfd_create("rfake-overlay-log", MFdFlags::MFD_CLOEXEC).map_err(|e| io(e.into()))?,
    );
    // No locale: messages as the tools write them in C.
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().map_err(io)?))
        .stderr(Stdio::from(log.try_clone().map_err(io)?));
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Its working directory must not pin a host directory.
            if libc::chdir(c"/".as_ptr()) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = keep_fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            crate::container::process::die_with_parent_by(parent, libc::SIGHUP)?;
            // A mount namespace of its own (a copy of the container's, the
            // host still at `/`): the pivots to come leave its root alone.
            // Its mount reaches the container's through the staging tmpfs,
            // shared while the servers start.
            if libc::unshare(libc::CLONE_NEWNS) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGQUIT] {
                let _ = signal(sig, SigHandler::SigIgn);
            }
            // SIGHUP ends it cleanly (libfuse installs its handler only
            // over SIG_DFL): not ignored or blocked as a keeper has them.
            let _ = signal(Signal::SIGHUP, SigHandler::SigDfl);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        failed(format!(
            "cannot start {}: {e}",
            cmd.get_program().to_string_lossy()
        ))
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    servers().push(Proc { pid, tool });
    let t0 = Instant::now();
    loop {
        // Blocks until the server has answered FUSE INIT, once mounted.
        if let Ok(st) = rustix::fs::stat(mountpoint) {
            if st.st_dev != before {
                log::debug!(
                    "{tool} mounted {} ({:.1?})",
                    mountpoint.display(),
                    t0.elapsed()
                );
                return Ok(());
            }
        }
        let ended = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(status) => Some(crate::container::process::describe_end(&status)),
            Err(nix::errno::Errno::EINTR) => None,
            Err(e) => Some(e.desc().to_string()),
        };
        if ended.is_some() || t0.elapsed() > MOUNT_TIMEOUT {
            if ended.is_some() {
                servers().retain(|p| p.pid != pid);
            }
            let said = first_line(&log);
            let how = ended.unwrap_or_else(|| format!("not mounted after {MOUNT_TIMEOUT:?}"));
            return Err(failed(match said {
                Some(line) => format!("{line} ({how})"),
                None => how,
            }));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The first meaningful line a server wrote.
fn first_line(log: &File) -> Option<String> {
    let mut f = log.try_clone().ok()?;
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text).ok()?;
    text.lines()
        .map(str::trim)
        // fuse-overlayfs on options libfuse handles itself.
        .find(|l| !l.is_empty() && !l.starts_with("unknown argument ignored"))
        .map(crate::text::one_line)
}
