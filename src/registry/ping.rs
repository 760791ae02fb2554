//! The API check (`GET /v2/`) that learns the registry's challenge, and the plain-HTTP policy:
//! plain HTTP only to loopback or to registries listed as insecure.

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;

use super::auth::{Challenge, parse_challenge};
use super::events;
use super::transport::{header_str, read_text};
use super::{RegistryClient, RegistryError};
use crate::reference::{Registry, Scheme, is_loopback_host};

impl RegistryClient {
    /// Checks the registry answers its API, and learns how it asks for authentication.
    pub(super) async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base_url);
        let what = "the API check (/v2/)";
        let response = self
            .send_with_retry(None, what, || self.http.get(&url))
            .await?;
        match response.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => {
                let challenge = header_str(response.headers(), WWW_AUTHENTICATE.as_str())
                    .as_deref()
                    .and_then(parse_challenge);
                events::trace(&format!(
                    "{} asks for {}",
                    self.registry,
                    match &challenge {
                        Some(Challenge::Basic) => "Basic credentials".to_string(),
                        Some(Challenge::Bearer { realm, .. }) =>
                            format!("a bearer token from {realm}"),
                        None => "authentication of an unknown kind".to_string(),
                    }
                ));
                self.auth_state().challenge = challenge;
                Ok(())
            }
            StatusCode::BAD_REQUEST if self.base_url.starts_with("http://") => {
                let body = read_text(response, self.retry.stall).await;
                if body.to_ascii_lowercase().contains("https") {
                    Err(RegistryError::HttpsPort {
                        url: self.base_url.clone(),
                        hint: format!(
                            "write the registry as https://{} (and trust its CA with `ca-cert` or --ca-cert if it is private)",
                            self.registry
                        ),
                    })
                } else {
                    Err(RegistryError::Rejected {
                        registry: self.registry.to_string(),
                        what: what.into(),
                        status: 400,
                        detail: format!(" ({})", body.chars().take(200).collect::<String>().trim()),
                        hint: "is this address an OCI registry?".into(),
                    })
                }
            }
            StatusCode::NOT_FOUND => Err(RegistryError::Rejected {
                registry: self.registry.to_string(),
                what: what.into(),
                status: 404,
                detail: String::new(),
                hint: format!(
                    "{} answers HTTP but has no registry API at /v2/: check the address and port",
                    self.base_url
                ),
            }),
            s => Err(self.status_error(None, what, s, response).await),
        }
    }

    /// Whether plain HTTP may go to this URL's host: loopback, or listed in `insecure`.
    pub(super) fn plain_http_allowed(&self, url: &url::Url) -> bool {
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
        Registry::parse(&authority).is_ok_and(|r| self.insecure.contains(&r))
    }
}

/// Plain HTTP goes only to loopback or to a registry listed in `insecure`: anything else is
/// refused before a request is made.
pub(super) fn check_plain_http_allowed(
    registry: &Registry,
    insecure: &[Registry],
) -> Result<(), RegistryError> {
    let plain = registry.without_scheme();
    if registry.scheme() == Some(Scheme::Http)
        && !registry.is_loopback()
        && !insecure.contains(&plain)
    {
        return Err(RegistryError::PlainHttpRefused {
            url: registry.to_string(),
            plain: plain.to_string(),
        });
    }
    Ok(())
}
