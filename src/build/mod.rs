//! `rfake build OUT SOURCE`: make a single-file image without root.
//!
//! SOURCE (a directory, a root filesystem tarball, an OCI image, a recipe)
//! becomes a [`tree::Tree`] plus [`ImageMeta`]; the tree is written as
//! SquashFS in-process, wrapped in SIF when OUT ends in `.sif`, into a
//! temporary file beside OUT that is renamed over it only at the end.

// Nothing calls the parser yet: the build wires it next (the lead removes this).
#[allow(dead_code)]
pub mod deffile;
pub mod meta_files;
pub mod output;
pub mod run;
pub mod source;
pub mod spool;
pub mod tree;

use std::collections::BTreeMap;

/// What an image says about itself besides its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMeta {
    /// `NAME=value` settings, written to `/.rfake/environment`.
    pub env: Vec<(String, String)>,
    /// OCI `Entrypoint` and `Cmd`: the runscript runs them.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// OCI `WorkingDir`: the runscript starts there.
    pub workdir: Option<String>,
    /// An explicit runscript (a recipe's), instead of one generated from
    /// entrypoint/cmd.
    pub runscript: Option<String>,
    /// Labels, written to `/.rfake/labels.json` and a SIF JSON object.
    pub labels: BTreeMap<String, String>,
    /// The recipe text, stored as the SIF definition-file object.
    pub definition: Option<String>,
}
