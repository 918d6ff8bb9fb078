//! The payload: finding the command in the image, starting it, passing
//! signals to it, and turning its end into rfake's exit status.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::exit;

/// Signals rfake passes on to the payload.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{}: command not found in the image", cmd.to_string_lossy())]
    NotFound { cmd: OsString },
    #[error("{}: found in the image at {} but not executable", crate::text::one_line(&cmd.to_string_lossy()), crate::text::shown(path))]
    NotExecutable { cmd: OsString, path: PathBuf },
    #[error("{}: cannot execute {}: {source}", crate::text::one_line(&cmd.to_string_lossy()), crate::text::shown(path))]
    Exec {
        cmd: OsString,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CommandError {
    pub fn exit_kind(&self) -> exit::ExitKind {
        match self {
            CommandError::NotFound { .. } => exit::ExitKind::CommandNotFound,
            CommandError::Exec { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
                exit::ExitKind::CommandNotFound
            }
            _ => exit::ExitKind::CannotExecute,
        }
    }
}

fn is_executable_file(path: &Path) -> Option<bool> {
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Find `cmd` the way `execvp(3)` would, with `path_env` as `PATH`.
/// Called after `pivot_root`, so it looks inside the image.
pub fn resolve_command(cmd: &OsStr, path_env: Option<&OsStr>) -> Result<PathBuf, CommandError> {
    if cmd.is_empty() {
        return Err(CommandError::NotFound { cmd: cmd.into() });
    }
    if cmd.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(cmd);
        return match is_executable_file(&path) {
            Some(true) => Ok(path),
            Some(false) => Err(CommandError::NotExecutable {
                cmd: cmd.into(),
                path,
            }),
            None => Err(CommandError::NotFound { cmd: cmd.into() }),
        };
    }
    let mut not_executable = None;
    for dir in std::env::split_paths(path_env.unwrap_or(OsStr::new("/usr/bin:/bin"))) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let cand = dir.join(cmd);
        match is_executable_file(&cand) {
            Some(true) => return Ok(cand),
            Some(false) if not_executable.is_none() => not_executable = Some(cand),
            _ => {}
        }
    }
    match not_executable {
        Some(path) => Err(CommandError::NotExecutable {
            cmd: cmd.into(),
            path,
        }),
        None => Err(CommandError::NotFound { cmd: cmd.into() }),
    }
}

/// The payload, fully resolved.
#[derive(Debug, Clone)]
pub struct Payload {
    /// argv[0] as the user wrote it.
    pub argv0: OsString,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// `--no-privs`: no capability survives the exec (the bounding set is
    /// emptied, so even root inside gets none).
    pub drop_caps: bool,
}

/// The payload's pid while it runs; 0 before. Read by the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A forwarded signal that arrived before the payload existed.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Signals the kernel sends to a terminal's whole foreground process group
    // (^C, ^\, hangup) reach the payload directly, as it shares rfake's
    // group; forwarding those too would deliver them twice.
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    if !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL {
        return;
    }
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

/// In a forked init: forget a signal the parent kept before the fork (the
/// parent passes it on to the init, which passes it on to the payload).
pub fn init_started() {
    PENDING.store(0, Ordering::SeqCst);
    CHILD.store(0, Ordering::SeqCst);
}

/// Catch the forwarded signals from now on (before any set-up step, so a
/// signal during set-up is kept for the payload instead of killing rfake
/// half-way).
pub fn install_forwarding() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::SigAction(forward),
        SaFlags::SA_SIGINFO | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: the handler only uses async-signal-safe calls and atomics.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// A descriptor that becomes readable when process `pid` ends
/// (`pidfd_open(2)`, Linux 5.3). Unlike the pid, it cannot come to name
/// another process.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call; on success it returns a new descriptor
    // that nothing else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `fd` is readable (or hung up) within `wait`: a pidfd is once
/// its process has ended.
pub fn readable(fd: BorrowedFd<'_>, wait: std::time::Duration) -> bool {
    let timeout = PollTimeout::try_from(wait.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}

/// How a process ended, in words: "exited with status 1", "was killed by
/// SIGKILL".
pub fn describe_end(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {sig}"),
        other => format!("ended ({other:?})"),
    }
}

/// Something rfake watches while the payload runs: the image server the
/// container's files come from.
pub trait Watch {
    /// Readable (or hung up) when there is news.
    fn fd(&self) -> BorrowedFd<'_>;
    /// The news, once `fd` was readable: the line to print, if any. The
    /// watch is over after this call.
    fn fired(&mut self) -> Option<String>;
}

