//! `rfake exec/run/shell`: validate → plan → execute.
//!
//! Everything that can be checked is checked before the first side effect
//! (the image, the squashfuse program, `/dev/fuse`, binds, policy); the plan
//! is plain data (`--dry-run` prints it); execution is a short sequence
//! over it.

mod joined;
pub(crate) mod keeper;
mod launcher;
mod plan;
pub mod rendezvous;
#[cfg(test)]
mod sequences;
pub mod settings;
pub mod warm;
pub(crate) mod watch;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use plan::{
    Action, Invoker, JoinMode, JoinPlan, Plan, Request, ServerPlan, lookup_host_user, plan,
};

use crate::container::namespace;
use crate::container::process::{self, CommandError, Payload, Reaping};
use crate::container::rootfs::ServeError;
use crate::container::rootfs::{self, BindKind, Step};
use crate::container::sys::{LinuxSys, Sys, SysError};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::image_server::{self, FuseMount, ImageMount, ServerKind};
use crate::{env, host};

/// The runscript location Apptainer/Singularity images use.
pub const RUNSCRIPT: &str = "/.singularity.d/runscript";
/// The FUSE device.
pub const DEV_FUSE: &str = "/dev/fuse";
/// The shell for `rfake shell` and for `rfake run` without a runscript.
pub const SHELL: &str = "/bin/sh";

/// Carry the plan out; returns the exit status (the payload's).
pub fn execute(plan: &Plan) -> Result<u8, Error> {
    // Validated before any side effect: the FUSE device is usable.
    if plan.server.is_some() {
        drop(host::open_dev_fuse(Path::new(DEV_FUSE))?);
    }
    process::install_forwarding().map_err(|e| SysError::process("sigaction", e))?;
    // No privilege can ever be gained from here on, by us or the payload.
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| SysError::process("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    match &plan.join {
        Some(join) => joined::execute(plan, join),
        None => execute_alone(plan),
    }
}

/// One container for this launch only.
fn execute_alone(plan: &Plan) -> Result<u8, Error> {
    let sys = LinuxSys;
    let t0 = Instant::now();
    make_host_dirs(plan)?;
    let mut container = build_container(&sys, plan)?;
    process::become_subreaper()
        .map_err(|e| SysError::process("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    if plan.isolation.any() {
        namespace::isolate(&sys, &plan.isolation)?;
        log::info!("namespaces: {}", plan.isolation);
    }
    // Watch the image server while the payload runs: it is this launch's
    // own, or the warm keeper's.
    let image = plan.image.path.as_path();
    let run = |watch: Option<&mut dyn process::Watch>| {
        if plan.isolation.pid {
            start_init(&sys, plan, watch, PidEntry::New)
        } else {
            enter_inner(&sys, plan)?;
            run_inside(&sys, plan, watch, Reaping::Payload)
        }
    };
    let result = match (&mut container.server, &mut container.lease) {
        (Some(server), _) => match watch::OwnServer::new(server, image) {
            Some(mut w) => run(Some(&mut w)),
            None => run(None),
        },
        (None, Some(lease)) => run(Some(&mut lease.watch(image))),
        (None, None) => run(None),
    };
    let keep: Vec<u32> = container.server.iter().map(|s| s.pid()).collect();
    process::reap_leftovers(&keep);
    container.stop();
    log::info!("total {:.1?}", t0.elapsed());
    result
}

/// The directories `--workdir` asks for, made on the host as the user
/// (before any namespace: they are the user's own files).
fn make_host_dirs(plan: &Plan) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    for (dir, mode) in &plan.host_dirs {
        if dir.is_dir() {
            continue;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(*mode)
            .create(dir)
            .map_err(|e| SysError::new("mkdir", dir, errno_of(&e)))?;
        // The umask took bits away (the sticky bit of tmp).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| SysError::new("chmod", dir, errno_of(&e)))?;
    }
    Ok(())
}

fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The payload as the user (`--keep-id`): its inner user namespace.
fn enter_inner(sys: &dyn Sys, plan: &Plan) -> Result<(), Error> {
    if plan.identity.needs_inner() {
        namespace::enter_inner(sys, &plan.identity, Path::new("/proc/self"))?;
        log::info!("inner user namespace: {}", plan.identity);
    }
    Ok(())
}

/// How the payload gets into its PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidEntry {
    /// A new namespace of this launch: the fork is its process 1.
    New,
    /// The shared container's (entered with `setns`, which moves only the
    /// children): the fork is one of its members.
    Joined,
}

