//! A client for the OCI distribution API: ping, auth challenges (Basic and Bearer tokens),
//! per-request retries, blob HEAD / mount / upload / download, manifest GET / PUT.

pub mod credentials;
pub mod pool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use miette::Diagnostic;
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

use crate::output;
use crate::reference::{Digest, Registry, Repository, Scheme};
use credentials::{Credential, Lookup};

/// Manifest types we ask for when reading.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Blobs up to this size go in one PUT; larger ones in one streamed PATCH then a closing PUT.
const MONOLITHIC_LIMIT: usize = 16 * 1024 * 1024;

/// Per-request retry bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    /// Give up once this much time has gone on one operation.
    pub total: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            total: Duration::from_secs(30),
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Registries (host[:port]) that may be spoken to over plain HTTP besides loopback.
    pub insecure: Vec<Registry>,
    pub ca_cert: Option<PathBuf>,
    pub retry: RetryPolicy,
}

/// Errors sorted by what the user can do about them.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RegistryError {
    #[error("cannot reach the registry at {url}: {cause}")]
    #[diagnostic(help("{hint}"))]
    Unreachable {
        url: String,
        cause: String,
        hint: String,
    },

    #[error("TLS with {url} failed: {cause}")]
    #[diagnostic(help("{hint}"))]
    Tls {
        url: String,
        cause: String,
        hint: String,
    },

    #[error("{registry} refused our credentials for `{repository}` ({status})")]
    #[diagnostic(help("{hint}"))]
    Unauthorized {
        registry: String,
        repository: String,
        status: u16,
        hint: String,
    },

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

    #[error("reading the TLS settings: {0}")]
    TlsSetup(String),
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope set.
    tokens: HashMap<String, Token>,
}

