//! Site and user configuration: `/etc/rfake/rfake.toml`, then the user's
//! `~/.config/rfake/rfake.toml` (`docs/rfake.toml.example` lists every key).
//!
//! Parse → validate → merge, with no side effect but reading the two files:
//! [`Config::load`] returns either a complete, checked configuration or one
//! [`ConfigError`] naming `file:line`, the key and the problem (exit status
//! 78, [`ExitKind::Config`]). A file is read only if it is a regular file of
//! at most [`MAX_FILE_SIZE`] bytes (through [`crate::input`], which never
//! blocks on a FIFO and never reads an endless device). Each effective value carries its [`Origin`] so
//! `rfake config` and `-v` can say where it came from.
//!
//! The files are walked by hand on toml's spanned document tree rather than
//! deserialized through serde: that is what lets every message name the key
//! and its line, say which type was expected and which was found, and refuse
//! an unknown key with a "did you mean".
//!
//! Merging: the site file applies over the built-in defaults, then the user
//! file over that; a scalar is replaced, a list (`binds`, `scratch`) is
//! extended (the user's entries come after the site's).
//!
//! Policy keys (`allow_user_binds`, `allow_fakeroot`, `allowed_image_paths`,
//! `user_may_set`) may only be set in the site file. They are the site's
//! rules for this program, not a security boundary: rfake runs with the
//! invoking user's own privileges and nothing more (no setuid, no
//! capabilities), so a user can always run another build, or point
//! `RFAKE_CONFIG` at another file; nothing the policy forbids would give them
//! a privilege they lack.

mod expand;
mod profiles;
mod render;
mod size;
mod values;

/// TOML helpers shared with the build recipes: positions and type names.
pub(crate) mod toml_text {
    pub(crate) use super::values::{found, position};
}

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::exit::ExitKind;
use crate::input::{self, FileKind, InputError, size_text};
use values::{
    At, boolean, build_size, check_bind, check_image_dir, check_scratch, position, seconds, size,
    size_or_zero, string, strings, user_key,
};

use crate::text::{one_line, shown};
pub use expand::ExpandError;
pub use profiles::{Profile, requested as requested_profiles, select as select_profiles};
pub use size::{format_size, parse_build_size, parse_size};

/// The site file, unless `RFAKE_CONFIG` names another.
pub const SITE_CONFIG: &str = "/etc/rfake/rfake.toml";
/// The user file, under `$XDG_CONFIG_HOME` (else `$HOME/.config`).
pub const USER_CONFIG: &str = "rfake/rfake.toml";
/// The default size of the writable tmpfs: 64 MiB.
pub const DEFAULT_WRITABLE_TMPFS_SIZE: u64 = 64 << 20;
/// The default size of the FUSE server's block cache: 64 MiB.
pub const DEFAULT_IMAGE_CACHE_SIZE: u64 = 64 << 20;
/// The default limit on the files of a build, uncompressed: 4 TiB
/// (`build_max_size`; `docs/build.md`, "Size limit").
pub const DEFAULT_BUILD_MAX_SIZE: u64 = 4 << 40;
/// The default bound of the node cache (`node_cache_size`): 1 GiB.
pub const DEFAULT_NODE_CACHE_SIZE: u64 = 1 << 30;
/// The default limit on the image cache (`cache_max_size`): 20 GiB.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 20 << 30;
/// The default time a warm mount outlives its last launch.
pub const DEFAULT_WARM_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest `warm_linger` accepted.
pub const MAX_WARM_LINGER: std::time::Duration = std::time::Duration::from_secs(3600);
/// The largest configuration file read: 1 MiB, some thousand times what
/// any real one holds.
pub const MAX_FILE_SIZE: u64 = crate::input::TEXT_LIMIT;

/// Which program serves a single-file image's SquashFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageServer {
    /// rfake's own FUSE server (libfuse3, a block cache, kernel caching).
    Builtin,
    /// An external squashfuse process (`squashfuse_ll`, else `squashfuse`).
    Squashfuse,
}

impl ImageServer {
    pub const fn name(self) -> &'static str {
        match self {
            ImageServer::Builtin => "builtin",
            ImageServer::Squashfuse => "squashfuse",
        }
    }
}