/// `--pid`: a new PID namespace whose process 1 is a fork of rfake (an
/// init: it mounts the namespace's /proc, starts the payload, passes
/// signals on to it, reaps orphans, and exits with the payload's status).
/// rfake, outside, passes signals on to the init and its status through.
/// When the init exits, the kernel kills whatever is left in the
/// namespace (pid_namespaces(7)): nothing outlives the payload.
///
/// A rank of a shared container forks the same way into the container's
/// namespace (whose process 1 is the keeper's): the fork sees the
/// namespace's /proc as its own, which the rank, outside, would not.
fn start_init(
    sys: &dyn Sys,
    plan: &Plan,
    watch: Option<&mut dyn process::Watch>,
    entry: PidEntry,
) -> Result<u8, Error> {
    // In rfake, so that its warning is repeated at exit; the init inherits
    // the directory.
    let cwd = enter_start_dir(sys, plan)?;
    if entry == PidEntry::New {
        namespace::unshare_pid(sys)?;
    }
    crate::diag::keep_pid();
    // SAFETY: rfake is single-threaded here (its image server and keepers
    // are processes of their own), so the child may go on running Rust.
    match unsafe { nix::unistd::fork() }.map_err(|e| SysError::process("fork", e))? {
        nix::unistd::ForkResult::Parent { child } => {
            crate::diag::payload_started();
            Ok(process::supervise(
                child.as_raw() as u32,
                watch,
                Reaping::Payload,
            ))
        }
        nix::unistd::ForkResult::Child => {
            let status = match init(sys, plan, cwd, entry) {
                Ok(status) => status,
                Err(e) => {
                    crate::diag::error(&e.to_string());
                    e.exit_kind().code()
                }
            };
            // SAFETY: leave without running the parent's destructors and
            // exit handlers (its server, its lease): they are the parent's.
            unsafe { libc::_exit(status as i32) }
        }
    }
}

/// Process 1 of the PID namespace (or a member, joined).
fn init(sys: &dyn Sys, plan: &Plan, cwd: PathBuf, entry: PidEntry) -> Result<u8, Error> {
    process::init_started();
    // If rfake dies, so does the init, and with it the namespace. Not
    // `process::die_with_parent`: its parent check reads getppid(), which
    // is 0 here (rfake is outside the new PID namespace).
    // SAFETY: prctl(2) with plain integers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
        return Err(SysError::process("prctl(PR_SET_PDEATHSIG)", nix::errno::Errno::last()).into());
    }
    if entry == PidEntry::Joined {
        // In the namespaces already (the keeper mounted its /proc).
        return run_payload(plan, cwd, None, Reaping::Payload);
    }
    if plan.fresh_proc {
        // proc(5): a procfs shows the PID namespace of the process that
        // mounts it. It goes over the host's /proc bind, which must stay
        // beneath: the kernel lets a user namespace mount procfs only
        // where one is fully visible already (mount_namespaces(7)).
        sys.mount(
            Path::new("proc"),
            Path::new("/proc"),
            Some("proc"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None,
        )?;
    }
    enter_inner(sys, plan)?;
    run_payload(plan, cwd, None, Reaping::Init)
}

/// What a built container holds on to: its image's server (a mount of its
/// own) or its lease of a warm mount.
#[derive(Debug, Default)]
pub struct Container {
    pub server: Option<image_server::Server>,
    pub lease: Option<warm::Lease>,
    /// The writable `--overlay`'s lock, held while the container lives.
    pub overlay_lock: Option<crate::overlay::Lock>,
}

impl Container {
    /// Stop the server, or leave the warm mount; then free the overlay.
    pub fn stop(self) {
        // The image overlays' servers first: fuse-overlayfs reads the image.
        crate::overlay::fuse::stop_servers();
        if let Some(server) = self.server {
            server.stop();
        }
        if let Some(lease) = self.lease {
            lease.release();
        }
        drop(self.overlay_lock);
    }
}

/// Worker threads of the built-in server: two serve a payload's parallel
/// reads without the cross-CPU hand-offs a larger pool adds.
const SERVER_THREADS: u32 = 2;