/// What a request needs access to, for bearer token scopes.
#[derive(Debug, Clone)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repo: &Repository) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }

    pub fn push(repo: &Repository) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }

    /// Push to `repo` and read `from`, for cross-repository mounts.
    pub fn push_and_mount(repo: &Repository, from: &Repository) -> Scope {
        Scope(vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }

    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// Outcome of a cross-repository mount request.
pub enum Mount {
    Mounted,
    /// The registry refused to mount and opened an upload session instead (202).
    UploadStarted(String),
}

/// A connection to one registry.
pub struct RegistryClient {
    http: reqwest::Client,
    registry: Registry,
    base_url: String,
    credential: Option<Credential>,
    lookup: Lookup,
    auth: Mutex<AuthState>,
    retry: RetryPolicy,
}

impl RegistryClient {
    /// Picks the scheme, finds credentials, and checks the registry answers `/v2/`.
    pub async fn connect(
        registry: &Registry,
        options: &ClientOptions,
    ) -> Result<Arc<RegistryClient>, RegistryError> {
        let http = http_client(options)?;
        let authority = registry.api_authority();
        let plain = registry.without_scheme();
        let schemes: Vec<Scheme> = match registry.scheme() {
            Some(s) => vec![s],
            None if registry.is_loopback() => vec![Scheme::Http],
            None if options.insecure.contains(&plain) => vec![Scheme::Https, Scheme::Http],
            None => vec![Scheme::Https],
        };

        let lookup_registry = registry.clone();
        let mut lookup = tokio::task::spawn_blocking(move || credentials::lookup(&lookup_registry))
            .await
            .unwrap_or_default();
        for w in lookup.warnings.drain(..) {
            output::warn(&w);
        }

        let mut last_error = None;
        for scheme in schemes {
            let base_url = match scheme {
                Scheme::Http => format!("http://{authority}"),
                Scheme::Https => format!("https://{authority}"),
            };
            let mut credential = lookup.credential.clone();
            if scheme == Scheme::Http && !registry.is_loopback() && credential.is_some() {
                output::warn(&format!(
                    "not sending credentials for {registry} over plain HTTP; pushing anonymously"
                ));
                credential = None;
            }
            let client = RegistryClient {
                http: http.clone(),
                registry: registry.clone(),
                base_url,
                credential,
                lookup: lookup.clone(),
                auth: Mutex::new(AuthState::default()),
                retry: options.retry,
            };
            match client.ping().await {
                Ok(()) => {
                    output::trace(&format!(
                        "{} answers at {} ({})",
                        registry,
                        client.base_url,
                        match &lookup.source {
                            Some(s) => format!("credentials from {s}"),
                            None => "anonymous".into(),
                        }
                    ));
                    return Ok(Arc::new(client));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| RegistryError::Unreachable {
            url: registry.to_string(),
            cause: "no scheme to try".into(),
            hint: String::new(),
        }))
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base_url);
        let response = self
            .send_with_retry(None, "the API check (/v2/)", || self.http.get(&url))
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            s => Err(self.rejected("the API check (/v2/)", s, response).await),
        }
    }

    /// Does the repository have this blob?
    pub async fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url);
        let what = format!("a check for blob {}", short(digest));
        let response = self
            .send_with_retry(Some(&Scope::push(repo)), &what, || self.http.head(&url))
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.status_error(repo, &what, s, response).await),
        }
    }

    /// Asks the registry to link a blob from another repository of the same registry.
    pub async fn mount_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<Mount, RegistryError> {
        let url = format!(
            "{}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}",
            self.base_url
        );
        let what = format!("mounting blob {} from {from}", short(digest));
        let scope = Scope::push_and_mount(repo, from);
        let response = self
            .send_with_retry(Some(&scope), &what, || {
                self.http.post(&url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::UploadStarted(self.location(&response, &what)?)),
            s => Err(self.status_error(repo, &what, s, response).await),
        }
    }

    /// Opens an upload session; returns its URL.
    async fn start_upload(&self, repo: &Repository, what: &str) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base_url);
        let response = self
            .send_with_retry(Some(&Scope::push(repo)), what, || {
                self.http.post(&url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::CREATED => self.location(&response, what),
            s => Err(self.status_error(repo, what, s, response).await),
        }
    }

    /// Uploads an in-memory blob. A failed transfer restarts with a fresh upload session, since a
    /// broken session cannot be trusted to resume; the whole thing is bounded by the retry policy.
    pub async fn upload_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
        bytes: Bytes,
        progress: &output::Progress,
        mut session: Option<String>,
    ) -> Result<(), RegistryError> {
        let what = format!("the upload of blob {}", short(digest));
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let location = match session.take() {
                Some(l) => l,
                None => self.start_upload(repo, &what).await?,
            };
            progress.reset();
            let result = if bytes.len() <= MONOLITHIC_LIMIT {
                self.put_blob(repo, &location, digest, Some(bytes.clone()), progress)
                    .await
            } else {
                match self
                    .patch_blob(repo, &location, bytes.clone(), progress)
                    .await
                {
                    Ok(next) => self.put_blob(repo, &next, digest, None, progress).await,
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    if attempt >= self.retry.attempts || started.elapsed() >= self.retry.total {
                        return Err(e);
                    }
                    let delay = self.backoff(attempt, None);
                    output::detail(&format!(
                        "{e}; starting the upload again in {:.1}s",
                        delay.as_secs_f32()
                    ));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Uploads a blob from a stream (a base layer read from another registry). One attempt: the
    /// caller restarts the whole copy, since the source stream cannot be rewound.
    pub async fn upload_stream(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
        session: Option<String>,
    ) -> Result<(), RegistryError> {
        let what = format!("the upload of blob {}", short(digest));
        let location = match session {
            Some(l) => l,
            None => self.start_upload(repo, &what).await?,
        };
        let url = with_digest(&location, digest);
        let request = self
            .authorize(Some(&Scope::push(repo)), self.http.put(&url))
            .await?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            s => Err(self.status_error(repo, &what, s, response).await),
        }
    }

    async fn put_blob(
        &self,
        repo: &Repository,
        location: &str,
        digest: &Digest,
        body: Option<Bytes>,
        progress: &output::Progress,
    ) -> Result<(), Attempt> {
        let url = with_digest(location, digest);
        let mut request = self
            .authorize(Some(&Scope::push(repo)), self.http.put(&url))
            .await
            .map_err(Attempt::Fatal)?;
        request = match body {
            Some(bytes) => request
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, bytes.len())
                .body(progress_body(bytes, progress.clone())),
            None => request.header(CONTENT_LENGTH, 0),
        };
        let what = format!("the upload of blob {}", short(digest));
        self.finish_transfer(
            repo,
            &what,
            request,
            &[StatusCode::CREATED, StatusCode::NO_CONTENT, StatusCode::OK],
        )
        .await
        .map(|_| ())
    }

    async fn patch_blob(
        &self,
        repo: &Repository,
        location: &str,
        bytes: Bytes,
        progress: &output::Progress,
    ) -> Result<String, Attempt> {
        let request = self
            .authorize(Some(&Scope::push(repo)), self.http.patch(location))
            .await
            .map_err(Attempt::Fatal)?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, bytes.len())
            .body(progress_body(bytes, progress.clone()));
        let response = self
            .finish_transfer(
                repo,
                "a blob upload (PATCH)",
                request,
                &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT],
            )
            .await?;
        self.location(&response, "a blob upload (PATCH)")
            .map_err(Attempt::Fatal)
    }

    /// Sends a transfer request once, sorting failures into retry-the-upload and give-up.
    async fn finish_transfer(
        &self,
        repo: &Repository,
        what: &str,
        request: RequestBuilder,
        ok: &[StatusCode],
    ) -> Result<Response, Attempt> {
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let err = self.transport_error(&e);
                return Err(if is_retryable_transport(&e) {
                    Attempt::Retry(err)
                } else {
                    Attempt::Fatal(err)
                });
            }
        };
        let status = response.status();
        if ok.contains(&status) {
            return Ok(response);
        }
        let retry = is_retryable_status(status) || status == StatusCode::NOT_FOUND;
        let err = self.status_error(repo, what, status, response).await;
        Err(if retry {
            Attempt::Retry(err)
        } else {
            Attempt::Fatal(err)
        })
    }

    /// Opens a blob for reading (streaming).
    pub async fn get_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Response, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url);
        let what = format!("blob {} of {repo}", short(digest));
        let response = self
            .send_with_retry(Some(&Scope::pull(repo)), &what, || self.http.get(&url))
            .await?;
        match response.status() {
            s if s.is_success() => Ok(response),
            s => Err(self.status_error(repo, &what, s, response).await),
        }
    }

    /// Reads a small blob (a config) whole and checks its digest.
    pub async fn get_blob_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Bytes, RegistryError> {
        let response = self.get_blob(repo, digest).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let actual = Digest::sha256_of(&bytes);
        if digest.as_str().starts_with("sha256:") && actual != *digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.to_string(),
                expected: digest.to_string(),
                got: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Fetches a manifest by tag or digest: (media type, exact bytes, digest of those bytes).
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<(String, Bytes, Digest), RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base_url);
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .send_with_retry(Some(&Scope::pull(repo)), &what, || {
                self.http.get(&url).header("Accept", MANIFEST_ACCEPT)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(repo, &what, response.status(), response)
                .await);
        }
        let media_type = header_str(response.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let digest = Digest::sha256_of(&bytes);
        if reference.starts_with("sha256:") && reference != digest.as_str() {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.to_string(),
                expected: reference.to_string(),
                got: digest.to_string(),
            });
        }
        let media_type = match media_type.split(';').next().map(str::trim) {
            Some(m) if !m.is_empty() && m != "application/json" => m.to_string(),
            // Some registries send no useful type: read it from the document.
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| crate::image::OCI_MANIFEST.to_string()),
        };
        Ok((media_type, bytes, digest))
    }

    /// Uploads a manifest under `reference` and checks the registry stored exactly our bytes.
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &Bytes,
        expected: &Digest,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base_url);
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .send_with_retry(Some(&Scope::push(repo)), &what, || {
                self.http
                    .put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(repo, &what, response.status(), response)
                .await);
        }
        if let Some(got) = header_str(response.headers(), "docker-content-digest")
            && got != expected.as_str()
        {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.to_string(),
                expected: expected.to_string(),
                got,
            });
        }
        Ok(())
    }

    /// Sends a request built by `make`, authenticating on a challenge and retrying transient
    /// failures (connection errors, 408, 429, 5xx) with backoff, within the retry policy.
    async fn send_with_retry(
        &self,
        scope: Option<&Scope>,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let started = Instant::now();
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let request = self.authorize(scope, make()).await?;
            let outcome = request.send().await;
            let budget_left = attempt < self.retry.attempts && started.elapsed() < self.retry.total;
            match outcome {
                Err(e) => {
                    let err = self.transport_error(&e);
                    if !is_retryable_transport(&e) || !budget_left {
                        return Err(err);
                    }
                    let delay = self.backoff(attempt, None);
                    output::detail(&format!(
                        "{what}: {err}; retrying in {:.1}s",
                        delay.as_secs_f32()
                    ));
                    tokio::time::sleep(delay).await;
                }
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && scope.is_some()
                        && !reauthenticated =>
                {
                    reauthenticated = true;
                    let challenge = response
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    let Some(challenge) = challenge else {
                        return Ok(response);
                    };
                    let mut state = self.auth.lock().await;
                    state.challenge = Some(challenge);
                    state.tokens.clear();
                    attempt -= 1;
                }
                Ok(response) if is_retryable_status(response.status()) && budget_left => {
                    let retry_after = header_str(response.headers(), "retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let delay = self.backoff(attempt, retry_after.map(Duration::from_secs));
                    output::detail(&format!(
                        "{what}: {} answered {}; retrying in {:.1}s",
                        self.registry,
                        response.status(),
                        delay.as_secs_f32()
                    ));
                    tokio::time::sleep(delay).await;
                }
                Ok(response) => return Ok(response),
            }
        }
    }

    /// Exponential backoff with full jitter, or the server's Retry-After when it gave one.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.retry.max_delay.max(Duration::from_secs(1)) * 2);
        }
        let exp = self
            .retry
            .first_delay
            .saturating_mul(1u32 << attempt.min(10));
        let cap = exp.min(self.retry.max_delay);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        cap.mul_f64(jitter)
    }

    /// Adds the Authorization header the last challenge calls for.
    async fn authorize(
        &self,
        scope: Option<&Scope>,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, RegistryError> {
        let Some(scope) = scope else {
            return Ok(request);
        };
        let challenge = self.auth.lock().await.challenge.clone();
        let header = match (&challenge, &self.credential) {
            (None, _) => None,
            (Some(Challenge::Basic), Some(Credential::Basic { username, password })) => {
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                ))
            }
            (Some(Challenge::Basic), _) => None,
            (Some(Challenge::Bearer { .. }), Some(Credential::RegistryToken(t))) => {
                Some(format!("Bearer {t}"))
            }
            (Some(Challenge::Bearer { realm, service }), _) => Some(format!(
                "Bearer {}",
                self.token(realm, service.as_deref(), scope).await?
            )),
        };
        Ok(match header {
            Some(h) => {
                let mut value = HeaderValue::from_str(&h).map_err(|_| RegistryError::Protocol {
                    registry: self.registry.to_string(),
                    what: "the token endpoint".into(),
                    cause: "the token has characters that cannot go in a header".into(),
                })?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
            None => request,
        })
    }

    /// A bearer token for `scope`, from the cache or the token endpoint.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<String, RegistryError> {
        let key = scope.key();
        if let Some(t) = self.auth.lock().await.tokens.get(&key)
            && t.expires > Instant::now()
        {
            return Ok(t.value.clone());
        }
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in &scope.0 {
            query.push(("scope", s));
        }
        let request = match &self.credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", "cargo-adapt-push"),
                ];
                form.extend(query.iter().cloned());
                self.http.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            _ => self.http.get(realm).query(&query),
        };
        output::trace(&format!(
            "requesting a token from {realm} for {}",
            scope.key()
        ));
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(
                self.unauthorized(scope.0.first().map(String::as_str).unwrap_or(""), status)
            );
        }
        if !status.is_success() {
            return Err(RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: format!("the token endpoint {realm}"),
                cause: format!("HTTP {status}"),
            });
        }
        let text = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let body: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: format!("the token endpoint {realm}"),
                cause: e.to_string(),
            })?;
        let value = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: format!("the token endpoint {realm}"),
                cause: "no token in the answer".into(),
            })?
            .to_string();
        let lifetime = body
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .max(10);
        // Renew a little early so a token never expires mid-request.
        let expires = Instant::now() + Duration::from_secs(lifetime.saturating_sub(5));
        self.auth.lock().await.tokens.insert(
            key,
            Token {
                value: value.clone(),
                expires,
            },
        );
        Ok(value)
    }

    fn location(&self, response: &Response, what: &str) -> Result<String, RegistryError> {
        let raw = header_str(response.headers(), LOCATION.as_str()).ok_or_else(|| {
            RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: what.to_string(),
                cause: "no Location header".into(),
            }
        })?;
        // Location may be relative to the registry.
        Ok(
            if raw.starts_with("http://") || raw.starts_with("https://") {
                raw
            } else {
                format!(
                    "{}{}{}",
                    self.base_url,
                    if raw.starts_with('/') { "" } else { "/" },
                    raw
                )
            },
        )
    }

    fn unauthorized(&self, repository: &str, status: StatusCode) -> RegistryError {
        let repository = repository
            .strip_prefix("repository:")
            .and_then(|r| r.split(':').next())
            .unwrap_or(repository)
            .to_string();
        let source = match &self.lookup.source {
            Some(s) => format!("credentials came from {s}"),
            None => format!(
                "no credentials were found (looked in: {})",
                self.lookup.searched.join(", ")
            ),
        };
        RegistryError::Unauthorized {
            registry: self.registry.to_string(),
            repository,
            status: status.as_u16(),
            hint: format!(
                "{source}. Log in with `docker login {}`, or set ADAPT_PUSH_USERNAME and ADAPT_PUSH_PASSWORD",
                self.registry
            ),
        }
    }

    async fn rejected(&self, what: &str, status: StatusCode, response: Response) -> RegistryError {
        let detail = error_detail(response).await;
        RegistryError::Rejected {
            registry: self.registry.to_string(),
            what: what.to_string(),
            status: status.as_u16(),
            detail,
            hint: String::new(),
        }
    }

    async fn status_error(
        &self,
        repo: &Repository,
        what: &str,
        status: StatusCode,
        response: Response,
    ) -> RegistryError {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.unauthorized(repo.as_str(), status),
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                registry: self.registry.to_string(),
                what: what.to_string(),
                hint: format!("check the name and tag; the registry was asked at {}", self.base_url),
            },
            StatusCode::PAYLOAD_TOO_LARGE => RegistryError::Rejected {
                registry: self.registry.to_string(),
                what: what.to_string(),
                status: status.as_u16(),
                detail: error_detail(response).await,
                hint: "the blob is larger than the registry accepts; raise its upload limit or use a smaller base".into(),
            },
            _ => {
                let detail = error_detail(response).await;
                let hint = if detail.contains("DENIED") || detail.to_ascii_lowercase().contains("quota") {
                    "the registry denied the request; check the repository's permissions and quota".into()
                } else {
                    String::new()
                };
                RegistryError::Rejected {
                    registry: self.registry.to_string(),
                    what: what.to_string(),
                    status: status.as_u16(),
                    detail,
                    hint,
                }
            }
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> RegistryError {
        transport_error(&self.base_url, &self.registry, e)
    }
}

