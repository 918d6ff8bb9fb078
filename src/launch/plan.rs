//! Validate a request and build the launch plan: plain data, no side
//! effects (reading the image header, env files and the user database is
//! all it does), printable with `--dry-run`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use super::settings::{Settings, Sourced};
use super::warm::WarmPlan;
use crate::config::ImageServer;
use crate::config::{MissingDriver, Profile};
use crate::container::binds::{self, BindInputs, Home, Mount};
use crate::container::namespace::{Identity, Isolation};
use crate::container::passwd::UserEntry;
use crate::container::rootfs::{Bind, BindKind, IdentitySpec, RootLayer, Step, Tmpfs};
use crate::env::{self, EnvList, Override};
use crate::error::Error;
use crate::gpu::{ContainerEdits, LaunchEdits, cdi, nv};
use crate::host;
use crate::image::{self, Image, ImageFormat};

/// What to run once inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<OsString>),
    Run(Vec<OsString>),
    Shell,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = |v: &[OsString]| {
            v.iter()
                .map(|a| format!("{:?}", a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Action::Exec(argv) => write!(f, "exec {}", words(argv)),
            Action::Run(args) => write!(f, "run the runscript {}", words(args)),
            Action::Shell => write!(f, "shell"),
        }
    }
}

/// Whether ranks join one container per node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JoinMode {
    /// When a launcher (Slurm step, PMIx, Open MPI) gives a key.
    #[default]
    Auto,
    On,
    Off,
}

/// How this launch joins a shared container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    pub key: super::launcher::JoinKey,
    /// The rendezvous socket's (abstract) name.
    pub socket: super::rendezvous::SocketName,
}

/// A launch as requested on the command line.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub image: PathBuf,
    pub action: Option<Action>,
    pub keep_id: bool,
    /// Root inside even under an MPI launcher.
    pub fakeroot: bool,
    pub join: JoinMode,
    pub join_key: Option<String>,
    pub squashfuse: Option<PathBuf>,
    pub binds: Vec<String>,
    /// `--profile`, as given (comma-separated lists); none: `RFAKE_PROFILE`.
    pub profiles: Vec<String>,
    /// `--device VENDOR/CLASS=NAME`, in order.
    pub devices: Vec<String>,
    /// `--nv`, `--rocm`.
    pub nv: bool,
    pub rocm: bool,
    pub home: Option<String>,
    pub no_home: bool,
    pub contain: bool,
    pub pwd: Option<PathBuf>,
    pub writable_tmpfs: bool,
    /// `--overlay PATH[:ro]`, in order.
    pub overlays: Vec<String>,
    /// `-w/--writable`: a SIF's own overlay partition as the writable layer.
    pub writable: bool,
    pub cleanenv: bool,
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    /// `--no-mount`, as given (comma-separated lists).
    pub no_mount: Vec<String>,
    /// `--mount`, as given.
    pub mounts: Vec<String>,
    /// `-W/--workdir`.
    pub workdir: Option<PathBuf>,
    /// `-S/--scratch`, as given (comma-separated lists).
    pub scratch: Vec<String>,
    /// `--pid`, `--ipc`, `--uts`, `--hostname`, `--net` (`-C` sets pid and ipc).
    pub isolation: Isolation,
    /// `--network TYPE`.
    pub network: Option<String>,
    /// `--no-privs`.
    pub no_privs: bool,
    /// `--app NAME` (refused).
    pub app: Option<String>,
    /// `--writable-tmpfs=SIZE`.
    pub writable_tmpfs_size: Option<String>,
}

/// The host user's database entry (one lookup per launch, and only when
/// the container identity needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUser {
    pub name: String,
    pub gecos: String,
    pub home: PathBuf,
    pub shell: PathBuf,
    pub group_name: String,
}

/// Facts about the invoking process, gathered once by the caller.
#[derive(Debug, Clone)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub cwd: PathBuf,
    pub env: EnvList,
}

impl Invoker {
    pub fn current() -> Self {
        Invoker {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env: std::env::vars_os().collect(),
        }
    }

    /// Refuse a setuid or setgid install: it would hand the user the
    /// installer's powers. Checked before any command does anything.
    pub fn refuse_setid(&self) -> Result<(), Error> {
        if self.uid != self.euid || self.gid != self.egid {
            return Err(Error::Refused(format!(
                "rfake is installed setuid or setgid (uid {} euid {}, gid {} egid {}); \
                 it needs no privilege: remove the bit (chmod u-s,g-s)",
                self.uid, self.euid, self.gid, self.egid
            )));
        }
        Ok(())
    }
}

/// Look the host user up in the system's user database (NSS: files, LDAP...).
pub fn lookup_host_user(uid: u32, gid: u32) -> Option<HostUser> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    let group_name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| user.name.clone());
    Some(HostUser {
        name: user.name,
        gecos: user.gecos.to_string_lossy().into_owned(),
        home: user.dir,
        shell: user.shell,
        group_name,
    })
}

/// What serves a single-file image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPlan {
    /// rfake's own FUSE server, with a block cache of this many bytes, and
    /// its prefetch profile and node cache.
    Builtin {
        cache_bytes: u64,
        cold: crate::squashfs::ColdSettings,
    },
    /// This squashfuse program.
    Squashfuse(PathBuf),
}

impl fmt::Display for ServerPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerPlan::Builtin { cache_bytes, cold } => {
                write!(f, "builtin, cache {} KiB", cache_bytes >> 10)?;
                if let Some((dir, max)) = &cold.node_cache {
                    write!(f, ", node cache {} ({} MiB)", dir.display(), max >> 20)?;
                }
                Ok(())
            }
            ServerPlan::Squashfuse(program) => write!(f, "squashfuse {}", program.display()),
        }
    }
}

/// A validated launch: plain data.
#[derive(Debug)]
pub struct Plan {
    pub image: Image,
    pub identity: Identity,
    /// What serves a single-file image (`None` for a directory).
    pub server: Option<ServerPlan>,
    pub steps: Vec<Step>,
    /// Environment step 1 (the image's step 2 happens inside).
    pub base_env: EnvList,
    /// Environment step 3, in order.
    pub overrides: Vec<Override>,
    pub action: Action,
    /// Where the payload starts, inside.
    pub start_dir: PathBuf,
    /// Why it is not the current directory, when it is not.
    pub start_dir_note: Option<String>,
    /// Set when ranks share one container on this node.
    pub join: Option<JoinPlan>,
    /// Set when launches of this image share one mount on this node.
    pub warm: Option<WarmPlan>,
    /// What `--device` adds (its mounts are among the steps, its variables
    /// among the overrides).
    pub devices: LaunchEdits,
    /// The namespaces besides the user and mount ones.
    pub isolation: Isolation,
    /// A PID namespace's own /proc, mounted by its init over the host's.
    pub fresh_proc: bool,
    /// Host directories made (as the user, with this mode) before the
    /// container: `--workdir`'s.
    pub host_dirs: Vec<(PathBuf, u32)>,
    /// `--no-privs`: the payload keeps no capability.
    pub drop_caps: bool,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "image: {} ({:?})",
            self.image.path.display(),
            self.image.format
        )?;
        if let Some(offset) = self.image.squashfs_offset {
            writeln!(f, "squashfs offset: {offset}")?;
        }
        if let Some(server) = &self.server {
            writeln!(f, "image server: {server}")?;
        }
        if let Some(w) = &self.warm {
            writeln!(f, "warm mount: {w}")?;
        }
        writeln!(f, "identity: {}", self.identity)?;
        if let Some(j) = &self.join {
            writeln!(
                f,
                "join: {} (from {}), socket {}",
                j.key.key, j.key.origin, j.socket
            )?;
        }
        if self.isolation.any() {
            writeln!(f, "namespaces: {}", self.isolation)?;
        }
        for (dir, mode) in &self.host_dirs {
            writeln!(f, "host directory: {} (mode {mode:o})", dir.display())?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "step {}: {step}", i + 1)?;
        }
        writeln!(f, "start in: {}", self.start_dir.display())?;
        for (k, v) in &self.base_env {
            writeln!(
                f,
                "env (host): {}={}",
                k.to_string_lossy(),
                v.to_string_lossy()
            )?;
        }
        writeln!(f, "env (image): from the image's environment files, inside")?;
        for o in &self.overrides {
            writeln!(
                f,
                "env (override): {}={} [{}]",
                o.name,
                o.value.to_string_lossy(),
                o.origin
            )?;
        }
        write!(f, "{}", self.devices)?;
        if self.drop_caps {
            writeln!(f, "capabilities: none (--no-privs)")?;
        }
        write!(f, "action: {}", self.action)
    }
}

