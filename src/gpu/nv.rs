//! `--nv` and `--rocm` without a CDI spec: the driver's files found on the
//! host, turned into the same [`ContainerEdits`] a CDI spec gives.
//!
//! Where the files come from, first found wins:
//! 1. (NVIDIA) `nvidia-container-cli list` when the program is on `PATH`:
//!    the toolkit knows the driver's files better than any list, so a new
//!    driver's new library is bound without a change here;
//! 2. the host's linker cache (`ld_cache`, default `/etc/ld.so.cache`,
//!    read by [`ldcache`](super::ldcache)) filtered by the names in
//!    `nvidia-libs.txt`/`rocm-libs.txt` (compiled in, extended by the
//!    site's `nvidia_libs`/`rocm_libs`), the programs from `PATH`, the
//!    device nodes from `gpu_dev_dir` (default `/dev`).
//!
//! (A CDI spec for the vendor's kind, when there is one, is used before
//! both: the launch plan decides that.)
//!
//! Libraries are bound read-only under their own file names into
//! [`LIBS_DIR`], which goes first on `LD_LIBRARY_PATH`; the soname links
//! (`libcuda.so.1 -> libcuda.so.550.54.15`) and the cache's other names
//! (`libcuda.so`) are symlinks beside them. Programs are bound read-only
//! into `/usr/bin`. Device nodes are bound at `/dev/NAME`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::{ContainerEdits, DeviceNode, GpuError, LinkEdit, MountEdit, ldcache};

/// Where the host's libraries are bound, as Apptainer does (images built
/// for Apptainer may name it in their own scripts).
pub const LIBS_DIR: &str = "/.singularity.d/libs";
/// Where the host's programs are bound.
pub const BIN_DIR: &str = "/usr/bin";
/// The default device directory and linker cache.
pub const DEFAULT_DEV_DIR: &str = "/dev";
pub const DEFAULT_LD_CACHE: &str = "/etc/ld.so.cache";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Amd,
}

impl Vendor {
    pub fn flag(self) -> &'static str {
        match self {
            Vendor::Nvidia => "--nv",
            Vendor::Amd => "--rocm",
        }
    }
    /// The CDI kind whose spec `--nv`/`--rocm` use when there is one.
    pub fn cdi_kind(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia.com/gpu",
            Vendor::Amd => "amd.com/gpu",
        }
    }
    fn driver(self) -> &'static str {
        match self {
            Vendor::Nvidia => "NVIDIA driver",
            Vendor::Amd => "ROCm runtime",
        }
    }
    /// The compiled-in list of names.
    pub fn builtin_list(self) -> &'static str {
        match self {
            Vendor::Nvidia => include_str!("nvidia-libs.txt"),
            Vendor::Amd => include_str!("rocm-libs.txt"),
        }
    }
    /// The library without which there is no driver to speak of.
    fn essential(self) -> &'static str {
        match self {
            Vendor::Nvidia => "libcuda.so",
            Vendor::Amd => "libhsa-runtime64.so",
        }
    }
    /// Is this `/dev` entry one of the vendor's device nodes?
    fn is_node(self, rel: &Path) -> bool {
        let s = rel.as_os_str().as_encoded_bytes();
        match self {
            Vendor::Nvidia => s.starts_with(b"nvidia") && !s.contains(&b'/'),
            Vendor::Amd => s == b"kfd" || (s.starts_with(b"dri/") && s.len() > 4),
        }
    }
}

/// Where to look on the host (parameters, so tests can point elsewhere).
#[derive(Debug, Clone)]
pub struct Host<'a> {
    pub ld_cache: &'a Path,
    pub dev_dir: &'a Path,
    pub path_env: Option<&'a OsStr>,
    /// The site's names added to the compiled-in list.
    pub extra_names: &'a [String],
}

/// The driver's files on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Where they were found, for `-v`, `--dry-run` and doctor.
    pub source: String,
    /// Real files (symlinks resolved), each with the other names the
    /// linker cache knows it by.
    pub libraries: Vec<(PathBuf, Vec<OsString>)>,
    pub programs: Vec<PathBuf>,
    /// (host path, container path).
    pub devices: Vec<(PathBuf, PathBuf)>,
}

