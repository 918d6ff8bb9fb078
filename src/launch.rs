//! `rfake exec/run/shell`: validate → plan → execute.
//!
//! Everything that can be checked is checked before the first side effect
//! (the image, the squashfuse program, `/dev/fuse`); the plan is plain data
//! (`--dry-run` prints it); execution is a short sequence over it.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::Error;
use crate::image::{self, Image, ImageFormat};
use crate::mount::squashfuse::Squashfuse;
use crate::namespace::{self, Identity};
use crate::process::{self, CommandError, Payload};
use crate::rootfs::{self, Bind, BindKind, Step};
use crate::sys::{LinuxSys, Sys};
use crate::{env, host};

/// The runscript location Apptainer/Singularity images use.
pub const RUNSCRIPT: &str = "/.singularity.d/runscript";
/// The FUSE device.
pub const DEV_FUSE: &str = "/dev/fuse";
/// The shell for `rfake shell` and for `rfake run` without a runscript.
pub const SHELL: &str = "/bin/sh";

/// What to run once inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec(Vec<OsString>),
    Run(Vec<OsString>),
    Shell,
}

/// A launch as requested on the command line.
#[derive(Debug, Clone)]
pub struct Request {
    pub image: PathBuf,
    pub action: Action,
    pub keep_id: bool,
    pub squashfuse: Option<PathBuf>,
}

/// Facts about the invoking process, gathered once by the caller.
#[derive(Debug, Clone)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
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
}

/// A validated launch: plain data.
#[derive(Debug)]
pub struct Plan {
    pub image: Image,
    pub identity: Identity,
    pub squashfuse: Option<PathBuf>,
    pub steps: Vec<Step>,
    pub env: Vec<(OsString, OsString)>,
    pub action: Action,
    pub cwd: PathBuf,
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
        if let Some(prog) = &self.squashfuse {
            writeln!(f, "squashfuse: {}", prog.display())?;
        }
        writeln!(f, "identity: {}", self.identity)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "step {}: {step}", i + 1)?;
        }
        writeln!(f, "cwd: {}", self.cwd.display())?;
        write!(f, "action: {:?}", self.action)
    }
}

/// The binds every container gets (the site's and the user's come later).
pub fn default_binds() -> Vec<Bind> {
    let dir = |path: &str, allow_devices: bool| Bind {
        src: path.into(),
        dst: path.into(),
        kind: BindKind::Dir,
        readonly: false,
        allow_devices,
        optional: true,
        origin: "default".into(),
    };
    let file = |path: &str| Bind {
        kind: BindKind::File,
        ..dir(path, false)
    };
    vec![
        dir("/proc", false),
        dir("/sys", false),
        // /dev keeps its device nodes usable; /dev/shm (shared by MPI
        // ranks) and /dev/pts come along as submounts.
        dir("/dev", true),
        dir("/tmp", false),
        file("/etc/resolv.conf"),
        file("/etc/hosts"),
    ]
}

/// Validate the request and build the plan. No side effects.
pub fn plan(req: &Request, who: &Invoker) -> Result<Plan, Error> {
    // A setuid or setgid rfake would hand the user the installer's powers.
    if who.uid != who.euid || who.gid != who.egid {
        return Err(Error::Refused(format!(
            "rfake is installed setuid or setgid (uid {} euid {}, gid {} egid {}); \
             it needs no privilege: remove the bit (chmod u-s,g-s)",
            who.uid, who.euid, who.gid, who.egid
        )));
    }
    let image = image::open(&req.image)?;
    let identity = if req.keep_id {
        Identity::keep_id(who.uid, who.gid)
    } else {
        Identity::fakeroot(who.uid, who.gid)
    };
    let mut steps = vec![Step::MakePrivate, Step::Staging, Step::PivotToStaging];
    let squashfuse = match image.format {
        ImageFormat::Directory => {
            steps.push(Step::BindRootDir(image.path.clone()));
            None
        }
        ImageFormat::Squashfs | ImageFormat::Sif => {
            steps.push(Step::MountImage);
            let path_env = env::get(&who.env, "PATH");
            Some(host::find_squashfuse(req.squashfuse.as_deref(), path_env)?)
        }
    };
    steps.extend(default_binds().into_iter().map(Step::Bind));
    steps.push(Step::EnterNewRoot);
    let env = env::container_env(who.env.iter().cloned(), &image.path);
    Ok(Plan {
        image,
        identity,
        squashfuse,
        steps,
        env,
        action: req.action.clone(),
        cwd: who.cwd.clone(),
    })
}