impl Plan {
    /// The `--overlay` layers of the root step.
    pub fn overlays(&self) -> &crate::overlay::Overlays {
        static NONE: std::sync::OnceLock<crate::overlay::Overlays> = std::sync::OnceLock::new();
        self.steps
            .iter()
            .find_map(|s| match s {
                Step::Root(layer) => Some(&layer.overlays),
                _ => None,
            })
            .unwrap_or_else(|| NONE.get_or_init(Default::default))
    }
}

/// Validate the request and build the plan. No side effects.
pub fn plan(
    req: &Request,
    who: &Invoker,
    settings: &Settings,
    lookup_user: &dyn Fn(u32, u32) -> Option<HostUser>,
) -> Result<Plan, Error> {
    who.refuse_setid()?;
    refuse_unsupported(req)?;
    let no_mount = NoMount::parse(&req.no_mount)?;
    let workdir = workdir_of(req, settings)?;
    let image = allowed_image(req, settings)?;
    let (identity, keep_id) = identity_of(req, who, settings);
    let host_user = if keep_id {
        lookup_user(who.uid, who.gid)
    } else {
        None
    };
    let host_home = env::get(&who.env, "HOME")
        .map(PathBuf::from)
        .or_else(|| host_user.as_ref().map(|u| u.home.clone()));
    let home = choose_home(
        req,
        settings,
        host_home.as_deref(),
        &no_mount,
        workdir.as_deref(),
    )?;
    if let (Some(spec), Home::Bind { src, .. }) = (&req.home, &home) {
        if !settings.allow_user_binds.value && host_home.as_deref() != Some(src.as_path()) {
            return Err(Error::Refused(format!(
                "--home {spec}: user binds are disabled by the site (allow_user_binds = false in {})",
                settings.allow_user_binds.origin
            )));
        }
    }
    let mut devices = device_edits(req, who, settings)?;
    let profiles = profiles_of(req, who, settings)?;
    let mut host_dirs = Vec::new();
    let mut mounts = mounts_of(req, who, settings, &home, &no_mount, &profiles)?;
    apptainer_mounts(
        &mut mounts,
        req,
        &no_mount,
        workdir.as_deref(),
        &home,
        &mut host_dirs,
    )?;
    if let Some(bind) = cwd_bind(req, who, settings, &no_mount, &mounts) {
        // Before the site's and the user's binds, which may land inside it.
        let at = mounts
            .iter()
            .position(|m| matches!(m, Mount::Bind(b) if b.kind == BindKind::AsSource))
            .unwrap_or(mounts.len());
        mounts.insert(at, Mount::Bind(bind));
    }
    if let Some(dev) = &devices.dev {
        // The private /dev takes the place of the host's.
        if let Some(at) = mounts.iter().position(
            |m| matches!(m, Mount::Bind(b) if b.dst == Path::new("/dev") && b.origin == "default"),
        ) {
            mounts.splice(at..=at, dev.iter().cloned());
        }
    }
    mounts.extend(devices.mounts.iter().cloned());
    let (start_dir, start_dir_note) =
        binds::start_dir(req.pwd.as_deref(), &who.cwd, &mounts, &home);
    let container_home = home
        .dst()
        .map(Path::to_path_buf)
        .or_else(|| {
            host_user
                .as_ref()
                .map(|u| u.home.clone())
                .filter(|_| keep_id)
        })
        .unwrap_or_else(|| PathBuf::from(if keep_id { "/" } else { "/root" }));
    let identity_files = identity_spec(&identity, host_user.as_ref(), who, &container_home);
    let (steps, server) = steps_of(req, who, settings, &image, mounts, identity_files)?;
    let (join, warm) = sharing_of(req, who, settings, &image, &identity, &steps, &server)?;
    let fresh_proc = req.isolation.pid
        && steps.iter().any(
            |s| matches!(s, Step::Bind(b) if b.origin == "default" && b.dst == Path::new("/proc")),
        );
    let base_env = env::base(&who.env, req.cleanenv, Some(&container_home));
    let mut overrides = overrides(req, who)?;
    // The devices' and profiles' variables first: the user's own settings win.
    overrides.splice(0..0, devices.env.iter().cloned());
    let at = devices.env.len();
    overrides.splice(at..at, profile_env(&profiles));
    // Profile libraries after the GPU driver's: the driver must win.
    let lib_dirs = profiles
        .iter()
        .flat_map(|p| p.value.library_path.iter().cloned());
    devices.library_dirs.extend(lib_dirs);
    for note in &devices.notes {
        log::info!("{note}");
    }
    Ok(Plan {
        image,
        identity,
        server,
        steps,
        base_env,
        overrides,
        action: req.action.clone().unwrap_or(Action::Shell),
        start_dir,
        start_dir_note,
        join,
        warm,
        devices,
        isolation: req.isolation.clone(),
        fresh_proc,
        host_dirs,
        drop_caps: req.no_privs,
    })
}

/// What rfake does not do, refused before anything else: SCIF apps, and
/// networks that need root (a bridge, CNI plugins).
fn refuse_unsupported(req: &Request) -> Result<(), Error> {
    if let Some(app) = &req.app {
        return Err(Error::Refused(format!(
            "--app {}: SCIF apps are not supported; run the app's program with exec \
             (an app's files are under /scif/apps/NAME in the image)",
            crate::text::one_line(app)
        )));
    }
    match req.network.as_deref() {
        Some("none") => {}
        Some(other) => {
            return Err(Error::Refused(format!(
                "--network {}: rfake makes only --network none (loopback only); other \
                 networks need root to set up (CNI plugins, a bridge)",
                crate::text::one_line(other)
            )));
        }
        None if req.isolation.net => {
            return Err(Error::Refused(
                "--net: Apptainer's default network is a bridge, which needs root to set up; \
                 give --network none for a network namespace with loopback only"
                    .into(),
            ));
        }
        None => {}
    }
    if let Some(name) = &req.isolation.hostname {
        // sethostname(2): at most 64 bytes; a name is one DNS label or more.
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(Error::Usage(format!(
                "--hostname {}: a host name is 1 to 64 letters, digits, '-' and '.'",
                crate::text::one_line(name)
            )));
        }
    }
    Ok(())
}

