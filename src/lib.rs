//! rfake: a rootless container launcher for HPC clusters.
//!
//! The binary is a thin `main`; everything lives here so tests can call it.
//! Module map: `cli` (command line) → `launch` (validate → plan → execute),
//! which uses `image` (detection, SIF, SquashFS), `mount` (serving the image),
//! `namespace` (user namespace and identity), `rootfs` (the mount steps),
//! `process` (payload, signals, exit status); `sys` is the one seam to the
//! kernel; `host` and `doctor` check the host's prerequisites.

pub mod binds;
pub mod build;
pub mod cli;
mod commands;
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
pub mod inspect;
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

use cli::Cli;
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
    let status = match commands::run(cli.command) {
        Ok(status) => status,
        Err(e) => {
            diag::error(&e.to_string());
            e.exit_kind().code()
        }
    };
    diag::repeat_warnings();
    status
}
