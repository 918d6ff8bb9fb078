//! Exit codes: rfake's documented API (see `docs/exit-codes.md`).
//!
//! The payload's own status always passes through unchanged (0..=255, and
//! 128+N when it was killed by signal N). rfake's own failures use the
//! BSD `sysexits.h` values, so a job script can tell "the image was bad" from
//! "the host is not set up" without parsing messages; 126 and 127 follow the
//! shell convention for a command that cannot be run or found.

/// Why rfake itself failed; each variant is one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// The command line is wrong (clap usage errors included).
    Usage,
    /// The image exists but is not usable: not SquashFS/SIF/directory,
    /// corrupt, no root partition, wrong architecture.
    BadImage,
    /// The image (or another named input file) is missing or unreadable.
    NoInput,
    /// A host prerequisite is missing: user namespaces disabled, `/dev/fuse`
    /// unusable, no squashfuse installed.
    HostUnavailable,
    /// A kernel call failed while setting up the container.
    OsError,
    /// A bug or an unexpected state in rfake.
    Internal,
    /// Refused by policy: setuid/setgid install.
    Refused,
    /// The configuration file is invalid.
    Config,
    /// The command was found in the image but cannot be executed.
    CannotExecute,
    /// The command was not found in the image.
    CommandNotFound,
    /// A registry cannot be reached: unknown host, connection refused or
    /// reset, timeout, TLS failure.
    RegistryUnreachable,
    /// A registry answered something unexpected: 5xx, 429, an unhandled
    /// status, a truncated download, a token endpoint without a token.
    RegistryProtocol,
    /// An output file cannot be created (it exists, without `--force`).
    CannotCreate,
}

impl ExitKind {
    /// The process exit status for this failure.
    pub const fn code(self) -> u8 {
        match self {
            ExitKind::Usage => 64,               // EX_USAGE
            ExitKind::BadImage => 65,            // EX_DATAERR
            ExitKind::NoInput => 66,             // EX_NOINPUT
            ExitKind::RegistryUnreachable => 68, // EX_NOHOST
            ExitKind::HostUnavailable => 69,     // EX_UNAVAILABLE
            ExitKind::Internal => 70,            // EX_SOFTWARE
            ExitKind::OsError => 71,             // EX_OSERR
            ExitKind::CannotCreate => 73,        // EX_CANTCREAT
            ExitKind::RegistryProtocol => 76,    // EX_PROTOCOL
            ExitKind::Refused => 77,             // EX_NOPERM
            ExitKind::Config => 78,              // EX_CONFIG
            ExitKind::CannotExecute => 126,
            ExitKind::CommandNotFound => 127,
        }
    }

    /// Every kind, for documentation tests.
    pub const ALL: [ExitKind; 13] = [
        ExitKind::Usage,
        ExitKind::BadImage,
        ExitKind::NoInput,
        ExitKind::RegistryUnreachable,
        ExitKind::HostUnavailable,
        ExitKind::Internal,
        ExitKind::OsError,
        ExitKind::CannotCreate,
        ExitKind::RegistryProtocol,
        ExitKind::Refused,
        ExitKind::Config,
        ExitKind::CannotExecute,
        ExitKind::CommandNotFound,
    ];
}

/// Exit status for a payload that was killed by `signal`.
pub const fn signal_status(signal: i32) -> u8 {
    (128 + signal) as u8
}