/// What `--nv`/`--rocm` do on a host without the driver
/// (`gpu_missing_driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingDriver {
    /// One line, exit 69 (a host prerequisite is missing).
    Error,
    /// A warning; the container starts without GPUs.
    Warn,
}

impl MissingDriver {
    pub const fn name(self) -> &'static str {
        match self {
            MissingDriver::Error => "error",
            MissingDriver::Warn => "warn",
        }
    }
}

/// A configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Binds,
    Scratch,
    MountHome,
    MountTmp,
    MountCwd,
    ImageServer,
    Squashfuse,
    ImageCacheSize,
    WarmLinger,
    WritableTmpfsSize,
    BuildMaxSize,
    PrefetchProfiles,
    NodeCacheDir,
    NodeCacheSize,
    CacheDir,
    CacheMaxSize,
    Offline,
    RegistryCaFile,
    CdiSpecDirs,
    NvidiaLibs,
    RocmLibs,
    LdCache,
    GpuDevDir,
    GpuMissingDriver,
    AllowUserBinds,
    AllowFakeroot,
    AllowedImagePaths,
    UserMaySet,
    CacheReadOnly,
    Profiles,
}

impl Key {
    /// Every key, in the order `render` prints them.
    pub const ALL: [Key; 30] = [
        Key::Binds,
        Key::Scratch,
        Key::MountHome,
        Key::MountTmp,
        Key::MountCwd,
        Key::ImageServer,
        Key::Squashfuse,
        Key::ImageCacheSize,
        Key::WarmLinger,
        Key::WritableTmpfsSize,
        Key::BuildMaxSize,
        Key::PrefetchProfiles,
        Key::NodeCacheDir,
        Key::NodeCacheSize,
        Key::CacheDir,
        Key::CacheMaxSize,
        Key::Offline,
        Key::RegistryCaFile,
        Key::CdiSpecDirs,
        Key::NvidiaLibs,
        Key::RocmLibs,
        Key::LdCache,
        Key::GpuDevDir,
        Key::GpuMissingDriver,
        Key::Profiles,
        Key::AllowUserBinds,
        Key::AllowFakeroot,
        Key::AllowedImagePaths,
        Key::CacheReadOnly,
        Key::UserMaySet,
    ];

    /// The name written in the file.
    pub const fn name(self) -> &'static str {
        match self {
            Key::Binds => "binds",
            Key::Scratch => "scratch",
            Key::MountHome => "mount_home",
            Key::MountTmp => "mount_tmp",
            Key::MountCwd => "mount_cwd",
            Key::ImageServer => "image_server",
            Key::Squashfuse => "squashfuse",
            Key::ImageCacheSize => "image_cache_size",
            Key::WarmLinger => "warm_linger",
            Key::WritableTmpfsSize => "writable_tmpfs_size",
            Key::BuildMaxSize => "build_max_size",
            Key::PrefetchProfiles => "prefetch_profiles",
            Key::NodeCacheDir => "node_cache_dir",
            Key::NodeCacheSize => "node_cache_size",
            Key::CacheDir => "cache_dir",
            Key::CacheMaxSize => "cache_max_size",
            Key::Offline => "offline",
            Key::RegistryCaFile => "registry_ca_file",
            Key::CdiSpecDirs => "cdi_spec_dirs",
            Key::NvidiaLibs => "nvidia_libs",
            Key::RocmLibs => "rocm_libs",
            Key::LdCache => "ld_cache",
            Key::GpuDevDir => "gpu_dev_dir",
            Key::GpuMissingDriver => "gpu_missing_driver",
            Key::CacheReadOnly => "cache_read_only",
            Key::AllowUserBinds => "allow_user_binds",
            Key::AllowFakeroot => "allow_fakeroot",
            Key::AllowedImagePaths => "allowed_image_paths",
            Key::UserMaySet => "user_may_set",
            Key::Profiles => "profiles",
        }
    }

    /// A policy key: only the site file may set it.
    pub const fn is_policy(self) -> bool {
        matches!(
            self,
            Key::AllowUserBinds
                | Key::AllowFakeroot
                | Key::AllowedImagePaths
                | Key::UserMaySet
                | Key::CacheReadOnly
        )
    }

    /// The key called `name`, if any.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The keys a user file may set unless the site says otherwise: every
    /// key that is not a policy key.
    pub fn user_keys() -> Vec<Key> {
        Key::ALL.into_iter().filter(|k| !k.is_policy()).collect()
    }

    /// The key `name` was probably meant to be (`mount-home`, `bind`).
    fn suggest(name: &str) -> Option<Key> {
        let name = name.to_ascii_lowercase().replace('-', "_");
        let (best, distance) = Key::ALL
            .into_iter()
            .map(|k| (k, edit_distance(&name, k.name())))
            .min_by_key(|&(_, d)| d)?;
        if distance <= 2 {
            return Some(best);
        }
        // `home` for `mount_home`, but nothing for `mount`: which one?
        let mut containing = Key::ALL.into_iter().filter(|k| k.name().contains(&name));
        match (containing.next(), containing.next()) {
            (Some(key), None) if name.len() >= 4 => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into rfake.
    Default,
    /// The site file, at this line (1-based).
    Site { path: PathBuf, line: usize },
    /// The user file, at this line (1-based).
    User { path: PathBuf, line: usize },
}

impl fmt::Display for Origin {
    /// `default`, or `FILE:LINE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Site { path, line } | Origin::User { path, line } => {
                write!(f, "{}:{line}", shown(path))
            }
        }
    }
}

