//! `rfake doctor`: check this host's prerequisites and say how to fix each.

use std::path::Path;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use crate::container::namespace::{self, Identity, NamespaceError};
use crate::container::sys::LinuxSys;
use crate::host;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<String, String>,
}

/// Run every check; squashfuse is looked for exactly as a launch would:
/// `configured` (RFAKE_SQUASHFUSE) or else in `path_env`; its absence is a
/// problem only when it is `needed` (the built-in server is not used).
pub fn run_checks(
    configured: Option<&Path>,
    path_env: Option<&std::ffi::OsStr>,
    config: Result<String, String>,
    needed: bool,
) -> Vec<Check> {
    vec![
        Check {
            name: "configuration",
            outcome: config,
        },
        Check {
            name: "kernel",
            outcome: check_kernel(),
        },
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
            outcome: match host::find_squashfuse(configured, path_env) {
                Ok(p) if needed => Ok(p.display().to_string()),
                Ok(p) => Ok(format!(
                    "{} (not used: images are served by rfake's own server)",
                    p.display()
                )),
                Err(e) if needed => Err(e.to_string()),
                Err(_) => Ok(
                    "not installed; not needed: images are served by rfake's own server"
                        .to_string(),
                ),
            },
        },
    ]
}

/// The oldest kernel with everything rfake uses: mount_setattr(2) (5.12)
/// and unprivileged overlayfs (5.11).
pub const MIN_KERNEL: (u32, u32) = (5, 12);

fn check_kernel() -> Result<String, String> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| format!("uname: {e}"))?;
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => Ok(format!("Linux {release}")),
        Some(_) => Err(format!(
            "Linux {release} is older than {}.{}: rfake needs mount_setattr(2) and \
             unprivileged overlayfs; upgrade the kernel",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        None => Err(format!("cannot parse the kernel release '{release}'")),
    }
}

/// "6.1.0-18-amd64" -> (6, 1).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
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
            // The launch's own code: the same unshare and the same maps.
            let code = match namespace::enter(
                &LinuxSys,
                &Identity::fakeroot(uid, gid),
                Path::new("/proc/self"),
                Path::new("/proc/sys"),
            ) {
                Ok(()) => 0,
                Err(NamespaceError::Unavailable(host::HostError::UserNamespace {
                    errno, ..
                })) => errno as i32,
                Err(_) => 255,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_release("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.12.19"), Some((5, 12)));
        assert_eq!(parse_release("4.18.0-513.el8.x86_64"), Some((4, 18)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("4.18.0").unwrap() < MIN_KERNEL);
    }
}