impl Listing {
    /// The driver version, from the essential library's file name
    /// (`libcuda.so.550.54.15`: `550.54.15`).
    pub fn driver_version(&self, vendor: Vendor) -> Option<String> {
        let prefix = format!("{}.", vendor.essential());
        self.libraries.iter().find_map(|(p, _)| {
            let name = p.file_name()?.to_str()?;
            let v = name.strip_prefix(&prefix)?;
            v.contains('.').then(|| v.to_string())
        })
    }
}

/// The programs and libraries a list names: (programs, libraries).
pub fn names(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut programs, mut libraries) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains(".so") {
            libraries.push(line.to_string());
        } else {
            programs.push(line.to_string());
        }
    }
    (programs, libraries)
}

/// Find the driver's files: `nvidia-container-cli list` (NVIDIA, when on
/// `PATH`), else the linker cache. No essential library: no driver.
pub fn find(vendor: Vendor, host: &Host) -> Result<Listing, GpuError> {
    let no_driver = |why: String| GpuError::NoDriver {
        flag: vendor.flag(),
        why: format!("no {} on this host ({why})", vendor.driver()),
    };
    let cli = match vendor {
        Vendor::Nvidia => {
            crate::host::search_path(OsStr::new("nvidia-container-cli"), host.path_env)
        }
        Vendor::Amd => None,
    };
    let listing = match cli {
        Some(cli) => from_cli(&cli).map_err(no_driver)?,
        None => from_ld_cache(vendor, host).map_err(no_driver)?,
    };
    let essential = vendor.essential();
    let has = listing.libraries.iter().any(|(p, _)| {
        p.file_name()
            .is_some_and(|n| name_matches(n.as_encoded_bytes(), essential))
    });
    if !has {
        return Err(no_driver(format!("no {essential} in {}", listing.source)));
    }
    Ok(listing)
}

/// A cache name matches a list name: the same, or followed by a version
/// (`libcuda.so` matches `libcuda.so.1`, not `libcuda.sox`).
fn name_matches(name: &[u8], listed: &str) -> bool {
    name.strip_prefix(listed.as_bytes())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"."))
}

/// `nvidia-container-cli list`: one absolute path a line, device nodes,
/// programs, libraries and IPC sockets mixed; told apart by where they are
/// and what they are called.
fn from_cli(cli: &Path) -> Result<Listing, String> {
    let shown = crate::text::shown(cli);
    let out = std::process::Command::new(cli)
        .arg("list")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{shown} list: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{shown} list failed: {}",
            err.lines().next().unwrap_or("no message")
        ));
    }
    let mut listing = Listing {
        source: format!("{shown} list"),
        ..Listing::default()
    };
    for line in out.stdout.split(|&c| c == b'\n') {
        if line.is_empty() || line[0] != b'/' {
            continue;
        }
        let path = PathBuf::from(OsString::from_vec(line.to_vec()));
        if let Some(inside) = dev_path(&path) {
            listing.devices.push((path, inside));
        } else if path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().windows(3).any(|w| w == b".so"))
        {
            listing.libraries.push((path, Vec::new()));
        } else if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            listing.programs.push(path);
        }
        // Sockets (the persistenced and MPS pipes) are not bound.
    }
    Ok(listing)
}

use std::os::unix::ffi::OsStringExt;

/// A device node's path in the container: `/dev/` and what follows the
/// last `dev` component of the host path (a driver root elsewhere, as
/// `nvidia-container-cli --root` lists it, keeps its layout).
fn dev_path(host: &Path) -> Option<PathBuf> {
    let comps: Vec<_> = host.components().collect();
    let at = comps.iter().rposition(|c| c.as_os_str() == "dev")?;
    let rest: PathBuf = comps[at + 1..].iter().collect();
    (!rest.as_os_str().is_empty()).then(|| Path::new("/dev").join(rest))
}