/// An effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting {
            value,
            origin: Origin::Default,
        }
    }
}

/// One `binds` entry, checked: at most three `:`-separated fields, the third
/// `ro` or `rw`, SRC absolute once expanded. Parsing it into a bind is the
/// `binds` module's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindEntry {
    /// As written in the file.
    pub written: String,
    /// With `$NAME`/`${NAME}` expanded (each field on its own).
    pub spec: String,
}

/// One `scratch` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchEntry {
    /// As written in the file.
    pub written: String,
    /// The absolute path it expands to, or why it is skipped: a variable it
    /// names is unset or empty (only [`ExpandError::is_missing`] errors
    /// appear here; the others are refused when loading).
    pub path: Result<PathBuf, ExpandError>,
}

/// A configuration file rfake looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    pub path: PathBuf,
    /// False when it does not exist (built-in defaults or no user settings).
    pub found: bool,
}

/// The effective configuration: built-in defaults, then the site file, then
/// the user file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `SRC[:DST[:ro|rw]]` binds for every container: the site's, then the
    /// user's.
    pub binds: Vec<Setting<BindEntry>>,
    /// Scratch directories, the site's then the user's; see
    /// [`Config::scratch_dirs`]. Which exist is decided by the caller.
    pub scratch: Vec<Setting<ScratchEntry>>,
    /// Bind the user's home directory (default true).
    pub mount_home: Setting<bool>,
    /// Bind the host's `/tmp` (default true).
    pub mount_tmp: Setting<bool>,
    /// Bind the current directory at its own path when nothing else shows
    /// it, as Apptainer does (default true).
    pub mount_cwd: Setting<bool>,
    /// Which server serves images (default builtin).
    pub image_server: Setting<ImageServer>,
    /// Size of the built-in server's block cache in bytes; 0 turns it off
    /// (default 64 MiB).
    pub image_cache_size: Setting<u64>,
    /// How long a warm mount outlives its last launch; 0 turns warm mounts
    /// off (default 5 s).
    pub warm_linger: Setting<std::time::Duration>,
    /// The squashfuse program, a name looked up in PATH or an absolute path;
    /// `None`: squashfuse_ll, else squashfuse (see `host::find_squashfuse`).
    pub squashfuse: Setting<Option<PathBuf>>,
    /// Size of the writable tmpfs in bytes, 0 < size ≤ 1 TiB (default 64 MiB).
    pub writable_tmpfs_size: Setting<u64>,
    /// The most the files of a `rfake build` may add up to, uncompressed;
    /// `u64::MAX`: no limit (written 0; default 4 TiB).
    pub build_max_size: Setting<u64>,
    /// Where pulled images are cached (`$VAR` expanded); `None`: the
    /// default (`RFAKE_CACHEDIR`, else `$XDG_CACHE_HOME/rfake`, else
    /// `~/.cache/rfake`, decided by the caller).
    pub cache_dir: Setting<Option<ScratchEntry>>,
    /// Record which blocks launches read into a profile in the cache and
    /// replay it on a cold mount (default true).
    pub prefetch_profiles: Setting<bool>,
    /// A node-local directory (`$VAR` expanded) where the built-in server
    /// keeps decompressed blocks across mounts; `None`: no node cache
    /// (the default).
    pub node_cache_dir: Setting<Option<ScratchEntry>>,
    /// The most a user's node cache entries may add up to (default 1 GiB).
    pub node_cache_size: Setting<u64>,
    /// The most the image cache may hold before the least recently used
    /// entries are evicted; 0: no limit (default 20 GiB).
    pub cache_max_size: Setting<u64>,
    /// Run registry images only from the cache, never asking a registry
    /// (default false; `--offline`).
    pub offline: Setting<bool>,
    /// A PEM file of certificate authorities trusted for registries, besides
    /// the system's (`--ca-file`).
    pub registry_ca_file: Setting<Option<PathBuf>>,
    /// Where `--device` reads CDI specs, the last directory with priority
    /// (default `/etc/cdi`, `/var/run/cdi`). Absolute, without `..`.
    pub cdi_spec_dirs: Setting<Vec<PathBuf>>,
    /// Names `--nv` binds besides the compiled-in list (programs, and
    /// libraries: a name with `.so`).
    pub nvidia_libs: Setting<Vec<String>>,
    /// The same for `--rocm`.
    pub rocm_libs: Setting<Vec<String>>,
    /// The host's linker cache `--nv`/`--rocm` read (default
    /// `/etc/ld.so.cache`).
    pub ld_cache: Setting<PathBuf>,
    /// Where `--nv`/`--rocm` look for the GPUs' device nodes (default
    /// `/dev`).
    pub gpu_dev_dir: Setting<PathBuf>,
    /// `--nv`/`--rocm` on a host without the driver: an error (exit 69), or
    /// a warning and the launch goes on without GPUs (default error).
    pub gpu_missing_driver: Setting<MissingDriver>,
    /// Policy: the cache is a site-curated one that users only read: rfake
    /// never writes to it (default false).
    pub cache_read_only: Setting<bool>,
    /// Policy: accept `--bind`, `RFAKE_BIND` and user-file `binds` (default
    /// true).
    pub allow_user_binds: Setting<bool>,
    /// Policy: allow appearing as root inside; false forces `--keep-id`
    /// (default true).
    pub allow_fakeroot: Setting<bool>,
    /// Policy: directories images must be under; empty allows any image.
    /// Absolute, without `..`, normalized (no `//`, no trailing `/`).
    pub allowed_image_paths: Setting<Vec<PathBuf>>,
    /// Policy: the keys a user file may set (default: every non-policy key).
    pub user_may_set: Setting<Vec<Key>>,
    /// Bind profiles (`[profiles.NAME]`), the site's then the user's; a
    /// user's profile replaces the site's of the same name.
    pub profiles: Vec<Setting<Profile>>,
    /// The site file read, if any was given.
    pub site_file: Option<FileStatus>,
    /// The user file read, if there is a place for one.
    pub user_file: Option<FileStatus>,
}