/// The mount of `plan`'s image, not yet made.
fn image_mount(plan: &Plan) -> Result<Option<ImageMount>, Error> {
    let Some(server) = &plan.server else {
        return Ok(None);
    };
    let image = plan.image.file.clone().ok_or_else(|| {
        Error::Internal(format!(
            "image {} was validated without keeping it open",
            plan.image.path.display()
        ))
    })?;
    let offset = plan.image.squashfs_offset.unwrap_or(0);
    let (kind, subtype) = match server {
        ServerPlan::Builtin { cache_bytes, cold } => (
            ServerKind::Builtin(image_server::builtin::Builtin {
                image,
                offset,
                cache_bytes: *cache_bytes,
                threads: SERVER_THREADS,
                // Made by a joined or warm keeper, which outlives the launch
                // that started it.
                quiet: plan.join.is_some() || plan.warm.is_some(),
                cold: cold.clone(),
            }),
            "rfake",
        ),
        ServerPlan::Squashfuse(program) => (
            ServerKind::Squashfuse(image_server::squashfuse::Squashfuse {
                program: program.clone(),
                image,
                offset,
            }),
            "squashfuse",
        ),
    };
    Ok(Some(ImageMount {
        // The device is opened inside the namespace (see crate::image_server).
        fuse: FuseMount::new(plan.image.path.clone(), PathBuf::from(DEV_FUSE), subtype),
        kind,
    }))
}

/// Enter the outer namespaces and build the container's root (everything
/// up to and including `pivot_root` into it), on a warm mount of the image
/// when the plan says so.
pub(crate) fn build_container(sys: &dyn Sys, plan: &Plan) -> Result<Container, Error> {
    let t0 = Instant::now();
    let mut lease = match &plan.warm {
        Some(w) => warm::lease(plan, w)?,
        None => None,
    };
    let mut own_mount = None;
    let mut warm_mount = None;
    let mut no_mount = NoImageMount;
    let image_mounter: &mut dyn rootfs::ImageMounter = match lease.as_mut() {
        Some(lease) => {
            lease.enter(sys)?;
            log::info!(
                "on the warm mount: its user namespace, a mount namespace of our own ({:.1?})",
                t0.elapsed()
            );
            warm_mount.insert(warm::WarmMount {
                mount: lease.take_mount(),
            })
        }
        None => {
            own_mount = image_mount(plan)?;
            namespace::enter(
                sys,
                &plan.identity,
                Path::new("/proc/self"),
                Path::new("/proc/sys"),
            )?;
            log::info!(
                "outer user namespace: uid 0 inside = uid {} outside ({:.1?})",
                plan.identity.outside_uid,
                t0.elapsed()
            );
            match own_mount.as_mut() {
                Some(m) => m,
                None => &mut no_mount,
            }
        }
    };
    // A writable --overlay is this container's alone while it lives (the
    // ranks of a joined container share it). Taken here, in the process
    // that holds the container (this launch, or a joined container's
    // keeper), after a warm mount's keeper was forked: a fork shares the
    // lock, and that keeper outlives the container.
    let overlay_lock = crate::overlay::lock(plan.overlays())?;
    rootfs::execute(
        sys,
        &rootfs::Layout::container(),
        &plan.steps,
        image_mounter,
        &mut log_step,
    )
    .inspect_err(|_| crate::overlay::fuse::stop_servers())?;
    Ok(Container {
        server: own_mount.and_then(|mut m| m.take_server()),
        lease,
        overlay_lock,
    })
}

fn log_step(step: &Step, took: std::time::Duration, note: Option<&str>) {
    match (step, note) {
        (Step::Bind(b), Some(note)) if b.kind == BindKind::Dir => {
            log::warn!("{} not bound: {note}", b.dst.display())
        }
        (_, Some(note)) => log::info!("{step}: {note} ({took:.1?})"),
        (_, None) => log::info!("{step} ({took:.1?})"),
    }
}

/// A directory image has no image mount step; reaching it is a bug.
struct NoImageMount;

impl rootfs::ImageMounter for NoImageMount {
    fn prepare(&mut self, _: &dyn Sys) -> Result<(), ServeError> {
        Err(ServeError::new(ExitKind::Internal, "no image mounter"))
    }
    fn attach(&mut self, _: &dyn Sys, target: &Path) -> Result<(), ServeError> {
        Err(ServeError::new(
            ExitKind::Internal,
            format!("no image mounter for {}", target.display()),
        ))
    }
}

