//! rfake's top-level error: one per failure, printed once by `main`, each
//! mapped to a documented exit code.

use crate::container::namespace::NamespaceError;
use crate::container::process::CommandError;
use crate::container::rootfs::RootfsError;
use crate::container::sys::SysError;
use crate::exit::ExitKind;
use crate::host::HostError;
use crate::image::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("setting up the container: {0}")]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{0}")]
    Refused(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// About a path or the filesystem inside an image (`rfake inspect`).
    #[error("image {}: {detail}", crate::text::shown(image))]
    Inside {
        image: std::path::PathBuf,
        detail: String,
        /// A path that is not there (66) rather than an unreadable image (65).
        missing: bool,
    },
    #[error("{0}")]
    Sys(#[from] SysError),
    #[error(transparent)]
    Bind(#[from] crate::container::binds::BindError),
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Build(#[from] crate::build::run::BuildError),
    #[error(transparent)]
    Join(#[from] crate::launch::rendezvous::JoinError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Overlay(#[from] crate::overlay::OverlayError),
    /// A failure of a pull or a definition build outside the registry
    /// client, the cache and the build's own errors: its exit code and its
    /// one-line message.
    #[error("{message}")]
    Failed { kind: ExitKind, message: String },
}

impl Error {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Error::Usage(_) => ExitKind::Usage,
            Error::Image(e) => e.exit_kind(),
            Error::Host(_) => ExitKind::HostUnavailable,
            Error::Namespace(NamespaceError::Unavailable(_)) => ExitKind::HostUnavailable,
            Error::Namespace(NamespaceError::Map(_)) => ExitKind::OsError,
            Error::Rootfs(RootfsError::Image(e)) => e.exit,
            Error::Rootfs(RootfsError::MissingSource { .. }) => ExitKind::NoInput,
            Error::Rootfs(
                RootfsError::Destination { .. }
                | RootfsError::Source { .. }
                | RootfsError::WouldCreateOnHost { .. },
            ) => ExitKind::Refused,
            Error::Rootfs(RootfsError::KindMismatch { .. }) => ExitKind::Usage,
            // An upper layer on a file system overlayfs cannot use, or
            // one in use by another container.
            Error::Rootfs(RootfsError::Overlay { .. }) => ExitKind::HostUnavailable,
            Error::Rootfs(_) => ExitKind::OsError,
            Error::Command(e) => e.exit_kind(),
            Error::Refused(_) => ExitKind::Refused,
            Error::Internal(_) => ExitKind::Internal,
            Error::Inside { missing: true, .. } => ExitKind::NoInput,
            Error::Inside { .. } => ExitKind::BadImage,
            Error::Sys(_) => ExitKind::OsError,
            Error::Bind(_) => ExitKind::Usage,
            Error::Env(crate::env::EnvError::Unreadable { .. }) => ExitKind::NoInput,
            Error::Env(_) => ExitKind::Usage,
            Error::Config(e) => e.exit_kind(),
            Error::Build(e) => e.exit_kind(),
            Error::Failed { kind, .. } => *kind,
            Error::Cache(e) => e.exit_kind(),
            Error::Gpu(e) => e.exit_kind(),
            Error::Registry(e) => e.exit_kind(),
            Error::Overlay(e) => e.exit_kind(),
            Error::Join(crate::launch::rendezvous::JoinError::Foreign { .. }) => ExitKind::Refused,
            Error::Join(
                crate::launch::rendezvous::JoinError::Keeper { code, .. }
                | crate::launch::rendezvous::JoinError::Relayed { code, .. },
            ) => ExitKind::ALL
                .into_iter()
                .find(|k| k.code() == *code)
                .unwrap_or(ExitKind::OsError),
            Error::Join(_) => ExitKind::OsError,
        }
    }
}
