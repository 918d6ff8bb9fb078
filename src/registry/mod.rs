//! Registries: image references, credentials, the OCI distribution
//! protocol (`client`), and resolving a reference to one image
//! (`manifest`). The cache and the pull build on these.

pub mod auth;
pub mod client;
mod error;
pub mod manifest;
pub mod reference;

pub use client::{Client, ClientOptions};
pub use error::RegistryError;
pub use manifest::{Content, Descriptor, resolve};
pub use reference::{ImageRef, Reference};

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod live_tests;
