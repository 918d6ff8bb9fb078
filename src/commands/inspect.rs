//! `rfake inspect IMAGE`: describe an image without mounting it.

use std::path::PathBuf;

use super::Loaded;
use crate::cli::PullArgs;
use crate::error::Error;
use crate::inspect::InspectRequest;
use crate::launch::Invoker;

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
    let image = if crate::registry::ImageRef::is_reference(image.as_os_str()) {
        let opts = crate::pull::PullOptions::new(pull, &load()?, &invoker.env)?;
        crate::pull::local_image(&image, &opts)?
    } else {
        image
    };
    crate::inspect::run(&InspectRequest {
        image,
        json,
        list,
        cat,
    })
}
