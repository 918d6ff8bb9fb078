//! SIF, the Singularity Image Format: reading a file's header and
//! descriptors ([`read`]) and writing one ([`write`]).

mod read;
pub mod write;

pub use read::*;
