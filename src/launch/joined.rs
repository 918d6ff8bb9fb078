//! The joined launch: ranks of one step on one node share one container
//! (see [`super::rendezvous`] for why and how). The first rank starts a detached
//! keeper that builds the container; every rank, the first included,
//! enters it and runs its own payload.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::sched::CloneFlags;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{JoinPlan, Plan, build_container, keeper, run_inside, watch};
use crate::container::namespace;
use crate::container::process::{self, Watch};
use crate::container::sys::{LinuxSys, Sys, SysError};
use crate::error::Error;
use crate::launch::rendezvous::{self, JoinError, Namespaces, Role};

/// How often a rank starts again when the keeper it reached was leaving.
const ATTEMPTS: usize = 3;

pub fn execute(plan: &Plan, join_plan: &JoinPlan) -> Result<u8, Error> {
    let t0 = Instant::now();
    let key = &join_plan.key.key;
    let name = match join_plan.socket.resolve() {
        Ok(name) => name,
        // The ranks must still find one another: with a name anyone can
        // compute (a socket another user took is refused all the same).
        Err(e) => {
            log::warn!(
                "joining the container of {key}: {e}; its rendezvous name is made without your \
                 secret, so other users can compute it"
            );
            join_plan.socket.without_secret()
        }
    };
    let (stream, namespaces, server) = meet(plan, join_plan, &name)?;
    namespaces.enter(&LinuxSys)?;
    log::info!("in the shared container ({:.1?})", t0.elapsed());
    process::become_subreaper()
        .map_err(|e| SysError::process("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    let mut watch = watch::FromKeeper::new(&stream, server, &plan.image.path);
    let result = if plan.isolation.pid {
        super::start_init(&LinuxSys, plan, Some(&mut watch), super::PidEntry::Joined)
    } else {
        run_inside(&LinuxSys, plan, Some(&mut watch), process::Reaping::Payload)
    };
    process::reap_leftovers(&[]);
    // Leaving: the keeper sees this connection close.
    drop(stream);
    log::info!("total {:.1?}", t0.elapsed());
    result
}

/// Reach the keeper of `name` (starting it as the first rank) and get the
/// container's namespaces, and its image server (pid and pidfd).
#[allow(clippy::type_complexity)]
fn meet(
    plan: &Plan,
    join_plan: &JoinPlan,
    name: &str,
) -> Result<(UnixStream, Namespaces, Option<(u32, std::os::fd::OwnedFd)>), Error> {
    let key = &join_plan.key.key;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let stream = match rendezvous::rendezvous(name, key)? {
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
                // While the keeper builds the container: once per step.
                crate::doctor::launch_check::first_rank(plan);
                match rendezvous::rendezvous(name, key)? {
                    Role::Member(stream) => stream,
                    Role::Leader(_) => continue,
                }
            }
        };
        match rendezvous::receive(&stream, key) {
            Ok((namespaces, server)) => match server.map(watch::server_alive) {
                // Its server ended since the keeper looked: it is leaving.
                Some(None) => {
                    last = Some(JoinError::Gone {
                        key: key.clone(),
                        message: "its image server had ended".into(),
                    })
                }
                Some(alive) => return Ok((stream, namespaces, alive)),
                None => return Ok((stream, namespaces, None)),
            },
            // The keeper was leaving (the last rank had gone, or its server
            // ended): start again, with a fresh one.
            Err(e @ (JoinError::NoAnswer { .. } | JoinError::Gone { .. })) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last
        .map(Error::from)
        .unwrap_or_else(|| Error::Internal(format!("the keeper for {key} did not start"))))
}

/// `--pid` in a shared container: a PID namespace whose process 1, forked
/// by the keeper, mounts its /proc and then only reaps what the ranks'
/// payloads leave behind. The ranks enter the namespace (their payloads
/// are its members); when the keeper goes, so does this init (parent-death
/// signal), and the kernel kills whatever is left in the namespace.
/// Returns the namespace.
fn start_pid_holder(sys: &dyn Sys, plan: &Plan) -> Result<OwnedFd, Error> {
    namespace::unshare_pid(sys)?;
    // SAFETY: the keeper is single-threaded; the child runs rfake's own
    // code only and never returns.
    match unsafe { nix::unistd::fork() }.map_err(|e| SysError::process("fork", e))? {
        nix::unistd::ForkResult::Parent { child } => {
            let path = format!("/proc/{child}/ns/pid");
            let fd = std::fs::File::open(&path)
                .map_err(|e| Error::Sys(SysError::from_io("open", "/proc/PID/ns/pid", &e)))?;
            Ok(OwnedFd::from(fd))
        }
        nix::unistd::ForkResult::Child => {
            // SAFETY: prctl(2) with plain integers; close_range(2) on
            // descriptors nothing else in this process uses.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Nothing of the keeper's stays open here: not the first
                // rank's stderr (its reader would wait for this process),
                // nor the rendezvous socket (its name must go with the
                // keeper).
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            }
            keeper::redirect_to_null(1);
            keeper::redirect_to_null(2);
            if plan.fresh_proc {
                let flags = nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC;
                if let Err(e) = sys.mount(
                    Path::new("proc"),
                    Path::new("/proc"),
                    Some("proc"),
                    flags,
                    None,
                ) {
                    log::warn!("the shared PID namespace keeps the host's /proc: {e}");
                }
            }
            loop {
                if let Err(nix::errno::Errno::ECHILD) =
                    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), None)
                {
                    // Nothing to reap: wait for the next orphan.
                    nix::unistd::pause();
                }
            }
        }
    }
}

