//! Registry addresses and image references, following the grammar of the OCI distribution spec
//! and Docker's `reference` package: `host[:port][/path]`, `[::1]:5000`, `localhost`, lowercase
//! repository paths, tags and digests.
//!
//! One file per part: `registry` (hosts, ports, schemes, and a registry with a namespace),
//! `repository` (repository paths and tags), `digest`, `image_ref` (the full reference parser),
//! and `redact` (the userinfo redaction every message shown to people goes through).

mod digest;
mod image_ref;
mod redact;
mod registry;
mod repository;

pub use digest::Digest;
pub use image_ref::ImageRef;
pub use redact::redact_userinfo;
pub use registry::{Registry, RegistryLocation, Scheme, is_loopback_host};
pub use repository::{Repository, Tag};

/// Why a string is not a valid registry address or reference; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(pub String);

/// An error whose message may quote the input: any userinfo in it is hidden.
fn err<T>(msg: impl Into<String>) -> Result<T, ReferenceError> {
    Err(ReferenceError(redact_userinfo(&msg.into())))
}
