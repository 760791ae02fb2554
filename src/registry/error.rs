//! What can go wrong talking to a registry, sorted by what the user can do about it, with hints
//! that name the registry and the next step.

use std::time::Duration;

use miette::Diagnostic;
use reqwest::{Response, StatusCode};

use super::RegistryClient;
use super::transport::{RedirectTrouble, error_detail, redact_url};
use crate::reference::{Registry, Repository};

/// Errors sorted by what the user can do about them.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RegistryError {
    #[error("cannot reach the registry at {url}{tried}: {cause}")]
    #[diagnostic(help("{hint}"))]
    Unreachable {
        url: String,
        tried: String,
        cause: String,
        hint: String,
    },

    /// A request sent round in circles by redirects (or through too many of them).
    #[error("{registry}: the request was {trouble}: {chain}")]
    #[diagnostic(help(
        "the registry, or a proxy in front of it, keeps sending this request on: check the address it advertises (distribution's `http.host`) and the proxy's redirect or rewrite rules"
    ))]
    Redirects {
        registry: String,
        trouble: String,
        chain: String,
    },

    #[error("TLS with {url} failed: {cause}")]
    #[diagnostic(help("{hint}"))]
    Tls {
        url: String,
        cause: String,
        hint: String,
    },

    /// A plain-HTTP request reached an HTTPS port (Go answers it with a 400).
    #[error("{url} is an HTTPS port, not plain HTTP")]
    #[diagnostic(help("{hint}"))]
    HttpsPort { url: String, hint: String },

    #[error("{registry}: {problem} `{repository}` (HTTP {status})")]
    #[diagnostic(help("{hint}"))]
    Unauthorized {
        registry: String,
        repository: String,
        problem: String,
        status: u16,
        hint: String,
    },

    #[error("{registry}: the token service {realm} is plain HTTP; not sending credentials there")]
    #[diagnostic(help(
        "credentials are only sent over HTTPS, or plain HTTP to a loopback address; configure the registry's token realm with https://"
    ))]
    CleartextRealm { registry: String, realm: String },

    #[error("{what} was not found in {registry}")]
    #[diagnostic(help("{hint}"))]
    NotFound {
        registry: String,
        what: String,
        hint: String,
    },

    #[error("{registry} rejected {what}: HTTP {status}{detail}")]
    #[diagnostic(help("{hint}"))]
    Rejected {
        registry: String,
        what: String,
        status: u16,
        detail: String,
        hint: String,
    },

    #[error("{registry} stored the manifest as {got}, but we sent {expected}")]
    DigestMismatch {
        registry: String,
        expected: String,
        got: String,
    },

    #[error("{registry} answered {what} with something we cannot read: {cause}")]
    Protocol {
        registry: String,
        what: String,
        cause: String,
    },

    /// The referrers fallback tag kept losing our entries to other pushes of the same image.
    #[error(
        "{registry}: the referrers tag {tag} still lacks {missing} after {attempts} writes; other pushes of the same image kept writing their own list over it"
    )]
    #[diagnostic(help(
        "the registry has no referrers API, so pushes that attach documents to one image take turns on one tag; push again when the others are done (already listed entries are kept)"
    ))]
    ReferrersContended {
        registry: String,
        tag: String,
        missing: String,
        attempts: u32,
    },

    #[error("reading the TLS settings: {0}")]
    TlsSetup(String),

    /// Plain HTTP to a host that is neither loopback nor listed in `insecure`: refused before
    /// any request is made.
    #[error("{url} is plain HTTP to a host that is not loopback; refusing to talk to it")]
    #[diagnostic(help(
        "if {plain} really serves plain HTTP, add `insecure = [\"{plain}\"]` to [package.metadata.cluster] (credentials are never sent over plain HTTP); otherwise use https://"
    ))]
    PlainHttpRefused { url: String, plain: String },

    /// A `*.localhost` name that resolves to something other than loopback addresses.
    #[error("{host} resolves to {addresses}, which are not loopback addresses")]
    #[diagnostic(help(
        "a `.localhost` name is treated as this machine only when it resolves to loopback addresses; fix the resolver or use 127.0.0.1"
    ))]
    NotLoopback { host: String, addresses: String },

    /// An answer larger than we accept for its kind (a hostile or broken registry).
    #[error("{registry} answered {what} with an answer larger than {limit}; not reading more")]
    TooLarge {
        registry: String,
        what: String,
        limit: String,
    },
    #[error("reading the blob to upload from {path}: {cause}")]
    #[diagnostic(help("it is in the layer cache under target/adapt-push; run the push again"))]
    LocalBlob { path: String, cause: String },

    /// A file uploaded as a blob does not hold it (found after the registry answered
    /// `DIGEST_INVALID`): sending it again cannot help.
    #[error("{path} does not hold blob {expected}: its content has digest {actual}")]
    #[diagnostic(help("the file was changed or damaged on disk after it was written"))]
    LocalBlobDamaged {
        path: String,
        expected: String,
        actual: String,
    },
}

impl RegistryError {
    /// A manifest or blob PUT lost a race with a concurrent push of the same blobs: the
    /// registry no longer sees a blob, or saw a half-written one.
    pub fn is_blob_race(&self) -> bool {
        matches!(self, RegistryError::Rejected { detail, .. }
            if ["BLOB_UNKNOWN", "DIGEST_INVALID", "BLOB_UPLOAD_UNKNOWN"]
                .iter()
                .any(|code| detail.contains(code)))
    }

