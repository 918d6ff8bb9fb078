//! The configuration values one launch needs, with where each came from
//! (built-in default, the site file, the user file), in plain data.

use std::path::{Component, Path, PathBuf};

/// A value and its origin ("default", "/etc/rfake/rfake.toml:4").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: String,
}

impl<T> Sourced<T> {
    pub fn default_value(value: T) -> Self {
        Sourced {
            value,
            origin: "default".into(),
        }
    }
}

use std::time::Duration;

use crate::config::{
    DEFAULT_IMAGE_CACHE_SIZE, DEFAULT_WARM_LINGER, DEFAULT_WRITABLE_TMPFS_SIZE, ImageServer,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Bind specifications from the site file.
    pub site_binds: Vec<Sourced<String>>,
    /// Bind specifications from the user file.
    pub user_binds: Vec<Sourced<String>>,
    /// Scratch directories, references already expanded.
    pub scratch: Vec<Sourced<PathBuf>>,
    pub mount_home: Sourced<bool>,
    pub mount_tmp: Sourced<bool>,
    pub mount_cwd: Sourced<bool>,
    pub image_server: Sourced<ImageServer>,
    pub squashfuse: Option<Sourced<PathBuf>>,
    pub image_cache_size: Sourced<u64>,
    pub warm_linger: Sourced<Duration>,
    /// Prefetch profiles on (`prefetch_profiles`).
    pub prefetch_profiles: Sourced<bool>,
    /// The node cache's directory, expanded (`node_cache_dir`), and bound.
    pub node_cache_dir: Option<Sourced<PathBuf>>,
    pub node_cache_size: Sourced<u64>,
    /// The configured `cache_dir`, expanded, where profiles are kept when
    /// neither `RFAKE_CACHEDIR` nor a variable names one; `None`
    /// also when `cache_read_only` (profiles are not written there).
    pub cache_dir: Option<PathBuf>,
    /// `cache_read_only` applies: no profiles unless a variable names a
    /// cache of the user's.
    pub cache_read_only: bool,
    pub writable_tmpfs_size: Sourced<u64>,
    pub allow_user_binds: Sourced<bool>,
    pub allow_fakeroot: Sourced<bool>,
    /// Empty: any image.
    pub allowed_image_paths: Sourced<Vec<PathBuf>>,
    /// Where CDI specs are read, the last with priority.
    pub cdi_spec_dirs: Sourced<Vec<PathBuf>>,
    /// `--nv`/`--rocm`: the site's names, the linker cache, the device
    /// directory, what a missing driver does.
    pub nvidia_libs: Sourced<Vec<String>>,
    pub rocm_libs: Sourced<Vec<String>>,
    pub ld_cache: Sourced<PathBuf>,
    pub gpu_dev_dir: Sourced<PathBuf>,
    pub gpu_missing_driver: Sourced<crate::config::MissingDriver>,
    /// Bind profiles, by name; origin: where each is defined.
    pub profiles: Vec<Sourced<crate::config::Profile>>,
    /// The configuration files read, for "no such profile" messages.
    pub config_files: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            site_binds: Vec::new(),
            user_binds: Vec::new(),
            scratch: Vec::new(),
            mount_home: Sourced::default_value(true),
            mount_tmp: Sourced::default_value(true),
            mount_cwd: Sourced::default_value(true),
            image_server: Sourced::default_value(ImageServer::Builtin),
            squashfuse: None,
            image_cache_size: Sourced::default_value(DEFAULT_IMAGE_CACHE_SIZE),
            warm_linger: Sourced::default_value(DEFAULT_WARM_LINGER),
            prefetch_profiles: Sourced::default_value(true),
            node_cache_dir: None,
            node_cache_size: Sourced::default_value(crate::config::DEFAULT_NODE_CACHE_SIZE),
            cache_dir: None,
            cache_read_only: false,
            writable_tmpfs_size: Sourced::default_value(DEFAULT_WRITABLE_TMPFS_SIZE),
            allow_user_binds: Sourced::default_value(true),
            allow_fakeroot: Sourced::default_value(true),
            allowed_image_paths: Sourced::default_value(Vec::new()),
            cdi_spec_dirs: Sourced::default_value(
                crate::gpu::cdi::DEFAULT_SPEC_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
            ),
            nvidia_libs: Sourced::default_value(Vec::new()),
            rocm_libs: Sourced::default_value(Vec::new()),
            ld_cache: Sourced::default_value(crate::gpu::nv::DEFAULT_LD_CACHE.into()),
            gpu_dev_dir: Sourced::default_value(crate::gpu::nv::DEFAULT_DEV_DIR.into()),
            gpu_missing_driver: Sourced::default_value(crate::config::MissingDriver::Error),
            profiles: Vec::new(),
            config_files: "no configuration file".into(),
        }
    }
}

