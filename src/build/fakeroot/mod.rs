//! Run a build step's script as root of a writable tree, without
//! privileges: a one-entry user namespace (the invoking user as uid 0), a
//! mount namespace with the tree as `/`, and a seccomp filter that fakes
//! the calls a package manager makes for ids outside the map ([`filter`]).
//!
//! rfake forks first and only the child unshares (rfake itself may have
//! threads, and must stay in the host's namespaces for the rest of the
//! build). The parent copies the step's output to the caller's log and to
//! stderr as it comes, passes SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/2 on,
//! and returns the script's exact status. Nothing outlives the step: the
//! child's mount namespace dies with its last process, and processes the
//! script left running (a daemon a maintainer script started) are killed
//! when the script ends, as a PID namespace's init ending would.

mod apt;
mod filter;
mod setup;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::container::namespace::Identity;
use crate::container::paths;
use crate::container::process;
use crate::container::sys::LinuxSys;
use crate::exit::ExitKind;
use crate::text::shown;

/// Whether the ownership calls are faked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakerootMode {
    /// The seccomp filter of [`filter`].
    Seccomp,
    /// Only the user namespace: calls for other ids fail as the kernel says.
    None,
}

/// Where a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In [`RunSpec::root`] as `/` (after `pivot_root`), with the system
    /// mounts of [`setup`]: a build step.
    Tree,
    /// In the host's file system as it is, started in [`RunSpec::root`]:
    /// only the user and mount namespaces and the filter. For a program of
    /// the host that writes the tree (debootstrap's first stage); the shell
    /// is the host's, and what the user cannot write stays unwritable.
    Host,
}

/// One script to run.
pub struct RunSpec<'a> {
    /// The writable tree that becomes `/` (with [`Place::Host`]: the
    /// directory the script starts in).
    pub root: &'a Path,
    /// An absolute path inside the tree (`/bin/sh`, or `%post -c`'s).
    pub shell: &'a str,
    /// Run as `shell -c script`.
    pub script: &'a str,
    /// The whole environment of the script.
    pub env: Vec<(OsString, OsString)>,
    pub mode: FakerootMode,
    /// The step's output (stdout and stderr together), as it comes; it is
    /// also echoed to rfake's stderr.
    pub log: &'a mut dyn Write,
}

#[derive(Debug, thiserror::Error)]
pub enum FakerootError {
    #[error("build tree {}: {source}", shown(path))]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{shell}: not found in the build tree {}", shown(root))]
    ShellNotFound { shell: String, root: PathBuf },
    #[error("{shell}: the shell must be an absolute path inside the image")]
    ShellNotAbsolute { shell: String },
    #[error(transparent)]
    Filter(#[from] filter::FilterError),
    /// The child's set-up failed; its message and exit code.
    #[error("fakeroot set-up: {message}")]
    Setup { message: String, exit: ExitKind },
    #[error("{shell}: cannot execute in the build tree: {source}")]
    Exec {
        shell: String,
        source: std::io::Error,
    },
    #[error("fakeroot step: {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("writing the step's log: {0}")]
    Log(std::io::Error),
}

impl FakerootError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            FakerootError::Root { .. } | FakerootError::Io { .. } | FakerootError::Log(_) => {
                ExitKind::OsError
            }
            FakerootError::ShellNotFound { .. } => ExitKind::CommandNotFound,
            FakerootError::ShellNotAbsolute { .. } => ExitKind::BadImage,
            FakerootError::Filter(_) => ExitKind::HostUnavailable,
            FakerootError::Setup { exit, .. } => *exit,
            FakerootError::Exec { .. } => ExitKind::CannotExecute,
        }
    }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> FakerootError {
    move |source| FakerootError::Io { op, source }
}

