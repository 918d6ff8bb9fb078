//! GPUs and other devices: what a container needs from the host for them,
//! as one set of edits ([`ContainerEdits`]) whatever produced it, and the
//! one function that turns edits into the launch's mounts and environment
//! ([`plan`]).
//!
//! Producers: [`cdi`] (`--device VENDOR/CLASS=NAME`, from the Container
//! Device Interface specs in `cdi_spec_dirs`) and [`nv`] (`--nv`/`--rocm`
//! from the driver found on the host), so both paths share the device
//! handling, the symlinks, the library path and CUDA compat ([`compat`]).
//!
//! The rules, whoever produced the edits:
//! - Device nodes are bound from the host, never created (a one-entry user
//!   namespace cannot `mknod`). The container's `/dev` is the host's; when a
//!   node must be hidden (another GPU's, with `--device nvidia.com/gpu=0`) or
//!   added where the host's `/dev` lacks it, `/dev` becomes a private tmpfs
//!   holding binds of every other host entry ([`dev`]).
//! - Files are binds (`nosuid`, `nodev`, read-only when asked), created as
//!   mount points in the overlay when the image lacks them.
//! - Symlinks (`create-symlinks`, and the soname links `ldconfig` would
//!   make for the libraries in an `update-ldcache` folder) are made in the
//!   container's overlay, never in the image or on the host.
//! - The libraries' folders go first on `LD_LIBRARY_PATH`, after the
//!   image's environment is read: the image's linker cache does not know the
//!   host's driver files, and writing a cache of our own would hide the
//!   image's (see docs/user-guide.md, "GPUs").

pub mod cdi;
pub mod compat;
mod dev;
mod elf;
pub mod ldcache;
pub mod nv;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::container::binds::Mount;
use crate::container::rootfs::{Bind, BindKind, Symlink};
use crate::env::{EnvList, Override};
use crate::exit::ExitKind;
use crate::text::shown;

/// A device node: bound from `host_path` to `path` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub host_path: PathBuf,
    pub origin: String,
}

/// A host file or directory bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEdit {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub readonly: bool,
    pub origin: String,
}

/// A symlink `link -> target` made in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEdit {
    pub link: PathBuf,
    pub target: PathBuf,
    pub origin: String,
}

/// What a container needs for its devices: the common language of CDI
/// specs and `--nv`/`--rocm`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEdits {
    pub device_nodes: Vec<DeviceNode>,
    pub mounts: Vec<MountEdit>,
    pub env: Vec<Override>,
    pub symlinks: Vec<LinkEdit>,
    /// Container directories put first on `LD_LIBRARY_PATH`, in order.
    pub library_dirs: Vec<PathBuf>,
    /// Container paths of device nodes that must not be there (the GPUs
    /// not asked for).
    pub hidden_nodes: Vec<PathBuf>,
    /// Things said at `-v` (hooks with nothing to do, ignored fields).
    pub notes: Vec<String>,
    /// The host's NVIDIA driver version, when the image's CUDA compat
    /// libraries are to be weighed against it ([`compat`]).
    pub cuda_compat: Option<String>,
}

