//! One module per subcommand: each takes the parsed arguments, validates
//! them into its request and runs it. [`run`] is the table of contents.

mod build;
mod cache;
mod completions;
mod config;
mod doctor;
mod inspect;
mod instance;
mod launch;
mod man;
mod overlay;
mod pull;
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
    let launch =
        |args, pull, image, action| launch::run(args, &pull, image, action, &invoker, load()?);
    match command {
        Commands::Exec {
            launch: args,
            pull,
            image,
            command,
        } => launch(args, pull, image, Action::Exec(command)),
        Commands::Run {
            launch: args,
            pull,
            image,
            args: run_args,
        } => launch(args, pull, image, Action::Run(run_args)),
        Commands::Shell {
            launch: args,
            pull,
            image,
        } => launch(args, pull, image, Action::Shell),
        Commands::Test {
            launch: args,
            pull,
            image,
        } => {
            let image = inspect::local(&pull, image, &invoker, load)?;
            match inspect::image_file(&image, TEST_SCRIPT)? {
                None => {
                    println!(
                        "rfake test: {} has no test (%test)",
                        crate::text::shown(&image)
                    );
                    Ok(0)
                }
                Some(_) => launch(
                    args,
                    pull,
                    image,
                    Action::Exec(vec!["/bin/sh".into(), TEST_SCRIPT.into()]),
                ),
            }
        }
        Commands::RunHelp { pull, image } => {
            let image = inspect::local(&pull, image, &invoker, load)?;
            match inspect::image_file(&image, HELP_FILE)? {
                Some(text) => print!("{}", String::from_utf8_lossy(&text)),
                None => println!("No help sections were defined for this image"),
            }
            Ok(0)
        }
        Commands::Build {
            args,
            pull,
            out,
            source,
        } => build::run(args, &pull, out, source, &invoker, load),
        Commands::Inspect {
            json,
            list,
            cat,
            pull,
            image,
        } => inspect::run(&pull, image, json, list, cat, &invoker, load),
        Commands::Pull {
            pull: args,
            force,
            targets,
        } => pull::run(&args, force, targets, &invoker, load()?),
        Commands::Doctor {
            image: Some(image),
            pull,
        } => doctor::run_image(&inspect::local(&pull, image, &invoker, load)?),
        Commands::Doctor { image: None, .. } => Ok(doctor::run(&invoker, load())),
        Commands::Config => config::run(load()?, &invoker.env),
        Commands::Man { dir } => man::run(&dir),
        Commands::Completions { shell } => completions::run(shell),
        Commands::Cache { command } => cache::run(command, &load()?, &invoker.env),
        Commands::Registry { command } => registry::run(command, &invoker.env, load),
        Commands::Instance { command } => {
            instance::run(command, &invoker, || load().map_err(Error::from))
        }
        Commands::Overlay { command } => overlay::run(command, &invoker.env),
    }
}

/// Where a definition file's `%test` and `%help` are in an image.
const TEST_SCRIPT: &str = "/.singularity.d/test";
const HELP_FILE: &str = "/.singularity.d/runscript.help";

/// The configuration as loaded: `rfake doctor` reports a broken file
/// instead of stopping at it.
pub type Loaded = Result<Config, ConfigError>;