fn errno(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> FakerootError {
    move |e| FakerootError::Io {
        op,
        source: e.into(),
    }
}

/// Run `spec.script` in `spec.root`; returns its status (a signal that
/// killed it included). rfake's own failures are errors.
pub fn run(spec: RunSpec) -> Result<ExitStatus, FakerootError> {
    run_in(spec, Place::Tree)
}

/// [`run`], in the tree or on the host ([`Place`]).
pub fn run_in(spec: RunSpec, place: Place) -> Result<ExitStatus, FakerootError> {
    // Validate before any side effect.
    let root = std::fs::canonicalize(spec.root).map_err(|source| FakerootError::Root {
        path: spec.root.to_path_buf(),
        source,
    })?;
    let prog = match spec.mode {
        FakerootMode::Seccomp => Some(filter::program()?),
        FakerootMode::None => None,
    };
    let _apt = match place {
        Place::Tree => {
            check_shell(&root, spec.shell)?;
            setup::make_mount_points(&LinuxSys, &root).map_err(|e| FakerootError::Setup {
                message: e.to_string(),
                exit: crate::error::Error::from(e).exit_kind(),
            })?;
            // Only under the filter: without it apt fails earlier, as it should.
            match spec.mode {
                FakerootMode::Seccomp => {
                    apt::disable_sandbox(&root).map_err(io("apt sandbox file"))?
                }
                FakerootMode::None => None,
            }
        }
        Place::Host => {
            check_shell(Path::new("/"), spec.shell)?;
            None
        }
    };
    let id = Identity::fakeroot(
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );

    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
    let out_w2 = out_w.try_clone().map_err(io("dup"))?;
    let mut cmd = Command::new(spec.shell);
    cmd.arg("-c")
        .arg(spec.script)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2));
    if place == Place::Host {
        cmd.current_dir(&root);
    }
    let parent = std::process::id() as i32;
    let child_setup = move || -> std::io::Result<()> {
        child(parent, &id, &root, place, prog.as_ref(), report_w.as_fd())
    };
    // SAFETY: the closure runs in the forked child before exec; rfake is
    // single-threaded at build time, so the allocations it makes cannot
    // meet a lock held by another thread.
    unsafe { cmd.pre_exec(child_setup) };

    // Signals are taken through a signalfd while the step runs: blocked
    // before the fork (the child unblocks them), restored afterwards.
    let mut forwarded = SigSet::empty();
    for sig in process::FORWARDED {
        forwarded.add(sig);
    }
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask))
        .map_err(errno("sigprocmask"))?;
    let result = spawn_and_wait(&mut cmd, &forwarded, report_r, spec.shell, out_r, spec.log);
    drop(cmd);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}

/// The shell exists in the tree (resolved inside it, as it will be run).
fn check_shell(root: &Path, shell: &str) -> Result<(), FakerootError> {
    if !shell.starts_with('/') {
        return Err(FakerootError::ShellNotAbsolute {
            shell: shell.into(),
        });
    }
    let found = paths::open_root(root)
        .and_then(|fd| paths::walk(fd.as_fd(), Path::new(shell)))
        .is_ok_and(|w| w.exists());
    if found {
        Ok(())
    } else {
        Err(FakerootError::ShellNotFound {
            shell: shell.into(),
            root: root.to_path_buf(),
        })
    }
}

/// In the forked child: die with rfake, take signals again, enter the
/// tree, install the filter. A failure is written to `report` (its exit
/// code, then the message) for the parent.
fn child(
    parent: i32,
    id: &Identity,
    root: &Path,
    place: Place,
    prog: Option<&seccompiler::BpfProgram>,
    report: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(crate::exit::signal_status(libc::SIGKILL) as i32);
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    let fail = |exit: ExitKind, message: String| {
        let mut bytes = vec![exit.code()];
        bytes.extend(message.into_bytes());
        let _ = nix::unistd::write(report, &bytes);
        std::io::Error::from_raw_os_error(libc::ECANCELED)
    };
    let entered = match place {
        Place::Tree => setup::enter(&LinuxSys, id, root),
        Place::Host => setup::enter_host(&LinuxSys, id),
    };
    if let Err(e) = entered {
        return Err(fail(e.exit_kind(), e.to_string()));
    }
    if let Some(prog) = prog {
        filter::install(prog).map_err(|e| {
            fail(
                ExitKind::HostUnavailable,
                format!("installing the seccomp filter: {e}"),
            )
        })?;
    }
    Ok(())
}

