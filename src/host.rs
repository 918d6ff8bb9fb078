//! Host prerequisites: user namespaces, `/dev/fuse`, a squashfuse program.
//!
//! Each check turns a raw errno into the fix an admin or user can apply, so
//! the same wording serves launch errors and `rfake doctor`.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// The squashfuse programs rfake can drive, in order of preference: the
/// low-level one keeps hard links and is faster.
pub const SQUASHFUSE_PROGRAMS: [&str; 2] = ["squashfuse_ll", "squashfuse"];

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot create a user namespace: {} ({errno:?}); {advice}", errno.desc())]
    UserNamespace { errno: Errno, advice: String },
    #[error("cannot open {}: {} ({errno:?}); {advice}", crate::text::shown(path), errno.desc())]
    DevFuse {
        path: PathBuf,
        errno: Errno,
        advice: &'static str,
    },
    #[error(
        "no squashfuse program found (looked for squashfuse_ll and squashfuse in PATH); install the squashfuse package (Debian/Ubuntu: apt-get install squashfuse) or set RFAKE_SQUASHFUSE"
    )]
    NoSquashfuse,
    #[error("squashfuse program {}: {reason}", crate::text::shown(path))]
    BadSquashfuse { path: PathBuf, reason: String },
    /// libsquashfs or libfuse3 cannot be loaded (see `crate::dynlib`).
    #[error(transparent)]
    Library(#[from] crate::dynlib::LibraryError),
}

/// Read a sysctl-like integer file, `None` when absent or unparsable.
fn read_int(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Explain why `unshare(CLONE_NEWUSER)` failed with `errno`, looking at the
/// sysctls under `proc_sys` (normally `/proc/sys`).
pub fn userns_advice(errno: Errno, proc_sys: &Path) -> String {
    if read_int(&proc_sys.join("kernel/unprivileged_userns_clone")) == Some(0) {
        return "unprivileged user namespaces are disabled: an admin must run \
                'sysctl -w kernel.unprivileged_userns_clone=1'"
            .into();
    }
    if read_int(&proc_sys.join("user/max_user_namespaces")) == Some(0) {
        return "user namespaces are disabled: an admin must run \
                'sysctl -w user.max_user_namespaces=15000'"
            .into();
    }
    if read_int(&proc_sys.join("kernel/apparmor_restrict_unprivileged_userns")) == Some(1) {
        return "AppArmor restricts unprivileged user namespaces: an admin must run \
                'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0' or add an \
                AppArmor profile allowing 'userns' for rfake"
            .into();
    }
    match errno {
        Errno::ENOSPC => "the per-user limit of user namespaces is reached \
                         (user.max_user_namespaces); end other containers or raise the limit"
            .into(),
        Errno::EPERM => "the kernel refused (a seccomp filter, e.g. inside another \
                        container, or rfake running multi-threaded); run rfake directly on the host"
            .into(),
        Errno::EINVAL => "the kernel lacks user namespace support (CONFIG_USER_NS)".into(),
        _ => "check 'rfake doctor'".into(),
    }
}

/// Open the FUSE device read-write, close-on-exec.
pub fn open_dev_fuse(path: &Path) -> Result<OwnedFd, HostError> {
    nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| {
        let advice = match errno {
            Errno::EACCES | Errno::EPERM => {
                "FUSE is not open to users here: an admin must run 'chmod 0666 /dev/fuse' \
                 (the mode distributions' udev rules set; keep it with a udev rule \
                 KERNEL==\"fuse\", MODE=\"0666\")"
            }
            Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => {
                "the FUSE kernel module is not loaded: an admin must run 'modprobe fuse'"
            }
            _ => "check 'rfake doctor'",
        };
        HostError::DevFuse {
            path: path.to_path_buf(),
            errno,
            advice,
        }
    })
}

/// Find the squashfuse program: `configured` if given (a path, or a name
/// searched in `path_env`), else the first of [`SQUASHFUSE_PROGRAMS`].
pub fn find_squashfuse(
    configured: Option<&Path>,
    path_env: Option<&OsStr>,
) -> Result<PathBuf, HostError> {
    if let Some(prog) = configured {
        return if prog.components().count() > 1 {
            check_executable(prog)
        } else {
            search_path(prog.as_os_str(), path_env).ok_or_else(|| HostError::BadSquashfuse {
                path: prog.to_path_buf(),
                reason: "not found in PATH".into(),
            })
        };
    }
    SQUASHFUSE_PROGRAMS
        .iter()
        .find_map(|name| search_path(OsStr::new(name), path_env))
        .ok_or(HostError::NoSquashfuse)
}

fn check_executable(path: &Path) -> Result<PathBuf, HostError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path.to_path_buf()),
        Ok(_) => Err(HostError::BadSquashfuse {
            path: path.to_path_buf(),
            reason: "not an executable file".into(),
        }),
        Err(e) => Err(HostError::BadSquashfuse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The first executable regular file named `name` in the `PATH` list.
pub fn search_path(name: &OsStr, path_env: Option<&OsStr>) -> Option<PathBuf> {
    let path_env = path_env?;
    std::env::split_paths(path_env)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|cand| {
            fs::metadata(cand)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctls(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, value) in files {
            let p = d.path().join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, value).unwrap();
        }
        d
    }

    #[test]
    fn advice_names_the_sysctl_that_blocks() {
        let d = sysctls(&[("kernel/unprivileged_userns_clone", "0\n")]);
        assert!(
            userns_advice(Errno::EPERM, d.path()).contains("kernel.unprivileged_userns_clone=1")
        );
        let d = sysctls(&[("user/max_user_namespaces", "0\n")]);
        assert!(userns_advice(Errno::ENOSPC, d.path()).contains("user.max_user_namespaces"));
        let d = sysctls(&[("kernel/apparmor_restrict_unprivileged_userns", "1\n")]);
        assert!(
            userns_advice(Errno::EPERM, d.path())
                .contains("kernel.apparmor_restrict_unprivileged_userns=0")
        );
        let d = sysctls(&[("user/max_user_namespaces", "100\n")]);
        assert!(userns_advice(Errno::ENOSPC, d.path()).contains("limit"));
        assert!(userns_advice(Errno::EPERM, d.path()).contains("seccomp"));
    }

    #[test]
    fn dev_fuse_errors_say_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let err = open_dev_fuse(&d.path().join("fuse")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("modprobe fuse"), "{msg}");
        assert!(msg.contains(&d.path().join("fuse").display().to_string()));
    }

    #[test]
    fn squashfuse_search_prefers_ll_and_honours_config() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path();
        for name in ["squashfuse", "squashfuse_ll"] {
            let p = bin.join(name);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path_env = bin.as_os_str();
        assert_eq!(
            find_squashfuse(None, Some(path_env)).unwrap(),
            bin.join("squashfuse_ll")
        );
        assert_eq!(
            find_squashfuse(Some(Path::new("squashfuse")), Some(path_env)).unwrap(),
            bin.join("squashfuse")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_squashfuse(None, Some(empty.path().as_os_str())),
            Err(HostError::NoSquashfuse)
        ));
        let plain = bin.join("plain");
        fs::write(&plain, "").unwrap();
        assert!(matches!(
            find_squashfuse(Some(&plain), None),
            Err(HostError::BadSquashfuse { .. })
        ));
    }
}
