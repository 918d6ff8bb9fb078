//! Registries: image references, credentials, the OCI distribution
//! protocol (`client`), and resolving a reference to one image
//! (`manifest`). The cache and the pull build on these.

pub mod auth;
pub mod client;
mod error;
pub mod manifest;
pub mod reference;

// The interface src/pull uses (until it does, only tests use parts of it).
#[allow(unused_imports)]
pub use client::{Client, ClientOptions, Fetched};
pub use error::RegistryError;
#[allow(unused_imports)]
pub use manifest::{Content, Descriptor, Resolved, resolve};
#[allow(unused_imports)]
pub use reference::{ImageRef, Reference};

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod live_tests;