impl Default for Config {
    /// The built-in defaults: what rfake does with no configuration file.
    fn default() -> Self {
        Config {
            binds: Vec::new(),
            scratch: Vec::new(),
            mount_home: Setting::default(true),
            mount_tmp: Setting::default(true),
            mount_cwd: Setting::default(true),
            image_server: Setting::default(ImageServer::Builtin),
            image_cache_size: Setting::default(DEFAULT_IMAGE_CACHE_SIZE),
            warm_linger: Setting::default(DEFAULT_WARM_LINGER),
            squashfuse: Setting::default(None),
            writable_tmpfs_size: Setting::default(DEFAULT_WRITABLE_TMPFS_SIZE),
            build_max_size: Setting::default(DEFAULT_BUILD_MAX_SIZE),
            cache_dir: Setting::default(None),
            prefetch_profiles: Setting::default(true),
            node_cache_dir: Setting::default(None),
            node_cache_size: Setting::default(DEFAULT_NODE_CACHE_SIZE),
            cache_max_size: Setting::default(DEFAULT_CACHE_MAX_SIZE),
            offline: Setting::default(false),
            registry_ca_file: Setting::default(None),
            cache_read_only: Setting::default(false),
            allow_user_binds: Setting::default(true),
            allow_fakeroot: Setting::default(true),
            allowed_image_paths: Setting::default(Vec::new()),
            cdi_spec_dirs: Setting::default(
                crate::gpu::cdi::DEFAULT_SPEC_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .collect(),
            ),
            nvidia_libs: Setting::default(Vec::new()),
            rocm_libs: Setting::default(Vec::new()),
            ld_cache: Setting::default(crate::gpu::nv::DEFAULT_LD_CACHE.into()),
            gpu_dev_dir: Setting::default(crate::gpu::nv::DEFAULT_DEV_DIR.into()),
            gpu_missing_driver: Setting::default(MissingDriver::Error),
            user_may_set: Setting::default(Key::user_keys()),
            profiles: Vec::new(),
            site_file: None,
            user_file: None,
        }
    }
}

