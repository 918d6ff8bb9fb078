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
    // A reference is pulled into the cache first (a path stays a path).
    let image = crate::pull::local_image(&image, || PullOptions::new(pull, &config, &invoker.env))?;
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

fn request(args: LaunchArgs, image: PathBuf, action: Action) -> Request {
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
        devices: args.devices,
        home: args.home,
        no_home: args.no_home,
        // Apptainer's -C: --contain, --cleanenv, --pid and --ipc.
        contain: args.contain || args.containall,
        pwd: args.pwd,
        writable_tmpfs: args.writable_tmpfs.is_some(),
        writable_tmpfs_size: args.writable_tmpfs,
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