enum Attempt {
    Retry(RegistryError),
    Fatal(RegistryError),
}

fn transport_error(base_url: &str, registry: &Registry, e: &reqwest::Error) -> RegistryError {
    let chain = error_chain(e);
    let lower = chain.to_ascii_lowercase();
    let https = base_url.starts_with("https://");
    if https
        && (lower.contains("certificate")
            || lower.contains("unknownissuer")
            || lower.contains("invalid peer"))
    {
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: chain,
            hint: "trust the registry's CA with `ca-cert` in [package.metadata.cluster], --ca-cert, or SSL_CERT_FILE".into(),
        };
    }
    if https
        && (lower.contains("invalidcontenttype")
            || lower.contains("corrupt message")
            || lower.contains("received corrupt")
            || lower.contains("http response to an https"))
    {
        return RegistryError::Tls {
            url: base_url.to_string(),
            cause: "the server answered in plain HTTP to an HTTPS client".into(),
            hint: format!(
                "if {registry} really serves plain HTTP, list it in `insecure = [\"{}\"]` or write the address as http://{}",
                registry.without_scheme(),
                registry.without_scheme()
            ),
        };
    }
    RegistryError::Unreachable {
        url: base_url.to_string(),
        cause: chain,
        hint: format!(
            "check that the registry runs and that {registry} is the address reachable from here (the `external` side of a split registry)"
        ),
    }
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![];
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