impl ContainerEdits {
    /// Add `other`'s edits; what is already at a container path stays.
    pub fn extend(&mut self, other: ContainerEdits) {
        for n in other.device_nodes {
            if !self.device_nodes.iter().any(|d| d.path == n.path) {
                self.device_nodes.push(n);
            }
        }
        for m in other.mounts {
            if !self
                .mounts
                .iter()
                .any(|x| x.container_path == m.container_path)
            {
                self.mounts.push(m);
            }
        }
        self.env.extend(other.env);
        for l in other.symlinks {
            if !self.symlinks.iter().any(|x| x.link == l.link) {
                self.symlinks.push(l);
            }
        }
        for d in other.library_dirs {
            if !self.library_dirs.contains(&d) {
                self.library_dirs.push(d);
            }
        }
        let wanted: Vec<PathBuf> = self.device_nodes.iter().map(|n| n.path.clone()).collect();
        self.hidden_nodes.retain(|h| !wanted.contains(h));
        for h in other.hidden_nodes {
            if !wanted.contains(&h) && !self.hidden_nodes.contains(&h) {
                self.hidden_nodes.push(h);
            }
        }
        self.notes.extend(other.notes);
        self.cuda_compat = self.cuda_compat.take().or(other.cuda_compat);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("--device {}: {why}", crate::text::one_line(text))]
    Request { text: String, why: String },
    #[error("--device {request}: no such CDI device ({known})")]
    UnknownDevice { request: String, known: String },
    #[error("CDI spec {}: {}", shown(path), crate::text::one_line(what))]
    Spec { path: PathBuf, what: String },
    #[error("{flag}: {why}")]
    NoDriver { flag: &'static str, why: String },
    #[error("--device: reading the host's {}: {source}", shown(path))]
    HostDev {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl GpuError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            GpuError::Request { .. } | GpuError::UnknownDevice { .. } => ExitKind::Usage,
            GpuError::Spec { .. } => ExitKind::Config,
            GpuError::HostDev { .. } => ExitKind::OsError,
            GpuError::NoDriver { .. } => ExitKind::HostUnavailable,
        }
    }
}

/// The edits as a launch carries them out: plain data for the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchEdits {
    /// Replaces the default bind of the host's `/dev` when set.
    pub dev: Option<Vec<Mount>>,
    /// Binds and symlinks, after every other mount.
    pub mounts: Vec<Mount>,
    /// Applied before the user's `RFAKE_ENV_*`, `--env-file`, `--env`.
    pub env: Vec<Override>,
    pub library_dirs: Vec<PathBuf>,
    pub notes: Vec<String>,
    /// The host driver's version, to weigh the image's CUDA compat
    /// libraries against when the payload starts.
    pub cuda_compat: Option<String>,
}

impl LaunchEdits {
    /// Put the library folders first on `LD_LIBRARY_PATH` (after the
    /// image's environment and the overrides: the driver must win over a
    /// stub library an image lists).
    /// Run inside the container: the image's CUDA compat directory goes
    /// first when it is of a newer driver branch than the host's.
    pub fn prepend_library_path(&self, env: &mut EnvList) {
        self.prepend_library_path_in(env, Path::new("/"))
    }

    /// As [`Self::prepend_library_path`], with the container's root at `root`.
    pub fn prepend_library_path_in(&self, env: &mut EnvList, root: &Path) {
        if self.library_dirs.is_empty() {
            return;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(host) = &self.cuda_compat {
            if let Some((dir, version)) = compat::newer(root, host) {
                log::info!(
                    "CUDA compat: the image's libcuda {version} in {} is used over the host driver {host}",
                    dir.display()
                );
                dirs.push(dir);
            }
        }
        dirs.extend(self.library_dirs.iter().cloned());
        if let Some(old) = crate::env::get(env, "LD_LIBRARY_PATH") {
            let mine = dirs.clone();
            dirs.extend(
                std::env::split_paths(old)
                    .filter(|d| !d.as_os_str().is_empty() && !mine.contains(d)),
            );
        }
        if let Ok(joined) = std::env::join_paths(&dirs) {
            crate::env::set(env, "LD_LIBRARY_PATH", joined);
        }
    }
}

impl fmt::Display for LaunchEdits {
    /// The lines `--dry-run` adds (the binds are among the steps).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.library_dirs.is_empty() {
            let dirs: Vec<String> = self.library_dirs.iter().map(|d| shown(d)).collect();
            writeln!(
                f,
                "env (devices): LD_LIBRARY_PATH starts with {} [update-ldcache]",
                dirs.join(":")
            )?;
        }
        if let Some(host) = &self.cuda_compat {
            writeln!(
                f,
                "env (devices): {} goes first if the image's libcuda there is of a newer branch than the host driver {host} [cuda-compat]",
                compat::COMPAT_DIR
            )?;
        }
        for n in &self.notes {
            writeln!(f, "devices: {n}")?;
        }
        Ok(())
    }
}

