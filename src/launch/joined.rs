//! The joined launch: ranks of one step on one node share one container
//! (see [`crate::join`] for why and how). The first rank starts a detached
//! keeper that builds the container; every rank, the first included,
//! enters it and runs its own payload.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{JoinPlan, Plan, build_container, keeper, run_inside};
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

/// Fork the keeper, detached: it must outlive the rank that started it.
fn start_keeper(plan: &Plan, listener: UnixListener) -> Result<(), Error> {
    keeper::spawn_detached(listener, |listener| run_keeper(plan, listener))
}

/// The keeper: build the container, then serve its namespaces until the
/// last member has gone. Returns its exit status.
fn run_keeper(plan: &Plan, listener: UnixListener) -> i32 {
    let sys = LinuxSys;
    let built = build_container(&sys, plan).and_then(|container| {
        let open_err =
            |e: std::io::Error| Error::Sys(SysError::from_io("open", "/proc/self/ns", &e));
        let outer = std::fs::File::open("/proc/self/ns/user").map_err(open_err)?;
        let inner = plan.identity.needs_inner();
        if inner {
            namespace::enter_inner(&sys, &plan.identity, Path::new("/proc/self"))?;
        }
        let ns = Namespaces::open(outer.into(), inner).map_err(open_err)?;
        Ok((container, ns))
    });
    match built {
        Ok((container, ns)) => {
            keeper::redirect_to_null(2);
            keeper::serve(&listener, Duration::ZERO, |stream| {
                join::send_ready(stream, &ns)
            });
            drop(listener);
            container.stop();
            0
        }
        Err(e) => {
            let code = e.exit_kind().code();
            keeper::refuse_pending(&listener, code, &e.to_string());
            i32::from(code)
        }
    }
}
