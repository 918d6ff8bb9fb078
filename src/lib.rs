//! rfake: a rootless container launcher for HPC clusters.
//!
//! The binary is a thin `main`; everything lives here so tests can call it.
//! Module map: `cli` (command line) → `launch` (validate → plan → execute),
//! which uses `image` (detection, SIF, SquashFS), `mount` (serving the image),
//! `namespace` (user namespace and identity), `rootfs` (the mount steps),
//! `process` (payload, signals, exit status); `sys` is the one seam to the
//! kernel; `host` and `doctor` check the host's prerequisites; `input` opens
//! the files users and images name (regular files only, size-capped).

pub mod binds;
pub mod build;
pub mod cli;
pub mod config;
pub mod diag;
pub mod doctor;
pub mod env;
pub mod error;
pub mod exit;
pub mod fuse;
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod image;
pub mod input;
pub mod inspect;
pub mod join;
pub mod launch;
pub mod mount;
pub mod namespace;
pub mod passwd;
pub mod paths;
pub mod process;
pub mod rootfs;
pub mod sqfs;
pub mod sys;
pub mod text;

use clap::Parser;

use cli::{Cli, Commands};
use error::Error;
use exit::ExitKind;

/// Run rfake with `args`; returns the process exit status.
pub fn main_with_args(args: Vec<std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One prefixed line first, as for every other error.
            eprint!("{}: {}", diag::prefix(), e.render());
            return ExitKind::Usage.code();
        }
        Err(e) => {
            let _ = e.print();
            return 0;
        }
    };
    diag::init(cli.verbose);
    let status = match dispatch(cli.command) {
        Ok(status) => status,
        Err(e) => {
            diag::error(&e.to_string());
            e.exit_kind().code()
        }
    };
    diag::repeat_warnings();
    status
}

fn dispatch(command: Commands) -> Result<u8, Error> {
    let invoker = launch::Invoker::current();
    invoker.refuse_setid()?;
    let (launch_args, image, action) = match command {
        Commands::Exec {
            launch,
            image,
            command,
        } => (launch, image, launch::Action::Exec(command)),
        Commands::Run {
            launch,
            image,
            args,
        } => (launch, image, launch::Action::Run(args)),
        Commands::Shell { launch, image } => (launch, image, launch::Action::Shell),
        Commands::Doctor => {
            let loaded =
                config::Config::load(&config::ConfigSources::from_env(&invoker.env), &invoker.env);
            let configured = std::env::var_os("RFAKE_SQUASHFUSE")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    loaded
                        .as_ref()
                        .ok()
                        .and_then(|c| c.squashfuse.value.clone())
                });
            let summary = loaded
                .as_ref()
                .map(config_summary)
                .map_err(|e| e.to_string());
            let path = std::env::var_os("PATH");
            let needed = std::env::var_os("RFAKE_SQUASHFUSE").is_some()
                || loaded
                    .as_ref()
                    .is_ok_and(|c| c.image_server.value == config::ImageServer::Squashfuse);
            let checks =
                doctor::run_checks(configured.as_deref(), path.as_deref(), summary, needed);
            return Ok(if doctor::report(&checks) {
                0
            } else {
                ExitKind::HostUnavailable.code()
            });
        }
        Commands::Man { dir } => return write_man_pages(&dir),
        Commands::Build {
            compress,
            block_size,
            skip_special,
            random_uuid,
            arch,
            out,
            source,
        } => {
            let request = build::run::BuildRequest {
                out,
                source,
                compression: compress.parse().map_err(|e: sqfs::SqfsError| {
                    Error::Usage(format!("--compress {compress}: {e}"))
                })?,
                block_size: build::run::parse_block_size(&block_size)?,
                skip_special,
                random_uuid,
                arch: match arch {
                    None => image::sif::Arch::host(),
                    Some(name) => image::sif::Arch::ALL
                        .into_iter()
                        .find(|a| a.name() == name)
                        .ok_or_else(|| {
                            Error::Usage(format!("--arch {name}: unknown architecture"))
                        })?,
                },
            };
            let summary = build::run::run(&request, &invoker.env)?;
            println!("rfake build: {summary}");
            return Ok(0);
        }
        Commands::Inspect {
            json,
            list,
            cat,
            image,
        } => {
            return inspect::run(&inspect::InspectRequest {
                image,
                json,
                list,
                cat,
            });
        }
        Commands::Config => {
            let config =
                config::Config::load(&config::ConfigSources::from_env(&invoker.env), &invoker.env)?;
            print!("{}", config.render());
            return Ok(0);
        }
    };
    let request = launch::Request {
        image,
        action: Some(action),
        keep_id: launch_args.keep_id,
        fakeroot: launch_args.fakeroot,
        join: if launch_args.no_join {
            launch::JoinMode::Off
        } else if launch_args.join {
            launch::JoinMode::On
        } else {
            launch::JoinMode::Auto
        },
        join_key: launch_args.join_key,
        squashfuse: launch_args.squashfuse,
        binds: launch_args.binds,
        home: launch_args.home,
        no_home: launch_args.no_home,
        contain: launch_args.contain,
        pwd: launch_args.pwd,
        writable_tmpfs: launch_args.writable_tmpfs,
        cleanenv: launch_args.cleanenv,
        env: launch_args.env,
        env_files: launch_args.env_files,
    };
    let config =
        config::Config::load(&config::ConfigSources::from_env(&invoker.env), &invoker.env)?;
    let settings = launch::settings::Settings::from_config(&config);
    let plan = launch::plan(&request, &invoker, &settings, &launch::lookup_host_user)?;
    if launch_args.dry_run {
        use std::io::Write;
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{plan}");
        return Ok(0);
    }
    launch::execute(&plan)
}

fn write_man_pages(dir: &std::path::Path) -> Result<u8, Error> {
    use clap::CommandFactory;
    let io_err = |e: std::io::Error| Error::Sys(sys::SysError::from_io("write man pages", dir, &e));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(io_err)?;
    Ok(0)
}

/// One line about which configuration files apply, for `rfake doctor`.
fn config_summary(config: &config::Config) -> String {
    let describe = |f: &Option<config::FileStatus>, what: &str| match f {
        Some(f) if f.found => format!("{what} {}", f.path.display()),
        Some(f) => format!("no {what} ({} absent)", f.path.display()),
        None => format!("no {what}"),
    };
    format!(
        "{}; {}",
        describe(&config.site_file, "site file"),
        describe(&config.user_file, "user file")
    )
}
