//! `rfake completions SHELL`: the shell completion script generated from the
//! command line (`clap_complete`), as packages install it.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::container::sys::SysError;
use crate::error::Error;

pub fn run(shell: Shell) -> Result<u8, Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut expanded(Cli::command()), "rfake", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        // A reader that stopped early (`| head`) is not an error: the
        // script is longer than a pipe holds.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::Sys(SysError::from_io(
            "write completions",
            "stdout",
            &e,
        ))),
    }
}

/// `command` with each subcommand's deferred arguments and subcommands
/// filled in (src/cli.rs), the top level not yet built: building it makes the
/// `help` subcommand from copies of the subcommands as they are then, so
/// `rfake help cache <TAB>` needs them filled in first. They are taken from a
/// copy built whole, so their names and global options are as in a launch.
fn expanded(command: clap::Command) -> clap::Command {
    let mut built = command.clone();
    built.build();
    built
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
        .fold(command, |command, sub| {
            command.mut_subcommand(sub.get_name(), |_| sub.clone())
        })
}
