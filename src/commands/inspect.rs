//! `rfake inspect IMAGE`: describe an image without mounting it.

use std::path::PathBuf;

use super::Loaded;
use crate::cli::PullArgs;
use crate::error::Error;
use crate::inspect::InspectRequest;
use crate::launch::Invoker;

/// The local image for `image`: a path as it is, a reference pulled into
/// the cache (the configuration is read only then: it names the cache).
pub fn local(
    pull: &PullArgs,
    image: PathBuf,
    invoker: &Invoker,
    load: impl FnOnce() -> Loaded,
) -> Result<PathBuf, Error> {
    crate::pull::local_image(&image, || {
        crate::pull::PullOptions::new(pull, &load()?, &invoker.env)
    })
}

/// The file at `inner` in `image` (read without mounting it); `None` if the
/// image has no such file.
pub fn image_file(image: &std::path::Path, inner: &str) -> Result<Option<Vec<u8>>, Error> {
    let (_, files) = crate::inspect::inspect(image, None)?;
    match files.read_file(inner, crate::input::TEXT_LIMIT) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.missing => Ok(None),
        Err(e) => Err(Error::Inside {
            image: image.to_path_buf(),
            detail: format!("{inner}: {}", e.detail),
            missing: false,
        }),
    }
}

/// The configuration is read only for a reference (it names the cache): a
/// broken file does not stop describing a local image.
pub fn run(
    pull: &PullArgs,
    image: PathBuf,
    json: bool,
    list: Option<String>,
    cat: Option<String>,
    invoker: &Invoker,
    load: impl FnOnce() -> Loaded,
) -> Result<u8, Error> {
    let image = local(pull, image, invoker, load)?;
    crate::inspect::run(&InspectRequest {
        image,
        json,
        list,
        cat,
    })
}
