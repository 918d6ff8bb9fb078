//! `rfake build OUT SOURCE`: the options validated into a build request.

use std::path::PathBuf;

use super::Loaded;
use crate::build::definition::DefinitionOptions;
use crate::build::fakeroot::FakerootMode;
use crate::build::run::{BuildRequest, BuildSource, parse_block_size};
use crate::build::source::SizeLimit;
use crate::cli::{BuildArgs, PullArgs};
use crate::config;
use crate::error::Error;
use crate::image::sif::Arch;
use crate::launch::Invoker;
use crate::squashfs::SqfsError;

pub fn run(
    args: BuildArgs,
    pull: &PullArgs,
    out: PathBuf,
    source: PathBuf,
    invoker: &Invoker,
    load: impl FnOnce() -> Loaded,
) -> Result<u8, Error> {
    // The configuration is read only when needed (for the size limit
    // without --max-size, for a reference's cache), so a broken file does
    // not stop a build that needs nothing from it.
    let reference = crate::registry::ImageRef::is_reference(source.as_os_str());
    let kind = (!reference)
        .then(|| crate::build::source::detect(&source).ok())
        .flatten();
    let definition = kind == Some(crate::build::source::SourceKind::Definition);
    // A recipe's [[run]] steps run as a definition's %post does.
    let recipe = kind == Some(crate::build::source::SourceKind::Recipe);
    let config = match args.max_size.is_none() || reference || definition {
        true => Some(load()?),
        false => None,
    };
    if let (false, Some(flag)) = (
        definition,
        [(args.sandbox, "--sandbox"), (args.fix_perms, "--fix-perms")]
            .into_iter()
            .find_map(|(on, flag)| on.then_some(flag)),
    ) {
        return Err(Error::Usage(format!(
            "{flag}: only for a definition file as SOURCE (rfake never changes a SOURCE \
             directory: for one with unreadable files, run chmod -R u+rwX on it)"
        )));
    }
    let definition_options = match (definition || recipe, &config) {
        (true, config) => Some(DefinitionOptions {
            notest: args.notest,
            fakeroot: match args.fakeroot_mode.as_str() {
                "none" => FakerootMode::None,
                _ => FakerootMode::Seccomp,
            },
            // With --sandbox the tree is built beside OUT, to be renamed.
            tmpdir: args.tmpdir.clone().or_else(|| {
                // RFAKE_TMPDIR, else APPTAINER_TMPDIR, else SINGULARITY_TMPDIR.
                crate::env::apptainer::rfake_or_apptainer(&invoker.env, "RFAKE_TMPDIR", "TMPDIR")
                    .filter(|_| !args.sandbox)
                    .map(|f| PathBuf::from(f.value))
            }),
            pull: match config {
                Some(config) if definition => {
                    Some(crate::pull::PullOptions::new(pull, config, &invoker.env)?)
                }
                _ => None,
            },
            fix_perms: args.fix_perms,
        }),
        _ => None,
    };
    if let (true, Some(options)) = (args.sandbox, &definition_options) {
        let summary =
            crate::build::definition::build_sandbox(&source, options, &out, &invoker.env)?;
        println!("rfake build: {summary}");
        return Ok(0);
    }
    let max_size = max_size(args.max_size.as_deref(), config.as_ref())?;
    let source = match &config {
        Some(config) if reference => {
            let opts = crate::pull::PullOptions::new(pull, config, &invoker.env)?;
            crate::pull::build_source(&source, &opts)?
        }
        _ => BuildSource::Path(source),
    };
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
        arch: match &pull.arch {
            None => Arch::host(),
            Some(name) => crate::pull::check_arch(name)?,
        },
        max_size,
        warn_losses: true,
        definition: definition_options,
    };
    let summary = crate::build::run::run(&request, &invoker.env)?;
    println!("rfake build: {summary}");
    Ok(0)
}

/// The size limit: `--max-size`, else `build_max_size` from the
/// configuration (read only when the flag is not given, so a broken file
/// does not stop a build that names its limit).
fn max_size(
    flag: Option<&str>,
    config: Option<&crate::config::Config>,
) -> Result<SizeLimit, Error> {
    if let Some(text) = flag {
        let bytes = config::parse_build_size(text)
            .map_err(|e| Error::Usage(format!("--max-size {text}: {e}")))?;
        return Ok(SizeLimit {
            bytes,
            origin: "--max-size".into(),
        });
    }
    let Some(config) = config else {
        return Err(Error::Internal(
            "no configuration for the size limit".into(),
        ));
    };
    let setting = &config.build_max_size;
    Ok(SizeLimit {
        bytes: setting.value,
        origin: format!("build_max_size, {}", setting.origin),
    })
}
