//! The MPI check under a launcher: before the payload starts, the first
//! launch of a job step on a node compares the image's MPI stack with the
//! host's and warns when the model in use will not work; every other rank
//! of the step on the node, and every later step with the same result,
//! stays quiet.
//!
//! Once per node and step: a small state file per image (by its identity:
//! device, inode, size and modification time; and the host name, the
//! host's package database and the model) under `$XDG_RUNTIME_DIR/rfake`,
//! else the temporary directory's `rfake-UID`, holds the check's result and
//! the last 64 join keys seen. It is read and written under `flock(2)`: of
//! the ranks starting together exactly one finds its key missing, adds it
//! and warns. The check itself reads the image's package database
//! in-process (tens of milliseconds, once per image and host state), never
//! starts anything, and never fails a launch: any problem is logged at
//! debug level and the launch goes on.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::mpi::{self, Outcome};
use crate::launch::Plan;

/// Which model a launch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// The image's MPI, the host's launcher.
    Hybrid,
    /// The host's MPI bound in by a profile.
    Bind,
}

/// Before the payload of a joining launch (under a launcher, or with
/// `--join-key`): the check, once per node and join key. A launch with a
/// bind profile uses the bind model, any other the hybrid model.
pub fn before_payload(plan: &Plan, env: &[(OsString, OsString)]) {
    let Some(join) = &plan.join else { return };
    let profiled = plan.overrides.iter().any(|o| o.origin.starts_with("profile "))
        || plan.steps.iter().any(|s| {
            matches!(s, crate::container::rootfs::Step::Bind(b) if b.origin.starts_with("profile "))
        });
    let model = if profiled { Model::Bind } else { Model::Hybrid };
    let t = std::time::Instant::now();
    once_per_node(&plan.image.path, &join.key.key, model, env);
    log::debug!("MPI check: {:.1?}", t.elapsed());
}

/// Check `image` once for `key` on this node; warn (one line) when the
/// model will not or may not work.
pub fn once_per_node(image: &Path, key: &str, model: Model, env: &[(OsString, OsString)]) {
    match remembered(image, key, model, env) {
        Ok(Some(warning)) => log::warn!("{warning}"),
        Ok(None) => {}
        Err(why) => log::debug!("MPI check skipped: {why}"),
    }
}

/// The warning for `image` under `model`, if any.
pub fn check(image: &Path, model: Model) -> Option<String> {
    let files = match crate::inspect::inspect(image, None) {
        Ok((_, files)) => files,
        Err(e) => {
            log::debug!("MPI check: {e}");
            return None;
        }
    };
    let image_stack = mpi::read(&files);
    let host_stack = mpi::read(&crate::inspect::ImageFiles::Directory("/".into()));
    let a = mpi::assess(&image_stack, &host_stack);
    let (name, verdict) = match model {
        Model::Hybrid => ("hybrid", &a.hybrid),
        Model::Bind => ("bind", &a.bind),
    };
    let how = match verdict.outcome {
        Outcome::Works | Outcome::NotApplicable => return None,
        Outcome::Likely => "may not work",
        Outcome::Fails => "will not work",
    };
    // The reason that decided it: the first that is not plain good news.
    let reason = verdict
        .reasons
        .iter()
        .find(|r| {
            r.contains("cannot")
                || r.contains("older")
                || r.contains("no ")
                || r.contains("not compared")
                || r.contains("needs")
                || r.contains("only")
        })
        .or(verdict.reasons.first())
        .cloned()
        .unwrap_or_default();
    Some(format!(
        "MPI: the {name} model {how} with {}: {reason} (`rfake doctor --image {}` says more)",
        crate::text::shown(image),
        crate::text::shown(image)
    ))
}

/// How many join keys a state file remembers: the steps of the jobs that
/// share a node at once.
const KEYS_KEPT: usize = 64;

/// The warning for the first launch of `key` on this node, `None` for
/// every other (and when there is nothing to warn about). The state file
/// holds the result (`= WARNING`, empty for none), then the keys seen; it
/// is named by the image's identity, the host name, the host's package
/// database's and the model, so the result is computed once for them.
fn remembered(
    image: &Path,
    key: &str,
    model: Model,
    env: &[(OsString, OsString)],
) -> Result<Option<String>, String> {
    let meta = std::fs::metadata(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let packages = std::fs::metadata("/var/lib/dpkg/status")
        .map(|m| (m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        (meta.dev(), meta.ino(), meta.size()),
        (meta.mtime(), meta.mtime_nsec()),
        &host,
        packages,
        model == Model::Bind,
    )
        .hash(&mut hasher);
    let dir = state_dir(env)?;
    let path = dir.join(format!("mpi-check-{:016x}", hasher.finish()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Held until this function returns: the ranks starting together wait
    // here for the one that reads, checks and writes.
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("{}: flock: {e}", path.display()))?;
    let mut text = String::new();
    (&mut *file)
        .take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let cached = lines
        .next()
        .and_then(|l| l.strip_prefix("= "))
        .map(str::to_string);
    let mut keys: Vec<&str> = lines.collect();
    // A key with a newline cannot be told from two: such a launch is
    // checked every time.
    if keys.contains(&key) && !key.contains('\n') {
        return Ok(None);
    }
    let result = match cached {
        Some(r) => r,
        None => check(image, model).unwrap_or_default(),
    };
    keys.push(key);
    let skip = keys.len().saturating_sub(KEYS_KEPT);
    let mut out = format!("= {}\n", result.replace('\n', " "));
    for k in keys.iter().skip(skip).filter(|k| !k.contains('\n')) {
        out.push_str(k);
        out.push('\n');
    }
    write_all(&mut file, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(result).filter(|r| !r.is_empty()))
}

fn write_all(file: &mut File, text: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(text.as_bytes())
}

/// A node-local directory of the user's, closed to others.
fn state_dir(env: &[(OsString, OsString)]) -> Result<PathBuf, String> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = crate::env::get(env, "XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && is_private_dir(p, uid))
        .map(|p| p.join("rfake"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rfake-{uid}")));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    if !is_private_dir(&dir, uid) {
        return Err(format!(
            "{} is not a directory of yours closed to others",
            dir.display()
        ));
    }
    Ok(dir)
}

fn is_private_dir(path: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
}
