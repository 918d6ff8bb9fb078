//! The step's own processes, in rfake's code, between rfake and the script:
//!
//! ```text
//! rfake ── fork ──> outer: unshares the user, mount and PID namespaces, forks
//!                     └──> init, pid 1 of the step's PID namespace: mounts, pivots, forks
//!                            └──> the script, pid 2: the filter, exec of the shell
//! ```
//!
//! Why two: `unshare(CLONE_NEWPID)` puts only the caller's *later*
//! children in the new namespace, and rfake itself stays in the host's
//! namespaces for the rest of the build. A plain fork (not a raw `clone(2)`
//! with the namespace flags, which would skip the C library's fork
//! handlers) keeps its locks sound in a process with threads, such as the
//! test harness; the forked `outer` is single-threaded when it unshares,
//! as `unshare(CLONE_NEWUSER)` requires.
//!
//! Why an init of rfake's and not the script as pid 1: the kernel gives
//! a namespace's init only the signals it has a handler for (a shell has
//! none for SIGTERM), pid_namespaces(7). The init has one for each
//! forwarded signal and passes it on to the script (the same forwarding
//! as a launch's, crate::container::process), reaps every process that
//! ends (orphans come to it), and, when the script ends, reports the
//! script's wait status to rfake and exits. Its end kills (SIGKILL) every
//! process left in the namespace: a daemon a package's maintainer script
//! started does not outlive the step. An init cannot die of a signal it
//! sends itself, hence the report: rfake returns the script's exact
//! status from it (`outer` and the init exit with 128+N for a signal N).
//!
//! Each dies with its parent (`PR_SET_PDEATHSIG`): a SIGKILLed rfake
//! takes the whole step with it.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::unistd::ForkResult;

use super::{Place, setup};
use crate::container::namespace::Identity;
use crate::container::process;
use crate::container::sys::LinuxSys;
use crate::exit::ExitKind;

/// What the init (or `outer`, or the script before its exec) tells rfake
/// on the report pipe: one message at most, in one `write(2)` (atomic
/// below `PIPE_BUF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The script ended: its raw wait status (`wait(2)`).
    Status(i32),
    /// The shell could not be executed: the errno of `execve(2)`.
    Exec(i32),
    /// The set-up failed: rfake's exit code for it, and the message.
    Setup { exit: u8, message: String },
}

impl Report {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Report::Status(raw) => [&[0u8][..], &raw.to_le_bytes()].concat(),
            Report::Exec(errno) => [&[1u8][..], &errno.to_le_bytes()].concat(),
            Report::Setup { exit, message } => [&[2u8, *exit][..], message.as_bytes()].concat(),
        }
    }

    /// `None` for nothing (the step's processes were killed) or garbage.
    pub fn decode(bytes: &[u8]) -> Option<Report> {
        let int = |b: &[u8]| b.try_into().ok().map(i32::from_le_bytes);
        match bytes.split_first()? {
            (0, rest) => int(rest).map(Report::Status),
            (1, rest) => int(rest).map(Report::Exec),
            (2, [exit, message @ ..]) => Some(Report::Setup {
                exit: *exit,
                message: String::from_utf8_lossy(message).into_owned(),
            }),
            _ => None,
        }
    }

    /// Write it to `fd` (a failure is ignored: rfake then has the
    /// processes' exit statuses).
    pub fn send(&self, fd: std::os::fd::BorrowedFd<'_>) {
        let _ = nix::unistd::write(fd, &self.encode());
    }
}

/// What the forked child takes from rfake.
pub struct Outer<'a> {
    /// rfake's pid.
    pub parent: i32,
    pub id: Identity,
    /// The canonical path of the tree.
    pub root: PathBuf,
    pub place: Place,
    /// The script's command, ready to spawn (its output, environment and
    /// the filter's installation included).
    pub cmd: Command,
    /// The report pipe's write end.
    pub report: OwnedFd,
    /// Signals to unblock once their handlers are in place.
    pub forwarded: &'a SigSet,
}

/// In rfake's forked child: never returns.
pub fn outer(o: Outer) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| outer_steps(o)))
        .unwrap_or(ExitKind::Internal.code() as i32);
    // SAFETY: ends this process, which runs nothing of rfake's after the fork.
    unsafe { libc::_exit(code) }
}

/// Report a set-up failure; the exit code to end with.
fn failed(report: &OwnedFd, exit: ExitKind, message: String) -> i32 {
    Report::Setup {
        exit: exit.code(),
        message,
    }
    .send(report.as_fd());
    exit.code() as i32
}

