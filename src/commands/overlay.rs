//! `rfake overlay create`: make an ext3 overlay image for `--overlay`.

use std::ffi::OsString;

use crate::cli::OverlayCommand;
use crate::error::Error;
use crate::overlay::{self, CreateOptions, OverlayError};

pub fn run(command: OverlayCommand, env: &[(OsString, OsString)]) -> Result<u8, Error> {
    match command {
        OverlayCommand::Create {
            size,
            sparse,
            create_dirs,
            image,
        } => {
            let opts = CreateOptions {
                image,
                size_mib: size,
                sparse,
                create_dirs,
                path_env: crate::env::get(env, "PATH").map(OsString::from),
            };
            overlay::create(&opts).map_err(OverlayError::from)?;
        }
    }
    Ok(0)
}
