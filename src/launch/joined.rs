//! The joined launch: ranks of one step on one node share one container
//! (see [`crate::join`] for why and how). The first rank starts a detached
//! keeper that builds the container; every rank, the first included,
//! enters it and runs its own payload.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::unistd::{ForkResult, fork};

use super::{JoinPlan, Plan, build_container, run_inside};
use crate::error::Error;
use crate::join::{self, Namespaces, Role};
use crate::namespace;
use crate::process;
use crate::sys::{LinuxSys, SysError};

pub fn execute(plan: &Plan, join_plan: &JoinPlan) -> Result<u8, Error> {
    let t0 = Instant::now();
    let key = &join_plan.key.key;
    let stream = match join::rendezvous(&join_plan.socket, key)? {
        Role::Member(stream) => {
            log::info!("joining the container of {key} ({})", join_plan.key.origin);
            stream
        }
        Role::Leader(listener) => {
            log::info!(
                "first rank for {key} ({}): starting its keeper",
                join_plan.key.origin
            );
            start_keeper(plan, listener)?;
            match join::rendezvous(&join_plan.socket, key)? {
                Role::Member(stream) => stream,
                Role::Leader(_) => {
                    return Err(Error::Internal(format!(
                        "the keeper for {key} did not start"
                    )));
                }
            }
        }
    };
    let namespaces = join::receive(&stream, key)?;
    namespaces
        .enter()
        .map_err(|e| SysError::new("setns", "/proc/KEEPER/ns", e))?;
    log::info!("in the shared container ({:.1?})", t0.elapsed());
    process::become_subreaper()
        .map_err(|e| SysError::new("prctl(PR_SET_CHILD_SUBREAPER)", "", e))?;
    let result = run_inside(&LinuxSys, plan);
    process::reap_leftovers(&[]);
    // Leaving: the keeper sees this connection close.
    drop(stream);
    log::info!("total {:.1?}", t0.elapsed());
    result
}

/// Fork the keeper, detached (double fork, own session): it must outlive
/// the rank that started it.
fn start_keeper(plan: &Plan, listener: UnixListener) -> Result<(), Error> {
    // SAFETY: rfake is single-threaded here; the children only run rfake's
    // own code and exit.
    match unsafe { fork() }.map_err(|e| SysError::new("fork", "", e))? {
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
                    let code = keeper(plan, listener);
                    std::process::exit(code);
                }
                _ => std::process::exit(0),
            }
        }
    }
}

/// The keeper: build the container, then serve its namespaces until the
/// last member has gone. Returns its exit status.
fn keeper(plan: &Plan, listener: UnixListener) -> i32 {
    // The job's cancellation signals are for the payloads; the keeper ends
    // when they have.
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: setting a disposition.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // Nothing of the keeper's may hold the task's stdout open.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto descriptor 1, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let sys = LinuxSys;
    let built = build_container(&sys, plan).and_then(|server| {
        let open_err = |e: std::io::Error| {
            Error::Sys(SysError::new(
                "open",
                "/proc/self/ns",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            ))
        };
        let outer = std::fs::File::open("/proc/self/ns/user").map_err(open_err)?;
        let inner = plan.identity.needs_inner();
        if inner {
            namespace::enter_inner(&sys, &plan.identity, Path::new("/proc/self"))?;
        }
        let ns = Namespaces::open(outer.into(), inner).map_err(open_err)?;
        Ok((server, ns))
    });
    match built {
        Ok((server, ns)) => {
            // Set-up messages went to the first rank's stderr; from now on
            // the keeper must not hold it open (its reader would wait for
            // the last rank, not the first).
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                // SAFETY: dup2 onto descriptor 2, which this process owns.
                unsafe { libc::dup2(null.as_raw_fd(), 2) };
            }
            serve(&listener, &ns);
            drop(listener);
            if let Some(server) = server {
                server.stop();
            }
            0
        }
        Err(e) => {
            let code = e.exit_kind().code();
            refuse_pending(&listener, code, &e.to_string());
            i32::from(code)
        }
    }
}

/// Answer the ranks already waiting with the error, then go.
fn refuse_pending(listener: &UnixListener, code: u8, message: &str) {
    let _ = listener.set_nonblocking(true);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => join::send_error(&stream, code, message),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Hand the namespaces to each rank that connects; return when the last
/// one has gone (or when none came within [`join::FIRST_MEMBER_TIMEOUT`]).
fn serve(listener: &UnixListener, ns: &Namespaces) {
    let mut members: Vec<UnixStream> = Vec::new();
    let mut served = false;
    loop {
        if served && members.is_empty() {
            return;
        }
        let timeout = if served {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(join::FIRST_MEMBER_TIMEOUT.as_millis() as i32)
                .unwrap_or(PollTimeout::MAX)
        };
        let mut fds: Vec<PollFd> = std::iter::once(listener as &dyn std::os::fd::AsFd)
            .chain(members.iter().map(|m| m as &dyn std::os::fd::AsFd))
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(0) => return, // nobody came
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        // Members only ever close their end: any event means it is gone.
        let mut i = 0;
        members.retain(|_| {
            i += 1;
            !ready[i]
        });
        if ready[0] {
            if let Ok((stream, _)) = listener.accept() {
                // Only the user's own processes get the namespaces (another
                // user could not enter them, but could keep the keeper alive).
                if join::same_user(&stream) && join::send_ready(&stream, ns).is_ok() {
                    members.push(stream);
                    served = true;
                }
            }
        }
    }
}