fn from_ld_cache(vendor: Vendor, host: &Host) -> Result<Listing, String> {
    let (mut programs, mut libs) = names(vendor.builtin_list());
    let (p, l) = names(&host.extra_names.join("\n"));
    programs.extend(p);
    libs.extend(l);
    let entries = match ldcache::read(host.ld_cache) {
        Ok(e) => e,
        Err(e) => return Err(e.to_string()),
    };
    let mut listing = Listing {
        source: format!("the linker cache {}", crate::text::shown(host.ld_cache)),
        ..Listing::default()
    };
    for e in &entries {
        if !libs
            .iter()
            .any(|l| name_matches(e.name.as_encoded_bytes(), l))
        {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(&e.path) else {
            continue; // a stale cache entry
        };
        let real_name = real.file_name().map(OsStr::to_os_string);
        // One file of a name: the first in cache order, as the linker.
        match listing
            .libraries
            .iter_mut()
            .find(|(p, _)| *p == real || p.file_name().map(OsStr::to_os_string) == real_name)
        {
            Some((p, aliases)) => {
                if *p == real && Some(&e.name) != real_name.as_ref() && !aliases.contains(&e.name) {
                    aliases.push(e.name.clone());
                }
            }
            None => {
                let aliases = if Some(&e.name) == real_name.as_ref() {
                    vec![]
                } else {
                    vec![e.name.clone()]
                };
                listing.libraries.push((real, aliases));
            }
        }
    }
    for name in &programs {
        if let Some(p) = crate::host::search_path(OsStr::new(name), host.path_env) {
            listing.programs.push(p);
        }
    }
    listing.devices = device_nodes(vendor, host.dev_dir);
    Ok(listing)
}

/// The vendor's character devices in `dev` (and `dev/dri`), sorted.
pub fn device_nodes(vendor: Vendor, dev: &Path) -> Vec<(PathBuf, PathBuf)> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    for sub in [Path::new(""), Path::new("dri")] {
        let Ok(rd) = std::fs::read_dir(dev.join(sub)) else {
            continue;
        };
        let mut names: Vec<OsString> = rd.filter_map(|e| Some(e.ok()?.file_name())).collect();
        names.sort();
        for n in names {
            let rel = sub.join(&n);
            let host = dev.join(&rel);
            let is_char = std::fs::metadata(&host).is_ok_and(|m| m.file_type().is_char_device());
            if is_char && vendor.is_node(&rel) {
                out.push((host, Path::new("/dev").join(rel)));
            }
        }
    }
    out
}

