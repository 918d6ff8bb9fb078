//! Apptainer/Singularity definition files (`rfake build OUT.sif app.def`):
//! reading and checking them, nothing more. Building is the caller's.
//!
//! The file is read the way Apptainer reads it (`pkg/build/types/parser`
//! in apptainer/apptainer), so a definition that Apptainer builds means the
//! same here:
//!
//! - A line whose first word starts with `%` begins a section, wherever it
//!   is (even inside a script). Section names are matched without regard
//!   to case, as Apptainer lowercases them; what follows the name is the
//!   section's arguments, up to a `#`.
//! - The text before the first section is the header: `Key: value` lines,
//!   keys in any case, blank lines and `#` comments skipped, a `#` ending a
//!   value, a value continued by a trailing `\`.
//! - A line that starts (in column 1) with `Bootstrap:` in any case begins
//!   a new stage. Text before the first such line is a stage of its own
//!   unless it is only blank lines and comments.
//! - A section given twice is one section: the texts are joined, as in
//!   Apptainer. `%files` blocks stay apart (with their `from STAGE`).
//!
//! Whatever rfake cannot do yet, or will not do, is refused with the line
//! and the reason, never skipped: `%setup` and `%pre` (Apptainer runs them
//! on the host, as root), SCIF app sections, build arguments (`%arguments`,
//! `{{ NAME }}`), bootstrap agents other than those in [`Bootstrap`], and
//! header keys the agent does not use. Every error is one line,
//! `FILE:LINE: %section: problem` (or `FILE:LINE: Header: problem`).

mod header;
mod parse;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::exit::ExitKind;
use crate::input::InputError;
use crate::text::{io_text, one_line, shown};

/// The largest definition file read (the same cap as a recipe's).
pub const MAX_DEFINITION: u64 = 4 << 20;

/// A parsed, checked definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The file, as given.
    pub path: PathBuf,
    /// The whole text, as read (stored in the image as the definition).
    pub text: String,
    /// In file order; one unless the file has several `Bootstrap:` headers.
    /// Never empty.
    pub stages: Vec<Stage>,
}

/// One stage: a header and its sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `Stage: NAME`, unique in the file.
    pub name: Option<String>,
    pub header: Header,
    /// `%files` blocks in file order; `from` names an earlier stage.
    pub files: Vec<FilesBlock>,
    /// `%post`, run in the image as (fake) root. Apptainer runs it with
    /// `/bin/sh -e -x SCRIPT`, or `/bin/sh -e -x -c "SHELL SCRIPT"` when
    /// `shell` is given.
    pub post: Option<Script>,
    /// `%environment`: sourced at start, stored as
    /// `/.singularity.d/env/90-environment.sh`.
    pub environment: Option<Script>,
    /// `%runscript`, `%startscript`, `%test`: a first line `#!...` is the
    /// interpreter (Apptainer's rule); else `/bin/sh`.
    pub runscript: Option<Script>,
    pub startscript: Option<Script>,
    pub test: Option<Script>,
    /// `%help`, as written.
    pub help: Option<String>,
    /// `%labels`: `KEY VALUE` lines in file order; a key given again keeps
    /// its place and takes the later value (Apptainer keeps a map).
    pub labels: Vec<(String, String)>,
}

/// A stage's header: the bootstrap agent and every key, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub bootstrap: Bootstrap,
    /// The `Bootstrap:` line.
    pub line: usize,
    /// Every `Key: value` of the header (`Bootstrap` included), in order.
    pub keys: Vec<HeaderKey>,
}

impl Header {
    /// The key `name` (lower case: `from`, `osversion`...), if given.
    pub fn get(&self, name: &str) -> Option<&HeaderKey> {
        self.keys.iter().find(|k| k.key == name)
    }
}

