//! `rfake pull [OUT] REF`: an image from a registry (or an archive) as a
//! file of its own.

use std::path::PathBuf;

use crate::cli::PullArgs;
use crate::config::Config;
use crate::error::Error;
use crate::launch::Invoker;
use crate::pull::{PullOptions, pull_to_file};

pub fn run(
    args: &PullArgs,
    force: bool,
    targets: Vec<PathBuf>,
    invoker: &Invoker,
    config: Config,
) -> Result<u8, Error> {
    let (out, reference) = match targets.as_slice() {
        [reference] => (None, reference),
        [out, reference] => (Some(out.as_path()), reference),
        _ => return Err(Error::Usage("rfake pull [OUT] REF".into())),
    };
    let opts = PullOptions::new(args, &config, &invoker.env)?;
    let out = pull_to_file(out, reference.as_os_str(), force, &opts)?;
    if !args.quiet {
        println!("rfake pull: {}", crate::text::shown(&out));
    }
    Ok(0)
}