/// How the process that starts the payload waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaping {
    /// Wait for the payload only (rfake is a subreaper and kills and reaps
    /// what is left afterwards: [`reap_leftovers`]).
    Payload,
    /// Process 1 of a PID namespace: reap every process that ends while
    /// the payload runs (orphans are re-parented to it), so no zombie
    /// piles up; when it exits the kernel kills the rest.
    Init,
}

/// Start the payload and wait for it; returns rfake's exit status. While
/// it runs, `watch` (if any) is watched too, and its news printed.
pub fn run(
    payload: &Payload,
    watch: Option<&mut dyn Watch>,
    reaping: Reaping,
) -> Result<u8, CommandError> {
    let mut cmd = Command::new(&payload.program);
    cmd.arg0(&payload.argv0)
        .args(&payload.args)
        .env_clear()
        .envs(payload.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&payload.cwd);
    let parent = std::process::id() as i32;
    let drop_caps = payload.drop_caps;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // If rfake dies (even SIGKILL), the payload dies too.
            die_with_parent(parent)?;
            if drop_caps {
                drop_bounding_set()?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| CommandError::Exec {
        cmd: payload.argv0.clone(),
        path: payload.program.clone(),
        source,
    })?;
    // The child is reaped below by its pid, not through `child`.
    let pid = child.id();
    Ok(supervise(pid, watch, reaping))
}

/// The payload's status as rfake's exit status: its code, or 128+N when it
/// was killed by signal N.
pub fn exit_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => exit::signal_status(sig),
        (None, None) => exit::ExitKind::Internal.code(),
    }
}

/// capabilities(7), "Capability bounding set": a capability dropped from
/// it is never gained again by execve, not even by root. Async-signal-safe
/// (runs between fork and exec).
fn drop_bounding_set() -> std::io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl(2) is async-signal-safe.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == -1 {
            let err = std::io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if err.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Pass forwarded signals to the started process `pid`, watch `watch`
/// while it runs, and wait for it (as `reaping` says); returns its status
/// as rfake's exit status.
pub fn supervise(pid: u32, watch: Option<&mut dyn Watch>, reaping: Reaping) -> u8 {
    forward_to(pid as i32);
    if let Some(watch) = watch {
        watch_while_running(pid, watch);
    }
    let target = match reaping {
        Reaping::Payload => Pid::from_raw(pid as i32),
        Reaping::Init => Pid::from_raw(-1),
    };
    let status = loop {
        match nix::sys::wait::waitpid(target, None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid as i32 => break code as u8,
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid as i32 => {
                break exit::signal_status(sig as i32);
            }
            // Another process of the namespace (as its init), or a stop.
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("waiting for the payload: {e}");
                break exit::ExitKind::Internal.code();
            }
        }
    };
    forward_to(0);
    status
}

/// Die with the process `parent` (the caller's parent, which it was forked
/// from): `PR_SET_PDEATHSIG` with SIGKILL, and an immediate end if the
/// parent is gone already. Only async-signal-safe calls: for a forked child.
pub fn die_with_parent(parent: i32) -> std::io::Result<()> {
    die_with_parent_by(parent, libc::SIGKILL)
}

/// [`die_with_parent`] with `signal` as the parent-death signal: a server
/// that must end cleanly (unmount, flush) gets one it handles, SIGHUP.
/// Async-signal-safe: fit for `pre_exec`.
pub fn die_with_parent_by(parent: i32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, signal) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(exit::signal_status(signal) as i32);
        }
    }
    Ok(())
}

/// Start `cmd` as the process the forwarded signals go to ([`forward_to`]):
/// it dies with its parent (even a SIGKILLed one).
pub fn spawn_forwarded(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe { cmd.pre_exec(move || die_with_parent(parent)) };
    let child = cmd.spawn()?;
    forward_to(child.id() as i32);
    Ok(child)
}