fn is_retryable_transport(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    let chain = error_chain(e).to_ascii_lowercase();
    // A certificate problem will not go away by asking again.
    !(chain.contains("certificate")
        || chain.contains("unknownissuer")
        || chain.contains("invalidcontenttype"))
}

fn is_retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS
}

/// The registry's own error message (`{"errors":[{"code","message"}]}`), shortened.
async fn error_detail(response: Response) -> String {
    let Ok(text) = response.text().await else {
        return String::new();
    };
    let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let summary = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.get("code").and_then(|c| c.as_str()).unwrap_or(""),
                        e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                    )
                    .trim()
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| text.chars().take(200).collect());
    if summary.trim().is_empty() {
        String::new()
    } else {
        format!(" ({})", summary.trim())
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn short(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}…", &hex[..hex.len().min(12)])
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_auth_params(params);
            let realm = params.get("realm")?.clone();
            Some(Challenge::Bearer {
                realm,
                service: params.get("service").cloned(),
            })
        }
        _ => None,
    }
}

fn parse_auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(stripped) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in stripped.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.unwrap_or(stripped.len());
            value = stripped[..end].replace("\\\"", "\"");
            rest = stripped.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.insert(key, value);
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Request body that reports progress as it is read.
fn progress_body(bytes: Bytes, progress: output::Progress) -> reqwest::Body {
    const CHUNK: usize = 256 * 1024;
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|i| bytes.slice(i..(i + CHUNK).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |c| {
        progress.advance(c.len() as u64);
        Ok::<Bytes, std::io::Error>(c)
    }));
    reqwest::Body::wrap_stream(stream)
}

