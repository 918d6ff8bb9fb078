//! The instance's keeper: builds the container, runs the startscript in
//! it, records the instance, and serves launches that enter it until it is
//! stopped, its image server ends, or the Slurm job it belongs to ends.
//!
//! How it ends with a job: Slurm's facts are that when a job (or a step)
//! ends, slurmstepd signals every process it tracks and, with
//! `ProctrackType=proctrack/cgroup` (the usual choice), kills the whole
//! cgroup of the step with SIGKILL, detached sessions included; the keeper
//! lives in the cgroup of the step that started it (the batch script's,
//! for `instance start` in the script). A SIGKILL leaves its record behind,
//! which no listing ever shows (the socket went with the keeper). Where
//! Slurm tracks processes some other way, the keeper watches the
//! slurmstepd it was started under ([`job_stepd`], a pidfd: no permission
//! is needed to watch a process end) and stops the instance itself when
//! that ends.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitPidFlag;
use nix::unistd::Pid;

use super::{JOIN, PING, Record, STARTSCRIPT, STOP, remove_record, write_record};
use crate::container::process::{self, Watch};
use crate::container::sys::{LinuxSys, SysError};
use crate::error::Error;
use crate::launch::rendezvous::{self, Namespaces};
use crate::launch::{Action, Plan, build_container, keeper, payload, watch};

/// What the starter hands its keeper.
pub struct Start<'a> {
    /// The launch plan; its action runs the startscript.
    pub plan: &'a Plan,
    pub record: Record,
    /// The records' directory (opened before the root changes).
    pub dir: OwnedFd,
    pub stem: String,
    /// The startscript's stdout and stderr.
    pub out: File,
    pub err: File,
    /// The slurmstepd of the job step that started the instance.
    pub stepd: Option<(u32, OwnedFd)>,
}

/// How long a stop waits for the processes after the signal, at most, when
/// the job it belongs to has ended (Slurm kills what is left anyway).
const JOB_END_GRACE: Duration = Duration::from_secs(2);

/// The keeper; returns its exit status.
pub fn run(start: Start, listener: UnixListener) -> i32 {
    let sys = LinuxSys;
    // SAFETY: naming this process (what ps and top show).
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rfake-instance".as_ptr()) };
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto stdin, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    // Nothing of the keeper's (its image server included, forked during
    // the set-up) may hold the starter's stderr open: whoever reads it
    // would wait for the instance to end. Set-up errors reach the starter
    // over the socket.
    keeper::redirect_to_null(2);
    let plan = start.plan;
    let built = build_container(&sys, plan).and_then(|container| {
        let open_err =
            |e: std::io::Error| Error::Sys(SysError::from_io("open", "/proc/self/ns", &e));
        let outer = File::open("/proc/self/ns/user").map_err(open_err)?;
        let inner = plan.identity.needs_inner();
        if inner {
            crate::container::namespace::enter_inner(
                &sys,
                &plan.identity,
                Path::new("/proc/self"),
            )?;
        }
        let ns = Namespaces::open(outer.into(), inner).map_err(open_err)?;
        Ok((container, ns))
    });
    let (mut container, ns) = match built {
        Ok(built) => built,
        Err(e) => return refuse(&listener, &e),
    };
    let _ = process::become_subreaper();
    let script = match start_script(plan, &start.out, &start.err) {
        Ok(script) => script,
        Err(e) => {
            container.stop();
            return refuse(&listener, &e);
        }
    };
    let mut record = start.record.clone();
    record.pid = std::process::id();
    if let Err(e) = write_record(&start.dir, &start.stem, &record) {
        let e = Error::Failed {
            kind: crate::exit::ExitKind::CannotCreate,
            message: format!("instance {}: writing its record: {}", record.name, e.desc()),
        };
        stop_processes(script, Signal::SIGKILL, Duration::ZERO, &container);
        container.stop();
        return refuse(&listener, &e);
    }
    let server_pid = container
        .server
        .as_ref()
        .map(|s| s.pid())
        .or_else(|| container.lease.as_ref().and_then(|l| l.server_pid()));
    let image = plan.image.path.clone();
    let how = {
        let mut own;
        let mut leased;
        let server: Option<&mut dyn Watch> = match (&mut container.server, &mut container.lease) {
            (Some(s), _) => {
                own = watch::OwnServer::new(s, &image);
                own.as_mut().map(|w| w as &mut dyn Watch)
            }
            (None, Some(lease)) => {
                leased = lease.watch(&image);
                Some(&mut leased)
            }
            (None, None) => None,
        };
        serve(
            &listener,
            &ns,
            server_pid,
            server,
            start.stepd.as_ref(),
            &record,
        )
    };
    // The name is free once the listener is closed: a new start may begin.
    remove_record(&start.dir, &start.stem);
    log::info!("instance {}: {}", record.name, how.why);
    // The launches inside end with it: they are told first (each then
    // passes the signal to its payload), so that all stop together.
    for m in &how.members {
        rendezvous::send_notice(m, &format!("instance {} {}", record.name, how.why));
    }
    stop_processes(script, how.signal, how.timeout, &container);
    drop(listener);
    container.stop();
    drop(how.stopper);
    0
}

