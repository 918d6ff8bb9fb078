//! `rfake instance start|list|stop` (see [`crate::instance`]).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{LaunchArgs, PullArgs};
use crate::config::Config;
use crate::error::Error;
use crate::exit::ExitKind;
use crate::instance::{self, InstanceCommand, Pong, Record, STARTSCRIPT, STOP, Scope, keeper};
use crate::launch::rendezvous::{self, Role};
use crate::launch::{self, Action, Invoker, JoinMode, settings::Settings};
use crate::pull::PullOptions;

pub fn run(
    command: InstanceCommand,
    invoker: &Invoker,
    load: impl Fn() -> Result<Config, Error>,
) -> Result<u8, Error> {
    let scope = Scope::new(invoker.uid, &invoker.env);
    match command {
        InstanceCommand::Start {
            launch,
            pull,
            image,
            name,
            args,
        } => start(launch, &pull, image, &name, args, invoker, load()?, &scope),
        InstanceCommand::List { json, pattern } => list(&scope, json, pattern.as_deref()),
        InstanceCommand::Stop {
            all,
            signal,
            timeout,
            force,
            pattern,
        } => {
            let signal = match (force, signal) {
                (true, _) => nix::sys::signal::Signal::SIGKILL,
                (false, Some(s)) => parse_signal(&s)?,
                (false, None) => nix::sys::signal::Signal::SIGTERM,
            };
            let timeout = if force { 0 } else { timeout };
            stop(&scope, all, pattern.as_deref(), signal, timeout)
        }
    }
}

/// How often a start tries again when the keeper it found was leaving.
const ATTEMPTS: usize = 3;