/// Turn `edits` into the launch's mounts and environment; `host_dev` is the
/// host's `/dev` (a parameter for tests).
pub fn plan(edits: &ContainerEdits, host_dev: &Path) -> Result<LaunchEdits, GpuError> {
    let dev_root = Path::new("/dev");
    let in_dev = |p: &Path| p != dev_root && p.starts_with(dev_root);
    let on_host = |p: &Path| -> Option<PathBuf> {
        let rel = p.strip_prefix(dev_root).ok()?;
        Some(host_dev.join(rel))
    };
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    // A private /dev when a node must be hidden that the host's /dev has,
    // or a node must appear that is not the host's own at that path.
    let hide = edits
        .hidden_nodes
        .iter()
        .any(|p| in_dev(p) && on_host(p).is_some_and(|h| exists(&h)));
    let add = edits.device_nodes.iter().any(|n| {
        in_dev(&n.path) && (n.host_path != n.path || !on_host(&n.path).is_some_and(|h| exists(&h)))
    });
    let mut out = LaunchEdits {
        env: edits.env.clone(),
        library_dirs: edits.library_dirs.clone(),
        notes: edits.notes.clone(),
        cuda_compat: edits.cuda_compat.clone(),
        ..LaunchEdits::default()
    };
    if hide || add {
        let mut touched: Vec<PathBuf> = edits
            .hidden_nodes
            .iter()
            .filter(|p| in_dev(p))
            .cloned()
            .collect();
        touched.extend(
            edits
                .device_nodes
                .iter()
                .filter(|n| in_dev(&n.path))
                .map(|n| n.path.clone()),
        );
        out.dev = Some(
            dev::replica(host_dev, dev_root, &touched).map_err(|source| GpuError::HostDev {
                path: host_dev.to_path_buf(),
                source,
            })?,
        );
    }
    for n in &edits.device_nodes {
        out.mounts.push(Mount::Bind(Bind {
            src: n.host_path.clone(),
            dst: n.path.clone(),
            kind: BindKind::File,
            readonly: false,
            allow_devices: true,
            optional: false,
            create: true,
            origin: n.origin.clone(),
        }));
    }
    for m in &edits.mounts {
        out.mounts.push(Mount::Bind(Bind {
            src: m.host_path.clone(),
            dst: m.container_path.clone(),
            kind: BindKind::AsSource,
            readonly: m.readonly,
            allow_devices: false,
            optional: false,
            create: true,
            origin: m.origin.clone(),
        }));
    }
    let mut links: Vec<LinkEdit> = edits.symlinks.clone();
    links.extend(soname_links(edits, &links));
    for l in links {
        out.mounts.push(Mount::Symlink(Symlink {
            link: l.link,
            target: l.target,
            origin: l.origin,
        }));
    }
    Ok(out)
}

/// The links `ldconfig` would make in the `update-ldcache` folders:
/// `SONAME -> FILE` for each bound library whose ELF soname is not its file
/// name (`libcuda.so.1 -> libcuda.so.550.54.15`), unless something else is
/// already put at that name.
fn soname_links(edits: &ContainerEdits, existing: &[LinkEdit]) -> Vec<LinkEdit> {
    let mut out: Vec<LinkEdit> = Vec::new();
    for m in &edits.mounts {
        let (Some(dir), Some(file)) = (m.container_path.parent(), m.container_path.file_name())
        else {
            continue;
        };
        if !edits.library_dirs.iter().any(|d| d == dir) {
            continue;
        }
        let Some(soname) = elf::soname(&m.host_path) else {
            continue;
        };
        if soname.as_os_str() == file || soname.as_os_str().is_empty() {
            continue;
        }
        let link = dir.join(&soname);
        let taken = edits.mounts.iter().any(|x| x.container_path == link)
            || existing.iter().chain(&out).any(|l| l.link == link);
        if !taken {
            out.push(LinkEdit {
                link,
                target: PathBuf::from(OsString::from(file)),
                origin: format!("{} (soname)", m.origin),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