fn spawn_and_wait(
    cmd: &mut Command,
    forwarded: &SigSet,
    report_r: OwnedFd,
    shell: &str,
    out_r: OwnedFd,
    log: &mut dyn Write,
) -> Result<ExitStatus, FakerootError> {
    let signals =
        SignalFd::with_flags(forwarded, SfdFlags::SFD_CLOEXEC).map_err(errno("signalfd"))?;
    // Orphans of the script come to rfake, to be killed when it ends.
    process::become_subreaper().map_err(errno("prctl(PR_SET_CHILD_SUBREAPER)"))?;
    let spawned = cmd.spawn();
    // Our copies of the child's ends: only the child (and its children)
    // hold them now.
    let mut report = std::fs::File::from(report_r);
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => {
            drop(std::mem::replace(cmd, Command::new("/")));
            let mut text = Vec::new();
            let _ = report.read_to_end(&mut text);
            return Err(match text.split_first() {
                Some((&code, message)) => FakerootError::Setup {
                    message: String::from_utf8_lossy(message).into_owned(),
                    exit: exit_kind_of(code),
                },
                None => FakerootError::Exec {
                    shell: shell.into(),
                    source,
                },
            });
        }
    };
    drop(std::mem::replace(cmd, Command::new("/")));
    let pidfd = process::pidfd_open(child.id()).map_err(io("pidfd_open"))?;
    // The step's own user namespace (the child has exec'd: it is in it).
    let step_ns = std::fs::metadata(format!("/proc/{}/ns/user", child.id()))
        .map(|m| m.ino())
        .map_err(io("stat the step's user namespace"))?;
    let mut out = std::fs::File::from(out_r);
    let mut log_error = None;
    let mut buf = vec![0u8; 64 << 10];
    let mut copy = |out: &mut std::fs::File, log_error: &mut Option<std::io::Error>| -> bool {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                let _ = std::io::stderr().write_all(&buf[..n]);
                if log_error.is_none() {
                    if let Err(e) = log.write_all(&buf[..n]) {
                        *log_error = Some(e);
                    }
                }
                true
            }
        }
    };
    let mut out_open = true;
    loop {
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if out_open {
            fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(errno("poll")(e)),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (ended, signalled) = (ready(&fds[0]), ready(&fds[1]));
        let output = out_open && ready(&fds[2]);
        drop(fds);
        if output {
            out_open = copy(&mut out, &mut log_error);
        }
        if signalled {
            if let Ok(Some(info)) = signals.read_signal() {
                // A terminal's ^C reaches the whole foreground group, the
                // script too: passing it on would deliver it twice.
                if info.ssi_code != libc::SI_KERNEL {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        let _ = kill(Pid::from_raw(child.id() as i32), sig);
                    }
                }
            }
        }
        if ended && !output {
            break;
        }
    }
    let status = child.wait().map_err(io("wait"))?;
    // What the script left running goes now; then the rest of its output.
    kill_leftovers(step_ns);
    while out_open {
        out_open = copy(&mut out, &mut log_error);
    }
    match log_error {
        Some(e) => Err(FakerootError::Log(e)),
        None => Ok(status),
    }
}

fn exit_kind_of(code: u8) -> ExitKind {
    [
        ExitKind::HostUnavailable,
        ExitKind::NoInput,
        ExitKind::Usage,
        ExitKind::BadImage,
        ExitKind::Internal,
    ]
    .into_iter()
    .find(|k| k.code() == code)
    .unwrap_or(ExitKind::OsError)
}

/// Kill and reap the processes the script left behind: rfake's children
/// (orphans come to it, a subreaper) in the step's user namespace `ns`
/// (its inode); rfake's other children are left alone.
fn kill_leftovers(ns: u64) {
    for _ in 0..100 {
        let victims: Vec<i32> = children()
            .into_iter()
            .filter(|pid| {
                let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| m.ino());
                theirs.is_ok_and(|ino| ino == ns)
            })
            .collect();
        if victims.is_empty() {
            return;
        }
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for pid in &victims {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid), None);
        }
    }
    log::warn!("some processes of the build step could not be reaped");
}

/// rfake's children (of every thread).
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
