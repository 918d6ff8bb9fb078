//! One module per subcommand: each takes the parsed arguments, validates
//! them into its request and runs it. [`run`] is the table of contents.

mod build;
mod cache;
mod config;
mod doctor;
mod inspect;
mod launch;
mod man;
mod registry;

use crate::cli::Commands;
use crate::config::{Config, ConfigError, ConfigSources};
use crate::error::Error;
use crate::launch::{Action, Invoker};

/// Run one subcommand; returns the process exit status.
pub fn run(command: Commands) -> Result<u8, Error> {
    let invoker = Invoker::current();
    // Before anything else: rfake is never setuid or setgid.
    invoker.refuse_setid()?;
    // The configuration is read once, from the environment captured above;
    // a command that needs it decides what a broken file means.
    let load = || Config::load(&ConfigSources::from_env(&invoker.env), &invoker.env);
    let launch = |args, image, action| launch::run(args, image, action, &invoker, load()?);
    match command {
        Commands::Exec {
            launch: args,
            image,
            command,
        } => launch(args, image, Action::Exec(command)),
        Commands::Run {
            launch: args,
            image,
            args: run_args,
        } => launch(args, image, Action::Run(run_args)),
        Commands::Shell {
            launch: args,
            image,
        } => launch(args, image, Action::Shell),
        Commands::Build { args, out, source } => build::run(args, out, source, &invoker, load),
        Commands::Inspect {
            json,
            list,
            cat,
            image,
        } => inspect::run(image, json, list, cat),
        Commands::Doctor => Ok(doctor::run(&invoker, load())),
        Commands::Config => config::run(load()?),
        Commands::Man { dir } => man::run(&dir),
        Commands::Cache { command } => cache::run(command, &invoker.env),
        Commands::Registry { command } => Ok(registry::run(command, &invoker.env)),
    }
}

/// The configuration as loaded: `rfake doctor` reports a broken file
/// instead of stopping at it.
pub type Loaded = Result<Config, ConfigError>;
