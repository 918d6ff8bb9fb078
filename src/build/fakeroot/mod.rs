//! Run a build step's script as root of a writable tree, without
//! privileges: a one-entry user namespace (the invoking user as uid 0), a
//! mount namespace with the tree as `/`, a PID namespace with a procfs of
//! its own at `/proc`, and a seccomp filter that fakes the calls a package
//! manager makes for ids outside the map ([`filter`]).
//!
//! rfake forks and only its child unshares (rfake must stay in the host's
//! namespaces for the rest of the build); that child's child is the
//! step's init, pid 1, and the script runs under it ([`init`]). rfake
//! copies the step's output to the caller's log and to stderr as it comes,
//! passes SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/2 on, and returns the
//! script's exact status. Nothing outlives the step: when the script ends
//! the init does, and the kernel then kills every process left in the PID
//! namespace (a daemon a maintainer script started); the mount namespace
//! dies with its last process.

mod apt;
mod filter;
mod init;
mod setup;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::ForkResult;

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
    /// the namespaces (a new procfs over the host's `/proc`, nothing else
    /// mounted) and the filter. For a program of
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
    // Spawned by the step's init, after its pivot_root: the shell is the
    // tree's.
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
    if let Some(prog) = prog {
        let report = report_w.try_clone().map_err(io("dup"))?;
        // SAFETY: the closure runs in the script's process before exec,
        // forked by the init, a single-threaded process.
        unsafe { cmd.pre_exec(move || init::install_filter(&prog, report.as_fd())) };
    }

    // Signals are taken through a signalfd while the step runs: blocked
    // before the fork (the step's processes unblock them), restored
    // afterwards.
    let mut forwarded = SigSet::empty();
    for sig in process::FORWARDED {
        forwarded.add(sig);
    }
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask))
        .map_err(errno("sigprocmask"))?;
    let outer = init::Outer {
        parent: std::process::id() as i32,
        id,
        root,
        place,
        cmd,
        report: report_w,
        forwarded: &forwarded,
    };
    let result = spawn_and_wait(outer, report_r, spec.shell, out_r, spec.log);
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

fn spawn_and_wait(
    outer: init::Outer,
    report_r: OwnedFd,
    shell: &str,
    out_r: OwnedFd,
    log: &mut dyn Write,
) -> Result<ExitStatus, FakerootError> {
    let signals =
        SignalFd::with_flags(outer.forwarded, SfdFlags::SFD_CLOEXEC).map_err(errno("signalfd"))?;
    // SAFETY: rfake is single-threaded at build time, and the child runs
    // only init::outer, which ends with _exit; in a test harness with
    // threads, the C library's fork handlers keep the allocator usable.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => init::outer(outer),
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(errno("fork")(e)),
    };
    // Our copies of the step's ends of the pipes go: only the step's
    // processes hold them now.
    drop(outer);
    let pidfd = process::pidfd_open(child.as_raw() as u32).map_err(io("pidfd_open"))?;
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
                        let _ = kill(child, sig);
                    }
                }
            }
        }
        if ended && !output {
            break;
        }
    }
    let status = loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(status) => break status,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(errno("wait")(e)),
        }
    };
    // The init is gone, so is every process of the step: the rest of its
    // output, then what the init (or the script's set-up) reported.
    while out_open {
        out_open = copy(&mut out, &mut log_error);
    }
    let mut report = Vec::new();
    std::fs::File::from(report_r)
        .read_to_end(&mut report)
        .map_err(io("reading the step's report"))?;
    let status = match init::Report::decode(&report) {
        Some(init::Report::Status(raw)) => ExitStatus::from_raw(raw),
        Some(init::Report::Setup { exit, message }) => {
            return Err(FakerootError::Setup {
                message,
                exit: exit_kind_of(exit),
            });
        }
        Some(init::Report::Exec(e)) => {
            return Err(FakerootError::Exec {
                shell: shell.into(),
                source: std::io::Error::from_raw_os_error(e),
            });
        }
        // Killed before it could say (SIGKILL from outside): as it ended.
        None => match status {
            WaitStatus::Exited(_, code) => ExitStatus::from_raw(code << 8),
            WaitStatus::Signaled(_, sig, _) => ExitStatus::from_raw(sig as i32),
            _ => ExitStatus::from_raw(ExitKind::Internal.code() as i32 * 256),
        },
    };
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
