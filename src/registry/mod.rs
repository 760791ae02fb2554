//! A client for the OCI distribution API: ping, auth challenges (Basic and Bearer tokens),
//! per-request retries, blob HEAD / mount / upload / download, manifest GET / PUT.
//!
//! Every request is bounded. Requests without a large body are retried on connection errors,
//! stalls, 408, 429 and 5xx with exponential backoff and jitter (or the server's `Retry-After`),
//! within [`RetryPolicy`]'s attempts and total time; each attempt is cut at that deadline, so a
//! dead or silent registry is given up on in time. Blob uploads restart with a fresh upload
//! session when a transfer breaks, and count as stalled only when no byte has moved for
//! [`RetryPolicy::stall`], so a slow link is not mistaken for a dead one.

mod auth;
mod blob_source;
mod error;
pub mod events;
mod manifests;
mod options;
mod ping;
pub mod pool;
pub mod referrers;
mod stream_upload;
mod transport;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::credentials::{self, Credential, Lookup};
use crate::reference::{Digest, Registry, Repository, Scheme, is_loopback_host};
pub use auth::Scope;
use auth::{AuthState, parse_challenge};
use blob_source::BlobSource;
pub use error::{RegistryError, error_chain};
use error::{
    is_certificate_problem, is_plain_http_answer, transport_error, unreachable_hint, with_tries,
};
pub use manifests::MANIFEST_LIMIT;
pub use options::{ClientOptions, RetryPolicy};
use ping::check_plain_http_allowed;
use transport::*;

/// Blobs up to this size go in one PUT; larger ones in one streamed PATCH then a closing PUT.
const MONOLITHIC_LIMIT: usize = 16 * 1024 * 1024;

/// The most an image config or a token answer may weigh.
pub const SMALL_BLOB_LIMIT: usize = 8 * 1024 * 1024;

/// The most of an error answer that is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Request bodies are handed to the connection in pieces of this size, so progress (and
/// stall detection) sees bytes move.
const BODY_CHUNK: usize = 64 * 1024;

/// Outcome of a cross-repository mount request.
pub enum Mount {
    Mounted,
    /// The registry refused to mount and opened an upload session instead (202).
    UploadStarted(String),
}

/// One attempt's failure, and whether trying again may help.
struct Failed {
    error: RegistryError,
    retryable: bool,
}

/// A transfer attempt's failure, sorted for the upload loop.
enum Attempt {
    /// Worth another attempt; after the server's `Retry-After`, if it sent one.
    Retry(RegistryError, Option<Duration>),
    /// 401 during a transfer: a token may have expired; authenticate again once.
    Unauthorized(RegistryError),
    Fatal(RegistryError),
}

/// A connection to one registry.
pub struct RegistryClient {
    http: reqwest::Client,
    registry: Registry,
    base_url: String,
    /// `scheme://host[:port]` of `base_url`: the one origin the registry's credentials go to.
    origin: String,
    /// Hosts that may be spoken to over plain HTTP besides loopback.
    insecure: Vec<Registry>,
    credential: Option<Credential>,
    lookup: Lookup,
    auth: std::sync::Mutex<AuthState>,
    /// Held while fetching a token, so concurrent requests wait for one fetch instead of each
    /// asking the token service.
    token_fetch: tokio::sync::Mutex<()>,
    retry: RetryPolicy,
    ca_cert: Option<PathBuf>,
}

impl RegistryClient {
    /// Picks the scheme, finds credentials, and checks the registry answers `/v2/`.
    ///
    /// Without an explicit scheme: loopback hosts are tried over plain HTTP, then HTTPS if the
    /// port turns out to speak TLS; hosts listed in `insecure` over HTTPS, then plain HTTP if
    /// TLS fails; every other host over HTTPS only. The second scheme is tried only when the
    /// first failed in a way that points at it, never for an unreachable address.
    ///
    /// `http` is the shared client from [`http_client`] (see [`pool::Clients`]).
    /// `push_target`: this registry is pushed to, so `ADAPT_PUSH_*` credentials apply to it.
    pub async fn connect(
        registry: &Registry,
        options: &ClientOptions,
        http: reqwest::Client,
        push_target: bool,
    ) -> Result<Arc<RegistryClient>, RegistryError> {
        let lookup_registry = registry.clone();
        let lookup =
            tokio::task::spawn_blocking(move || credentials::lookup(&lookup_registry, push_target))
                .await
                .unwrap_or_default();
        Self::connect_with(registry, options, http, lookup).await
    }