/// `--no-mount`: which default mounts to leave out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct NoMount {
    home: bool,
    tmp: bool,
    cwd: bool,
    proc: bool,
    sys: bool,
    dev: bool,
    /// `bind-paths`: all of the site's binds.
    bind_paths: bool,
    /// Site binds left out by destination.
    dsts: Vec<PathBuf>,
}

impl NoMount {
    fn parse(lists: &[String]) -> Result<NoMount, Error> {
        let mut no = NoMount::default();
        for word in lists.iter().flat_map(|l| l.split(',')).map(str::trim) {
            match word {
                "home" => no.home = true,
                "tmp" => no.tmp = true,
                "cwd" => no.cwd = true,
                "proc" => no.proc = true,
                "sys" => no.sys = true,
                "dev" => no.dev = true,
                // Apptainer's `mount hostfs`: rfake never binds the host's
                // file systems wholesale.
                "hostfs" => {}
                "bind-paths" => no.bind_paths = true,
                path if path.starts_with('/') => no.dsts.push(binds::normalize(Path::new(path))),
                other => {
                    return Err(Error::Usage(format!(
                        "--no-mount {}: unknown mount (expected home, tmp, cwd, proc, sys, dev, \
                         hostfs, bind-paths or a bind's absolute destination)",
                        crate::text::one_line(other)
                    )));
                }
            }
        }
        Ok(no)
    }
}

/// `-W/--workdir DIR`: an existing directory, made absolute; a user bind
/// (refused where the site disables those).
fn workdir_of(req: &Request, settings: &Settings) -> Result<Option<PathBuf>, Error> {
    let Some(dir) = &req.workdir else {
        return Ok(None);
    };
    let abs = std::path::absolute(dir)
        .map_err(|e| Error::Usage(format!("--workdir {}: {e}", crate::text::shown(dir))))?;
    if !abs.is_dir() {
        return Err(Error::Usage(format!(
            "--workdir {}: not an existing directory",
            crate::text::shown(dir)
        )));
    }
    if !settings.allow_user_binds.value {
        return Err(Error::Refused(format!(
            "--workdir {}: user binds are disabled by the site (allow_user_binds = false in {})",
            crate::text::shown(dir),
            settings.allow_user_binds.origin
        )));
    }
    if !req.contain && req.scratch.is_empty() {
        log::info!("--workdir without --contain or --scratch: nothing is put in it (as Apptainer)");
    }
    Ok(Some(binds::normalize(&abs)))
}

/// Apptainer's mounts on top of the defaults: `--no-mount proc,sys,dev,tmp`
/// leave those out; with `--contain`, /tmp and /var/tmp are private
/// (tmpfs, or DIR/tmp and DIR/var_tmp under `--workdir`); `--scratch`
/// directories are tmpfs (or under DIR/scratch).
fn apptainer_mounts(
    mounts: &mut Vec<Mount>,
    req: &Request,
    no: &NoMount,
    workdir: Option<&Path>,
    home: &Home,
    host_dirs: &mut Vec<(PathBuf, u32)>,
) -> Result<(), Error> {
    let is_default = |m: &Mount, at: &str| match m {
        Mount::Bind(b) => b.origin == "default" && b.dst == Path::new(at),
        Mount::Tmpfs(t) => t.dst == Path::new(at) && at == "/tmp",
        Mount::Symlink(_) => false,
    };
    mounts.retain(|m| {
        !((no.proc && is_default(m, "/proc"))
            || (no.sys && is_default(m, "/sys"))
            || (no.dev && is_default(m, "/dev"))
            || (no.tmp && is_default(m, "/tmp")))
    });
    if req.contain && !no.tmp {
        if let Some(at) = mounts.iter().position(|m| is_default(m, "/tmp")) {
            let private: Vec<Mount> = ["/tmp", "/var/tmp"]
                .iter()
                .map(|dst| match workdir {
                    Some(dir) => {
                        let src = dir.join(if *dst == "/tmp" { "tmp" } else { "var_tmp" });
                        host_dirs.push((src.clone(), 0o1777));
                        Mount::Bind(work_bind(src, dst.into(), "--workdir"))
                    }
                    None => Mount::Tmpfs(Tmpfs {
                        dst: dst.into(),
                        mode: 0o1777,
                        origin: "--contain".into(),
                    }),
                })
                .collect();
            mounts.splice(at..=at, private);
        }
    }
    if let (Some(dir), Home::Bind { src, .. }) = (workdir, home) {
        if src.starts_with(dir) {
            host_dirs.push((src.clone(), 0o700));
        }
    }
    // Scratch directories go after the defaults and the home, before the
    // site's and the user's binds.
    let mut scratch = Vec::new();
    for dst in req.scratch.iter().flat_map(|l| l.split(',')).map(str::trim) {
        if dst.is_empty() {
            continue;
        }
        if !dst.starts_with('/') {
            return Err(Error::Usage(format!(
                "--scratch {}: must be an absolute path inside the container",
                crate::text::one_line(dst)
            )));
        }
        let dst = binds::normalize(Path::new(dst));
        scratch.push(match workdir {
            Some(dir) => {
                let src = dir
                    .join("scratch")
                    .join(dst.strip_prefix("/").unwrap_or(&dst));
                host_dirs.push((src.clone(), 0o750));
                Mount::Bind(work_bind(src, dst, "--scratch"))
            }
            None => Mount::Tmpfs(Tmpfs {
                dst,
                mode: 0o755,
                origin: "--scratch".into(),
            }),
        });
    }
    let at = mounts
        .iter()
        .position(|m| matches!(m, Mount::Bind(b) if b.kind == BindKind::AsSource))
        .unwrap_or(mounts.len());
    mounts.splice(at..at, scratch);
    Ok(())
}

/// A bind of a directory under `--workdir`.
fn work_bind(src: PathBuf, dst: PathBuf, origin: &str) -> Bind {
    Bind {
        src,
        dst,
        kind: BindKind::Dir,
        readonly: false,
        allow_devices: false,
        optional: false,
        create: true,
        origin: origin.into(),
    }
}

/// Directories Apptainer never binds as the current directory: the
/// system's own, where the image's version is the one wanted.
const SYSTEM_DIRS: [&str; 10] = [
    "/", "/etc", "/bin", "/mnt", "/usr", "/var", "/opt", "/sbin", "/lib", "/lib64",
];

/// The current directory, bound at the same path when nothing else makes
/// it visible (as Apptainer): not with `--contain`, `--no-mount cwd`,
/// `mount_cwd = false`, without user binds, nor for a system or virtual
/// directory.
fn cwd_bind(
    req: &Request,
    who: &Invoker,
    settings: &Settings,
    no: &NoMount,
    mounts: &[Mount],
) -> Option<Bind> {
    let cwd = binds::normalize(&who.cwd);
    let why_not = if req.contain {
        Some("--contain".to_string())
    } else if no.cwd {
        Some("--no-mount cwd".to_string())
    } else if !settings.mount_cwd.value {
        Some(format!(
            "mount_cwd = false in {}",
            settings.mount_cwd.origin
        ))
    } else if !settings.allow_user_binds.value {
        Some(format!(
            "allow_user_binds = false in {}",
            settings.allow_user_binds.origin
        ))
    } else if SYSTEM_DIRS.iter().any(|d| cwd == Path::new(d))
        || ["/proc", "/sys", "/dev"].iter().any(|d| cwd.starts_with(d))
    {
        Some("a system directory".to_string())
    } else {
        None
    };
    // Visible already: nothing to do.
    binds::start_dir(None, &cwd, mounts, &Home::None)
        .1
        .as_ref()?;
    if let Some(why) = why_not {
        log::debug!(
            "the current directory {} is not bound: {why}",
            cwd.display()
        );
        return None;
    }
    Some(Bind {
        src: cwd.clone(),
        dst: cwd,
        kind: BindKind::Dir,
        readonly: false,
        allow_devices: false,
        optional: false,
        create: true,
        origin: "cwd".into(),
    })
}

