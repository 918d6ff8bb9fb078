//! `rfake doctor`: check this host's prerequisites and say how to fix each.

use std::path::Path;

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use crate::{env, host};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<String, String>,
}

/// Run every check; `path_env` is the PATH used to find squashfuse.
pub fn run_checks(path_env: Option<&std::ffi::OsStr>) -> Vec<Check> {
    vec![
        Check {
            name: "user namespaces",
            outcome: check_userns(),
        },
        Check {
            name: "/dev/fuse",
            outcome: host::open_dev_fuse(Path::new("/dev/fuse"))
                .map(|_| "opens read-write".to_string())
                .map_err(|e| e.to_string()),
        },
        Check {
            name: "squashfuse",
            outcome: host::find_squashfuse(None, path_env)
                .map(|p| p.display().to_string())
                .map_err(|e| e.to_string()),
        },
        Check {
            name: "not setuid",
            outcome: if nix::unistd::getuid() == nix::unistd::geteuid()
                && nix::unistd::getgid() == nix::unistd::getegid()
            {
                Ok("rfake runs with the caller's own ids".into())
            } else {
                Err("rfake is installed setuid/setgid: remove the bit (chmod u-s,g-s)".into())
            },
        },
    ]
}

/// Really try: a child process creates a user and mount namespace and
/// writes its one-entry map, then exits.
fn check_userns() -> Result<String, String> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    // SAFETY: rfake is single-threaded here; the child only makes raw
    // syscalls and file writes, then _exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let code =
                match nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
                    Err(errno) => errno as i32,
                    Ok(()) => {
                        let ok = std::fs::write("/proc/self/setgroups", "deny").is_ok()
                            && std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).is_ok()
                            && std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).is_ok();
                        if ok { 0 } else { 255 }
                    }
                };
            // SAFETY: leave the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok("a user + mount namespace can be created".into()),
            Ok(WaitStatus::Exited(_, 255)) => {
                Err("namespace created but the uid/gid map could not be written".into())
            }
            Ok(WaitStatus::Exited(_, errno)) => {
                let errno = nix::errno::Errno::from_raw(errno);
                Err(host::HostError::UserNamespace {
                    errno,
                    advice: host::userns_advice(errno, Path::new("/proc/sys")),
                }
                .to_string())
            }
            other => Err(format!("test process ended unexpectedly: {other:?}")),
        },
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// Print the checks; true when all passed.
pub fn report(checks: &[Check]) -> bool {
    let mut all_ok = true;
    for check in checks {
        match &check.outcome {
            Ok(detail) => println!("ok       {:<16} {detail}", check.name),
            Err(problem) => {
                all_ok = false;
                println!("PROBLEM  {:<16} {problem}", check.name);
            }
        }
    }
    all_ok
}

/// The PATH doctor searches: the caller's, completed with the standard dirs.
pub fn search_path() -> std::ffi::OsString {
    env::with_standard_dirs(std::env::var_os("PATH").as_deref())
}
