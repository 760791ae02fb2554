//! The plain-HTTP policy: plain HTTP goes only to loopback, or to registries listed as insecure.

use super::error::RegistryError;
use super::hints::{Hints, Problem};
use crate::reference::{Registry, Scheme, is_loopback_host};

/// Whether plain HTTP may go to this URL's host: loopback, or listed in `insecure`.
pub(super) fn plain_http_allowed(url: &url::Url, insecure: &[Registry]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if is_loopback_host(host) {
        return true;
    }
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Registry::parse(&authority).is_ok_and(|r| insecure.contains(&r))
}

/// Plain HTTP goes only to loopback or to a registry listed in `insecure`: anything else is
/// refused before a request is made.
pub(super) fn check_plain_http_allowed(
    registry: &Registry,
    insecure: &[Registry],
    hints: &dyn Hints,
) -> Result<(), RegistryError> {
    let plain = registry.without_scheme();
    if registry.scheme() == Some(Scheme::Http)
        && !registry.is_loopback()
        && !insecure.contains(&plain)
    {
        let plain = plain.to_string();
        return Err(RegistryError::PlainHttpRefused {
            url: registry.to_string(),
            hint: hints.hint(&Problem::PlainHttpRefused { authority: &plain }),
            plain,
        });
    }
    Ok(())
}