/// The edits that give a container what `listing` names.
pub fn edits(vendor: Vendor, listing: &Listing) -> ContainerEdits {
    let origin = format!("{} from {}", vendor.flag(), listing.source);
    let libs = PathBuf::from(LIBS_DIR);
    let mut out = ContainerEdits {
        library_dirs: vec![libs.clone()],
        ..ContainerEdits::default()
    };
    for (host, inside) in &listing.devices {
        out.device_nodes.push(DeviceNode {
            path: inside.clone(),
            host_path: host.clone(),
            origin: origin.clone(),
        });
    }
    for (lib, aliases) in &listing.libraries {
        let Some(name) = lib.file_name() else {
            continue;
        };
        let at = libs.join(name);
        if out.mounts.iter().any(|m| m.container_path == at) {
            continue;
        }
        out.mounts.push(MountEdit {
            host_path: lib.clone(),
            container_path: at,
            readonly: true,
            origin: origin.clone(),
        });
        for alias in aliases {
            out.symlinks.push(LinkEdit {
                link: libs.join(alias),
                target: PathBuf::from(name),
                origin: format!("{origin} (linker cache name)"),
            });
        }
        // The development name CUDA programs also dlopen (`libcuda.so`),
        // as NVIDIA's create-symlinks hook makes it.
        let essential = vendor.essential();
        let link = libs.join(essential);
        if name_matches(name.as_encoded_bytes(), essential)
            && name != essential
            && !out.symlinks.iter().any(|l| l.link == link)
        {
            if let Some(soname) = super::elf::soname(lib) {
                out.symlinks.push(LinkEdit {
                    link,
                    target: PathBuf::from(soname),
                    origin: format!("{origin} (development link)"),
                });
            }
        }
    }
    for p in &listing.programs {
        let Some(name) = p.file_name() else {
            continue;
        };
        let at = Path::new(BIN_DIR).join(name);
        if out.mounts.iter().any(|m| m.container_path == at) {
            continue;
        }
        out.mounts.push(MountEdit {
            host_path: p.clone(),
            container_path: at,
            readonly: true,
            origin: origin.clone(),
        });
    }
    if vendor == Vendor::Nvidia {
        out.cuda_compat = listing.driver_version(vendor);
    }
    if listing.devices.is_empty() {
        out.notes.push(format!(
            "{}: no device nodes found: the libraries and programs only",
            vendor.flag()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_split_into_programs_and_libraries() {
        let (p, l) = names(Vendor::Nvidia.builtin_list());
        assert!(p.contains(&"nvidia-smi".to_string()));
        assert!(l.contains(&"libcuda.so".to_string()));
        assert!(l.contains(&"libnvoptix.so.1".to_string()));
        assert!(!p.iter().any(|n| n.starts_with('#') || n.is_empty()));
        let (p, l) = names(Vendor::Amd.builtin_list());
        assert_eq!(p, ["rocm-smi", "rocminfo"]);
        assert!(l.contains(&"libhsa-runtime64.so".to_string()));
    }

    #[test]
    fn names_match_whole_versions_only() {
        assert!(name_matches(b"libcuda.so", "libcuda.so"));
        assert!(name_matches(b"libcuda.so.1", "libcuda.so"));
        assert!(name_matches(b"libcuda.so.550.54.15", "libcuda.so"));
        assert!(!name_matches(b"libcudart.so.12", "libcuda.so"));
        assert!(!name_matches(b"libcuda.sox", "libcuda.so"));
        assert!(!name_matches(b"libGLX.so.0", "libGL.so"));
    }

    #[test]
    fn device_paths_from_a_listing() {
        assert_eq!(
            dev_path(Path::new("/dev/nvidia0")).as_deref(),
            Some(Path::new("/dev/nvidia0"))
        );
        assert_eq!(
            dev_path(Path::new("/run/nvidia/driver/dev/nvidia-caps/nvidia-cap1")).as_deref(),
            Some(Path::new("/dev/nvidia-caps/nvidia-cap1"))
        );
        assert_eq!(dev_path(Path::new("/usr/lib/libcuda.so.1")), None);
        assert_eq!(dev_path(Path::new("/dev")), None);
        assert!(Vendor::Nvidia.is_node(Path::new("nvidia0")));
        assert!(Vendor::Nvidia.is_node(Path::new("nvidiactl")));
        assert!(!Vendor::Nvidia.is_node(Path::new("dri/card0")));
        assert!(Vendor::Amd.is_node(Path::new("dri/renderD128")));
        assert!(Vendor::Amd.is_node(Path::new("kfd")));
        assert!(!Vendor::Amd.is_node(Path::new("nvidia0")));
    }

    #[test]
    fn edits_bind_libraries_programs_and_nodes() {
        let listing = Listing {
            source: "test".into(),
            libraries: vec![(
                "/host/lib/libnvidia-ml.so.550.54.15".into(),
                vec!["libnvidia-ml.so".into()],
            )],
            programs: vec!["/host/bin/nvidia-smi".into()],
            devices: vec![("/x/dev/nvidia0".into(), "/dev/nvidia0".into())],
        };
        let e = edits(Vendor::Nvidia, &listing);
        assert_eq!(e.library_dirs, [Path::new(LIBS_DIR)]);
        assert_eq!(
            e.mounts[0].container_path,
            Path::new("/.singularity.d/libs/libnvidia-ml.so.550.54.15")
        );
        assert!(e.mounts.iter().all(|m| m.readonly));
        assert_eq!(e.mounts[1].container_path, Path::new("/usr/bin/nvidia-smi"));
        assert_eq!(
            e.symlinks[0].link,
            Path::new("/.singularity.d/libs/libnvidia-ml.so")
        );
        assert_eq!(e.symlinks[0].target, Path::new("libnvidia-ml.so.550.54.15"));
        assert_eq!(e.device_nodes[0].host_path, Path::new("/x/dev/nvidia0"));
        // No libcuda listed: no driver version.
        assert_eq!(e.cuda_compat, None);
        let l = Listing {
            libraries: vec![("/l/libcuda.so.550.54.15".into(), vec![])],
            ..Listing::default()
        };
        assert_eq!(
            l.driver_version(Vendor::Nvidia).as_deref(),
            Some("550.54.15")
        );
    }
}
