//! rfake: a rootless container launcher for HPC clusters.
//!
//! The binary is a thin `main`; everything lives here so tests can call it.
//! Module map, top down:
//! - `cli` parses the command line; `commands` has one module per
//!   subcommand (parse → validate → plan → execute);
//! - `launch` turns a request into a plan (identity, mounts, environment,
//!   sharing) and carries it out: alone, joined to the ranks of a job step
//!   (`launch::rendezvous`, `launch::launcher`) or on a warm mount;
//! - `container` is the container itself: the kernel seam (`sys`, the one
//!   place kernel calls are made, passed in explicitly), namespaces,
//!   the mount steps (`rootfs`), binds, paths resolved inside the root,
//!   identity files and the payload's process;
//! - `image` detects and checks images (SIF reading and writing);
//!   `squashfs` reads and writes SquashFS (libsquashfs bindings, rfake's own
//!   checks); `fuse` is the libfuse3 session; `image_server` serves an image
//!   (rfake's own server or squashfuse); `dynlib` loads libsquashfs and
//!   libfuse3 when they are first used (they are not linked);
//! - `build` makes images, `inspect` describes them, `env` is the container
//!   environment, `config` the site and user files, `input` opens the files
//!   users and images name (regular files only, size-capped), `host` and
//!   `doctor` the host's prerequisites;
//! - images from registries: `pull` turns a reference (`docker://`,
//!   `oras://`, archives) into a local image; `registry` speaks to
//!   registries (references, credentials, manifests and blobs over the OCI
//!   distribution API); `cache` keeps what was pulled (blobs, converted
//!   images, references; fcntl locks, temp + rename); `digest` names blobs;
//! - `error`, `exit`, `diag` and `text`: errors and their exit codes, the
//!   `rfake[pid]:` diagnostics, one-line text.
//!
//! Modules are private unless the integration tests use them (`exit`,
//! `image`, `squashfs`, `fuse`: they read built images back as the image
//! server does; [`command`] and [`ConfigKey`] for the documentation
//! checks), so the compiler reports dead code.

// Every unsafe block says why it is sound (generated FFI bindings excepted).
#![warn(clippy::undocumented_unsafe_blocks)]

mod build;
mod bytes;
mod cache;
mod cli;
mod commands;
mod config;
mod container;
mod diag;
mod digest;
mod doctor;
mod dynlib;
mod env;
mod error;
pub mod exit;
pub mod fuse;
#[cfg(test)]
mod fuzz;
mod gpu;
mod host;
pub mod image;
mod image_server;
mod input;
mod inspect;
mod instance;
mod launch;
mod overlay;
mod pull;
mod registry;
pub mod spank;
pub mod squashfs;
#[cfg(test)]
mod testing;
mod text;

use clap::{CommandFactory, Parser};

/// The configuration keys, for the documentation checks (tests/transcripts.rs).
pub use config::Key as ConfigKey;

/// The command line as clap describes it: `--help`, the man pages and the
/// documentation checks (tests/transcripts.rs) read it.
pub fn command() -> clap::Command {
    // Built, as `rfake man` builds it: the subcommands' deferred arguments
    // filled in (src/cli.rs), global options copied into each, no `help`
    // subcommand.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

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