fn outer_steps(o: Outer) -> i32 {
    if let Err(e) = process::die_with_parent(o.parent) {
        return failed(&o.report, ExitKind::OsError, format!("prctl: {e}"));
    }
    if let Err(e) = setup::namespaces(&LinuxSys, &o.id) {
        return failed(&o.report, e.exit_kind(), e.to_string());
    }
    // The handlers are inherited by the init; the signals stay blocked
    // (as rfake blocked them) until there is someone to pass them to.
    if let Err(e) = process::install_forwarding() {
        return failed(&o.report, ExitKind::OsError, format!("sigaction: {e}"));
    }
    // The init watches this to end if `outer` is gone before its
    // PR_SET_PDEATHSIG is in place (its parent is outside its namespace,
    // so getppid() says 0 either way).
    let me = match process::pidfd_open(std::process::id()) {
        Ok(fd) => fd,
        Err(e) => return failed(&o.report, ExitKind::OsError, format!("pidfd_open: {e}")),
    };
    // SAFETY: this process is single-threaded (a fork of rfake's thread).
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => init(o, me),
        Ok(ForkResult::Parent { child }) => {
            let Outer {
                cmd,
                report,
                forwarded,
                ..
            } = o;
            drop((cmd, report, me));
            process::forward_to(child.as_raw());
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(forwarded), None);
            loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(status) => break end_code(&status),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break ExitKind::Internal.code() as i32,
                }
            }
        }
        Err(e) => failed(&o.report, ExitKind::OsError, format!("fork: {e}")),
    }
}

/// A process's end as an exit code: its own, or 128+N for a signal N.
fn end_code(status: &nix::sys::wait::WaitStatus) -> i32 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => *code,
        WaitStatus::Signaled(_, sig, _) => crate::exit::signal_status(*sig as i32) as i32,
        _ => ExitKind::Internal.code() as i32,
    }
}

/// pid 1 of the step's namespace: never returns.
fn init(o: Outer, outer: OwnedFd) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init_steps(o, outer)))
        .unwrap_or(ExitKind::Internal.code() as i32);
    // SAFETY: as in `outer`; the kernel then kills what is left in the
    // namespace.
    unsafe { libc::_exit(code) }
}

fn init_steps(mut o: Outer, outer: OwnedFd) -> i32 {
    // SAFETY: plain system calls.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
            return failed(&o.report, ExitKind::OsError, "prctl".into());
        }
        // What `ps` in the step shows as pid 1.
        libc::prctl(libc::PR_SET_NAME, c"rfake-init".as_ptr());
    }
    if process::readable(outer.as_fd(), std::time::Duration::ZERO) {
        return crate::exit::signal_status(libc::SIGKILL) as i32;
    }
    drop(outer);
    // A signal from now on is kept for the script (the handlers'
    // pending slot) until it runs.
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(o.forwarded), None);
    let entered = match o.place {
        Place::Tree => setup::tree(&LinuxSys, &o.root),
        Place::Host => setup::host(&LinuxSys),
    };
    if let Err(e) = entered {
        return failed(&o.report, e.exit_kind(), e.to_string());
    }
    let script = match process::spawn_forwarded(&mut o.cmd) {
        Ok(child) => child.id() as i32,
        // The filter's installation failed and said so on the pipe.
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
            return ExitKind::HostUnavailable.code() as i32;
        }
        Err(e) => {
            Report::Exec(e.raw_os_error().unwrap_or(libc::EIO)).send(o.report.as_fd());
            return ExitKind::CannotExecute.code() as i32;
        }
    };
    // Our copies of the script's output pipe go: only the step holds it.
    let Outer { cmd, report, .. } = o;
    drop(cmd);
    let raw = match process::reap_until(script) {
        Ok(raw) => raw,
        Err(e) => return failed(&report, ExitKind::OsError, format!("wait: {e}")),
    };
    process::forward_to(0);
    Report::Status(raw).send(report.as_fd());
    process::exit_status(std::process::ExitStatus::from_raw(raw)) as i32
}

/// For the script's `pre_exec`: install the filter, or say why not on
/// `report` and fail the spawn with ECANCELED (the init then knows the
/// report is written).
pub fn install_filter(
    prog: &seccompiler::BpfProgram,
    report: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    super::filter::install(prog).map_err(|e| {
        Report::Setup {
            exit: ExitKind::HostUnavailable.code(),
            message: format!("installing the seccomp filter: {e}"),
        }
        .send(report);
        std::io::Error::from_raw_os_error(libc::ECANCELED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Status(0),
            Report::Status(42 << 8),
            Report::Status(libc::SIGTERM),
            Report::Exec(libc::ENOENT),
            Report::Setup {
                exit: 69,
                message: "unshare: Operation not permitted (EPERM)".into(),
            },
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(b""), None);
        assert_eq!(Report::decode(&[0, 1, 2]), None);
        assert_eq!(Report::decode(&[9, 1, 2, 3, 4]), None);
    }
}
