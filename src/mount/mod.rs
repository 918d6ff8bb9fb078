//! The mount layer: serving a single-file image's SquashFS as a filesystem.
//!
//! The rest of rfake only sees [`crate::rootfs::ImageMounter`]; today the one
//! implementation drives an external squashfuse process ([`squashfuse`]).

pub mod squashfuse;

use std::path::PathBuf;

use crate::exit::ExitKind;
use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot mount image {}: {source}", image.display())]
    Sys { image: PathBuf, source: SysError },
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("image {}: squashfuse could not serve it: {message}", image.display())]
    Server { image: PathBuf, message: String },
}

impl MountError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            MountError::Sys { .. } => ExitKind::OsError,
            MountError::Spawn { .. } | MountError::Host(_) => ExitKind::HostUnavailable,
            MountError::Server { .. } => ExitKind::BadImage,
        }
    }
}
