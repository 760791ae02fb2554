//! What a failure means, as a [`RegistryError`] with a hint: an answer with an unexpected status,
//! and a transport error (TLS, a plain-HTTP port, redirects, an unreachable address).

use std::time::Duration;

use reqwest::{Response, StatusCode};

use super::api_error::ErrorCode;
use super::bounded::read_error_body;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::hints::{Hints, Problem};
use super::http::{is_certificate_problem, is_plain_http_answer, reqwest_chain, source_of};
use super::http_client::RedirectTrouble;
use crate::reference::{Registry, Repository};

impl RegistryClient {
    /// The error an answer with an unexpected `status` stands for, with the registry's own
    /// message (read bounded) and a hint for what to do next.
    pub(super) async fn status_error(
        &self,
        repo: Option<&Repository>,
        what: &str,
        status: StatusCode,
        response: Response,
    ) -> RegistryError {
        let registry = self.registry.to_string();
        match status {
            // The token service accepted our credentials and issued a fresh token, and the
            // registry still said 401: the credentials were not what was refused.
            StatusCode::UNAUTHORIZED if self.uses_tokens() && self.credential.is_some() => {
                RegistryError::Unauthorized {
                    registry,
                    repository: repo.map(|r| r.to_string()).unwrap_or_else(|| "/v2/".into()),
                    problem: "fresh tokens from the token service were not accepted for".into(),
                    status: status.as_u16(),
                    hint: "the token service granted a token, but the registry refuses it: check that the registry and its token service agree (service name, issuer, certificate) and that the clocks are right".into(),
                }
            }
            StatusCode::UNAUTHORIZED => {
                self.unauthorized(repo.map(|r| r.as_str()).unwrap_or("/v2/"), status)
            }
            StatusCode::FORBIDDEN => {
                // 403 is "denied": permissions, or a full quota (said only in the body).
                let body = read_error_body(response, self.retry.stall).await;
                if body.says("quota") || body.says("storage limit") {
                    RegistryError::Rejected {
                        registry,
                        what: what.to_string(),
                        status: status.as_u16(),
                        detail: body.shown,
                        errors: body.errors,
                        hint: "the repository's storage quota is used up; free space (delete old tags) or raise the quota".into(),
                    }
                } else {
                    self.unauthorized(repo.map(|r| r.as_str()).unwrap_or("/v2/"), status)
                }
            }
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry,
                what: what.to_string(),
                hint: format!(
                    "check the name and tag; the registry was asked at {}",
                    self.base_url
                ),
            },
            StatusCode::PAYLOAD_TOO_LARGE => {
                let body = read_error_body(response, self.retry.stall).await;
                RegistryError::Rejected {
                    registry,
                    what: what.to_string(),
                    status: status.as_u16(),
                    detail: body.shown,
                    errors: body.errors,
                    hint: "the blob is larger than the registry (or a proxy in front of it) accepts; raise its upload limit or use a smaller base".into(),
                }
            }
            _ => {
                let body = read_error_body(response, self.retry.stall).await;
                let denied =
                    body.has(&ErrorCode::Denied) || body.says("denied") || body.says("quota");
                let hint = if denied {
                    "the registry denied the request; check the repository's permissions and storage quota".to_string()
                } else if status == StatusCode::TOO_MANY_REQUESTS {
                    self.hints.hint(&Problem::RateLimited)
                } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                    self.hints.hint(&Problem::KeptFailing {
                        attempts: self.retry.attempts,
                    })
                } else {
                    String::new()
                };
                RegistryError::Rejected {
                    registry,
                    what: what.to_string(),
                    status: status.as_u16(),
                    detail: body.shown,
                    errors: body.errors,
                    hint,
                }
            }
        }
    }
}

/// Adds how often and how long we tried to an unreachable error.
pub(super) fn with_tries(error: RegistryError, attempts: u32, elapsed: Duration) -> RegistryError {
    match error {
        RegistryError::Unreachable {
            url, cause, hint, ..
        } => RegistryError::Unreachable {
            url,
            tried: if attempts == 1 {
                format!(" (1 attempt, {:.1}s)", elapsed.as_secs_f32())
            } else {
                format!(" ({attempts} attempts over {:.1}s)", elapsed.as_secs_f32())
            },
            cause,
            hint,
        },
        other => other,
    }
}

pub(super) fn transport_error(
    base_url: &str,
    registry: &Registry,
    ca_cert: Option<&std::path::Path>,
    hints: &dyn Hints,
    e: &reqwest::Error,
) -> RegistryError {
    if let Some(trouble) = source_of::<RedirectTrouble>(e) {
        return RegistryError::Redirects {
            registry: registry.to_string(),
            trouble: trouble.to_string(),
            chain: trouble.chain.join(" → "),
        };
    }
    let chain = reqwest_chain(e);
    let lower = chain.to_ascii_lowercase();
    let https = base_url.starts_with("https://");
    if https && is_plain_http_answer(&lower) {
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: "the server sent an HTTP response to an HTTPS client (it speaks plain HTTP)"
                .into(),
            hint: hints.hint(&Problem::PlainHttpServer { registry }),
        };
    }
    if https && is_certificate_problem(&lower) {
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: format!("the registry's certificate was not accepted: {chain}"),
            hint: hints.hint(&Problem::UntrustedCertificate { registry, ca_cert }),
        };
    }
    if https && (lower.contains("tls") || lower.contains("handshake")) {
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: chain,
            hint: "the TLS handshake failed; check that the port speaks HTTPS".into(),
        };
    }
    RegistryError::Unreachable {
        url: base_url.to_string(),
        tried: String::new(),
        cause: chain,
        hint: hints.hint(&Problem::Unreachable { registry }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::client::tests::plain_http;

    #[tokio::test]
    async fn transport_errors_hide_the_upload_session() {
        // Nothing listens on this port: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/v2/a/blobs/uploads/1?_state=c2VjcmV0Cg");
        let e = plain_http().put(&url).send().await.unwrap_err();
        assert!(
            e.to_string().contains("c2VjcmV0Cg"),
            "reqwest shows the URL: {e}"
        );
        let registry = Registry::parse(&format!("127.0.0.1:{port}")).unwrap();
        let err = transport_error(
            &format!("http://127.0.0.1:{port}"),
            &registry,
            None,
            &crate::registry::hints::DefaultHints,
            &e,
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("c2VjcmV0Cg"), "{text}");
        assert!(text.contains("_state=…"), "{text}");
    }
}