/// `--device`, `--nv`, `--rocm`: the CDI specs read, the devices found,
/// their edits planned. Nothing is read without one of them.
fn device_edits(req: &Request, who: &Invoker, settings: &Settings) -> Result<LaunchEdits, Error> {
    if req.devices.is_empty() && !req.nv && !req.rocm {
        return Ok(LaunchEdits::default());
    }
    let requests = req
        .devices
        .iter()
        .map(|d| cdi::parse_request(d))
        .collect::<Result<Vec<_>, _>>()?;
    // The spec directories are the site's, or the user's own only where
    // user binds are allowed (checked when the configuration is read).
    let registry = cdi::load(&settings.cdi_spec_dirs.value)?;
    let mut edits = registry.edits(&requests)?;
    for (wanted, vendor) in [(req.nv, nv::Vendor::Nvidia), (req.rocm, nv::Vendor::Amd)] {
        if wanted {
            edits.extend(vendor_edits(vendor, &requests, &registry, who, settings)?);
        }
    }
    Ok(crate::gpu::plan(&edits, Path::new("/dev"))?)
}

/// `--nv`/`--rocm`: the vendor's CDI spec (all its GPUs) when there is
/// one, else the driver found on the host; no driver is an error or a
/// warning, as `gpu_missing_driver` says.
fn vendor_edits(
    vendor: nv::Vendor,
    requests: &[cdi::DeviceRequest],
    registry: &cdi::Registry,
    who: &Invoker,
    settings: &Settings,
) -> Result<ContainerEdits, Error> {
    let kind = vendor.cdi_kind();
    if requests.iter().any(|r| r.kind == kind) {
        log::info!("{}: the {kind} devices given with --device", vendor.flag());
        return Ok(ContainerEdits::default());
    }
    if let Some(file) = registry.files.iter().rfind(|f| f.kind == kind) {
        log::info!(
            "{}: using the CDI spec {} ({kind}=all)",
            vendor.flag(),
            crate::text::shown(&file.path)
        );
        let all = cdi::DeviceRequest {
            kind: kind.to_string(),
            name: "all".to_string(),
        };
        return Ok(registry.edits(&[all])?);
    }
    let extra = match vendor {
        nv::Vendor::Nvidia => &settings.nvidia_libs.value,
        nv::Vendor::Amd => &settings.rocm_libs.value,
    };
    // The programs (and nvidia-container-cli, whose list is bound) come
    // from the user's PATH only where the user may bind files anyway.
    let system_path = OsString::from(env::STANDARD_PATH.join(":"));
    let path_env = if settings.allow_user_binds.value {
        env::get(&who.env, "PATH")
    } else {
        Some(system_path.as_os_str())
    };
    let host = nv::Host {
        ld_cache: &settings.ld_cache.value,
        dev_dir: &settings.gpu_dev_dir.value,
        path_env,
        extra_names: extra,
    };
    match nv::find(vendor, &host) {
        Ok(listing) => {
            log::info!(
                "{}: no CDI spec for {kind}; the driver's files from {}",
                vendor.flag(),
                listing.source
            );
            Ok(nv::edits(vendor, &listing))
        }
        Err(e) if settings.gpu_missing_driver.value == MissingDriver::Warn => {
            log::warn!(
                "{e}; continuing without GPUs (gpu_missing_driver = \"warn\" in {})",
                settings.gpu_missing_driver.origin
            );
            Ok(ContainerEdits::default())
        }
        Err(e) => Err(e.into()),
    }
}

/// The image, if the site allows it (`allowed_image_paths`).
fn allowed_image(req: &Request, settings: &Settings) -> Result<Image, Error> {
    let image = image::open(&req.image)?;
    if !settings.image_allowed(&image.path) {
        return Err(Error::Refused(format!(
            "image {}: outside the directories the site allows ({}; allowed_image_paths in {})",
            image.path.display(),
            settings
                .allowed_image_paths
                .value
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            settings.allowed_image_paths.origin
        )));
    }
    Ok(image)
}

/// Root inside (fakeroot) or the user's own ids (`--keep-id`, a site
/// without fakeroot, ranks under a launcher: then the `bool` is true),
/// saying why at `-v`.
fn identity_of(req: &Request, who: &Invoker, settings: &Settings) -> (Identity, bool) {
    let launcher = super::launcher::launcher(&who.env);
    // Under an MPI/PMIx launcher the ranks keep the user's uid: the host's
    // PMIx server refuses a peer claiming uid 0 ("psec: socket cred
    // contains invalid uid 0") and MPI_Init fails.
    let under_launcher = launcher.is_some() && !req.fakeroot;
    let keep_id = req.keep_id || !settings.allow_fakeroot.value || under_launcher;
    if !req.keep_id && !settings.allow_fakeroot.value {
        log::info!(
            "fakeroot is disabled by the site (allow_fakeroot = false in {}): keeping your uid",
            settings.allow_fakeroot.origin
        );
    } else if !req.keep_id && under_launcher {
        log::info!(
            "running under a launcher ({} is set): keeping your uid (--fakeroot for root)",
            launcher.unwrap_or_default()
        );
    } else if req.fakeroot && launcher.is_some() {
        log::warn!(
            "--fakeroot under a launcher ({} is set): its PMIx server may refuse ranks running as root",
            launcher.unwrap_or_default()
        );
    }
    let identity = if keep_id {
        Identity::keep_id(who.uid, who.gid)
    } else {
        Identity::fakeroot(who.uid, who.gid)
    };
    (identity, keep_id)
}

/// The binds and private tmpfs mounts, in mount order: the defaults, the
/// home, scratch, the site's binds, the launcher's, the user's.
fn mounts_of(
    req: &Request,
    who: &Invoker,
    settings: &Settings,
    home: &Home,
    no: &NoMount,
    profiles: &[&Sourced<Profile>],
) -> Result<Vec<Mount>, Error> {
    let user_binds = user_bind_specs(req, who, settings)?;
    let mut extra = Vec::new();
    for b in &settings.site_binds {
        if no.bind_paths {
            continue;
        }
        extra.extend(
            parse_binds(&b.value, &b.origin)?
                .into_iter()
                .filter(|(spec, _)| !no.dsts.contains(&spec.dst)),
        );
    }
    // A profile's binds come after the site's, before the user's: a user
    // bind may still land inside one.
    for p in profiles {
        let origin = format!("profile {} ({})", p.value.name, p.origin);
        for spec in &p.value.binds {
            extra.extend(parse_binds(spec, &origin)?);
        }
    }
    extra.extend(launcher_binds(&who.env));
    extra.extend(user_binds);
    let scratch = if req.contain {
        Vec::new()
    } else {
        settings
            .scratch
            .iter()
            .filter(|s| s.value.is_dir())
            .map(|s| (binds::normalize(&s.value), s.origin.clone()))
            .collect()
    };
    let inputs = BindInputs {
        home: home.clone(),
        host_tmp: !req.contain && settings.mount_tmp.value,
        private_tmp_origin: if req.contain {
            "--contain".into()
        } else {
            format!("mount_tmp = false in {}", settings.mount_tmp.origin)
        },
        scratch,
        extra,
    };
    Ok(binds::container_mounts(&inputs))
}