/// Carry the plan out; returns the exit status (the payload's).
pub fn execute(plan: &Plan) -> Result<u8, Error> {
    let sys = LinuxSys;
    let t0 = Instant::now();
    // Tried before the namespace exists, so a missing permission is
    // reported as what it is, with its fix, before any side effect.
    let mut mounter = match &plan.squashfuse {
        Some(program) => Some(Squashfuse {
            program: program.clone(),
            image_path: plan.image.path.clone(),
            image: open_image(&plan.image.path)?,
            offset: plan.image.squashfs_offset.unwrap_or(0),
            fuse_device: {
                drop(host::open_dev_fuse(Path::new(DEV_FUSE))?);
                // Reopened inside the namespace, after the first pivot.
                crate::paths::under(Path::new(rootfs::OLDROOT), Path::new(DEV_FUSE))
            },
            host_root: PathBuf::from(rootfs::OLDROOT),
            uid: plan.identity.inside_uid,
            gid: plan.identity.inside_gid,
            server: None,
        }),
        None => None,
    };
    process::install_forwarding().map_err(|e| crate::sys::SysError::new("sigaction", "", e))?;
    // No privilege can ever be gained from here on, by us or the payload.
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| crate::sys::SysError::new("prctl(PR_SET_NO_NEW_PRIVS)", "", e))?;
    namespace::enter(
        &sys,
        &plan.identity,
        Path::new("/proc/self"),
        Path::new("/proc/sys"),
    )?;
    log::info!("user namespace: {} ({:.1?})", plan.identity, t0.elapsed());
    process::become_subreaper()
        .map_err(|e| crate::sys::SysError::new("prctl(PR_SET_CHILD_SUBREAPER)", "", e))?;
    let mut no_mount = NoImageMount;
    let image_mounter: &mut dyn rootfs::ImageMounter = match mounter.as_mut() {
        Some(m) => m,
        None => &mut no_mount,
    };
    rootfs::execute(&sys, &plan.steps, image_mounter, &mut log_step)?;
    let server_pid = mounter
        .as_ref()
        .and_then(|m| m.server.as_ref())
        .map(|s| s.pid());
    let result = enter_cwd_and_run(&sys, plan);
    process::reap_leftovers(&server_pid.into_iter().collect::<Vec<_>>());
    if let Some(server) = mounter.and_then(|mut m| m.server.take()) {
        server.stop();
    }
    log::info!("total {:.1?}", t0.elapsed());
    result
}

fn open_image(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| {
        Error::Image(image::ImageError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    })
}

fn log_step(step: &Step, took: std::time::Duration, note: Option<&str>) {
    match (step, note) {
        (Step::Bind(b), Some(note)) if b.kind == BindKind::Dir => {
            log::warn!("{} not bound: {note}", b.dst.display())
        }
        (_, Some(note)) => log::info!("{step}: {note} ({took:.1?})"),
        (_, None) => log::info!("{step} ({took:.1?})"),
    }
}

/// A directory image has no image mount step; reaching it is a bug.
struct NoImageMount;

impl rootfs::ImageMounter for NoImageMount {
    fn mount_image(
        &mut self,
        _: &dyn Sys,
        target: &Path,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("internal: no image mounter for {}", target.display()).into())
    }
}