impl Settings {
    /// The values of the site and user configuration files.
    pub fn from_config(config: &crate::config::Config) -> Settings {
        fn sourced<T: Clone>(s: &crate::config::Setting<T>) -> Sourced<T> {
            Sourced {
                value: s.value.clone(),
                origin: s.origin.to_string(),
            }
        }
        let (site_binds, user_binds): (Vec<_>, Vec<_>) = config
            .binds
            .iter()
            .partition(|b| !matches!(b.origin, crate::config::Origin::User { .. }));
        let bind = |b: &crate::config::Setting<crate::config::BindEntry>| Sourced {
            value: b.value.spec.clone(),
            origin: b.origin.to_string(),
        };
        Settings {
            site_binds: site_binds.into_iter().map(bind).collect(),
            user_binds: user_binds.into_iter().map(bind).collect(),
            scratch: config
                .scratch_dirs()
                .into_iter()
                .map(|(path, origin)| Sourced {
                    value: path.to_path_buf(),
                    origin: origin.to_string(),
                })
                .collect(),
            mount_home: sourced(&config.mount_home),
            mount_tmp: sourced(&config.mount_tmp),
            mount_cwd: sourced(&config.mount_cwd),
            image_server: sourced(&config.image_server),
            image_cache_size: sourced(&config.image_cache_size),
            warm_linger: sourced(&config.warm_linger),
            prefetch_profiles: sourced(&config.prefetch_profiles),
            node_cache_dir: config.node_cache_dir.value.as_ref().and_then(|entry| {
                Some(Sourced {
                    value: entry.path.as_ref().ok()?.clone(),
                    origin: config.node_cache_dir.origin.to_string(),
                })
            }),
            node_cache_size: sourced(&config.node_cache_size),
            cache_dir: config
                .cache_dir
                .value
                .as_ref()
                .and_then(|entry| entry.path.as_ref().ok().cloned()),
            cache_read_only: config.cache_read_only.value,
            squashfuse: config.squashfuse.value.clone().map(|p| Sourced {
                value: p,
                origin: config.squashfuse.origin.to_string(),
            }),
            writable_tmpfs_size: sourced(&config.writable_tmpfs_size),
            allow_user_binds: sourced(&config.allow_user_binds),
            allow_fakeroot: sourced(&config.allow_fakeroot),
            allowed_image_paths: sourced(&config.allowed_image_paths),
            cdi_spec_dirs: sourced(&config.cdi_spec_dirs),
            nvidia_libs: sourced(&config.nvidia_libs),
            rocm_libs: sourced(&config.rocm_libs),
            ld_cache: sourced(&config.ld_cache),
            gpu_dev_dir: sourced(&config.gpu_dev_dir),
            gpu_missing_driver: sourced(&config.gpu_missing_driver),
            profiles: config.profiles.iter().map(sourced).collect(),
            config_files: config.files_read(),
        }
    }

    /// Whether the (canonical) image path is under an allowed directory,
    /// compared on whole path components.
    /// May the image at `canonical_image` (a canonical path, as from
    /// `fs::canonicalize`) be run? Yes when `allowed_image_paths` is empty,
    /// else when it is under one of them. Compared on whole path components,
    /// never string prefixes: `/data/imagesX/a.sif` is not under
    /// `/data/images`. A relative candidate or one containing `..` is not
    /// canonical, so it is refused rather than trusted (`..` is a component
    /// like any other to `Path::starts_with`).
    pub fn image_allowed(&self, canonical_image: &Path) -> bool {
        let dirs = &self.allowed_image_paths.value;
        if dirs.is_empty() {
            return true;
        }
        if !canonical_image.is_absolute()
            || canonical_image
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return false;
        }
        dirs.iter().any(|dir| canonical_image.starts_with(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_images_on_components() {
        let mut s = Settings::default();
        assert!(s.image_allowed(Path::new("/anywhere/x.sif")));
        s.allowed_image_paths.value = vec!["/data/images".into()];
        assert!(s.image_allowed(Path::new("/data/images/a.sif")));
        assert!(s.image_allowed(Path::new("/data/images/sub/a.sif")));
        assert!(!s.image_allowed(Path::new("/data/imagesX/a.sif")));
        assert!(!s.image_allowed(Path::new("/data/a.sif")));
    }
}
