//! `rfake build OUT SOURCE`: the options validated into a build request.

use std::path::PathBuf;

use super::Loaded;
use crate::build::run::{BuildRequest, BuildSource, parse_block_size};
use crate::build::source::SizeLimit;
use crate::cli::BuildArgs;
use crate::config;
use crate::error::Error;
use crate::image::sif::Arch;
use crate::launch::Invoker;
use crate::squashfs::SqfsError;

pub fn run(
    args: BuildArgs,
    out: PathBuf,
    source: PathBuf,
    invoker: &Invoker,
    load: impl FnOnce() -> Loaded,
) -> Result<u8, Error> {
    let max_size = max_size(args.max_size.as_deref(), load)?;
    let request = BuildRequest {
        out,
        source: BuildSource::Path(source),
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
        max_size,
    };
    let summary = crate::build::run::run(&request, &invoker.env)?;
    println!("rfake build: {summary}");
    Ok(0)
}

/// The size limit: `--max-size`, else `build_max_size` from the
/// configuration (read only when the flag is not given, so a broken file
/// does not stop a build that names its limit).
fn max_size(flag: Option<&str>, load: impl FnOnce() -> Loaded) -> Result<SizeLimit, Error> {
    if let Some(text) = flag {
        let bytes = config::parse_build_size(text)
            .map_err(|e| Error::Usage(format!("--max-size {text}: {e}")))?;
        return Ok(SizeLimit {
            bytes,
            origin: "--max-size".into(),
        });
    }
    let setting = load()?.build_max_size;
    Ok(SizeLimit {
        bytes: setting.value,
        origin: format!("build_max_size, {}", setting.origin),
    })
}