/// A configuration error; every message is one line that starts with
/// `FILE:LINE` (or `FILE:LINE:COLUMN`, or `FILE`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists (or was named explicitly) but cannot be read.
    #[error("{}: cannot read: {error}", shown(.path))]
    Unreadable { path: PathBuf, error: io::Error },
    /// A directory, FIFO, socket or device: refused before reading (a FIFO
    /// would block, `/dev/zero` would never end).
    #[error("{}: a {kind}, not a regular file", shown(.path))]
    NotAFile { path: PathBuf, kind: FileKind },
    /// Larger than [`MAX_FILE_SIZE`].
    #[error(
        "{}: larger than {}, too large for a configuration file",
        shown(.path),
        size_text(MAX_FILE_SIZE)
    )]
    TooLarge { path: PathBuf },
    /// Not TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", shown(.path))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key is unknown, has the wrong type or value, or may not be set in
    /// this file.
    #[error("{}:{line}: {key}: {problem}", shown(.path))]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        problem: String,
    },
}

impl ConfigError {
    /// Always [`ExitKind::Config`] (78).
    pub fn exit_kind(&self) -> ExitKind {
        ExitKind::Config
    }
}

/// Where the configuration files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    pub site: ConfigPath,
    /// `None` when there is no place for a user file (no `HOME`) or
    /// `RFAKE_USER_CONFIG` is set to the empty string.
    pub user: Option<ConfigPath>,
}

/// A configuration file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    pub path: PathBuf,
    /// Named explicitly (`RFAKE_CONFIG`, `RFAKE_USER_CONFIG`): a missing file
    /// is then an error, since the name is more likely a typo than a wish
    /// for the defaults.
    pub required: bool,
}

impl ConfigSources {
    /// The files named by the environment: the site file is `RFAKE_CONFIG`,
    /// else [`SITE_CONFIG`]; the user file is `RFAKE_USER_CONFIG` (empty: no
    /// user file), else `$XDG_CONFIG_HOME/rfake/rfake.toml`, else
    /// `$HOME/.config/rfake/rfake.toml`. A relative `XDG_CONFIG_HOME` is
    /// ignored, as the XDG base directory spec says; so is a relative `HOME`.
    pub fn from_env(env: &[(OsString, OsString)]) -> Self {
        let set = |name| crate::env::get(env, name).filter(|v| !v.is_empty());
        let site = match set("RFAKE_CONFIG") {
            Some(path) => ConfigPath {
                path: path.into(),
                required: true,
            },
            None => ConfigPath {
                path: SITE_CONFIG.into(),
                required: false,
            },
        };
        let user = match crate::env::get(env, "RFAKE_USER_CONFIG") {
            Some(path) if path.is_empty() => None,
            Some(path) => Some(ConfigPath {
                path: path.into(),
                required: true,
            }),
            None => {
                let absolute = |name| set(name).map(Path::new).filter(|p| p.is_absolute());
                absolute("XDG_CONFIG_HOME")
                    .map(Path::to_path_buf)
                    .or_else(|| absolute("HOME").map(|home| home.join(".config")))
                    .map(|dir| ConfigPath {
                        path: dir.join(USER_CONFIG),
                        required: false,
                    })
            }
        };
        ConfigSources { site, user }
    }
}

/// Which file is being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Site,
    User,
}

