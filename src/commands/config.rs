//! `rfake config`: the effective configuration and where each value
//! comes from.

use std::ffi::OsString;

use crate::config::Config;
use crate::error::Error;

/// The configuration files' values, then the variables that change what
/// rfake does (`RFAKE_BIND`, Apptainer's), each with its name.
pub fn run(config: Config, env: &[(OsString, OsString)]) -> Result<u8, Error> {
    print!("{}", config.render());
    print!("{}", crate::env::apptainer::describe(env));
    Ok(0)
}
