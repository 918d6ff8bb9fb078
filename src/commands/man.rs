//! `rfake man DIR`: the man pages generated from the command line.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::container::sys::SysError;
use crate::error::Error;

pub fn run(dir: &Path) -> Result<u8, Error> {
    let io_err = |e: std::io::Error| Error::Sys(SysError::from_io("write man pages", dir, &e));
    std::fs::create_dir_all(dir).map_err(io_err)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(io_err)?;
    Ok(0)
}