    async fn connect_with(
        registry: &Registry,
        options: &ClientOptions,
        http: reqwest::Client,
        mut lookup: Lookup,
    ) -> Result<Arc<RegistryClient>, RegistryError> {
        check_plain_http_allowed(registry, &options.insecure)?;
        check_resolves_to_loopback(registry).await?;
        let authority = registry.api_authority();
        let plain = registry.without_scheme();
        let schemes: Vec<Scheme> = match registry.scheme() {
            Some(s) => vec![s],
            None if registry.is_loopback() => vec![Scheme::Http, Scheme::Https],
            None if options.insecure.contains(&plain) => vec![Scheme::Https, Scheme::Http],
            None => vec![Scheme::Https],
        };

        for w in lookup.warnings.drain(..) {
            events::warn(&w);
        }

        let mut errors: Vec<RegistryError> = Vec::new();
        for (i, &scheme) in schemes.iter().enumerate() {
            let base_url = match scheme {
                Scheme::Http => format!("http://{authority}"),
                Scheme::Https => format!("https://{authority}"),
            };
            if i > 0 {
                events::detail(&format!("trying {base_url} instead"));
                if scheme == Scheme::Http && !registry.is_loopback() {
                    events::warn(&format!(
                        "{registry} does not speak HTTPS; using plain HTTP because it is listed in `insecure`"
                    ));
                }
            }
            let mut credential = lookup.credential.clone();
            if scheme == Scheme::Http && !registry.is_loopback() && credential.is_some() {
                events::warn(&format!(
                    "not sending the credentials from {} to {registry} over plain HTTP; pushing anonymously",
                    lookup.source.as_deref().unwrap_or("the environment")
                ));
                credential = None;
            }
            let client = RegistryClient {
                http: http.clone(),
                registry: registry.clone(),
                origin: origin_of(&base_url),
                base_url,
                insecure: options.insecure.clone(),
                credential,
                lookup: lookup.clone(),
                auth: std::sync::Mutex::new(AuthState::default()),
                token_fetch: tokio::sync::Mutex::new(()),
                retry: options.retry,
                ca_cert: options.ca_cert.clone(),
            };
            match client.ping().await {
                Ok(()) => {
                    events::trace(&format!(
                        "{} answers at {} ({})",
                        registry,
                        client.base_url,
                        match &lookup.source {
                            Some(s) if client.credential.is_some() =>
                                format!("credentials from {s}"),
                            _ => "anonymous".into(),
                        }
                    ));
                    return Ok(Arc::new(client));
                }
                Err(e) => {
                    let switch = e.suggests_other_scheme();
                    events::detail(&e.to_string());
                    errors.push(e);
                    if !switch {
                        break;
                    }
                }
            }
        }
        // The last error is the most telling, unless it only says "wrong scheme" about a
        // scheme that was a fallback: then the first one is.
        let last = errors.pop();
        let first = errors.into_iter().next();
        match (first, last) {
            (Some(first), Some(last))
                if last.suggests_other_scheme() && !first.suggests_other_scheme() =>
            {
                Err(first)
            }
            (Some(first), Some(RegistryError::HttpsPort { .. })) => Err(first),
            (_, Some(last)) => Err(last),
            (first, None) => Err(first.unwrap_or_else(|| RegistryError::Unreachable {
                url: registry.to_string(),
                tried: String::new(),
                cause: "no scheme to try".into(),
                hint: String::new(),
            })),
        }
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether this client speaks plain HTTP: only where that is allowed (loopback, `insecure`).
    pub fn speaks_plain_http(&self) -> bool {
        self.base_url.starts_with("http://")
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
            s => Err(self.status_error(Some(repo), &what, s, response).await),
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
            s => Err(self.status_error(Some(repo), &what, s, response).await),
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
            s => Err(self.status_error(Some(repo), what, s, response).await),
        }
    }