/// One header `Key: value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderKey {
    /// Lower case, as Apptainer compares them.
    pub key: String,
    /// Trimmed, without a trailing `# comment`; continuation lines joined.
    pub value: String,
    /// Where it starts.
    pub line: usize,
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `Bootstrap: localimage`, `From: PATH` (a SIF, SquashFS or
    /// directory). Apptainer takes a relative PATH from the directory the
    /// build runs in, not the definition file's.
    LocalImage(PathBuf),
    /// `Bootstrap: oci-archive`, `From: PATH`.
    OciArchive(PathBuf),
    /// `Bootstrap: docker-archive`, `From: PATH`.
    DockerArchive(PathBuf),
    /// `Bootstrap: docker`, `From: REF`; `Registry:` and `Namespace:`
    /// already put in front (`REGISTRY/NAMESPACE/REF`), as Apptainer does.
    Docker(String),
    /// `Bootstrap: oras`, `From: REF` (without `oras://`).
    Oras(String),
    /// `Bootstrap: scratch`: an empty root.
    Scratch,
    /// `Bootstrap: debootstrap`.
    Debootstrap {
        /// `OSVersion:` (a suite: `bookworm`).
        os_version: String,
        /// `MirrorURL:`.
        mirror: String,
        /// `Include:` packages (Apptainer accepts spaces or commas between
        /// them).
        include: Vec<String>,
    },
}

/// One `%files [from STAGE]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesBlock {
    /// `from STAGE`: copy out of that (earlier) stage instead of the host.
    pub from: Option<String>,
    /// The `%files` line.
    pub line: usize,
    pub files: Vec<FileLine>,
}

/// One `SRC [DST]` line of `%files`: paths as written, quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLine {
    pub src: String,
    /// Absent: the same path as `src` in the image.
    pub dst: Option<String>,
    pub line: usize,
}

/// A script section. A section that holds only blank lines is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The lines after the section line, each ending in `\n`; a section
    /// given twice is both texts joined.
    pub text: String,
    /// `%post -c /bin/bash`: the words after `-c`, joined by spaces.
    pub shell: Option<String>,
    /// The (first) section line; the text starts on the next line.
    pub line: usize,
}

/// Why a definition file was not read.
#[derive(Debug, thiserror::Error)]
pub enum DefError {
    /// The file is missing or cannot be read (exit 66).
    #[error("{}: {}", shown(.path), io_text(.error))]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not a regular file, or too large (exit 65).
    #[error("{}: {problem}", shown(.path))]
    NotText { path: PathBuf, problem: String },
    /// Malformed, or asks for what rfake does not do (exit 65). `section`
    /// is `Header` or the section as `%post`.
    #[error("{}:{line}: {section}: {problem}", shown(.path))]
    Syntax {
        path: PathBuf,
        line: usize,
        section: String,
        problem: String,
    },
}

impl DefError {
    /// 66 (`NoInput`) for a file that cannot be read; 65 (`BadImage`,
    /// EX_DATAERR) for everything about its content.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            DefError::Unreadable { .. } => ExitKind::NoInput,
            DefError::NotText { .. } | DefError::Syntax { .. } => ExitKind::BadImage,
        }
    }

    /// The line, for an error about the content.
    #[cfg(test)]
    pub fn line(&self) -> Option<usize> {
        match self {
            DefError::Syntax { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Read and check the definition file at `path`.
pub fn parse(path: &Path) -> Result<Definition, DefError> {
    let bytes = crate::input::read_regular(path, MAX_DEFINITION).map_err(|e| match e {
        InputError::Io(error) => DefError::Unreadable {
            path: path.to_path_buf(),
            error,
        },
        other => DefError::NotText {
            path: path.to_path_buf(),
            problem: one_line(&other.to_string()),
        },
    })?;
    parse::definition(path, &bytes)
}

/// Whether `bytes` (the start of a file) read as a definition file: text
/// whose header, before any section or other line, has a `Bootstrap:` key
/// (in any case), after only blank lines, `#` comments and other header
/// keys Apptainer knows. For telling a definition file from the other
/// build sources; [`parse`] says what is wrong with it.
pub fn looks_like_definition(bytes: &[u8]) -> bool {
    header::looks_like_definition(bytes)
}