impl Config {
    /// Read the site and user files named by `sources` and build the
    /// configuration; `env` expands `$NAME` in `binds` and `scratch`. A
    /// missing file is no error unless it was named explicitly.
    pub fn load(
        sources: &ConfigSources,
        env: &[(OsString, OsString)],
    ) -> Result<Config, ConfigError> {
        let site = read(&sources.site)?;
        let user_text = match &sources.user {
            Some(user) => read(user)?,
            None => None,
        };
        let mut config = Config::from_strs(
            site.as_deref()
                .map(|text| (sources.site.path.as_path(), text)),
            user_text
                .as_deref()
                .zip(sources.user.as_ref())
                .map(|(text, user)| (user.path.as_path(), text)),
            env,
        )?;
        config.site_file = Some(FileStatus {
            path: sources.site.path.clone(),
            found: site.is_some(),
        });
        config.user_file = sources.user.as_ref().map(|user| FileStatus {
            path: user.path.clone(),
            found: user_text.is_some(),
        });
        Ok(config)
    }

    /// Build the configuration from the texts of a site file and a user
    /// file (`(path, text)`; the path is for messages and origins).
    pub fn from_strs(
        site: Option<(&Path, &str)>,
        user: Option<(&Path, &str)>,
        env: &[(OsString, OsString)],
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        // The site file first: the user file is checked against its policy.
        for (role, file) in [(Role::Site, site), (Role::User, user)] {
            if let Some((path, text)) = file {
                config.apply(role, path, text, env)?;
                let status = Some(FileStatus {
                    path: path.to_path_buf(),
                    found: true,
                });
                match role {
                    Role::Site => config.site_file = status,
                    Role::User => config.user_file = status,
                }
            }
        }
        Ok(config)
    }

    /// The scratch directories, expanded, with where each was configured;
    /// entries naming an unset variable are left out (logged when loading).
    pub fn scratch_dirs(&self) -> Vec<(&Path, &Origin)> {
        self.scratch
            .iter()
            .filter_map(|s| Some((s.value.path.as_deref().ok()?, &s.origin)))
            .collect()
    }