/// From now on the forwarded signals ([`install_forwarding`]) go to `pid`
/// (0: nobody yet); one that came before is delivered now.
pub fn forward_to(pid: i32) {
    CHILD.store(pid, Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        if let Ok(sig) = Signal::try_from(pending) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// As the init of a PID namespace: reap every process that ends (orphans
/// come to the init) until `pid` does; its raw wait status (`wait(2)`).
pub fn reap_until(pid: i32) -> std::io::Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: a plain system call with a valid pointer.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == pid {
            return Ok(status);
        }
        if got == -1 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Wait until the payload `pid` ends or `watch` fires (then print its news
/// and stop watching it); the payload is reaped by the caller. Without
/// pidfds (Linux before 5.3) there is nothing to poll the payload with:
/// nothing is watched.
fn watch_while_running(pid: u32, watch: &mut dyn Watch) {
    let Ok(payload) = pidfd_open(pid) else {
        return;
    };
    loop {
        let mut fds = [
            PollFd::new(payload.as_fd(), PollFlags::POLLIN),
            PollFd::new(watch.fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            // A forwarded signal.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (ended, fired) = (ready(&fds[0]), ready(&fds[1]));
        if fired {
            if let Some(line) = watch.fired() {
                log::error!("{line}");
            }
            return;
        }
        if ended {
            // A payload killed by a signal may have died of the server's
            // end: the pages of its program the server can no longer supply
            // fault with SIGBUS as soon as the FUSE connection aborts, a
            // moment before the server's own exit is complete. Say so then
            // too (a payload that exits normally costs no wait).
            if killed_by_signal(pid) && readable(watch.fd(), Duration::from_millis(500)) {
                if let Some(line) = watch.fired() {
                    log::error!("{line}");
                }
            }
            return;
        }
    }
}

/// Whether the payload `pid`, which has ended, was killed by a signal (it
/// stays unreaped: `WNOWAIT`).
fn killed_by_signal(pid: u32) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    matches!(
        waitid(
            Id::Pid(Pid::from_raw(pid as i32)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
        ),
        Ok(WaitStatus::Signaled(..))
    )
}

/// Make rfake the reaper of everything the payload leaves behind, so that
/// no process of the container outlives it (see [`reap_leftovers`]).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Kill (SIGKILL) and reap every remaining child except `keep`, until none
/// is left: the equivalent of a PID namespace's init exiting. Orphans of the
/// payload are re-parented to rfake (a subreaper) and get caught here.
pub fn reap_leftovers(keep: &[u32]) {
    for _ in 0..100 {
        let children = children_of_self();
        // The image overlays' servers are stopped in order, not killed.
        let servers = crate::overlay::fuse::server_pids();
        let victims: Vec<u32> = children
            .into_iter()
            .filter(|p| !keep.contains(p) && !servers.contains(p))
            .collect();
        if victims.is_empty() {
            return;
        }
        for pid in &victims {
            log::debug!("killing leftover process {pid}");
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        for pid in &victims {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid as i32), None);
        }
    }
    log::warn!("some processes of the container could not be reaped");
}

fn children_of_self() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn resolves_like_execvp() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("tool"), "").unwrap();
        fs::set_permissions(a.join("tool"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(b.join("tool"), "").unwrap();
        fs::set_permissions(b.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(
            resolve_command(OsStr::new("tool"), Some(&path)).unwrap(),
            b.join("tool")
        );
        let only_a = a.as_os_str();
        let err = resolve_command(OsStr::new("tool"), Some(only_a)).unwrap_err();
        assert_eq!(err.exit_kind().code(), 126);
        assert!(err.to_string().contains("not executable"));
        let err = resolve_command(OsStr::new("nope"), Some(&path)).unwrap_err();
        assert_eq!(err.exit_kind().code(), 127);
        assert_eq!(err.to_string(), "nope: command not found in the image");
        let abs = b.join("tool");
        assert_eq!(resolve_command(abs.as_os_str(), None).unwrap(), abs);
        let missing = b.join("missing");
        assert_eq!(
            resolve_command(missing.as_os_str(), None)
                .unwrap_err()
                .exit_kind()
                .code(),
            127
        );
    }
}

/// A process above this one, read from `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub pid: u32,
    /// Its name (`comm`, at most 15 bytes; its process title may differ).
    pub comm: String,
    /// Its start time (clock ticks after boot): with the pid, unique on
    /// the node even when pids are reused.
    pub start: u64,
}

/// The processes above this one, parent first, up to (not including)
/// pid 1 and at most `depth` of them, read from the procfs at `proc`. The
/// walk stops at the first one that is gone.
pub fn ancestors(proc: &Path, depth: usize) -> Vec<Ancestor> {
    let mut list = Vec::new();
    let mut pid = nix::unistd::getppid().as_raw() as u32;
    while pid > 1 && list.len() < depth {
        let Ok(stat) = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) else {
            break;
        };
        let Some((comm, ppid, start)) = parse_stat(&stat) else {
            break;
        };
        list.push(Ancestor {
            pid,
            comm: comm.to_string(),
            start,
        });
        pid = ppid;
    }
    list
}

/// The name, parent pid and start time in a `/proc/PID/stat` line (the
/// name is in parentheses and may hold anything, parentheses included;
/// the start time is field 22).
fn parse_stat(stat: &str) -> Option<(&str, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // Fields from 3 (state) on.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

#[cfg(test)]
mod stat_tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let line = "4242 (hydra_pmi_proxy) S 4241 4242 100 0 -1 4194560 531 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 10000 300 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(("hydra_pmi_proxy", 4241, 987654)));
        let odd = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c", 1, 55)));
        assert_eq!(parse_stat("7 (x) R 1"), None);
        assert_eq!(parse_stat("7 (sh"), None);
    }
}
