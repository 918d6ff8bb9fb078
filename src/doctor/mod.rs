//! `rfake doctor`: check this host's prerequisites and say how to fix each.

pub mod launch_check;
pub mod mpi;

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
            name: "libraries",
            outcome: check_libraries(),
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

/// libsquashfs and libfuse3, which rfake loads when it first uses them
/// (src/dynlib.rs): loaded here, as a cold launch would.
fn check_libraries() -> Result<String, String> {
    use crate::{fuse, squashfs};
    let sqfs = squashfs::ffi::load().map(|_| squashfs::ffi::LIBRARY.soname);
    let fuse = fuse::ffi::load().map(|_| fuse::ffi::LIBRARY.soname);
    match (sqfs, fuse) {
        (Ok(a), Ok(b)) => Ok(format!("{a} and {b} load")),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

/// The GPU findings: device nodes, the NVIDIA driver version, the CDI
/// specs, and what `--nv` and `--rocm` would bind. A host without GPUs is
/// not a problem; a CDI spec rfake cannot read is.
pub fn gpu_checks(
    settings: &crate::launch::settings::Settings,
    path_env: Option<&std::ffi::OsStr>,
) -> Vec<Check> {
    use crate::gpu::{cdi, nv};
    let dev = &settings.gpu_dev_dir.value;
    let mut nodes: Vec<String> = Vec::new();
    for vendor in [nv::Vendor::Nvidia, nv::Vendor::Amd] {
        for (host, _) in nv::device_nodes(vendor, dev) {
            if let Ok(rel) = host.strip_prefix(dev) {
                nodes.push(rel.display().to_string());
            }
        }
    }
    let host = |vendor| nv::Host {
        ld_cache: &settings.ld_cache.value,
        dev_dir: dev,
        path_env,
        extra_names: match vendor {
            nv::Vendor::Nvidia => &settings.nvidia_libs.value,
            nv::Vendor::Amd => &settings.rocm_libs.value,
        },
    };
    let nvidia = nv::find(nv::Vendor::Nvidia, &host(nv::Vendor::Nvidia));
    let version = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| kernel_module_version(&t))
        .map(|v| format!("{v} (kernel module)"))
        .or_else(|| {
            nvidia
                .as_ref()
                .ok()?
                .driver_version(nv::Vendor::Nvidia)
                .map(|v| format!("{v} (libcuda)"))
        });
    let registry = cdi::load(&settings.cdi_spec_dirs.value);
    let dirs = settings
        .cdi_spec_dirs
        .value
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let specs = match &registry {
        Ok(r) if r.files.is_empty() => Ok(format!("none in {dirs}")),
        Ok(r) => Ok(r
            .files
            .iter()
            .map(|f| {
                let names: Vec<&str> = f.device_names().collect();
                format!("{} ({}: {})", f.path.display(), f.kind, names.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")),
        Err(e) => Err(e.to_string()),
    };
    let would = |vendor: nv::Vendor, found: Result<nv::Listing, crate::gpu::GpuError>| {
        let kind = vendor.cdi_kind();
        if let Some(f) = registry
            .as_ref()
            .ok()
            .and_then(|r| r.files.iter().rfind(|f| f.kind == kind))
        {
            return Ok(format!("the CDI spec {} ({kind}=all)", f.path.display()));
        }
        Ok(match found {
            Ok(l) => {
                let names = |v: &[std::path::PathBuf]| {
                    let mut n: Vec<String> = v
                        .iter()
                        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                        .collect();
                    n.sort();
                    n.join(", ")
                };
                let libs: Vec<std::path::PathBuf> =
                    l.libraries.iter().map(|(p, _)| p.clone()).collect();
                format!(
                    "from {}: {} device nodes, libraries {}, programs {}",
                    l.source,
                    l.devices.len(),
                    names(&libs),
                    if l.programs.is_empty() {
                        "none".to_string()
                    } else {
                        names(&l.programs)
                    }
                )
            }
            Err(e) => format!("would fail: {e}"),
        })
    };
    let rocm = nv::find(nv::Vendor::Amd, &host(nv::Vendor::Amd));
    // A node without GPUs (a login or CPU node): one line.
    if nodes.is_empty()
        && nvidia.is_err()
        && rocm.is_err()
        && registry.as_ref().is_ok_and(|r| r.files.is_empty())
    {
        return vec![Check {
            name: "GPUs",
            outcome: Ok(format!(
                "none (no device nodes in {}, no CDI spec in {dirs}, no NVIDIA driver or ROCm \
                 runtime in {} or from nvidia-container-cli)",
                dev.display(),
                settings.ld_cache.value.display()
            )),
        }];
    }
    vec![
        Check {
            name: "GPU devices",
            outcome: Ok(if nodes.is_empty() {
                format!("none in {}", dev.display())
            } else {
                format!("{}: {}", dev.display(), nodes.join(", "))
            }),
        },
        Check {
            name: "NVIDIA driver",
            outcome: Ok(version.unwrap_or_else(|| "not found".to_string())),
        },
        Check {
            name: "CDI specs",
            outcome: specs,
        },
        Check {
            name: "--nv",
            outcome: would(nv::Vendor::Nvidia, nvidia),
        },
        Check {
            name: "--rocm",
            outcome: would(nv::Vendor::Amd, rocm),
        },
    ]
}

/// The version in `/proc/driver/nvidia/version`'s first line (`NVRM
/// version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar 5 ...`).
fn kernel_module_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let rest = line.split("Kernel Module").nth(1)?;
    let v = rest.split_whitespace().next()?;
    crate::gpu::compat::major(v).map(|_| v.to_string())
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

    #[test]
    fn nvidia_kernel_module_version() {
        assert_eq!(
            kernel_module_version(
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\nGCC version: gcc 12\n"
            )
            .as_deref(),
            Some("550.54.15")
        );
        assert_eq!(kernel_module_version("garbage"), None);
    }
}