#[allow(clippy::too_many_arguments)]
fn start(
    args: LaunchArgs,
    pull: &PullArgs,
    image: PathBuf,
    name: &str,
    script_args: Vec<OsString>,
    invoker: &Invoker,
    config: Config,
    scope: &Scope,
) -> Result<u8, Error> {
    instance::check_name(name)?;
    let image = crate::pull::local_image(&image, || PullOptions::new(pull, &config, &invoker.env))?;
    let dry_run = args.dry_run;
    let mut argv = vec![OsString::from(STARTSCRIPT)];
    argv.extend(script_args);
    let mut request = super::launch::request(args, image, Action::Exec(argv));
    // The instance is a container of its own, whatever launcher runs this.
    request.join = JoinMode::Off;
    let settings = Settings::from_config(&config);
    let plan = launch::plan(&request, invoker, &settings, &launch::lookup_host_user)?;
    let job = scope.job.clone();
    let socket = scope.socket(name, job.as_deref());
    if dry_run {
        println!("{plan}");
        println!(
            "instance: {name}{}, socket {socket}",
            job.as_deref()
                .map(|j| format!(" of job {j}"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    let socket = scope.resolve(name, job.as_deref())?;
    let dir = scope.dir()?;
    let stem = instance::file_stem(name, job.as_deref());
    let key = format!("instance {name}");
    if plan.server.is_some() {
        drop(crate::host::open_dev_fuse(std::path::Path::new(
            launch::DEV_FUSE,
        ))?);
    }
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| crate::container::sys::SysError::process("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let stream = match rendezvous::rendezvous(&socket, &key)? {
            Role::Member(stream) => match instance::ping(&stream, rendezvous::SETUP_TIMEOUT) {
                Pong::Running(pid) => return taken(name, job.as_deref(), pid),
                Pong::Failed(code, message) => return Err(relayed(code, message)),
                Pong::Gone => {
                    last = "the instance of that name was ending".into();
                    continue;
                }
            },
            Role::Leader(listener) => {
                let log = |ext: &str| -> Result<std::fs::File, Error> {
                    let path = dir.join(format!("{stem}.{ext}"));
                    open_log(&path)
                };
                let out_path = dir.join(format!("{stem}.out"));
                let err_path = dir.join(format!("{stem}.err"));
                let stepd = job.as_ref().and_then(|_| {
                    let pid = keeper::job_stepd(std::path::Path::new("/proc"))?;
                    let fd = crate::container::process::pidfd_open(pid).ok()?;
                    log::info!(
                        "instance {name}: watching slurmstepd (pid {pid}) for the job's end"
                    );
                    Some((pid, fd))
                });
                let start = keeper::Start {
                    plan: &plan,
                    record: Record {
                        name: name.to_string(),
                        pid: 0,
                        image: plan.image.path.clone(),
                        ip: String::new(),
                        log_err: err_path,
                        log_out: out_path,
                        job: job.clone(),
                        keep_id: plan.identity.needs_inner(),
                    },
                    dir: instance::open_dir(&dir)?,
                    stem: stem.clone(),
                    out: log("out")?,
                    err: log("err")?,
                    stepd,
                };
                launch::keeper::spawn_detached(listener, |l| keeper::run(start, l))?;
                match rendezvous::rendezvous(&socket, &key)? {
                    Role::Member(stream) => stream,
                    Role::Leader(_) => {
                        last = "its keeper ended at once".into();
                        continue;
                    }
                }
            }
        };
        match instance::ping(&stream, rendezvous::SETUP_TIMEOUT) {
            Pong::Running(pid) => {
                eprintln!(
                    "rfake: instance {name}{} started (pid {pid}); logs: {}",
                    job.as_deref()
                        .map(|j| format!(" of job {j}"))
                        .unwrap_or_default(),
                    dir.join(format!("{stem}.{{out,err}}")).display()
                );
                return Ok(0);
            }
            Pong::Failed(code, message) => return Err(relayed(code, message)),
            Pong::Gone => last = "its keeper ended without an answer".into(),
        }
    }
    Err(Error::Failed {
        kind: ExitKind::OsError,
        message: format!("instance {name}: not started in {ATTEMPTS} attempts ({last})"),
    })
}

/// Outside a job a name is taken; in a job, the instance of that name
/// already runs on this node for the job: the start is done.
fn taken(name: &str, job: Option<&str>, pid: u32) -> Result<u8, Error> {
    match job {
        Some(job) => {
            eprintln!(
                "rfake: instance {name} of job {job} already runs on this node (pid {pid}); \
                 not starting another"
            );
            Ok(0)
        }
        None => Err(Error::Failed {
            kind: ExitKind::CannotCreate,
            message: format!(
                "instance {name} exists already (pid {pid}); stop it first: rfake instance stop {name}"
            ),
        }),
    }
}

fn relayed(code: u8, message: String) -> Error {
    Error::Failed {
        kind: ExitKind::ALL
            .into_iter()
            .find(|k| k.code() == code)
            .unwrap_or(ExitKind::OsError),
        message,
    }
}

fn open_log(path: &std::path::Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::Failed {
            kind: ExitKind::CannotCreate,
            message: format!("instance log {}: {e}", path.display()),
        })
}

fn matches(pattern: Option<&str>, name: &str) -> Result<bool, Error> {
    match pattern {
        None => Ok(true),
        Some(p) => glob::Pattern::new(p)
            .map(|g| g.matches(name))
            .map_err(|e| Error::Usage(format!("instance name pattern {p:?}: {e}"))),
    }
}

fn list(scope: &Scope, json: bool, pattern: Option<&str>) -> Result<u8, Error> {
    let mut shown = Vec::new();
    for l in instance::live(scope)? {
        if matches(pattern, &l.record.name)? {
            shown.push(l.record);
        }
    }
    let mut out = std::io::stdout().lock();
    let text = if json {
        let mut t = serde_json::to_string_pretty(&serde_json::json!({ "instances": shown }))
            .map_err(|e| Error::Internal(e.to_string()))?;
        t.push('\n');
        t
    } else {
        let mut t = format!(
            "{:<16} {:>8} {:<10} {}\n",
            "INSTANCE NAME", "PID", "JOB", "IMAGE"
        );
        for r in &shown {
            t.push_str(&format!(
                "{:<16} {:>8} {:<10} {}\n",
                r.name,
                r.pid,
                r.job.as_deref().unwrap_or("-"),
                r.image.display()
            ));
        }
        t
    };
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

fn stop(
    scope: &Scope,
    all: bool,
    pattern: Option<&str>,
    signal: nix::sys::signal::Signal,
    timeout: u64,
) -> Result<u8, Error> {
    let mut targets = Vec::new();
    for l in instance::live(scope)? {
        // In a job, the job's own instances and those outside any job;
        // never another job's.
        let reachable = match (&scope.job, &l.record.job) {
            (_, None) => true,
            (Some(mine), Some(its)) => mine == its,
            (None, Some(_)) => !all,
        };
        if reachable && (all || matches(pattern, &l.record.name)?) {
            targets.push(l);
        }
    }
    if targets.is_empty() {
        return Err(Error::Failed {
            kind: ExitKind::NoInput,
            message: match pattern {
                Some(p) => format!("no instance of yours matching {p:?} runs on {}", scope.host),
                None => format!("no instance of yours runs on {}", scope.host),
            },
        });
    }
    let mut failed = None;
    for l in &targets {
        eprintln!(
            "rfake: stopping instance {} of {} (pid {})",
            l.record.name,
            l.record.image.display(),
            l.record.pid
        );
        if let Err(e) = stop_one(l, signal, timeout) {
            log::error!("{e}");
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(0),
    }
}

/// Ask the keeper to stop and wait until it has gone (it closes the
/// connection by exiting), at most the timeout and a margin.
fn stop_one(
    l: &instance::Live,
    signal: nix::sys::signal::Signal,
    timeout: u64,
) -> Result<(), Error> {
    let name = &l.record.name;
    let Some(stream) = instance::connect(&l.socket)? else {
        return Ok(()); // it has ended meanwhile
    };
    let secs = u32::try_from(timeout).unwrap_or(u32::MAX);
    let mut request = vec![STOP, signal as i32 as u8];
    request.extend_from_slice(&secs.to_le_bytes());
    if (&stream).write_all(&request).is_err() {
        return Ok(());
    }
    let wait = Duration::from_secs(timeout.saturating_add(30));
    let _ = stream.set_read_timeout(Some(wait));
    let mut rest = Vec::new();
    match (&stream).read_to_end(&mut rest) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Failed {
            kind: ExitKind::OsError,
            message: format!(
                "instance {name} (pid {}): still there {} s after the stop: {e}",
                l.record.pid,
                wait.as_secs()
            ),
        }),
    }
}

fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, Error> {
    use std::str::FromStr;
    let bad = || Error::Usage(format!("--signal {s}: not a signal (TERM, SIGTERM or 15)"));
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn signals_as_apptainer_spells_them() {
        for s in ["TERM", "SIGTERM", "term", "15"] {
            assert_eq!(parse_signal(s).unwrap(), Signal::SIGTERM, "{s}");
        }
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