/// Fork the keeper, detached: it must outlive the rank that started it.
fn start_keeper(plan: &Plan, listener: UnixListener) -> Result<(), Error> {
    keeper::spawn_detached(listener, |listener| run_keeper(plan, listener))
}

/// The keeper: build the container, then serve its namespaces until the
/// last member has gone, or until the image server its files come from
/// has ended. Returns its exit status.
fn run_keeper(plan: &Plan, listener: UnixListener) -> i32 {
    let sys = LinuxSys;
    let built = build_container(&sys, plan).and_then(|container| {
        let open_err =
            |e: std::io::Error| Error::Sys(SysError::from_io("open", "/proc/self/ns", &e));
        let outer = std::fs::File::open("/proc/self/ns/user").map_err(open_err)?;
        // One set of namespaces for the container, which every rank enters.
        namespace::isolate(&sys, &plan.isolation)?;
        let mut extra = Vec::new();
        for (on, kind, name) in [
            (plan.isolation.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
            (plan.isolation.uts, CloneFlags::CLONE_NEWUTS, "uts"),
            (plan.isolation.net, CloneFlags::CLONE_NEWNET, "net"),
        ] {
            if on {
                let fd = std::fs::File::open(format!("/proc/self/ns/{name}")).map_err(open_err)?;
                extra.push((OwnedFd::from(fd), kind));
            }
        }
        if plan.isolation.pid {
            extra.push((start_pid_holder(&sys, plan)?, CloneFlags::CLONE_NEWPID));
        }
        let inner = plan.identity.needs_inner();
        if inner {
            namespace::enter_inner(&sys, &plan.identity, Path::new("/proc/self"))?;
        }
        let mut ns = Namespaces::open(outer.into(), inner).map_err(open_err)?;
        ns.extra = extra;
        Ok((container, ns))
    });
    match built {
        Ok((mut container, ns)) => {
            keeper::redirect_to_null(2);
            // The server is the keeper's own, or a warm keeper's (the
            // container was built on a warm mount).
            let server = container
                .server
                .as_ref()
                .map(|s| s.pid())
                .or_else(|| container.lease.as_ref().and_then(|l| l.server_pid()));
            let image = plan.image.path.as_path();
            let mut own;
            let mut leased;
            let watch: Option<&mut dyn Watch> = match (&mut container.server, &mut container.lease)
            {
                (Some(s), _) => {
                    own = watch::OwnServer::new(s, image);
                    own.as_mut().map(|w| w as &mut dyn Watch)
                }
                (None, Some(lease)) => {
                    leased = lease.watch(image);
                    Some(&mut leased)
                }
                (None, None) => None,
            };
            keeper::serve(
                listener,
                Duration::ZERO,
                |stream| rendezvous::send_ready(stream, &ns, server),
                watch,
            );
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
