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
    clap_complete::generate(shell, &mut Cli::command(), "rfake", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Sys(SysError::from_io("write completions", "stdout", &e)))?;
    Ok(0)
}
