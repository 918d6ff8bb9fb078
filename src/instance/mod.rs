//! Instances: named containers that run in the background until stopped
//! (`rfake instance start IMAGE NAME`), which `exec`, `run` and `shell`
//! enter as `instance://NAME`.
//!
//! An instance is a keeper ([`crate::launch::keeper`]), like the one that
//! holds a job step's joined container: it builds the container, runs the
//! image's `%startscript` in it, and hands every launch that enters the
//! instance the container's namespaces over its rendezvous socket. Unlike
//! a step's keeper it does not end with its last member: it ends when it is
//! stopped (`rfake instance stop`), when its image server ends, or, in a
//! Slurm job, with the job.
//!
//! Names: one socket per user, node, job and name ([`socket`]), hashed with
//! the user's rendezvous secret. Binding it is the only lock: two starts of
//! one name race for the socket and exactly one wins. In a Slurm job
//! (`SLURM_JOB_ID`) the job is part of the name, so each job has its own
//! `NAME` on each node, and a second start of it in the same job finds the
//! first and succeeds without starting another (one per node per name, the
//! tasks of a step need no lock of their own).
//!
//! Records: the keeper writes `NAME.json` (`NAME@JOB.json` in a job) next
//! to the secret, under `instances/HOST/`, once the container runs; `list`
//! shows a record only when its keeper answers on the socket (an abstract
//! socket disappears with the last process holding it, however that ends),
//! and removes the records of keepers that are gone. So a dead instance is
//! never listed, even after a SIGKILL left its record behind.
//!
//! The protocol, client → keeper: one request byte ([`PING`], [`JOIN`],
//! [`STOP`] followed by the signal and the timeout); keeper → client: for
//! a ping, status 0 and the keeper's pid (4 bytes, little-endian), or the
//! keeper's set-up error as [`rendezvous::send_error`] writes it; for a
//! join, what a joined container's keeper sends; for a stop, nothing: the
//! connection closes when the keeper has gone.

pub mod enter;
pub mod keeper;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::cli::{LaunchArgs, PullArgs};
use crate::error::Error;
use crate::exit::ExitKind;
use crate::launch::rendezvous::{self, SocketName};

/// The script a definition file's `%startscript` becomes.
pub const STARTSCRIPT: &str = "/.singularity.d/startscript";
/// The prefix of image arguments that name an instance.
pub const SCHEME: &str = "instance://";

/// Requests, client → keeper.
pub const PING: u8 = b'P';
pub const JOIN: u8 = b'J';
pub const STOP: u8 = b'S';

// `rfake instance ...`
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum InstanceCommand {
    /// Start IMAGE as the instance NAME in the background: its %startscript
    /// (/.singularity.d/startscript) runs with ARGS, and exec, run and
    /// shell enter it as instance://NAME until it is stopped. In a Slurm
    /// job, the instance belongs to the job and ends with it.
    Start {
        #[command(flatten)]
        launch: LaunchArgs,
        #[command(flatten)]
        pull: PullArgs,
        /// A SquashFS file, a SIF file, an unpacked root directory, or a
        /// reference: docker://NAME[:TAG|@DIGEST], oras://NAME[:TAG],
        /// oci-archive:FILE, docker-archive:FILE.
        image: PathBuf,
        /// The instance's name: letters, digits, '.', '_' and '-'.
        name: String,
        /// Arguments passed to the startscript.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// List your running instances on this node (those of every job).
    List {
        /// Print JSON: {"instances": [{"instance", "pid", "img", "ip",
        /// "logErrPath", "logOutPath", "job"}]}.
        #[arg(long)]
        json: bool,
        /// Only instances whose name matches PATTERN (a glob: db*).
        #[arg(value_name = "PATTERN")]
        pattern: Option<String>,
    },
    /// Stop instances: the signal goes to every process the instance
    /// started; what is left after the timeout is killed.
    Stop {
        /// Stop all your instances on this node (in a Slurm job: the job's).
        #[arg(short, long, conflicts_with = "pattern")]
        all: bool,
        /// The signal: a name (TERM, SIGTERM) or a number (default TERM).
        #[arg(short, long, value_name = "SIGNAL")]
        signal: Option<String>,
        /// Seconds to wait after the signal before killing what is left.
        #[arg(short, long, value_name = "SECONDS", default_value_t = 10)]
        timeout: u64,
        /// Kill at once (SIGKILL), without waiting.
        #[arg(short = 'F', long, conflicts_with = "signal")]
        force: bool,
        /// The instance's name, or a glob (db*).
        #[arg(value_name = "NAME", required_unless_present = "all")]
        pattern: Option<String>,
    },
}

/// An instance as its keeper records it (and `list --json` shows it: the
/// keys Apptainer uses, and `job`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "instance")]
    pub name: String,
    /// The keeper's pid.
    pub pid: u32,
    #[serde(rename = "img")]
    pub image: PathBuf,
    /// No network namespace: always empty (Apptainer's key).
    #[serde(default)]
    pub ip: String,
    #[serde(rename = "logErrPath")]
    pub log_err: PathBuf,
    #[serde(rename = "logOutPath")]
    pub log_out: PathBuf,
    /// The Slurm job it belongs to.
    #[serde(default)]
    pub job: Option<String>,
    /// Whether it runs with the user's own ids (`--keep-id`): launches
    /// entering it are planned with the same identity.
    #[serde(default, rename = "keepId")]
    pub keep_id: bool,
}