/// One HTTP client for all registries: rustls with ring, the system's roots plus an extra CA.
fn http_client(options: &ClientOptions) -> Result<reqwest::Client, RegistryError> {
    let mut roots = rustls::RootCertStore::empty();
    // rustls-native-certs honours SSL_CERT_FILE and SSL_CERT_DIR.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &options.ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| RegistryError::TlsSetup(format!("{}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert =
                cert.map_err(|e| RegistryError::TlsSetup(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| RegistryError::TlsSetup(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(RegistryError::TlsSetup(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsSetup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("cargo-adapt-push/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        // A transfer that stalls this long is treated as broken and retried.
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| RegistryError::TlsSetup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge(""), None);
        let p = parse_auth_params(r#"realm="a,b", service=plain , x="q\"uote""#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["service"], "plain");
        assert_eq!(p["x"], "q\"uote");
    }

    #[test]
    fn upload_urls() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(
            with_digest("http://h/u/1", &d),
            format!("http://h/u/1?digest={d}")
        );
        assert_eq!(
            with_digest("http://h/u/1?_state=x", &d),
            format!("http://h/u/1?_state=x&digest={d}")
        );
    }

    #[test]
    fn backoff_is_bounded() {
        let client = RegistryClient {
            http: reqwest::Client::builder()
                .tls_backend_preconfigured(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
                .build()
                .unwrap(),
            registry: Registry::parse("localhost:1").unwrap(),
            base_url: "http://localhost:1".into(),
            credential: None,
            lookup: Lookup::default(),
            auth: Mutex::new(AuthState::default()),
            retry: RetryPolicy::default(),
        };
        for attempt in 1..40 {
            assert!(client.backoff(attempt, None) <= Duration::from_secs(5));
        }
        assert_eq!(
            client.backoff(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }
}