fn refuse(listener: &UnixListener, e: &Error) -> i32 {
    let code = e.exit_kind().code();
    keeper::refuse_pending(listener, code, &e.to_string());
    i32::from(code)
}

/// Start the startscript (when the image has one), in a process group of
/// its own, its output to the instance's logs. Its pid.
fn start_script(plan: &Plan, out: &File, err: &File) -> Result<Option<u32>, Error> {
    let script = Path::new(STARTSCRIPT);
    let Ok(meta) = std::fs::metadata(script) else {
        log::info!("no {STARTSCRIPT} in the image: the instance runs nothing of its own");
        return Ok(None);
    };
    let argv = match &plan.action {
        Action::Exec(argv) => argv.clone(),
        _ => vec![STARTSCRIPT.into()],
    };
    use std::os::unix::fs::PermissionsExt;
    let argv = if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        argv
    } else {
        // Not executable: run by the shell, as `rfake run` runs a runscript.
        std::iter::once(crate::launch::SHELL.into())
            .chain(argv)
            .collect()
    };
    let payload = payload(&LinuxSys, plan, &Action::Exec(argv))?;
    let mut cmd = Command::new(&payload.program);
    cmd.arg0(&payload.argv0)
        .args(&payload.args)
        .env_clear()
        .envs(payload.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&payload.cwd)
        .stdin(Stdio::null())
        .stdout(
            out.try_clone()
                .map_err(|e| io_error("the startscript's log", e))?,
        )
        .stderr(
            err.try_clone()
                .map_err(|e| io_error("the startscript's log", e))?,
        )
        .process_group(0);
    let keeper = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The keeper ignores the job's signals (they are for the
            // payloads); the startscript must not inherit that.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            // If the keeper dies (even SIGKILL), the startscript dies too.
            process::die_with_parent(keeper)
        });
    }
    let child = cmd.spawn().map_err(|source| process::CommandError::Exec {
        cmd: payload.argv0.clone(),
        path: payload.program.clone(),
        source,
    })?;
    log::info!("startscript running (pid {})", child.id());
    Ok(Some(child.id()))
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

/// Why and how the instance ends.
struct End {
    why: String,
    signal: Signal,
    timeout: Duration,
    /// The launches inside it, told why.
    members: Vec<UnixStream>,
    /// The `instance stop` waiting for the keeper to go.
    stopper: Option<UnixStream>,
}