/// The mount steps, in order, and what serves a single-file image.
fn steps_of(
    req: &Request,
    who: &Invoker,
    settings: &Settings,
    image: &Image,
    mounts: Vec<Mount>,
    identity_files: IdentitySpec,
) -> Result<(Vec<Step>, Option<ServerPlan>), Error> {
    let single_file = image.format != ImageFormat::Directory;
    let mut steps = vec![Step::MakePrivate];
    if single_file {
        steps.push(Step::ServeImage);
    }
    steps.push(Step::Staging);
    let mut overlays = crate::overlay::plan(&writable_overlays(req, image)?, &who.cwd)?;
    // A SIF's own overlay partition, read-only, as Apptainer mounts it.
    if let (Some(offset), Some(file)) = (image.overlay_partition, &image.file) {
        crate::overlay::add_sif_own(&mut overlays, &image.path, offset, file)?;
    }
    let root = Step::Root(RootLayer {
        writable_size: writable_size(req, settings)?,
        overlays,
    });
    // An image overlay's FUSE servers start from the host: the image is
    // attached and the root built in the staging tmpfs before the pivot.
    let early = matches!(&root, Step::Root(l) if l.overlays.has_images());
    if !early {
        steps.push(Step::PivotToStaging);
    }
    let server = match image.format {
        ImageFormat::Directory => {
            steps.push(Step::BindRootDir(image.path.clone()));
            None
        }
        ImageFormat::Squashfs | ImageFormat::Sif => {
            steps.push(Step::AttachImage);
            Some(server_plan(req, who, settings)?)
        }
    };
    steps.push(root);
    if early {
        steps.push(Step::PivotToStaging);
    }
    steps.extend(mounts.into_iter().map(|m| match m {
        Mount::Bind(b) => Step::Bind(b),
        Mount::Tmpfs(t) => Step::Tmpfs(t),
        Mount::Symlink(l) => Step::Symlink(l),
    }));
    steps.push(Step::IdentityFiles(identity_files));
    steps.push(Step::SealRoot);
    steps.push(Step::EnterNewRoot);
    Ok((steps, server))
}

/// `--writable-tmpfs[=SIZE]`: the size of the writable layer, if any.
fn writable_size(req: &Request, settings: &Settings) -> Result<Option<u64>, Error> {
    if !req.writable_tmpfs {
        return Ok(None);
    }
    match req.writable_tmpfs_size.as_deref() {
        None | Some("") => Ok(Some(settings.writable_tmpfs_size.value)),
        Some(text) => crate::config::parse_size(text).map(Some).map_err(|e| {
            Error::Usage(format!(
                "--writable-tmpfs={}: {e}",
                crate::text::one_line(text)
            ))
        }),
    }
}

/// Whether this launch shares a container (the ranks of a job step) or an
/// image mount (a warm mount) with others on this node.
fn sharing_of(
    req: &Request,
    who: &Invoker,
    settings: &Settings,
    image: &Image,
    identity: &Identity,
    steps: &[Step],
    server: &Option<ServerPlan>,
) -> Result<(Option<JoinPlan>, Option<WarmPlan>), Error> {
    // Ranks asking for a different container (identity, mounts) do not
    // share one: the socket name covers the setup.
    // The namespaces too: ranks with and without --pid do not share.
    let setup = format!(
        "{identity}\n{}\n{}",
        req.isolation,
        steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let join = join_plan(req, who, image, &setup)?;
    let warm = match server {
        Some(server) if !settings.warm_linger.value.is_zero() => Some(WarmPlan {
            socket: super::rendezvous::warm_socket_name(
                who.uid,
                &who.env,
                image,
                &server.to_string(),
            ),
            linger: settings.warm_linger.value,
        }),
        _ => None,
    };
    Ok((join, warm))
}

/// What serves the image: squashfuse when `--squashfuse` (or
/// `RFAKE_SQUASHFUSE`) names one or the configuration picks it, else
/// rfake's own server.
fn server_plan(req: &Request, who: &Invoker, settings: &Settings) -> Result<ServerPlan, Error> {
    let path_env = env::get(&who.env, "PATH");
    if let Some(program) = &req.squashfuse {
        return Ok(ServerPlan::Squashfuse(host::find_squashfuse(
            Some(program),
            path_env,
        )?));
    }
    Ok(match settings.image_server.value {
        ImageServer::Squashfuse => {
            let configured = settings.squashfuse.as_ref().map(|s| s.value.as_path());
            ServerPlan::Squashfuse(host::find_squashfuse(configured, path_env)?)
        }
        ImageServer::Builtin => ServerPlan::Builtin {
            cache_bytes: settings.image_cache_size.value,
            cold: cold_settings(who, settings),
        },
    })
}

/// The `--overlay` list, with `--writable`'s SIF first: Apptainer's
/// `--writable` on a SIF file writes into its own overlay partition, which
/// is `--overlay IMAGE.sif` here. rfake never writes into the image itself,
/// so any other image is refused.
fn writable_overlays(req: &Request, image: &Image) -> Result<Vec<String>, Error> {
    if !req.writable {
        return Ok(req.overlays.clone());
    }
    if image.overlay_partition.is_none() {
        return Err(Error::Refused(format!(
            "--writable: {} has no overlay partition to write into, and rfake never writes \
             into an image; use --writable-tmpfs (thrown away) or --overlay DIR|IMG (kept)",
            image.path.display()
        )));
    }
    let mut list = vec![image.path.to_string_lossy().into_owned()];
    list.extend(req.overlays.iter().cloned());
    Ok(list)
}

/// Where the built-in server keeps prefetch profiles (rfake's per-user
/// cache, unless it is a read-only site cache) and its node cache
/// (`node_cache_dir/rfake-UID`).
fn cold_settings(who: &Invoker, settings: &Settings) -> crate::squashfs::ColdSettings {
    let profile_dir = settings.prefetch_profiles.value.then(|| {
        let var = |name| env::get(&who.env, name).is_some_and(|v| !v.is_empty());
        let from_env =
            var("RFAKE_CACHEDIR") || crate::env::apptainer::lookup(&who.env, "CACHEDIR").is_some();
        let configured = settings.cache_dir.as_deref();
        if !from_env && configured.is_some() && settings.cache_read_only {
            return None;
        }
        let root = crate::cache::root_from(&who.env, configured).ok()?;
        root.is_absolute().then(|| root.join("profiles"))
    });
    crate::squashfs::ColdSettings {
        profile_dir: profile_dir.flatten(),
        node_cache: settings.node_cache_dir.as_ref().map(|dir| {
            (
                dir.value.join(format!("rfake-{}", who.uid)),
                settings.node_cache_size.value,
            )
        }),
    }
}

/// Whether and how to join: `--join-key`, else the launcher's variables.
fn join_plan(
    req: &Request,
    who: &Invoker,
    image: &Image,
    setup: &str,
) -> Result<Option<JoinPlan>, Error> {
    if req.join == JoinMode::Off {
        return Ok(None);
    }

    let key = match &req.join_key {
        Some(k) => Some(super::launcher::JoinKey {
            key: format!("user.{k}"),
            origin: "--join-key".into(),
        }),
        None => super::launcher::key_from_env(&who.env),
    };
    let Some(key) = key else {
        if req.join == JoinMode::On {
            return Err(Error::Usage(format!(
                "--join: no launcher variables ({}) to share a container by; give --join-key KEY",
                super::launcher::SOURCES
            )));
        }
        return Ok(None);
    };
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let socket = super::rendezvous::socket_name(who.uid, &who.env, &key.key, image, &host, setup);
    Ok(Some(JoinPlan { key, socket }))
}

fn parse_binds(text: &str, origin: &str) -> Result<Vec<(binds::BindSpec, String)>, Error> {
    Ok(binds::parse_list(text, origin)?
        .into_iter()
        .map(|s| (s, origin.to_string()))
        .collect())
}

/// Directories a launcher's ranks need inside: the PMIx server's
/// rendezvous directory (`PMIX_SERVER_TMPDIR`, under slurmd's spool), so
/// the ranks find the server's data store.
fn launcher_binds(env_list: &[(OsString, OsString)]) -> Vec<(binds::BindSpec, String)> {
    ["PMIX_SERVER_TMPDIR"]
        .into_iter()
        .filter_map(|name| {
            let raw = Path::new(env::get(env_list, name)?);
            let dir = binds::normalize(raw);
            (raw.is_absolute() && dir.is_dir() && dir != Path::new("/")).then(|| {
                let spec = binds::BindSpec {
                    src: dir.clone(),
                    dst: dir,
                    readonly: false,
                };
                (spec, name.to_string())
            })
        })
        .collect()
}

/// The bind profiles asked for by `--profile`, else `RFAKE_PROFILE`.
fn profiles_of<'s>(
    req: &Request,
    who: &Invoker,
    settings: &'s Settings,
) -> Result<Vec<&'s Sourced<Profile>>, Error> {
    let from_env = env::get(&who.env, "RFAKE_PROFILE").map(|v| v.to_string_lossy());
    let names = crate::config::requested_profiles(&req.profiles, from_env.as_deref());
    let from = if req.profiles.is_empty() {
        "RFAKE_PROFILE"
    } else {
        "--profile"
    };
    crate::config::select_profiles(&settings.profiles, &names, from, &settings.config_files)
        .map_err(Error::Usage)
}

