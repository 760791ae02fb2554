//! The API check (`GET /v2/`) that learns how the registry asks for authentication.

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;

use super::bounded::read_text;
use super::challenge::{Challenge, parse_challenge};
use super::client::RegistryClient;
use super::error::RegistryError;
use super::hints::Problem;
use super::http::header_str;

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
                self.events.trace(&format!(
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
                        hint: self.hints.hint(&Problem::HttpsPort {
                            registry: &self.registry,
                        }),
                    })
                } else {
                    Err(RegistryError::Rejected {
                        registry: self.registry.to_string(),
                        what: what.into(),
                        status: 400,
                        detail: format!(" ({})", body.chars().take(200).collect::<String>().trim()),
                        errors: Vec::new(),
                        hint: "is this address an OCI registry?".into(),
                    })
                }
            }
            StatusCode::NOT_FOUND => Err(RegistryError::Rejected {
                registry: self.registry.to_string(),
                what: what.into(),
                status: 404,
                detail: String::new(),
                errors: Vec::new(),
                hint: format!(
                    "{} answers HTTP but has no registry API at /v2/: check the address and port",
                    self.base_url
                ),
            }),
            s => Err(self.status_error(None, what, s, response).await),
        }
    }
}