/// Serve requests until the instance is to end.
fn serve(
    listener: &UnixListener,
    ns: &Namespaces,
    server_pid: Option<u32>,
    mut server: Option<&mut dyn Watch>,
    stepd: Option<&(u32, OwnedFd)>,
    record: &Record,
) -> End {
    let mut members: Vec<UnixStream> = Vec::new();
    let end = |why: String, signal, timeout, members| End {
        why,
        signal,
        timeout,
        members,
        stopper: None,
    };
    loop {
        // Polled: the listener, the server's watch, the job's slurmstepd,
        // the members (only ever closing their end). Every second, the
        // startscript's processes are reaped.
        let mut fds: Vec<PollFd> = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let server_at = server.as_deref().map(|w| {
            fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stepd_at = stepd.map(|(_, fd)| {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let first_member = fds.len();
        fds.extend(
            members
                .iter()
                .map(|m| PollFd::new(m.as_fd(), PollFlags::POLLIN)),
        );
        let n = match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                return end(
                    format!("stopped: poll: {}", e.desc()),
                    Signal::SIGTERM,
                    Duration::from_secs(10),
                    members,
                );
            }
        };
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        reap(server_pid);
        if n == 0 {
            continue;
        }
        if let Some(i) = server_at
            && ready[i]
        {
            let line = server
                .take()
                .and_then(|w| w.fired())
                .unwrap_or_else(|| "its image server has ended".into());
            return end(
                format!("has ended: {line}"),
                Signal::SIGKILL,
                Duration::ZERO,
                members,
            );
        }
        if let (Some(i), Some((pid, _))) = (stepd_at, stepd)
            && ready[i]
        {
            return end(
                format!(
                    "stopped: job {} has ended on this node (its slurmstepd, pid {pid}, has gone)",
                    record.job.as_deref().unwrap_or("?")
                ),
                Signal::SIGTERM,
                JOB_END_GRACE,
                members,
            );
        }
        let mut i = first_member;
        members.retain(|_| {
            i += 1;
            !ready[i - 1]
        });
        if !ready[0] {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if !rendezvous::same_user(&stream) {
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = [0u8; 1];
        if (&stream).read_exact(&mut request).is_err() {
            continue;
        }
        match request[0] {
            PING => {
                let mut answer = [0u8; 5];
                answer[1..].copy_from_slice(&std::process::id().to_le_bytes());
                let _ = std::io::Write::write_all(&mut &stream, &answer);
            }
            JOIN if rendezvous::send_ready(&stream, ns, server_pid).is_ok() => {
                members.push(stream);
            }
            STOP => {
                let mut args = [0u8; 5];
                if (&stream).read_exact(&mut args).is_err() {
                    continue;
                }
                let signal = Signal::try_from(i32::from(args[0])).unwrap_or(Signal::SIGTERM);
                let timeout = u32::from_le_bytes([args[1], args[2], args[3], args[4]]);
                // The stopper keeps its connection: it closes when the
                // keeper has gone.
                let mut how = end(
                    format!("stopped ({signal})"),
                    signal,
                    Duration::from_secs(u64::from(timeout)),
                    members,
                );
                how.stopper = Some(stream);
                return how;
            }
            _ => {}
        }
    }
}

/// Reap the startscript and whatever it left (the keeper is their
/// subreaper), not the image server (its own watch reaps it).
fn reap(server: Option<u32>) {
    for pid in children() {
        if Some(pid) != server {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
        }
    }
}

fn children() -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/self/task/{}/children", std::process::id()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Signal the startscript's process group and every process the keeper
/// reaps for; wait up to `timeout` for them to end, then kill what is left.
fn stop_processes(
    script: Option<u32>,
    signal: Signal,
    timeout: Duration,
    container: &crate::launch::Container,
) {
    let server = container.server.as_ref().map(|s| s.pid());
    let others = || -> Vec<u32> {
        children()
            .into_iter()
            .filter(|p| Some(*p) != server)
            .collect()
    };
    if let Some(pgid) = script {
        let _ = kill(Pid::from_raw(-(pgid as i32)), signal);
    }
    for pid in others() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        reap(server);
        if others().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(pgid) = script {
        let _ = kill(Pid::from_raw(-(pgid as i32)), Signal::SIGKILL);
    }
    let keep: Vec<u32> = server.into_iter().collect();
    process::reap_leftovers(&keep);
}

/// The slurmstepd this process runs under, if any: the nearest ancestor
/// named so (its process title changes, its name does not).
pub fn job_stepd(proc: &Path) -> Option<u32> {
    process::ancestors(proc, 64)
        .into_iter()
        .find(|a| a.comm == "slurmstepd")
        .map(|a| a.pid)
}
