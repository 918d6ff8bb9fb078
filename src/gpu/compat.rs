//! CUDA forward compatibility: images that bring a newer user-space driver
//! (NGC images with `cuda-compat`: `/usr/local/cuda/compat/libcuda.so.X.Y.Z`)
//! than the host's kernel driver.
//!
//! The rule, as NVIDIA's `enable-cuda-compat` hook decides it: the image's
//! compat libraries are used when their driver branch (the major version,
//! `560` of `560.28.03`) is newer than the host driver's; then the compat
//! directory goes on `LD_LIBRARY_PATH` before the host's libraries, so the
//! host's `libcuda.so.1` does not shadow it. A compat library of the same
//! or an older branch is not used: within a branch the user-space library
//! must match the kernel module exactly, and an older one gains nothing.
//! The check is made inside the container when the payload starts (the
//! image and every bind are in place then), from the file names only.

use std::path::{Path, PathBuf};

pub const COMPAT_DIR: &str = "/usr/local/cuda/compat";

/// The driver branch of a version `X.Y[.Z]`.
pub fn major(version: &str) -> Option<u32> {
    let (major, rest) = version.split_once('.')?;
    if rest.is_empty() || !rest.split('.').all(|p| p.parse::<u32>().is_ok()) {
        return None;
    }
    major.parse().ok()
}

/// The compat directory under `root` and its libcuda's version, when that
/// is of a newer branch than `host_version`.
pub fn newer(root: &Path, host_version: &str) -> Option<(PathBuf, String)> {
    let host = major(host_version)?;
    let dir = root.join(COMPAT_DIR.trim_start_matches('/'));
    let best = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let v = name.to_str()?.strip_prefix("libcuda.so.")?.to_string();
            Some((major(&v)?, v))
        })
        .max()?;
    (best.0 > host).then(|| (PathBuf::from(COMPAT_DIR), best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_branches() {
        assert_eq!(major("550.54.15"), Some(550));
        assert_eq!(major("560.28"), Some(560));
        assert_eq!(major("1"), None);
        assert_eq!(major("550."), None);
        assert_eq!(major("x.1"), None);
        assert_eq!(major("550.54.rc1"), None);
    }

    #[test]
    fn compat_is_used_only_for_a_newer_branch() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(newer(d.path(), "550.54.15"), None);
        let c = d.path().join("usr/local/cuda/compat");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("libcuda.so.560.28.03"), "").unwrap();
        std::os::unix::fs::symlink("libcuda.so.560.28.03", c.join("libcuda.so.1")).unwrap();
        assert_eq!(
            newer(d.path(), "550.54.15"),
            Some((PathBuf::from(COMPAT_DIR), "560.28.03".into()))
        );
        assert_eq!(newer(d.path(), "560.35.03"), None, "same branch");
        assert_eq!(newer(d.path(), "570.86.10"), None, "the host is newer");
        assert_eq!(newer(d.path(), "garbage"), None);
    }
}
