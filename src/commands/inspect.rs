//! `rfake inspect IMAGE`: describe an image without mounting it.

use std::path::PathBuf;

use crate::error::Error;
use crate::inspect::InspectRequest;

pub fn run(
    image: PathBuf,
    json: bool,
    list: Option<String>,
    cat: Option<String>,
) -> Result<u8, Error> {
    crate::inspect::run(&InspectRequest {
        image,
        json,
        list,
        cat,
    })
}