fn enter_cwd_and_run(sys: &dyn Sys, plan: &Plan) -> Result<u8, Error> {
    let cwd = if sys.chdir(&plan.cwd).is_ok() {
        plan.cwd.clone()
    } else {
        log::info!(
            "{} does not exist in the container; starting in /",
            plan.cwd.display()
        );
        sys.chdir(Path::new("/"))?;
        PathBuf::from("/")
    };
    let argv = command_line(&plan.action);
    let (cmd, args) = argv.split_first().ok_or_else(|| {
        Error::Command(CommandError::NotFound {
            cmd: OsString::new(),
        })
    })?;
    let program = process::resolve_command(cmd, env::get(&plan.env, "PATH"))?;
    log::info!("running {} as {}", program.display(), plan.identity);
    let payload = Payload {
        argv0: cmd.clone(),
        program,
        args: args.to_vec(),
        env: plan.env.clone(),
        cwd,
    };
    crate::diag::payload_started();
    Ok(process::run(&payload)?)
}

/// The argv to run for `action`, looked up inside the image.
fn command_line(action: &Action) -> Vec<OsString> {
    match action {
        Action::Exec(argv) => argv.clone(),
        Action::Run(args) => {
            let runscript = Path::new(RUNSCRIPT);
            let mut argv: Vec<OsString> = match std::fs::metadata(runscript) {
                Ok(m) if m.is_file() => {
                    use std::os::unix::fs::PermissionsExt;
                    if m.permissions().mode() & 0o111 != 0 {
                        vec![RUNSCRIPT.into()]
                    } else {
                        vec![SHELL.into(), RUNSCRIPT.into()]
                    }
                }
                _ => vec![SHELL.into()],
            };
            argv.extend(args.iter().cloned());
            argv
        }
        Action::Shell => vec![SHELL.into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Invoker {
        Invoker {
            uid: 1000,
            gid: 1000,
            euid: 1000,
            egid: 1000,
            cwd: "/home/u".into(),
            env: vec![("PATH".into(), "/usr/bin".into())],
        }
    }

    #[test]
    fn setuid_install_is_refused_before_anything_else() {
        let mut w = who();
        w.euid = 0;
        let req = Request {
            image: "/nonexistent".into(),
            action: Action::Shell,
            keep_id: false,
            squashfuse: None,
        };
        let err = plan(&req, &w).unwrap_err();
        assert_eq!(err.exit_kind().code(), 77);
        assert!(err.to_string().contains("setuid"));
    }

    #[test]
    fn directory_image_plan() {
        let d = tempfile::tempdir().unwrap();
        let req = Request {
            image: d.path().into(),
            action: Action::Exec(vec!["true".into()]),
            keep_id: true,
            squashfuse: None,
        };
        let p = plan(&req, &who()).unwrap();
        assert_eq!(p.identity, Identity::keep_id(1000, 1000));
        assert!(p.squashfuse.is_none());
        assert_eq!(p.steps[0], Step::MakePrivate);
        assert!(!p.steps.contains(&Step::MountImage));
        assert!(
            p.steps
                .contains(&Step::BindRootDir(d.path().canonicalize().unwrap()))
        );
        assert_eq!(p.steps.last(), Some(&Step::EnterNewRoot));
        let text = p.to_string();
        assert!(
            text.contains("bind /dev -> /dev (nosuid, optional)"),
            "{text}"
        );
        assert!(
            text.contains("bind /proc -> /proc (nosuid,nodev, optional)"),
            "{text}"
        );
    }

    #[test]
    fn exec_and_shell_command_lines() {
        assert_eq!(
            command_line(&Action::Exec(vec!["id".into(), "-u".into()])),
            vec![OsString::from("id"), OsString::from("-u")]
        );
        assert_eq!(
            command_line(&Action::Shell),
            vec![OsString::from("/bin/sh")]
        );
    }
}
