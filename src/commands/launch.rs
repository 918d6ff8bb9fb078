//! `rfake exec`, `run` and `shell`: the options become a launch request,
//! which is planned, then printed (`--dry-run`) or carried out.

use std::path::PathBuf;

use crate::cli::{LaunchArgs, PullArgs};
use crate::config::Config;
use crate::container::namespace::Isolation;
use crate::error::Error;
use crate::launch::{self, Action, Invoker, JoinMode, Request, settings::Settings};
use crate::pull::PullOptions;

pub fn run(
    args: LaunchArgs,
    pull: &PullArgs,
    image: PathBuf,
    action: Action,
    invoker: &Invoker,
    config: Config,
) -> Result<u8, Error> {
    if let Some(name) = crate::instance::parse_uri(&image) {
        return in_instance(args, name, action, invoker, config);
    }
    // A reference is pulled into the cache first (a path stays a path).
    let image = crate::pull::local_image(&image, || PullOptions::new(pull, &config, &invoker.env))?;
    // Apptainer's APPTAINER_<FLAG> variables, under the command line's flags.
    let (args, notes) = crate::env::apptainer::apply_flags(args, &invoker.env)?;
    for note in &notes {
        log::info!("{note}");
    }
    let dry_run = args.dry_run;
    let request = request(args, image, action);
    let settings = Settings::from_config(&config);
    let plan = launch::plan(&request, invoker, &settings, &launch::lookup_host_user)?;
    if dry_run {
        use std::io::Write;
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{plan}");
        return Ok(0);
    }
    launch::execute(&plan)
}

/// `exec/run/shell instance://NAME`: planned as a launch of the
/// instance's image with its identity, then run inside its container. Its
/// mounts were made when it started: options that would change them are
/// ignored, with a warning.
fn in_instance(
    args: LaunchArgs,
    name: &str,
    action: Action,
    invoker: &Invoker,
    config: Config,
) -> Result<u8, Error> {
    let scope = crate::instance::Scope::new(invoker.uid, &invoker.env);
    let live = crate::instance::find(&scope, name)?;
    let mut ignored = Vec::new();
    for (given, flag) in [
        (!args.binds.is_empty(), "--bind"),
        (!args.devices.is_empty(), "--device"),
        (args.home.is_some(), "--home"),
        (args.no_home, "--no-home"),
        (args.contain, "--contain"),
        (args.writable_tmpfs.is_some(), "--writable-tmpfs"),
    ] {
        if given {
            ignored.push(flag);
        }
    }
    if !ignored.is_empty() {
        log::warn!(
            "instance {name}: its mounts were made when it started; {} ignored",
            ignored.join(", ")
        );
    }
    let dry_run = args.dry_run;
    let mut request = request(args, live.record.image.clone(), action);
    request.keep_id = live.record.keep_id;
    request.fakeroot = !live.record.keep_id;
    request.join = JoinMode::Off;
    request.binds.clear();
    request.devices.clear();
    let settings = Settings::from_config(&config);
    let plan = launch::plan(&request, invoker, &settings, &launch::lookup_host_user)?;
    if dry_run {
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "{plan}\ninstance: {name} (pid {}), socket @{}",
            live.record.pid,
            live.socket
        );
        return Ok(0);
    }
    crate::instance::enter::execute(&plan, &live)
}

pub(super) fn request(args: LaunchArgs, image: PathBuf, action: Action) -> Request {
    Request {
        image,
        action: Some(action),
        keep_id: args.keep_id,
        fakeroot: args.fakeroot,
        join: if args.no_join {
            JoinMode::Off
        } else if args.join {
            JoinMode::On
        } else {
            JoinMode::Auto
        },
        join_key: args.join_key,
        squashfuse: args.squashfuse,
        binds: args.binds,
        profiles: args.profiles,
        devices: args.devices,
        nv: args.nv,
        rocm: args.rocm,
        home: args.home,
        no_home: args.no_home,
        // Apptainer's -C: --contain, --cleanenv, --pid and --ipc.
        contain: args.contain || args.containall,
        pwd: args.pwd,
        writable_tmpfs: args.writable_tmpfs.is_some(),
        writable_tmpfs_size: args.writable_tmpfs,
        overlays: args.overlays,
        writable: args.writable,
        cleanenv: args.cleanenv || args.containall,
        env: args.env,
        env_files: args.env_files,
        no_mount: args.no_mount,
        mounts: args.mounts,
        workdir: args.workdir,
        scratch: args.scratch,
        isolation: Isolation {
            pid: args.pid || args.containall,
            ipc: args.ipc || args.containall,
            uts: args.uts || args.hostname.is_some(),
            hostname: args.hostname,
            net: args.net || args.network.is_some(),
        },
        network: args.network,
        no_privs: args.no_privs,
        app: args.app,
    }
}
