//! Keepers: detached rfake processes that hold something for launches on a
//! rendezvous socket ([`super::rendezvous`]): the shared container of a job step
//! ([`super::joined`]) or a warm image mount ([`super::warm`]). This module
//! has what both do: start detached, answer the same user only, count the
//! members (each stays connected while it runs; the kernel closes its end
//! however it ends) and go when the last one has gone, after a linger, or
//! at once when the image server they depend on has ended.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{ForkResult, fork};

use super::rendezvous;
use crate::container::process::{self, Watch};
use crate::container::sys::SysError;
use crate::error::Error;

/// Fork `keeper` detached (double fork, own session): it must outlive the
/// launch that started it. `keeper` returns the exit status.
pub fn spawn_detached(
    listener: UnixListener,
    keeper: impl FnOnce(UnixListener) -> i32,
) -> Result<(), Error> {
    // SAFETY: rfake is single-threaded here; the children only run rfake's
    // own code and exit.
    match unsafe { fork() }.map_err(|e| SysError::process("fork", e))? {
        ForkResult::Parent { child } => {
            drop(listener);
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(())
        }
        ForkResult::Child => {
            let _ = nix::unistd::setsid();
            // SAFETY: as above.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    detach_signals_and_stdout();
                    let code = keeper(listener);
                    std::process::exit(code);
                }
                _ => std::process::exit(0),
            }
        }
    }
}

/// The job's cancellation signals are for the payloads; a keeper ends when
/// they have. Nothing of a keeper's may hold the task's stdout open.
fn detach_signals_and_stdout() {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: setting a disposition.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    redirect_to_null(1);
}

/// Point descriptor `fd` (1 or 2) at /dev/null. Set-up messages go to the
/// first launch's stderr; once set up, a keeper must not hold it open (its
/// reader would wait for the keeper, not for the launch).
pub fn redirect_to_null(fd: i32) {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto a standard descriptor this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// Answer the launches already waiting with the error, then go.
pub fn refuse_pending(listener: &UnixListener, code: u8, message: &str) {
    let _ = listener.set_nonblocking(true);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => rendezvous::send_error(&stream, code, message),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Serve launches: `welcome` answers each one that connects (the same user
/// only: another could not use what it gets, but could keep the keeper
/// alive); return when the last member has gone and `linger` has passed
/// with nobody new, or when nobody came within
/// [`rendezvous::FIRST_MEMBER_TIMEOUT`].
///
/// `server` watches the image server the members' files come from. When
/// it ends, what the keeper holds is worth nothing: it answers the
/// launches already waiting that the server is gone, closes the socket (the
/// name is free at once: the next launch starts a fresh keeper and server),
/// sends each member the line saying how the server ended, and returns.
pub fn serve(
    listener: UnixListener,
    linger: Duration,
    mut welcome: impl FnMut(&UnixStream) -> std::io::Result<()>,
    mut server: Option<&mut dyn Watch>,
) {
    let mut members: Vec<UnixStream> = Vec::new();
    let mut served = false;
    loop {
        // How long to wait for the next event; `None`: for as long as it takes.
        let wait = match (served, members.is_empty()) {
            (false, _) => Some(rendezvous::FIRST_MEMBER_TIMEOUT),
            (true, true) if linger.is_zero() => return,
            (true, true) => Some(linger),
            (true, false) => None,
        };
        let timeout = wait.map_or(PollTimeout::NONE, |d| {
            PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX)
        });
        // Polled: the listener, the server's watch (if any), the members.
        let watched = usize::from(server.is_some());
        let mut fds: Vec<PollFd> = std::iter::once(&listener as &dyn AsFd)
            .map(|fd| fd.as_fd())
            .chain(server.as_deref().map(Watch::fd))
            .chain(members.iter().map(|m| m.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(0) => return, // nobody came, or the linger is over
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        // The server first: a launch arriving with its end must not get
        // the dead mount.
        if watched == 1 && ready[1] {
            match server.take().and_then(|w| w.fired()) {
                Some(line) => return close_down(listener, &members, &line),
                None => continue,
            }
        }
        // Members only ever close their end: any event means it is gone.
        let mut i = watched;
        members.retain(|_| {
            i += 1;
            !ready[i]
        });
        if ready[0]
            && let Ok((stream, _)) = listener.accept()
            && rendezvous::same_user(&stream)
        {
            // It may have ended since the poll.
            if server
                .as_deref()
                .is_some_and(|w| process::readable(w.fd(), Duration::ZERO))
                && let Some(line) = server.take().and_then(|w| w.fired())
            {
                rendezvous::send_gone(&stream, &line);
                return close_down(listener, &members, &line);
            }
            if welcome(&stream).is_ok() {
                members.push(stream);
                served = true;
            }
        }
    }
}

/// The image server has ended (`line` says how): answer the launches still
/// waiting that it is gone (they start again, with a fresh keeper), free
/// the name, tell every member.
fn close_down(listener: UnixListener, members: &[UnixStream], line: &str) {
    log::info!("{line}");
    let _ = listener.set_nonblocking(true);
    while let Ok((stream, _)) = listener.accept() {
        rendezvous::send_gone(&stream, line);
    }
    // A launch connecting from here on finds no listener, or one that is
    // reset (it starts again); closing the socket frees the abstract name.
    drop(listener);
    for m in members {
        rendezvous::send_notice(m, line);
    }
}