/// Where instances are on this node for this user and job.
#[derive(Debug, Clone)]
pub struct Scope {
    pub uid: u32,
    pub host: String,
    /// `SLURM_JOB_ID`, when set to something usable in a name.
    pub job: Option<String>,
    env: Vec<(OsString, OsString)>,
}

impl Scope {
    pub fn new(uid: u32, env: &[(OsString, OsString)]) -> Scope {
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let job = crate::env::get(env, "SLURM_JOB_ID")
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|j| {
                let ok = valid_job(j);
                if !ok {
                    log::warn!("SLURM_JOB_ID={j:?} is not a job id: instances ignore it");
                }
                ok
            });
        Scope {
            uid,
            host,
            job,
            env: env.to_vec(),
        }
    }

    /// The instance `name` of `job` (of none: outside a job).
    pub fn socket(&self, name: &str, job: Option<&str>) -> SocketName {
        SocketName::plan(
            "rfake-inst",
            self.uid,
            &self.env,
            format!("{}\0{}\0{name}", self.host, job.unwrap_or("")),
        )
    }

    /// The directory of the records and logs (created, mode 0700, with
    /// the secret's directory).
    pub fn dir(&self) -> Result<PathBuf, Error> {
        let secret = rendezvous::secret_dir(&self.env, self.uid).map_err(no_secret)?;
        secret.get().map_err(no_secret)?;
        let dir = secret.path.join("instances").join(&self.host);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::Failed {
                kind: ExitKind::CannotCreate,
                message: format!("instances: cannot create {}: {e}", dir.display()),
            })?;
        Ok(dir)
    }

    /// The abstract name of the instance's socket.
    pub fn resolve(&self, name: &str, job: Option<&str>) -> Result<String, Error> {
        self.socket(name, job).resolve().map_err(no_secret)
    }
}

fn no_secret(e: rendezvous::SecretError) -> Error {
    Error::Failed {
        kind: ExitKind::Refused,
        message: format!(
            "instances need your rendezvous secret (their names are hashed with it so that \
             other users cannot take them): {e}"
        ),
    }
}

fn valid_job(j: &str) -> bool {
    !j.is_empty()
        && j.len() <= 64
        && j.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Check an instance name: what Apptainer accepts, and a file name.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "instance name {name:?}: use letters, digits, '.', '_' and '-' (at most 128, not \
             starting with '.' or '-')"
        )))
    }
}

/// The record's file name: `NAME.json`, `NAME@JOB.json` in a job.
pub fn file_stem(name: &str, job: Option<&str>) -> String {
    match job {
        Some(job) => format!("{name}@{job}"),
        None => name.to_string(),
    }
}