/// Inside the new root: working directory, environment, command, payload
/// (and `watch`, the image server, while it runs).
pub(crate) fn run_inside(
    sys: &dyn Sys,
    plan: &Plan,
    watch: Option<&mut dyn process::Watch>,
    reaping: Reaping,
) -> Result<u8, Error> {
    let cwd = enter_start_dir(sys, plan)?;
    run_payload(plan, cwd, watch, reaping)
}

/// Inside the new root: change to the working directory and make the
/// payload that runs `action` (the plan's environment, its command looked
/// up in the image).
pub(crate) fn payload(sys: &dyn Sys, plan: &Plan, action: &Action) -> Result<Payload, Error> {
    let cwd = enter_start_dir(sys, plan)?;
    make_payload(plan, cwd, action)
}

/// Change to the directory the payload starts in, warning when it is not
/// the current one (or missing).
fn enter_start_dir(sys: &dyn Sys, plan: &Plan) -> Result<PathBuf, Error> {
    Ok(if sys.chdir(&plan.start_dir).is_ok() {
        if let Some(note) = &plan.start_dir_note {
            log::warn!("{note}");
        }
        plan.start_dir.clone()
    } else {
        log::warn!(
            "{} does not exist in the container; starting in /",
            plan.start_dir.display()
        );
        sys.chdir(Path::new("/"))?;
        PathBuf::from("/")
    })
}

/// In the start directory `cwd`: environment, command, payload.
fn run_payload(
    plan: &Plan,
    cwd: PathBuf,
    watch: Option<&mut dyn process::Watch>,
    reaping: Reaping,
) -> Result<u8, Error> {
    let payload = make_payload(plan, cwd, &plan.action)?;
    crate::diag::payload_started();
    Ok(process::run(&payload, watch, reaping)?)
}

/// The payload that runs `action` in `cwd`: the plan's environment, its
/// command looked up in the image.
fn make_payload(plan: &Plan, cwd: PathBuf, action: &Action) -> Result<Payload, Error> {
    let mut payload_env = plan.base_env.clone();
    let t = Instant::now();
    match env::image::apply(&mut payload_env, &cwd) {
        Ok(Some(note)) => log::info!("image environment: {note} ({:.1?})", t.elapsed()),
        Ok(None) => {}
        Err(e) => log::warn!("{e}; continuing without it"),
    }
    env::apply(&mut payload_env, &plan.overrides);
    plan.devices.prepend_library_path(&mut payload_env);
    env::finish(&mut payload_env, &plan.image.path);

    let argv = command_line(action);
    let (cmd, args) = argv.split_first().ok_or_else(|| {
        Error::Command(CommandError::NotFound {
            cmd: OsString::new(),
        })
    })?;
    let program = process::resolve_command(cmd, env::get(&payload_env, "PATH"))?;
    log::info!("running {} as {}", program.display(), plan.identity);
    Ok(Payload {
        argv0: cmd.clone(),
        program,
        args: args.to_vec(),
        env: payload_env,
        cwd,
        drop_caps: plan.drop_caps,
    })
}

/// The argv to run for `action`, looked up inside the image.
fn command_line(action: &Action) -> Vec<OsString> {
    match action {
        Action::Exec(argv) => argv.clone(),
        Action::Run(args) => {
            let runscript = Path::new(RUNSCRIPT);
            let mut argv: Vec<OsString> = match std::fs::metadata(runscript) {
                Ok(m) if m.is_file() => {
                    use std::os::unix::fs::PermissionsExt;
                    if m.permissions().mode() & 0o111 != 0 {
                        vec![RUNSCRIPT.into()]
                    } else {
                        vec![SHELL.into(), RUNSCRIPT.into()]
                    }
                }
                _ => vec![SHELL.into()],
            };
            argv.extend(args.iter().cloned());
            argv
        }
        Action::Shell => vec![SHELL.into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_and_shell_command_lines() {
        assert_eq!(
            command_line(&Action::Exec(vec!["id".into(), "-u".into()])),
            vec![OsString::from("id"), OsString::from("-u")]
        );
        assert_eq!(
            command_line(&Action::Shell),
            vec![OsString::from("/bin/sh")]
        );
    }
}