    /// Uploads an in-memory blob, into `session` if one is already open.
    pub async fn upload_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
        bytes: Bytes,
        progress: &dyn events::Progress,
        session: Option<String>,
    ) -> Result<(), RegistryError> {
        self.upload(repo, digest, BlobSource::Bytes(bytes), progress, session)
            .await
    }

    /// Uploads the `size` bytes of the file at `path` as blob `digest`, read in pieces.
    pub async fn upload_file(
        &self,
        repo: &Repository,
        digest: &Digest,
        path: &Path,
        size: u64,
        progress: &dyn events::Progress,
    ) -> Result<(), RegistryError> {
        let source = BlobSource::File { path, size };
        self.upload(repo, digest, source, progress, None).await
    }

    /// Uploads a blob: one PUT up to [`MONOLITHIC_LIMIT`], otherwise one streamed PATCH and a
    /// closing PUT. A failed transfer restarts with a fresh upload session, since a broken
    /// session cannot be trusted to resume. Bounded by the retry policy's attempts, and by its
    /// total time counted from the last attempt that moved bytes.
    async fn upload(
        &self,
        repo: &Repository,
        digest: &Digest,
        source: BlobSource<'_>,
        progress: &dyn events::Progress,
        mut session: Option<String>,
    ) -> Result<(), RegistryError> {
        let what = format!("the upload of blob {}", short(digest));
        let mut budget_from = Instant::now();
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let location = match session.take() {
                Some(l) => l,
                None => self.start_upload(repo, &what).await?,
            };
            progress.reset();
            let activity = Activity::new();
            let body = source.body(progress, &activity)?;
            let result = self
                .transfer(repo, &location, digest, body, source.size(), &activity)
                .await;
            let (error, retry_after) = match result {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Unauthorized(e))
                    if reauthenticated && attempt >= self.retry.attempts =>
                {
                    return Err(e);
                }
                Err(Attempt::Unauthorized(_)) => {
                    // A token may have expired mid-upload, or an upload host asked for its own
                    // credentials: authenticate again. The first time is free; after that each
                    // counts as an attempt, so a registry that keeps refusing fresh tokens is
                    // given up on within the retry budget.
                    if !reauthenticated {
                        attempt -= 1;
                    }
                    reauthenticated = true;
                    events::detail(&format!("{what}: unauthorized; authenticating again"));
                    self.auth_state().tokens.clear();
                    continue;
                }
                Err(Attempt::Retry(e, after)) => (e, after),
            };
            if activity.bytes() > 0 {
                budget_from = Instant::now();
            }
            if attempt >= self.retry.attempts || budget_from.elapsed() >= self.retry.total {
                return Err(error);
            }
            // The registry may have stored the blob before the connection broke.
            if let Ok(true) = self.blob_exists(repo, digest).await {
                events::detail(&format!("{what}: {error}; but the blob arrived"));
                return Ok(());
            }
            let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
            events::detail(&format!(
                "{what}: {error}; starting the upload again in {:.1}s{} (attempt {}/{})",
                delay.as_secs_f32(),
                if retry_after.is_some() {
                    " as Retry-After asks"
                } else {
                    ""
                },
                attempt + 1,
                self.retry.attempts
            ));
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt at sending the blob into the session at `location`: a monolithic PUT, or a
    /// PATCH then a closing PUT.
    async fn transfer(
        &self,
        repo: &Repository,
        location: &str,
        digest: &Digest,
        body: reqwest::Body,
        size: u64,
        activity: &Activity,
    ) -> Result<(), Attempt> {
        if size <= MONOLITHIC_LIMIT as u64 {
            return self
                .put_blob(repo, location, digest, Some((body, size)), activity)
                .await;
        }
        let next = self
            .patch_blob(repo, location, body, size, activity)
            .await?;
        self.put_blob(repo, &next, digest, None, &Activity::new())
            .await
    }

    /// Uploads a blob from a stream (a base layer read from another registry). One attempt: the
    /// caller restarts the whole copy, since the source stream cannot be rewound.
    pub async fn upload_stream<S, E>(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        body: S,
        session: Option<String>,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let what = format!("the upload of blob {}", short(digest));
        let location = match session {
            Some(l) => l,
            None => self.start_upload(repo, &what).await?,
        };
        let url = with_digest(&location, digest);
        let activity = Activity::new();
        let watched = activity.clone();
        let body = body.map(move |chunk| {
            if let Ok(c) = &chunk {
                watched.moved(c.len() as u64);
            }
            chunk
        });
        let request = self
            .authorize_at(&Scope::push(repo), &url, self.http.put(&url))
            .await?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        let response = self
            .send_watched(request, &activity, None)
            .await
            .map_err(|f| f.error)?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            StatusCode::UNAUTHORIZED if !self.is_own(&url) => {
                // Learn the upload host's challenge, so the caller's next copy can answer it.
                let _ = self.learn_foreign_challenge(&url, &response).await;
                Err(self.foreign_unauthorized(repo, &url))
            }
            s => Err(self.status_error(Some(repo), &what, s, response).await),
        }
    }

    /// A PUT that completes the upload, with the blob (`body` and its size) or empty.
    async fn put_blob(
        &self,
        repo: &Repository,
        location: &str,
        digest: &Digest,
        body: Option<(reqwest::Body, u64)>,
        activity: &Activity,
    ) -> Result<(), Attempt> {
        let url = with_digest(location, digest);
        // The upload location may be on another host: credentials go only where they belong.
        let mut request = self
            .authorize_at(&Scope::push(repo), &url, self.http.put(&url))
            .await
            .map_err(Attempt::Fatal)?;
        request = match body {
            Some((body, size)) => request
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body),
            None => request.header(CONTENT_LENGTH, 0),
        };
        let what = format!("the upload of blob {}", short(digest));
        self.finish_transfer(
            repo,
            &what,
            &url,
            request,
            &[StatusCode::CREATED, StatusCode::NO_CONTENT, StatusCode::OK],
            activity,
        )
        .await
        .map(|_| ())
    }

    /// A PATCH with the whole blob; returns the session's next location.
    async fn patch_blob(
        &self,
        repo: &Repository,
        location: &str,
        body: reqwest::Body,
        size: u64,
        activity: &Activity,
    ) -> Result<String, Attempt> {
        let request = self
            .authorize_at(&Scope::push(repo), location, self.http.patch(location))
            .await
            .map_err(Attempt::Fatal)?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        let response = self
            .finish_transfer(
                repo,
                "a blob upload (PATCH)",
                location,
                request,
                &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT],
                activity,
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
        url: &str,
        request: RequestBuilder,
        ok: &[StatusCode],
        activity: &Activity,
    ) -> Result<Response, Attempt> {
        let response = match self.send_watched(request, activity, None).await {
            Ok(r) => r,
            Err(f) if f.retryable => return Err(Attempt::Retry(f.error, None)),
            Err(f) => return Err(Attempt::Fatal(f.error)),
        };
        let status = response.status();
        if ok.contains(&status) {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED && !self.is_own(url) {
            // An upload host of its own asks for credentials: learn its challenge and what the
            // credential sources hold for it, then let the upload loop try once more.
            return Err(match self.learn_foreign_challenge(url, &response).await {
                Ok(true) => Attempt::Unauthorized(self.foreign_unauthorized(repo, url)),
                Ok(false) => Attempt::Fatal(self.foreign_unauthorized(repo, url)),
                Err(e) => Attempt::Fatal(e),
            });
        }
        let after = retry_after(response.headers(), SystemTime::now());
        // 404: the upload session is gone (a registry restart, a proxy that cut it).
        let retry = is_retryable_status(status) || status == StatusCode::NOT_FOUND;
        let err = self.status_error(Some(repo), what, status, response).await;
        // Concurrent pushes of one blob into one repository race inside the registry (distribution
        // 2.8 answers DIGEST_INVALID or BLOB_UPLOAD_UNKNOWN): a fresh upload session settles it.
        let raced = err.is_blob_race();
        Err(if status == StatusCode::UNAUTHORIZED {
            Attempt::Unauthorized(err)
        } else if retry || raced {
            Attempt::Retry(err, after)
        } else {
            Attempt::Fatal(err)
        })
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port).
    fn is_own(&self, url: &str) -> bool {
        origin_of(url) == self.origin
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
            s => Err(self.status_error(Some(repo), &what, s, response).await),
        }
    }

    /// Reads a small blob (a config) whole and checks its digest.
    pub async fn get_blob_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Bytes, RegistryError> {
        let response = self.get_blob(repo, digest).await?;
        let what = format!("blob {} of {repo}", short(digest));
        let bytes = self.read_body(response, SMALL_BLOB_LIMIT, &what).await?;
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

    /// Sends a request built by `make`, authenticating on a challenge (once) and retrying
    /// transient failures (connection errors, stalls, 408, 429, 5xx) with backoff, within the
    /// retry policy. A retryable status left over when the budget is spent is returned as the
    /// response, for the caller to turn into an error.
    async fn send_with_retry(
        &self,
        scope: Option<&Scope>,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let started = Instant::now();
        let deadline = started + self.retry.total;
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let request = self.authorize(scope, make()).await?;
            let outcome = self
                .send_watched(request, &Activity::new(), Some(deadline))
                .await;
            let left = deadline.saturating_duration_since(Instant::now());
            let may_retry = attempt < self.retry.attempts && !left.is_zero();
            match outcome {
                Err(failed) => {
                    if !failed.retryable || !may_retry {
                        return Err(with_tries(failed.error, attempt, started.elapsed()));
                    }
                    let delay = self.backoff(attempt);
                    if !worth_another_attempt(left, delay) {
                        // Waiting would use up the budget: the next attempt could only be cut
                        // at the deadline. Report what actually went wrong.
                        events::detail(&format!(
                            "{what}: {}; no time left in the retry budget for another attempt",
                            failed.error
                        ));
                        return Err(with_tries(failed.error, attempt, started.elapsed()));
                    }
                    events::detail(&format!(
                        "{what}: {}; retrying in {:.1}s (attempt {}/{})",
                        failed.error,
                        delay.as_secs_f32(),
                        attempt + 1,
                        self.retry.attempts
                    ));
                    tokio::time::sleep(delay).await;
                }
                // A 401 (an expired or revoked token): authenticate again, the first time for
                // free, then counting as attempts within the budget.
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && scope.is_some()
                        && (!reauthenticated || (may_retry && self.uses_tokens())) =>
                {
                    let challenge = header_str(response.headers(), WWW_AUTHENTICATE.as_str())
                        .as_deref()
                        .and_then(parse_challenge);
                    let Some(challenge) = challenge else {
                        return Ok(response);
                    };
                    events::trace(&format!("{what}: 401; authenticating again"));
                    let mut state = self.auth_state();
                    state.challenge = Some(challenge);
                    state.tokens.clear();
                    if !reauthenticated {
                        attempt -= 1;
                    }
                    reauthenticated = true;
                }
                Ok(response) if is_retryable_status(response.status()) => {
                    if !may_retry {
                        return Ok(response);
                    }
                    let retry_after = retry_after(response.headers(), SystemTime::now());
                    let delay = match retry_after {
                        Some(d) => d,
                        None => self.backoff(attempt),
                    };
                    if !worth_another_attempt(left, delay) {
                        events::detail(&match retry_after {
                            Some(_) => format!(
                                "{what}: {} answered {} and asks to wait {:.0}s, beyond the retry budget",
                                self.registry,
                                response.status(),
                                delay.as_secs_f32()
                            ),
                            None => format!(
                                "{what}: {} answered {}; no time left in the retry budget for another attempt",
                                self.registry,
                                response.status()
                            ),
                        });
                        return Ok(response);
                    }
                    events::detail(&format!(
                        "{what}: {} answered {}; retrying in {:.1}s{} (attempt {}/{})",
                        self.registry,
                        response.status(),
                        delay.as_secs_f32(),
                        if retry_after.is_some() {
                            " as Retry-After asks"
                        } else {
                            ""
                        },
                        attempt + 1,
                        self.retry.attempts
                    ));
                    drop(response);
                    tokio::time::sleep(delay).await;
                }
                Ok(response) => return Ok(response),
            }
        }
    }

    /// Sends one request, failing it when nothing has moved for the stall time or when the
    /// hard `limit` passes.
    async fn send_watched(
        &self,
        request: RequestBuilder,
        activity: &Activity,
        limit: Option<Instant>,
    ) -> Result<Response, Failed> {
        let request = request.build().map_err(|e| Failed {
            error: self.transport_error(&e),
            retryable: false,
        })?;
        if events::tracing() {
            let auth = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(' ').next())
                .map(|scheme| format!(" (Authorization: {scheme} <redacted>)"))
                .unwrap_or_default();
            events::trace(&format!(
                "-> {} {}{auth}",
                request.method(),
                redact_url(request.url())
            ));
        }
        let label = format!("{} {}", request.method(), request.url().path());
        let sent = Instant::now();
        let send = self.http.execute(request);
        tokio::pin!(send);
        loop {
            let stall_at = activity.last() + self.retry.stall;
            let wake = limit.map_or(stall_at, |l| l.min(stall_at));
            tokio::select! {
                result = &mut send => {
                    return match result {
                        Ok(response) => {
                            events::trace(&format!(
                                "<- {} for {label} after {} ms",
                                response.status(),
                                sent.elapsed().as_millis()
                            ));
                            Ok(response)
                        }
                        Err(e) => Err(Failed {
                            retryable: is_retryable_transport(&e),
                            error: self.transport_error(&e),
                        }),
                    };
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    let idle = now.saturating_duration_since(activity.last());
                    if limit.is_some_and(|l| now >= l) || idle >= self.retry.stall {
                        return Err(Failed {
                            retryable: true,
                            error: RegistryError::Unreachable {
                                url: self.base_url.clone(),
                                tried: String::new(),
                                cause: format!(
                                    "no answer and no progress for {:.0}s",
                                    idle.as_secs_f32()
                                ),
                                hint: self.unreachable_hint(),
                            },
                        });
                    }
                }
            }
        }
    }

    /// Reads a small response body whole, at most `limit` bytes (checked while it streams, so
    /// an endless or huge answer costs no memory), each piece within the stall time.
    async fn read_body(
        &self,
        response: Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, RegistryError> {
        let too_large = || RegistryError::TooLarge {
            registry: self.registry.to_string(),
            what: what.to_string(),
            limit: human_size(limit),
        };
        match read_limited(response, limit, self.retry.stall).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge) => Err(too_large()),
            Err(BodyError::Transport(e)) => Err(self.transport_error(&e)),
            Err(BodyError::Stalled) => Err(RegistryError::Unreachable {
                url: self.base_url.clone(),
                tried: String::new(),
                cause: "the answer stalled midway".into(),
                hint: self.unreachable_hint(),
            }),
        }
    }

    /// Exponential backoff with jitter: half to all of `first_delay * 2^(attempt-1)`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.retry.max_delay);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        cap.mul_f64(jitter)
    }

    fn location(&self, response: &Response, what: &str) -> Result<String, RegistryError> {
        let raw = header_str(response.headers(), LOCATION.as_str()).ok_or_else(|| {
            RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: what.to_string(),
                cause: "no Location header".into(),
            }
        })?;
        // Location may be relative to the registry. Where it points decides what goes with it
        // (see `authorize_at`): the registry's credentials only to its own origin.
        let base = url::Url::parse(&format!("{}/v2/", self.base_url)).ok();
        let joined = if raw.starts_with('/') && !raw.starts_with("//") {
            url::Url::parse(&format!("{}{raw}", self.base_url))
        } else {
            match &base {
                Some(b) => b.join(&raw),
                None => url::Url::parse(&raw),
            }
        };
        match joined {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(u.to_string()),
            _ => Err(RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: what.to_string(),
                cause: "the Location header is not an http(s) URL".into(),
            }),
        }
    }

    async fn status_error(
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

    fn transport_error(&self, e: &reqwest::Error) -> RegistryError {
        transport_error(&self.base_url, &self.registry, self.ca_cert.as_deref(), e)
    }

    fn unreachable_hint(&self) -> String {
        unreachable_hint(&self.registry)
    }
}