/// Connect to the keeper on `socket`; `None` when nobody listens (no such
/// instance, or it has ended).
pub fn connect(socket: &str) -> Result<Option<UnixStream>, Error> {
    let addr = SocketAddr::from_abstract_name(socket.as_bytes())
        .map_err(|e| Error::Internal(format!("socket name: {e}")))?;
    match UnixStream::connect_addr(&addr) {
        Ok(stream) if rendezvous::same_user(&stream) => Ok(Some(stream)),
        Ok(_) => Err(Error::Refused(format!(
            "instance socket @{socket}: it belongs to another user"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
        Err(e) => Err(Error::Failed {
            kind: ExitKind::OsError,
            message: format!("instance socket @{socket}: connecting: {e}"),
        }),
    }
}

/// What a keeper answered to a ping.
#[derive(Debug)]
pub enum Pong {
    /// Running, with this pid.
    Running(u32),
    /// Its set-up failed: the exit code and message.
    Failed(u8, String),
    /// It closed the connection without an answer (it is leaving).
    Gone,
}

/// Ask the keeper whether it runs; waits up to `wait` (its set-up).
pub fn ping(stream: &UnixStream, wait: Duration) -> Pong {
    let mut s = stream;
    if s.write_all(&[PING]).is_err() {
        return Pong::Gone;
    }
    let _ = stream.set_read_timeout(Some(wait));
    let mut status = [0u8; 1];
    if s.read_exact(&mut status).is_err() {
        return Pong::Gone;
    }
    if status[0] != 0 {
        let mut rest = Vec::new();
        let _ = s.take(4096).read_to_end(&mut rest);
        return Pong::Failed(status[0], String::from_utf8_lossy(&rest).into_owned());
    }
    let mut pid = [0u8; 4];
    match s.read_exact(&mut pid) {
        Ok(()) => Pong::Running(u32::from_le_bytes(pid)),
        Err(_) => Pong::Gone,
    }
}

/// A live instance: its record and socket.
#[derive(Debug)]
pub struct Live {
    pub record: Record,
    pub socket: String,
}

/// The instances whose keepers answer, by name (then job); records of
/// keepers that are gone are removed on the way.
pub fn live(scope: &Scope) -> Result<Vec<Live>, Error> {
    let dir = scope.dir()?;
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::Failed {
        kind: ExitKind::OsError,
        message: format!("instances: reading {}: {e}", dir.display()),
    })?;
    for entry in entries.flatten() {
        let file = entry.path();
        if file.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record = match read_record(&file) {
            Some(r) => r,
            None => {
                log::debug!("{}: not an instance record; left alone", file.display());
                continue;
            }
        };
        let socket = scope.resolve(&record.name, record.job.as_deref())?;
        let alive = match connect(&socket)? {
            Some(stream) => match ping(&stream, Duration::from_secs(5)) {
                Pong::Running(pid) => pid == record.pid,
                _ => false,
            },
            None => false,
        };
        if alive {
            out.push(Live { record, socket });
        } else {
            log::info!(
                "instance {} (pid {}) has ended: its record {} removed",
                record.name,
                record.pid,
                file.display()
            );
            let _ = std::fs::remove_file(&file);
        }
    }
    out.sort_by(|a, b| (&a.record.name, &a.record.job).cmp(&(&b.record.name, &b.record.job)));
    Ok(out)
}

fn read_record(file: &Path) -> Option<Record> {
    let text = crate::input::read_regular(file, 64 << 10).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The records' directory, opened before the keeper's root changes (its
/// path may not be visible inside the container).
pub fn open_dir(dir: &Path) -> Result<OwnedFd, Error> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Failed {
        kind: ExitKind::OsError,
        message: format!("instances: opening {}: {}", dir.display(), e.desc()),
    })
}

/// Write `record` as `NAME.json` in `dir` (a temporary file, then rename:
/// a reader never sees half of it).
pub fn write_record(dir: &OwnedFd, stem: &str, record: &Record) -> nix::Result<()> {
    let tmp = format!(".{stem}.{}.tmp", std::process::id());
    let text = serde_json::to_vec_pretty(record).map_err(|_| nix::errno::Errno::EINVAL)?;
    let fd = nix::fcntl::openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut f = std::fs::File::from(fd);
    let written = f.write_all(&text).and_then(|_| f.write_all(b"\n"));
    drop(f);
    let done = written
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        .and_then(|_| {
            nix::fcntl::renameat(dir, tmp.as_str(), dir, format!("{stem}.json").as_str())
        });
    if done.is_err() {
        let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    done
}

/// Remove the record `NAME.json` from `dir`.
pub fn remove_record(dir: &OwnedFd, stem: &str) {
    let _ = nix::unistd::unlinkat(
        dir,
        format!("{stem}.json").as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

/// The instance an `instance://NAME` names: in a Slurm job, the job's own
/// NAME on this node, else the NAME started outside any job.
pub fn find(scope: &Scope, name: &str) -> Result<Live, Error> {
    check_name(name)?;
    let all = live(scope)?;
    let mine = |job: Option<&str>| {
        all.iter()
            .position(|l| l.record.name == name && l.record.job.as_deref() == job)
    };
    let at = scope
        .job
        .as_deref()
        .and_then(|j| mine(Some(j)))
        .or_else(|| mine(None));
    match at {
        Some(i) => Ok(all.into_iter().nth(i).expect("index from position")),
        None => Err(Error::Failed {
            kind: ExitKind::NoInput,
            message: format!(
                "no instance {name} of yours runs on {}{} (rfake instance list shows those that do)",
                scope.host,
                scope
                    .job
                    .as_deref()
                    .map(|j| format!(" in job {j} or outside a job"))
                    .unwrap_or_default()
            ),
        }),
    }
}

/// The name in an `instance://NAME` image argument.
pub fn parse_uri(image: &Path) -> Option<&str> {
    image.to_str()?.strip_prefix(SCHEME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["db", "my-sql.1", "a_b", "X9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "a@b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(file_stem("db", Some("42")), "db@42");
        assert_eq!(file_stem("db", None), "db");
        assert!(valid_job("42") && valid_job("42_3") && !valid_job("4/2") && !valid_job(""));
        assert_eq!(parse_uri(Path::new("instance://db")), Some("db"));
        assert_eq!(parse_uri(Path::new("db.sif")), None);
    }

    #[test]
    fn a_job_has_its_own_names() {
        let d = tempfile::tempdir().unwrap();
        let env = [(OsString::from("HOME"), d.path().as_os_str().to_owned())];
        let me = nix::unistd::getuid().as_raw();
        let scope = Scope::new(me, &env);
        let outside = scope.resolve("db", None).unwrap();
        assert_eq!(outside, scope.resolve("db", None).unwrap());
        assert_ne!(outside, scope.resolve("db", Some("42")).unwrap());
        assert_ne!(
            scope.resolve("db", Some("42")).unwrap(),
            scope.resolve("db", Some("43")).unwrap()
        );
        assert_ne!(outside, scope.resolve("db2", None).unwrap());
        assert!(outside.starts_with(&format!("rfake-inst-{me}-")));
    }

    #[test]
    fn records_round_trip_with_apptainers_keys() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("db.json");
        let r = Record {
            name: "db".into(),
            pid: 7,
            image: "/x/db.sif".into(),
            ip: String::new(),
            log_err: "/l/db.err".into(),
            log_out: "/l/db.out".into(),
            job: Some("42".into()),
            keep_id: true,
        };
        let dir = open_dir(d.path()).unwrap();
        write_record(&dir, "db", &r).unwrap();
        assert_eq!(read_record(&file), Some(r));
        let text = std::fs::read_to_string(&file).unwrap();
        for key in [
            "\"instance\"",
            "\"img\"",
            "\"logErrPath\"",
            "\"logOutPath\"",
            "\"ip\"",
        ] {
            assert!(text.contains(key), "{text}");
        }
        remove_record(&dir, "db");
        assert!(!file.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
