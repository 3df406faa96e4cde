//! The registry client shared by hyperbuild and starget.
//!
//! - [`credentials`]: Docker `config.json`, podman `auth.json`, credential helpers, `login`.
//! - [`client`]: [`RegistryClient`], with Basic and bearer-token auth, retries and backoff.

pub mod client;
pub mod credentials;
pub mod error;
pub use oci_core::reference;

pub use client::{ClientConfig, RegistryClient};
pub use credentials::{Credential, CredentialStore};
pub use error::{ClientError, Result};
pub use oci_core::Platform;
pub use oci_core::Reference;
