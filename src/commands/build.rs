//! `rfake build OUT SOURCE`: the options validated into a build request.

use std::path::PathBuf;

use crate::build::run::{BuildRequest, parse_block_size};
use crate::cli::BuildArgs;
use crate::error::Error;
use crate::image::sif::Arch;
use crate::launch::Invoker;
use crate::sqfs::SqfsError;

pub fn run(args: BuildArgs, out: PathBuf, source: PathBuf, invoker: &Invoker) -> Result<u8, Error> {
    let request = BuildRequest {
        out,
        source,
        compression: args
            .compress
            .parse()
            .map_err(|e: SqfsError| Error::Usage(format!("--compress {}: {e}", args.compress)))?,
        block_size: parse_block_size(&args.block_size)?,
        skip_special: args.skip_special,
        random_uuid: args.random_uuid,
        arch: match args.arch {
            None => Arch::host(),
            Some(name) => Arch::ALL
                .into_iter()
                .find(|a| a.name() == name)
                .ok_or_else(|| Error::Usage(format!("--arch {name}: unknown architecture")))?,
        },
    };
    let summary = crate::build::run::run(&request, &invoker.env)?;
    println!("rfake build: {summary}");
    Ok(0)
}