    /// Check `text` (the file at `path`) and apply it over `self`.
    fn apply(
        &mut self,
        role: Role,
        path: &Path,
        text: &str,
        env: &[(OsString, OsString)],
    ) -> Result<(), ConfigError> {
        let doc = DeTable::parse(text).map_err(|e| {
            let (line, column) = position(text, e.span().map_or(0, |s| s.start));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().lines().next().unwrap_or("").to_string(),
            }
        })?;
        // The table is sorted by name; report the first problem in the file.
        let mut entries: Vec<_> = doc.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (name, value) in entries {
            let at = At {
                path,
                text,
                role,
                key: name.get_ref(),
                line: position(text, name.span().start).0,
            };
            let Some(key) = Key::from_name(name.get_ref()) else {
                let hint = Key::suggest(name.get_ref())
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                return Err(at.error(format!("unknown key{hint}")));
            };
            if role == Role::User {
                self.check_user_may_set(key, &at)?;
            }
            self.set(key, value, &at, env)?;
        }
        Ok(())
    }

    /// Refuse a key the site does not let users set.
    fn check_user_may_set(&self, key: Key, at: &At) -> Result<(), ConfigError> {
        if key.is_policy() {
            let site = match &self.site_file {
                Some(site) => format!(" ({})", shown(&site.path)),
                None => String::new(),
            };
            return Err(at.error(format!(
                "a policy key: only the site configuration{site} may set it"
            )));
        }
        if !self.user_may_set.value.contains(&key) {
            return Err(at.error(format!(
                "the site configuration {} does not allow users to set it (user_may_set)",
                self.user_may_set.origin
            )));
        }
        // A CDI spec is a list of binds: a user's spec directory is a user bind.
        // So are the GPU keys that choose which host files `--nv` binds.
        if matches!(
            key,
            Key::Binds
                | Key::Profiles
                | Key::CdiSpecDirs
                | Key::NvidiaLibs
                | Key::RocmLibs
                | Key::LdCache
                | Key::GpuDevDir
        ) && !self.allow_user_binds.value
        {
            return Err(at.error(format!(
                "the site configuration {} does not allow user binds (allow_user_binds = false)",
                self.allow_user_binds.origin
            )));
        }
        Ok(())
    }

    /// Check one key's value and apply it.
    fn set(
        &mut self,
        key: Key,
        value: &Spanned<DeValue>,
        at: &At,
        env: &[(OsString, OsString)],
    ) -> Result<(), ConfigError> {
        let origin = at.origin(at.line);
        match key {
            Key::Binds => {
                for (written, line) in strings(value, at)? {
                    let spec = check_bind(written, env).map_err(|p| at.error_on(line, p))?;
                    self.binds.push(Setting {
                        value: BindEntry {
                            written: written.to_string(),
                            spec,
                        },
                        origin: at.origin(line),
                    });
                }
            }
            Key::Scratch => {
                for (written, line) in strings(value, at)? {
                    let path = check_scratch(written, env).map_err(|p| at.error_on(line, p))?;
                    let origin = at.origin(line);
                    if let Err(why) = &path {
                        log::debug!("{origin}: scratch entry {written:?} skipped: {why}");
                    }
                    self.scratch.push(Setting {
                        value: ScratchEntry {
                            written: written.to_string(),
                            path,
                        },
                        origin,
                    });
                }
            }
            Key::MountHome => self.mount_home = setting(boolean(value, at)?, origin),
            Key::MountTmp => self.mount_tmp = setting(boolean(value, at)?, origin),
            Key::MountCwd => self.mount_cwd = setting(boolean(value, at)?, origin),
            Key::AllowUserBinds => self.allow_user_binds = setting(boolean(value, at)?, origin),
            Key::AllowFakeroot => self.allow_fakeroot = setting(boolean(value, at)?, origin),
            Key::Squashfuse => {
                let program = string(value, at, "a program name or an absolute path")?;
                if program.is_empty() || (program.contains('/') && !program.starts_with('/')) {
                    return Err(at.error(format!(
                        "expected a program name (looked up in PATH) or an absolute path, found {program:?}"
                    )));
                }
                self.squashfuse = setting(Some(program.into()), origin);
            }
            Key::ImageServer => {
                let server = match string(value, at, "\"builtin\" or \"squashfuse\"")? {
                    "builtin" => ImageServer::Builtin,
                    "squashfuse" => ImageServer::Squashfuse,
                    other => {
                        return Err(at.error(format!(
                            "expected \"builtin\" or \"squashfuse\", found {other:?}"
                        )));
                    }
                };
                self.image_server = setting(server, origin);
            }
            Key::ImageCacheSize => {
                let bytes = size_or_zero(value, at)?;
                self.image_cache_size = setting(bytes, origin);
            }
            Key::WarmLinger => {
                let linger = seconds(value, at, MAX_WARM_LINGER)?;
                self.warm_linger = setting(linger, origin);
            }
            Key::WritableTmpfsSize => {
                let bytes = size(value, at)?;
                self.writable_tmpfs_size = setting(bytes, origin);
            }
            Key::BuildMaxSize => self.build_max_size = setting(build_size(value, at)?, origin),
            Key::PrefetchProfiles => self.prefetch_profiles = setting(boolean(value, at)?, origin),
            Key::NodeCacheDir => {
                let written = string(value, at, "an absolute directory")?;
                let path = check_scratch(written, env).map_err(|p| at.error(p))?;
                if let Err(why) = &path {
                    log::debug!("{origin}: node_cache_dir {written:?} not used: {why}");
                }
                let entry = ScratchEntry {
                    written: written.to_string(),
                    path,
                };
                self.node_cache_dir = setting(Some(entry), origin);
            }
            Key::NodeCacheSize => self.node_cache_size = setting(size(value, at)?, origin),
            Key::CacheDir => {
                let written = string(value, at, "an absolute directory")?;
                let path = check_scratch(written, env).map_err(|p| at.error(p))?;
                if let Err(why) = &path {
                    log::debug!("{origin}: cache_dir {written:?} not used: {why}");
                }
                let entry = ScratchEntry {
                    written: written.to_string(),
                    path,
                };
                self.cache_dir = setting(Some(entry), origin);
            }
            // Up to 1024T as for builds; 0 (u64::MAX from build_size): no limit.
            Key::CacheMaxSize => {
                let bytes = match build_size(value, at)? {
                    u64::MAX => 0,
                    bytes => bytes,
                };
                self.cache_max_size = setting(bytes, origin)
            }
            Key::Offline => self.offline = setting(boolean(value, at)?, origin),
            Key::CacheReadOnly => self.cache_read_only = setting(boolean(value, at)?, origin),
            Key::RegistryCaFile => {
                let file = string(value, at, "an absolute file path")?;
                if !Path::new(file).is_absolute() {
                    return Err(at.error(format!("{file:?} must be an absolute path")));
                }
                self.registry_ca_file = setting(Some(file.into()), origin);
            }
            Key::AllowedImagePaths => {
                let dirs = strings(value, at)?
                    .into_iter()
                    .map(|(dir, line)| check_image_dir(dir).map_err(|p| at.error_on(line, p)))
                    .collect::<Result<_, _>>()?;
                self.allowed_image_paths = setting(dirs, origin);
            }
            Key::CdiSpecDirs => {
                let dirs = strings(value, at)?
                    .into_iter()
                    .map(|(dir, line)| check_image_dir(dir).map_err(|p| at.error_on(line, p)))
                    .collect::<Result<_, _>>()?;
                self.cdi_spec_dirs = setting(dirs, origin);
            }
            Key::NvidiaLibs | Key::RocmLibs => {
                let names = strings(value, at)?
                    .into_iter()
                    .map(|(name, line)| {
                        if name.is_empty() || name.contains('/') || name.trim() != name {
                            Err(at.error_on(
                                line,
                                format!(
                                    "{name:?}: a file name (libfoo.so, nvidia-smi), without '/'"
                                ),
                            ))
                        } else {
                            Ok(name.to_string())
                        }
                    })
                    .collect::<Result<_, _>>()?;
                if key == Key::NvidiaLibs {
                    self.nvidia_libs = setting(names, origin);
                } else {
                    self.rocm_libs = setting(names, origin);
                }
            }
            Key::LdCache | Key::GpuDevDir => {
                let written = string(value, at, "an absolute path")?;
                let path = Path::new(written);
                if !path.is_absolute()
                    || path
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                {
                    return Err(
                        at.error(format!("{written:?} must be an absolute path without '..'"))
                    );
                }
                let path: PathBuf = path.components().collect();
                if key == Key::LdCache {
                    self.ld_cache = setting(path, origin);
                } else {
                    self.gpu_dev_dir = setting(path, origin);
                }
            }
            Key::GpuMissingDriver => {
                let v = match string(value, at, "\"error\" or \"warn\"")? {
                    "error" => MissingDriver::Error,
                    "warn" => MissingDriver::Warn,
                    other => {
                        return Err(
                            at.error(format!("expected \"error\" or \"warn\", found {other:?}"))
                        );
                    }
                };
                self.gpu_missing_driver = setting(v, origin);
            }
            Key::Profiles => profiles::apply(&mut self.profiles, value, at, env)?,
            Key::UserMaySet => {
                let keys = strings(value, at)?
                    .into_iter()
                    .map(|(name, line)| user_key(name).map_err(|p| at.error_on(line, p)))
                    .collect::<Result<_, _>>()?;
                self.user_may_set = setting(keys, origin);
            }
        }
        Ok(())
    }
}

fn setting<T>(value: T, origin: Origin) -> Setting<T> {
    Setting { value, origin }
}

/// Read a configuration file; `None` when it is absent and may be. Only a
/// regular file of at most [`MAX_FILE_SIZE`] bytes is read, through
/// [`crate::input`]: a FIFO, a device or a directory is refused without
/// blocking, and no more than the limit is read, whatever the file is.
fn read(source: &ConfigPath) -> Result<Option<String>, ConfigError> {
    let path = source.path.clone();
    match input::read_text(&source.path, MAX_FILE_SIZE) {
        Ok(text) => Ok(Some(text)),
        Err(InputError::Io(e)) if e.kind() == io::ErrorKind::NotFound && !source.required => {
            log::debug!("{}: not found", shown(&source.path));
            Ok(None)
        }
        Err(InputError::Io(error)) => Err(ConfigError::Unreadable { path, error }),
        Err(InputError::NotRegular(kind)) => Err(ConfigError::NotAFile { path, kind }),
        Err(InputError::TooLarge { .. }) => Err(ConfigError::TooLarge { path }),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
