//! `exec`, `run` and `shell` on `instance://NAME`: the launch enters the
//! instance's container (the namespaces its keeper hands over, as a rank
//! joins a step's container) and runs its payload there, with its own
//! environment and working directory. When the instance stops, the keeper
//! says so over the connection and the payload gets the signal.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use super::{JOIN, Live};
use crate::container::process::{self, Watch};
use crate::container::sys::{LinuxSys, SysError};
use crate::error::Error;
use crate::launch::rendezvous;
use crate::launch::{Plan, run_inside};

pub fn execute(plan: &Plan, live: &Live) -> Result<u8, Error> {
    process::install_forwarding().map_err(|e| SysError::process("sigaction", e))?;
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| SysError::process("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    let name = &live.record.name;
    let key = format!("instance {name}");
    let gone = || Error::Failed {
        kind: crate::exit::ExitKind::NoInput,
        message: format!("instance {name} has ended"),
    };
    let stream = super::connect(&live.socket)?.ok_or_else(gone)?;
    (&stream).write_all(&[JOIN]).map_err(|_| gone())?;
    let (namespaces, _server) = rendezvous::receive(&stream, &key).map_err(|e| match e {
        rendezvous::JoinError::NoAnswer { .. } => gone(),
        e => e.into(),
    })?;
    namespaces.enter(&LinuxSys)?;
    log::info!("in instance {name} (keeper pid {})", live.record.pid);
    process::become_subreaper()
        .map_err(|e| SysError::process("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    let mut watch = Stopped {
        stream: &stream,
        name,
    };
    let result = run_inside(&LinuxSys, plan, Some(&mut watch), process::Reaping::Payload);
    process::reap_leftovers(&[]);
    drop(stream);
    result
}

/// The instance's end, as its keeper announces it (or closes the
/// connection, if it was killed): the payload gets SIGTERM through rfake's
/// own forwarding.
struct Stopped<'a> {
    stream: &'a UnixStream,
    name: &'a str,
}

impl Watch for Stopped<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    fn fired(&mut self) -> Option<String> {
        let line = rendezvous::read_notice(self.stream)
            .unwrap_or_else(|| format!("instance {} has ended", self.name));
        // SAFETY: sending a signal to this process; its handler forwards
        // it to the payload.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        Some(line)
    }
}
