//! The registry's one error type: each variant is one line naming the
//! reference, host or file, and maps to a documented exit code.

use std::path::PathBuf;

use crate::exit::ExitKind;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A malformed image reference or registry name (64).
    #[error("{input}: {detail}")]
    BadReference { input: String, detail: String },
    /// The host cannot be reached: unknown name, refused, reset, timed
    /// out, TLS failure (68).
    #[error("registry {host}: {detail}")]
    Unreachable { host: String, detail: String },
    /// The registry answered something rfake does not expect: 5xx, 429, an
    /// unknown status, a truncated body, a token endpoint without a token (76).
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },
    /// 401/403 (77): `detail` names the credential files consulted.
    #[error("{what}: {detail}")]
    Denied { what: String, detail: String },
    /// 404 for the name, tag or digest (66).
    #[error("{what}: not found in the registry ({detail})")]
    NotFound { what: String, detail: String },
    /// The content is unusable: malformed JSON, an unsupported media type, a
    /// digest or size mismatch, no manifest for the architecture (65).
    #[error("{what}: {detail}")]
    BadContent { what: String, detail: String },
    /// A credential or CA file that cannot be read or parsed, or written
    /// by `rfake registry login`.
    #[error("{}: {detail}", crate::text::shown(path))]
    File {
        path: PathBuf,
        detail: String,
        kind: ExitKind,
    },
    /// Writing a downloaded blob to its sink (the cache) failed (71).
    #[error("writing {what}: {source}")]
    Sink {
        what: String,
        source: std::io::Error,
    },
}

impl RegistryError {
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            RegistryError::BadReference { .. } => ExitKind::Usage,
            RegistryError::Unreachable { .. } => ExitKind::RegistryUnreachable,
            RegistryError::Protocol { .. } => ExitKind::RegistryProtocol,
            RegistryError::Denied { .. } => ExitKind::Refused,
            RegistryError::NotFound { .. } => ExitKind::NoInput,
            RegistryError::BadContent { .. } => ExitKind::BadImage,
            RegistryError::File { kind, .. } => *kind,
            RegistryError::Sink { .. } => ExitKind::OsError,
        }
    }

    pub(crate) fn bad_reference(input: &str, detail: impl Into<String>) -> RegistryError {
        RegistryError::BadReference {
            input: input.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_content(what: impl Into<String>, detail: impl Into<String>) -> RegistryError {
        RegistryError::BadContent {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn protocol(what: impl Into<String>, detail: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