/// The profiles' variables in order (a later profile wins), and their
/// `path` directories as one `PREPEND_PATH`.
fn profile_env(profiles: &[&Sourced<Profile>]) -> Vec<Override> {
    let mut out = Vec::new();
    let mut path: Vec<PathBuf> = Vec::new();
    for p in profiles {
        let origin = format!("profile {} ({})", p.value.name, p.origin);
        out.extend(p.value.env.iter().map(|(name, value)| Override {
            name: name.clone(),
            value: value.into(),
            origin: origin.clone(),
        }));
        for dir in &p.value.path {
            if !path.contains(dir) {
                path.push(dir.clone());
            }
        }
    }
    // Checked when read: no ':' in a directory.
    if let Ok(dirs) = std::env::join_paths(&path) {
        if !dirs.is_empty() {
            let names: Vec<&str> = profiles.iter().map(|p| p.value.name.as_str()).collect();
            out.push(Override {
                name: "PREPEND_PATH".into(),
                value: dirs,
                origin: format!("profile {}", names.join(",")),
            });
        }
    }
    out
}

/// The user's binds: user file, Apptainer's variables, `RFAKE_BIND`,
/// `--bind`, in that order.
fn user_bind_specs(
    req: &Request,
    who: &Invoker,
    settings: &Settings,
) -> Result<Vec<(binds::BindSpec, String)>, Error> {
    let mut specs = Vec::new();
    for b in &settings.user_binds {
        specs.extend(parse_binds(&b.value, &b.origin)?);
    }
    // APPTAINER_BIND, APPTAINER_BINDPATH (or SINGULARITY_), RFAKE_BIND.
    for var in env::apptainer::bind_vars(&who.env) {
        specs.extend(parse_binds(&var.value.to_string_lossy(), &var.name)?);
    }
    for b in &req.binds {
        specs.extend(parse_binds(b, "--bind")?);
    }
    for m in &req.mounts {
        let spec = crate::container::mountspec::parse(m)?;
        specs.push((spec, "--mount".to_string()));
    }
    if !specs.is_empty() && !settings.allow_user_binds.value {
        return Err(Error::Refused(format!(
            "user binds are disabled by the site (allow_user_binds = false in {}); refused: {}",
            settings.allow_user_binds.origin,
            specs
                .iter()
                .map(|(s, origin)| format!("{} ({origin})", s.src.display()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(specs)
}

fn choose_home(
    req: &Request,
    settings: &Settings,
    host_home: Option<&Path>,
    no: &NoMount,
    workdir: Option<&Path>,
) -> Result<Home, Error> {
    let home = choose_home_dir(req, settings, host_home, no)?;
    // Apptainer: with --contain, the home is a directory under --workdir.
    Ok(match (home, workdir) {
        (Home::Private { dst }, Some(dir)) => Home::Bind {
            src: dir.join("home"),
            dst,
        },
        (home, _) => home,
    })
}

fn choose_home_dir(
    req: &Request,
    settings: &Settings,
    host_home: Option<&Path>,
    no: &NoMount,
) -> Result<Home, Error> {
    if let Some(spec) = &req.home {
        let parsed = binds::parse_spec(spec).map_err(|source| binds::BindError {
            spec: spec.clone(),
            origin: "--home".into(),
            source,
        })?;
        if parsed.readonly {
            return Err(Error::Usage(format!(
                "--home {spec}: takes SRC[:DST] (no mode)"
            )));
        }
        return Ok(if req.contain {
            Home::Private { dst: parsed.dst }
        } else {
            Home::Bind {
                src: parsed.src,
                dst: parsed.dst,
            }
        });
    }
    let Some(home) = host_home.map(binds::normalize) else {
        return Ok(Home::None);
    };
    if req.no_home || no.home {
        return Ok(Home::None);
    }
    if req.contain {
        return Ok(Home::Private { dst: home });
    }
    if !settings.mount_home.value {
        log::info!(
            "home not bound: mount_home = false in {}",
            settings.mount_home.origin
        );
        return Ok(Home::None);
    }
    if !home.is_dir() {
        log::warn!(
            "home {} is not a directory on this host; not bound",
            home.display()
        );
        return Ok(Home::None);
    }
    Ok(Home::Bind {
        src: home.clone(),
        dst: home,
    })
}

fn identity_spec(
    identity: &Identity,
    host_user: Option<&HostUser>,
    who: &Invoker,
    home: &Path,
) -> IdentitySpec {
    let shell_pref = env::get(&who.env, "SHELL")
        .map(PathBuf::from)
        .or_else(|| host_user.map(|u| u.shell.clone()))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    if identity.inside_uid == 0 {
        return IdentitySpec {
            user: UserEntry {
                name: "root".into(),
                uid: 0,
                gid: 0,
                gecos: "root".into(),
                home: home.to_path_buf(),
                shell: shell_pref,
            },
            group_name: "root".into(),
        };
    }
    let fallback_name = env::get(&who.env, "USER")
        .map(|u| u.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("user{}", identity.inside_uid));
    IdentitySpec {
        user: UserEntry {
            name: host_user
                .map(|u| u.name.clone())
                .unwrap_or(fallback_name.clone()),
            uid: identity.inside_uid,
            gid: identity.inside_gid,
            gecos: host_user.map(|u| u.gecos.clone()).unwrap_or_default(),
            home: home.to_path_buf(),
            shell: shell_pref,
        },
        group_name: host_user
            .map(|u| u.group_name.clone())
            .unwrap_or(fallback_name),
    }
}

/// Environment step 3: `RFAKE_ENV_*`, then `--env-file`, then `--env`.
fn overrides(req: &Request, who: &Invoker) -> Result<Vec<Override>, Error> {
    let mut out = env::host_overrides(&who.env);
    for path in &req.env_files {
        // A regular file only, at most 1 MiB: a FIFO would block.
        let text = crate::input::read_text(path, crate::input::TEXT_LIMIT).map_err(|e| {
            Error::Env(env::EnvError::Unreadable {
                path: path.clone(),
                reason: match e {
                    crate::input::InputError::Io(e) => e.to_string(),
                    other => other.to_string(),
                },
            })
        })?;
        out.extend(env::parse_env_file(path, &text)?);
    }
    for text in &req.env {
        out.push(env::parse_assignment(text, "--env")?);
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A user 1000 with `home`, working in `home/proj` (also for
    /// `super::sequences`).
    pub(in crate::launch) fn who(home: &Path) -> Invoker {
        Invoker {
            uid: 1000,
            gid: 1000,
            euid: 1000,
            egid: 1000,
            cwd: home.join("proj"),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), home.as_os_str().into()),
                ("USER".into(), "u".into()),
            ],
        }
    }

    pub(in crate::launch) fn no_lookup(_: u32, _: u32) -> Option<HostUser> {
        None
    }

    /// Profiles go to the user's cache (not a read-only site cache), the
    /// node cache to a directory of the user's under `node_cache_dir`.
    #[test]
    fn cold_start_settings() {
        let home = Path::new("/home/u");
        let mut who = who(home);
        let mut settings = Settings::default();
        let cold = cold_settings(&who, &settings);
        assert_eq!(
            cold.profile_dir.as_deref(),
            Some(Path::new("/home/u/.cache/rfake/profiles"))
        );
        assert_eq!(cold.node_cache, None);
        settings.node_cache_dir = Some(crate::launch::settings::Sourced {
            value: "/dev/shm".into(),
            origin: "site".into(),
        });
        settings.cache_dir = Some("/apps/cache".into());
        settings.cache_read_only = true;
        let cold = cold_settings(&who, &settings);
        assert_eq!(cold.profile_dir, None);
        assert_eq!(
            cold.node_cache,
            Some(("/dev/shm/rfake-1000".into(), 1 << 30))
        );
        who.env.push(("RFAKE_CACHEDIR".into(), "/scratch/c".into()));
        let cold = cold_settings(&who, &settings);
        assert_eq!(
            cold.profile_dir.as_deref(),
            Some(Path::new("/scratch/c/profiles"))
        );
        settings.prefetch_profiles.value = false;
        assert_eq!(cold_settings(&who, &settings).profile_dir, None);
    }

    fn request(image: &Path) -> Request {
        Request {
            image: image.into(),
            action: Some(Action::Exec(vec!["true".into()])),
            ..Request::default()
        }
    }

    #[test]
    fn setuid_install_is_refused_before_anything_else() {
        let d = tempfile::tempdir().unwrap();
        let mut w = who(d.path());
        w.euid = 0;
        let err = plan(
            &request(Path::new("/nonexistent")),
            &w,
            &Settings::default(),
            &no_lookup,
        )
        .unwrap_err();
        assert_eq!(err.exit_kind(), crate::exit::ExitKind::Refused);
        assert!(err.to_string().contains("setuid"));
    }

    /// With an image overlay, the image is attached and the root built
    /// before the pivot (fuse2fs starts from the host); without one, after.
    #[test]
    fn an_image_overlay_builds_the_root_before_the_pivot() {
        // Planning finds fuse2fs (tests/setup-host.sh installs it).
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let ov = d.path().join("ov.img");
        let mut sb = vec![0u8; 4096];
        sb[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
        std::fs::write(&ov, sb).unwrap();
        let mut req = request(&img);
        let order = |p: &Plan| -> Vec<&'static str> {
            p.steps
                .iter()
                .filter_map(|s| match s {
                    Step::BindRootDir(_) => Some("image"),
                    Step::Root(_) => Some("root"),
                    Step::PivotToStaging => Some("pivot"),
                    _ => None,
                })
                .collect()
        };
        let p = plan(&req, &who(d.path()), &Settings::default(), &no_lookup).unwrap();
        assert_eq!(order(&p), ["pivot", "image", "root"]);
        req.overlays = vec![format!("{}:ro", ov.display())];
        let p = plan(&req, &who(d.path()), &Settings::default(), &no_lookup).unwrap();
        assert_eq!(order(&p), ["image", "root", "pivot"]);
    }

    #[test]
    fn directory_image_plan_with_home_and_start_dir() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let mut req = request(&img);
        req.keep_id = true;
        let p = plan(&req, &who(d.path()), &Settings::default(), &no_lookup).unwrap();
        assert_eq!(p.identity, Identity::keep_id(1000, 1000));
        assert!(p.server.is_none());
        assert!(
            p.steps
                .contains(&Step::BindRootDir(img.canonicalize().unwrap()))
        );
        assert_eq!(p.steps.last(), Some(&Step::EnterNewRoot));
        let home = binds::normalize(d.path());
        assert_eq!(p.start_dir, home.join("proj"));
        assert_eq!(env::get(&p.base_env, "HOME"), Some(home.as_os_str()));
        let text = p.to_string();
        assert!(text.contains("bind /dev -> /dev (nosuid)"), "{text}");
        assert!(
            text.contains(&format!(
                "bind {0} -> {0} (nosuid,nodev) [home]",
                home.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("identity files: /etc/passwd with u (uid 1000"),
            "{text}"
        );
    }

    #[test]
    fn policies_refuse_with_the_config_line() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let s = Settings {
            allowed_image_paths: super::super::settings::Sourced {
                value: vec!["/data/images".into()],
                origin: "/etc/rfake/rfake.toml:3".into(),
            },
            ..Settings::default()
        };
        let err = plan(&request(&img), &who(d.path()), &s, &no_lookup).unwrap_err();
        assert_eq!(err.exit_kind(), crate::exit::ExitKind::Refused);
        assert!(err.to_string().contains("/etc/rfake/rfake.toml:3"), "{err}");

        let s = Settings {
            allow_user_binds: super::super::settings::Sourced {
                value: false,
                origin: "/etc/rfake/rfake.toml:5".into(),
            },
            ..Settings::default()
        };
        let mut req = request(&img);
        req.binds = vec!["/data".into()];
        let err = plan(&req, &who(d.path()), &s, &no_lookup).unwrap_err();
        assert!(
            err.to_string()
                .contains("allow_user_binds = false in /etc/rfake/rfake.toml:5")
        );

        let mut s = Settings::default();
        s.allow_fakeroot.value = false; // a nested field: no struct update
        let p = plan(&request(&img), &who(d.path()), &s, &no_lookup).unwrap();
        assert_eq!(p.identity, Identity::keep_id(1000, 1000));
    }

    #[test]
    fn contain_and_bad_binds() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let mut req = request(&img);
        req.contain = true;
        let p = plan(&req, &who(d.path()), &Settings::default(), &no_lookup).unwrap();
        let text = p.to_string();
        assert!(
            text.contains("tmpfs /tmp (mode 1777) [--contain]"),
            "{text}"
        );
        assert!(!text.contains("bind /tmp"), "{text}");
        let mut req = request(&img);
        req.binds = vec!["relative:/x".into()];
        let err = plan(&req, &who(d.path()), &Settings::default(), &no_lookup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bind 'relative:/x' (from --bind): source 'relative' must be an absolute path"
        );
        assert_eq!(err.exit_kind(), crate::exit::ExitKind::Usage);
    }

    fn steps_text(p: &Plan) -> String {
        p.steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The current directory is bound at its own path when nothing shows
    /// it; not when it is visible already, a system directory, under
    /// --contain or --no-mount cwd. It goes before the user's binds.
    #[test]
    fn current_directory_rules() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let at = |cwd: &str, f: &dyn Fn(&mut Request)| {
            let mut w = who(d.path());
            w.cwd = cwd.into();
            let mut req = request(&img);
            f(&mut req);
            let p = plan(&req, &w, &Settings::default(), &no_lookup).unwrap();
            (steps_text(&p), p.start_dir)
        };
        let (text, start) = at("/scratch/run", &|r| {
            r.binds = vec!["/data:/scratch/run/in".into()]
        });
        let cwd = text.find("bind /scratch/run -> /scratch/run (nosuid,nodev) [cwd]");
        let user = text.find("[--bind]");
        assert!(cwd.is_some() && cwd < user, "{text}");
        assert_eq!(start, Path::new("/scratch/run"));
        // In the home: visible already.
        let home = binds::normalize(d.path()).join("proj");
        let (text, _) = at(home.to_str().unwrap(), &|_| {});
        assert!(!text.contains("[cwd]"), "{text}");
        for dir in ["/", "/usr", "/opt", "/proc/1", "/dev/shm"] {
            let (text, _) = at(dir, &|_| {});
            assert!(!text.contains("[cwd]"), "{dir}: {text}");
        }
        let (text, start) = at("/scratch/run", &|r| r.no_mount = vec!["cwd".into()]);
        assert!(!text.contains("[cwd]"), "{text}");
        assert_eq!(start, binds::normalize(d.path()));
        let (text, _) = at("/scratch/run", &|r| r.contain = true);
        assert!(!text.contains("[cwd]"), "{text}");
    }

    /// `--no-mount`: each word, a site bind by destination, bind-paths;
    /// an unknown word is a usage error naming it.
    #[test]
    fn no_mount_words() {
        let no =
            NoMount::parse(&["home,tmp".into(), " proc , sys,dev,hostfs,/data/".into()]).unwrap();
        assert!(no.home && no.tmp && no.proc && no.sys && no.dev && !no.cwd);
        assert_eq!(no.dsts, vec![PathBuf::from("/data")]);
        let err = NoMount::parse(&["home,devpts".into()]).unwrap_err();
        assert_eq!(err.exit_kind(), crate::exit::ExitKind::Usage);
        assert!(
            err.to_string()
                .starts_with("--no-mount devpts: unknown mount"),
            "{err}"
        );

        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let s = Settings {
            site_binds: vec![
                super::super::settings::Sourced {
                    value: "/opt/site:/site".into(),
                    origin: "/etc/rfake/rfake.toml:2".into(),
                },
                super::super::settings::Sourced {
                    value: "/data".into(),
                    origin: "/etc/rfake/rfake.toml:3".into(),
                },
            ],
            ..Settings::default()
        };
        let mut req = request(&img);
        req.no_mount = vec!["/site,proc,sys,dev,tmp,home".into()];
        let text = steps_text(&plan(&req, &who(d.path()), &s, &no_lookup).unwrap());
        assert!(text.contains("bind /data -> /data"), "{text}");
        for gone in [
            "-> /site",
            "-> /proc",
            "-> /sys",
            "-> /dev",
            "-> /tmp ",
            "tmpfs /tmp",
            "[home]",
        ] {
            assert!(!text.contains(gone), "{gone}: {text}");
        }
        req.no_mount = vec!["bind-paths".into()];
        let text = steps_text(&plan(&req, &who(d.path()), &s, &no_lookup).unwrap());
        assert!(!text.contains("/data") && !text.contains("/site"), "{text}");
    }

    /// `-W` with `--contain`: /tmp, /var/tmp and the home under DIR (made
    /// before the container), `-S` under DIR/scratch; a PID namespace
    /// remounts /proc; ranks with other namespaces do not share one
    /// container.
    #[test]
    fn workdir_scratch_and_namespaces() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::create_dir(&img).unwrap();
        let w = binds::normalize(d.path()).join("w");
        std::fs::create_dir(&w).unwrap();
        let mut req = request(&img);
        req.contain = true;
        req.workdir = Some(w.clone());
        req.scratch = vec!["/s1,/a/b".into()];
        req.isolation.pid = true;
        req.join = JoinMode::Auto;
        let mut who = who(d.path());
        who.env.push(("SLURM_JOB_ID".into(), "1".into()));
        who.env.push(("SLURM_STEP_ID".into(), "0".into()));
        let p = plan(&req, &who, &Settings::default(), &no_lookup).unwrap();
        let text = steps_text(&p);
        for want in [
            format!(
                "bind {0}/tmp -> /tmp (nosuid,nodev) [--workdir]",
                w.display()
            ),
            format!(
                "bind {0}/var_tmp -> /var/tmp (nosuid,nodev) [--workdir]",
                w.display()
            ),
            format!("bind {0}/home -> ", w.display()),
            format!(
                "bind {0}/scratch/a/b -> /a/b (nosuid,nodev) [--scratch]",
                w.display()
            ),
        ] {
            assert!(text.contains(&want), "{want}: {text}");
        }
        assert_eq!(
            p.host_dirs,
            vec![
                (w.join("tmp"), 0o1777),
                (w.join("var_tmp"), 0o1777),
                (w.join("home"), 0o700),
                (w.join("scratch/s1"), 0o750),
                (w.join("scratch/a/b"), 0o750),
            ]
        );
        assert!(p.fresh_proc);
        // Ranks share the namespaces; not with ranks that have others.
        let joined = p.join.expect("ranks join");
        req.isolation.pid = false;
        let without = plan(&req, &who, &Settings::default(), &no_lookup).unwrap();
        assert_ne!(without.join.unwrap().socket, joined.socket);
        req.isolation.pid = true;
        // Without -W: tmpfs.
        req.workdir = None;
        req.join = JoinMode::Off;
        req.no_mount = vec!["proc".into()];
        let p = plan(&req, &who, &Settings::default(), &no_lookup).unwrap();
        let text = steps_text(&p);
        assert!(
            text.contains("tmpfs /var/tmp (mode 1777) [--contain]"),
            "{text}"
        );
        assert!(text.contains("tmpfs /a/b (mode 755) [--scratch]"), "{text}");
        assert!(p.host_dirs.is_empty());
        assert!(!p.fresh_proc, "no /proc, no fresh one");
    }
}
