//! `rfake config`: the effective configuration and where each value
//! comes from.

use crate::config::Config;
use crate::error::Error;

pub fn run(config: Config) -> Result<u8, Error> {
    print!("{}", config.render());
    Ok(0)
}