    /// The registry found that the bytes it got do not have the digest they were sent as.
    pub fn is_digest_invalid(&self) -> bool {
        matches!(self, RegistryError::Rejected { detail, .. } if detail.contains("DIGEST_INVALID"))
    }

    /// A manifest PUT refused for its media type (older Quay, Artifactory and ECR setups answer
    /// OCI manifests with `MANIFEST_INVALID` or 415).
    pub fn refuses_media_type(&self) -> bool {
        match self {
            RegistryError::Rejected { status, detail, .. } => {
                let lower = detail.to_ascii_lowercase();
                *status == 415
                    || (*status == 400
                        && (lower.contains("manifest_invalid")
                            || lower.contains("unsupported")
                            || lower.contains("media type")))
            }
            _ => false,
        }
    }

    /// Whether this failure says the other scheme (HTTP vs HTTPS) is the one to use.
    pub(super) fn suggests_other_scheme(&self) -> bool {
        matches!(
            self,
            RegistryError::Tls { .. } | RegistryError::HttpsPort { .. }
        )
    }
}

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
                let detail = error_detail(response, self.retry.stall).await;
                let lower = detail.to_ascii_lowercase();
                if lower.contains("quota") || lower.contains("storage limit") {
                    RegistryError::Rejected {
                        registry,
                        what: what.to_string(),
                        status: status.as_u16(),
                        detail,
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
            StatusCode::PAYLOAD_TOO_LARGE => RegistryError::Rejected {
                registry,
                what: what.to_string(),
                status: status.as_u16(),
                detail: error_detail(response, self.retry.stall).await,
                hint: "the blob is larger than the registry (or a proxy in front of it) accepts; raise its upload limit or use a smaller base".into(),
            },
            _ => {
                let detail = error_detail(response, self.retry.stall).await;
                let lower = detail.to_ascii_lowercase();
                let hint = if lower.contains("denied") || lower.contains("quota") {
                    "the registry denied the request; check the repository's permissions and storage quota".to_string()
                } else if status == StatusCode::TOO_MANY_REQUESTS {
                    "the registry is rate-limiting this client; wait, or allow more time with --retry-timeout".to_string()
                } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                    format!(
                        "the registry kept failing through {} attempts; check its health, or allow more with --retry-attempts / --retry-timeout",
                        self.retry.attempts
                    )
                } else {
                    String::new()
                };
                RegistryError::Rejected {
                    registry,
                    what: what.to_string(),
                    status: status.as_u16(),
                    detail,
                    hint,
                }
            }
        }
    }
}

pub(super) fn unreachable_hint(registry: &Registry) -> String {
    format!(
        "check that the registry runs and that {registry} is its address as seen from here (the `external` side of a split registry)"
    )
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
        let plain = registry.without_scheme();
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: "the server sent an HTTP response to an HTTPS client (it speaks plain HTTP)"
                .into(),
            hint: if registry.is_loopback() {
                format!(
                    "{plain} serves plain HTTP: write it as http://{plain}, or without a scheme (loopback addresses may use plain HTTP)"
                )
            } else {
                format!(
                    "if {plain} really serves plain HTTP, list it in `insecure = [\"{plain}\"]` in [package.metadata.cluster] (credentials are never sent over plain HTTP)"
                )
            },
        };
    }
    if https && is_certificate_problem(&lower) {
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: format!("the registry's certificate was not accepted: {chain}"),
            hint: match ca_cert {
                Some(path) => format!(
                    "the certificate does not verify against the system's roots plus {}: check that it is the CA that signed the registry's certificate, and that the certificate names {}",
                    path.display(),
                    registry.without_scheme()
                ),
                None => "trust the registry's CA with `ca-cert = \"path/to/ca.pem\"` in [package.metadata.cluster], --ca-cert FILE, or SSL_CERT_FILE".into(),
            },
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
        hint: unreachable_hint(registry),
    }
}

/// The first error of type `T` in `e`'s chain of sources.
fn source_of<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

pub(super) fn is_plain_http_answer(lower_chain: &str) -> bool {
    lower_chain.contains("invalidcontenttype")
        || lower_chain.contains("corrupt message")
        || lower_chain.contains("http response to an https")
}

pub(super) fn is_certificate_problem(lower_chain: &str) -> bool {
    lower_chain.contains("certificate")
        || lower_chain.contains("unknownissuer")
        || lower_chain.contains("notvalidforname")
}

/// An error and its sources, without repeats: "client error (Connect): Connection refused".
/// Shared by everything that reports a library's error (registry, engine, publishing).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// A reqwest error's chain with the request URL's query values hidden (see [`redact_url`]).
pub(super) fn reqwest_chain(e: &reqwest::Error) -> String {
    let chain = error_chain(e);
    match e.url() {
        Some(url) => chain.replace(url.as_str(), &redact_url(url)),
        _ => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::plain_http;

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
        let err = transport_error(&format!("http://127.0.0.1:{port}"), &registry, None, &e);
        let text = format!("{err} {err:?}");
        assert!(!text.contains("c2VjcmV0Cg"), "{text}");
        assert!(text.contains("_state=…"), "{text}");
    }
}