/// `scheme://host[:port]` of a URL (the port only when not the scheme's default); an
/// unparseable URL is an origin of its own that matches nothing.
fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "null".into())
}

/// A `localhost` or `*.localhost` name counts as loopback only when it resolves to loopback
/// addresses (the client's resolver, [`LoopbackNames`], then connects only to those).
async fn check_resolves_to_loopback(registry: &Registry) -> Result<(), RegistryError> {
    let host = registry.host();
    if !is_localhost_name(host) {
        return Ok(());
    }
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    if addresses.is_empty() || addresses.iter().all(|a| a.ip().is_loopback()) {
        // Nothing resolved: the connection fails with the resolver's own error.
        return Ok(());
    }
    Err(RegistryError::NotLoopback {
        host: host.to_string(),
        addresses: addresses
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn short(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}…", &hex[..hex.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::auth::{Challenge, Token, parse_auth_params};
    use super::*;
    use miette::Diagnostic;

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
    fn challenge_parser_survives_random_input() {
        let alphabet: Vec<char> = "aB =,\"\\realmservicBEARERbasic\u{e9}\u{1F600}\t"
            .chars()
            .collect();
        for _ in 0..5000 {
            let len = rand::random::<u32>() % 40;
            let s: String = (0..len)
                .map(|_| alphabet[rand::random::<u32>() as usize % alphabet.len()])
                .collect();
            let _ = parse_challenge(&s);
            let _ = parse_challenge(&format!("Bearer {s}"));
            let _ = parse_auth_params(&s);
        }
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
    fn urls_in_traces_and_errors_hide_query_values() {
        let d = Digest::sha256_of(b"x");
        let u = url::Url::parse(&format!(
            "https://r.example/v2/a/blobs/uploads/1?_state=c2VjcmV0&X-Amz-Signature=abc123&digest={d}"
        ))
        .unwrap();
        let shown = redact_url(&u);
        assert_eq!(
            shown,
            format!("https://r.example/v2/a/blobs/uploads/1?_state=…&X-Amz-Signature=…&digest={d}")
        );
        let u = url::Url::parse("https://user:pw-secret@r.example/v2/?token#frag").unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("pw-secret") && !shown.contains("token"),
            "{shown}"
        );
        assert_eq!(
            redact_url(&url::Url::parse("http://r.example/v2/").unwrap()),
            "http://r.example/v2/"
        );
    }

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

    #[test]
    fn no_retry_is_started_that_the_deadline_would_cut() {
        let ms = Duration::from_millis;
        assert!(worth_another_attempt(ms(3000), ms(1000)));
        assert!(!worth_another_attempt(ms(1000), ms(1000)));
        assert!(!worth_another_attempt(ms(1200), ms(1000)));
        assert!(!worth_another_attempt(Duration::ZERO, ms(250)));
    }

    #[tokio::test]
    async fn a_refused_port_is_reported_as_refused_when_the_budget_runs_out() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut client = test_client(
            &format!("127.0.0.1:{port}"),
            &format!("http://127.0.0.1:{port}"),
            None,
        );
        client.retry = RetryPolicy::with_bounds(Some(50), Some(2));
        let started = Instant::now();
        let err = client.ping().await.expect_err("nothing listens there");
        let text = err.to_string();
        assert!(
            text.to_ascii_lowercase().contains("refused"),
            "the real cause: {text}"
        );
        assert!(!text.contains("no progress"), "{text}");
        assert!(text.contains("attempts over"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2), "{text}");
    }

    #[test]
    fn scopes_name_their_repository() {
        let repo = Repository::parse("team/app").unwrap();
        let from = Repository::parse("base/img").unwrap();
        assert_eq!(Scope::push(&repo).repository(), "team/app");
        assert_eq!(
            Scope::push_and_mount(&repo, &from).key(),
            "repository:team/app:pull,push repository:base/img:pull"
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(now + Duration::from_secs(7))).unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token {
            value: "secret-token-value".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("secret-token-value"));
    }

    fn test_client(
        registry: &str,
        base_url: &str,
        credential: Option<Credential>,
    ) -> RegistryClient {
        RegistryClient {
            http: plain_http(),
            registry: Registry::parse(registry).unwrap(),
            origin: origin_of(base_url),
            base_url: base_url.into(),
            insecure: Vec::new(),
            credential,
            lookup: Lookup::default(),
            auth: std::sync::Mutex::new(AuthState::default()),
            token_fetch: tokio::sync::Mutex::new(()),
            retry: RetryPolicy::default(),
            ca_cert: None,
        }
    }

    fn plain_http() -> reqwest::Client {
        client_builder().build().unwrap()
    }

    fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    }

    #[test]
    fn backoff_is_bounded() {
        let client = test_client("localhost:1", "http://localhost:1", None);
        for attempt in 1..40 {
            assert!(client.backoff(attempt) <= Duration::from_secs(5));
        }
        assert!(client.backoff(1) <= Duration::from_millis(250));
        assert!(client.backoff(1) >= Duration::from_millis(125));
    }

    #[test]
    fn retry_bounds_from_the_cli() {
        let p = RetryPolicy::with_bounds(Some(0), Some(0));
        assert_eq!(p.attempts, 1);
        assert_eq!(p.total, Duration::from_secs(1));
        let p = RetryPolicy::with_bounds(None, None);
        assert_eq!(p.total, Duration::from_secs(25));
    }

    /// A stub HTTP server standing in for a registry at a non-loopback name (no real registry
    /// can be reached under such a name on this machine; the client's resolver is pointed at
    /// 127.0.0.1 instead). It challenges with Basic auth and records every request's headers.
    fn basic_challenge_stub() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    // A TLS ClientHello: answer as a plain-HTTP server does, with a 400.
                    if reader
                        .fill_buf()
                        .map(|b| b.first() == Some(&0x16))
                        .unwrap_or(false)
                    {
                        let _ = writer.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push_str(&line);
                        }
                        log.lock().unwrap().push(head);
                        let _ = writer.write_all(
                            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"stub\"\r\nContent-Length: 0\r\n\r\n",
                        );
                    }
                });
            }
        });
        (port, seen)
    }

    fn alice() -> Lookup {
        Lookup {
            credential: Some(Credential::Basic {
                username: "alice".into(),
                password: "hunter2-secret".into(),
            }),
            source: Some("the test".into()),
            from_environment: false,
            searched: vec!["the test".into()],
            warnings: Vec::new(),
        }
    }

    /// `registry.example.test:PORT` resolving to the stub on 127.0.0.1.
    fn stub_registry(
        scheme: &str,
    ) -> (
        Registry,
        reqwest::Client,
        Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let (port, seen) = basic_challenge_stub();
        let host = "registry.example.test";
        let registry = Registry::parse(&format!("{scheme}{host}:{port}")).unwrap();
        assert!(!registry.is_loopback());
        let http = client_builder()
            .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        (registry, http, seen)
    }

    async fn assert_no_credentials_sent(
        client: &RegistryClient,
        seen: &std::sync::Mutex<Vec<String>>,
    ) {
        assert!(client.credential.is_none());
        let repo = Repository::parse("team/app").unwrap();
        let err = client
            .blob_exists(&repo, &Digest::sha256_of(b"x"))
            .await
            .expect_err("the stub never accepts");
        let text = format!("{err} {:?}", err);
        assert!(text.contains("credentials are required"), "{text}");
        assert!(
            text.contains("not sent") && text.contains("plain HTTP"),
            "{text}"
        );
        let requests = seen.lock().unwrap().clone();
        assert!(requests.len() >= 2, "{requests:?}");
        for r in &requests {
            assert!(!r.to_ascii_lowercase().contains("authorization"), "{r}");
        }
    }

    #[tokio::test]
    async fn credentials_never_go_over_plain_http_to_a_non_loopback_host() {
        // http:// written out, not listed in `insecure`: refused before any request, and the
        // message shows the line to add.
        let (registry, http, seen) = stub_registry("http://");
        let err = RegistryClient::connect_with(&registry, &ClientOptions::default(), http, alice())
            .await
            .err()
            .expect("plain HTTP to a non-loopback host without an `insecure` entry");
        let text = format!(
            "{err} {}",
            err.help().map(|h| h.to_string()).unwrap_or_default()
        );
        assert!(
            matches!(err, RegistryError::PlainHttpRefused { .. }),
            "{text}"
        );
        assert!(
            text.contains(&format!("insecure = [\"{}\"]", registry.without_scheme())),
            "{text}"
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );

        // http:// written out and listed in `insecure`: spoken to, without the credentials.
        let (registry, http, seen) = stub_registry("http://");
        let options = ClientOptions {
            insecure: vec![registry.without_scheme()],
            ..ClientOptions::default()
        };
        let client = RegistryClient::connect_with(&registry, &options, http, alice())
            .await
            .expect("the stub answers /v2/ with 401, which is a registry");
        assert_no_credentials_sent(&client, &seen).await;

        // Listed in `insecure`: HTTPS fails (the stub speaks plain HTTP), then plain HTTP, still
        // without the credentials.
        let (registry, http, seen) = stub_registry("");
        let options = ClientOptions {
            insecure: vec![registry.clone()],
            ..ClientOptions::default()
        };
        let client = RegistryClient::connect_with(&registry, &options, http, alice())
            .await
            .expect("falls back to plain HTTP for an insecure registry");
        assert!(client.base_url.starts_with("http://"));
        assert_no_credentials_sent(&client, &seen).await;
    }

    #[tokio::test]
    async fn no_silent_fallback_to_plain_http_for_a_non_loopback_host() {
        let (registry, http, seen) = stub_registry("");
        let err = RegistryClient::connect_with(&registry, &ClientOptions::default(), http, alice())
            .await
            .err()
            .expect("a plain-HTTP server is not accepted as HTTPS");
        let text = format!("{err} {:?}", err);
        assert!(text.contains("HTTP response to an HTTPS client"), "{text}");
        assert!(text.contains("insecure"), "{text}");
        // Only a TLS handshake reached it: no HTTP request at all.
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
    }

    #[test]
    fn localhost_names_connect_only_to_loopback_addresses() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            usable_addresses("app.localhost", vec![a("203.0.113.7:0"), a("127.0.0.1:0")]).unwrap(),
            vec![a("127.0.0.1:0")]
        );
        assert!(usable_addresses("app.localhost", vec![a("203.0.113.7:0")]).is_err());
        assert!(usable_addresses("LOCALHOST", vec![a("[2001:db8::1]:0")]).is_err());
        assert_eq!(
            usable_addresses("registry.example", vec![a("203.0.113.7:0")]).unwrap(),
            vec![a("203.0.113.7:0")]
        );
    }

    /// A stub answering every request with `answer` and recording each request head: stands in
    /// for a storage host a registry redirects to (no real registry here does).
    fn recording_stub(answer: String) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push_str(&line);
                        }
                        log.lock().unwrap().push(head);
                        let _ = writer.write_all(answer.as_bytes());
                    }
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn a_blob_redirect_to_another_host_carries_no_credentials() {
        let (storage, at_storage) =
            recording_stub("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx".into());
        let (registry, at_registry) = recording_stub(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{storage}/blob\r\nContent-Length: 0\r\n\r\n"
        ));
        let mut client = test_client(
            &format!("127.0.0.1:{registry}"),
            &format!("http://127.0.0.1:{registry}"),
            Some(Credential::Basic {
                username: "alice".into(),
                password: "pw".into(),
            }),
        );
        client.http = http_client(&ClientOptions::default()).unwrap();
        client.auth_state().challenge = Some(Challenge::Basic);
        let repo = Repository::parse("team/app").unwrap();
        let bytes = client
            .get_blob_bytes(&repo, &Digest::sha256_of(b"x"))
            .await
            .expect("the redirect is followed");
        assert_eq!(&bytes[..], b"x");
        let registry_saw = at_registry.lock().unwrap().clone();
        assert!(
            registry_saw[0]
                .to_ascii_lowercase()
                .contains("authorization: basic"),
            "{registry_saw:?}"
        );
        let storage_saw = at_storage.lock().unwrap().clone();
        assert_eq!(storage_saw.len(), 1, "{storage_saw:?}");
        assert!(
            !storage_saw[0]
                .to_ascii_lowercase()
                .contains("authorization"),
            "{storage_saw:?}"
        );
    }

    #[tokio::test]
    async fn no_credentials_to_a_plain_http_token_realm_elsewhere() {
        let client = test_client(
            "registry.example.test",
            "https://registry.example.test",
            Some(Credential::Basic {
                username: "alice".into(),
                password: "pw".into(),
            }),
        );
        let repo = Repository::parse("team/app").unwrap();
        let err = client
            .token(
                "http://auth.example.test/token",
                Some("svc"),
                &Scope::push(&repo),
            )
            .await
            .expect_err("must refuse");
        assert!(matches!(err, RegistryError::CleartextRealm { .. }), "{err}");
    }
}
