//! Blobs: HEAD (exists), cross-repository mount, upload from bytes, a file or a stream (with
//! one upload loop that restarts a broken transfer in a fresh session), and download.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::activity::Activity;
use super::blob_source::BlobSource;
use super::bounded::SMALL_BLOB_LIMIT;
use super::challenge::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::events;
use super::http::{header_str, origin_of};
use super::retry::{as_asked, backoff, is_retryable_status, retry_after};
use crate::reference::{Digest, Repository};

/// Blobs up to this size go in one PUT; larger ones in one streamed PATCH then a closing PUT.
const MONOLITHIC_LIMIT: usize = 16 * 1024 * 1024;

/// Outcome of a cross-repository mount request.
pub enum Mount {
    Mounted,
    /// The registry refused to mount and opened an upload session instead (202).
    UploadStarted(String),
}

/// A transfer attempt's failure, sorted for the upload loop.
pub(super) enum Attempt {
    /// Worth another attempt; after the server's `Retry-After`, if it sent one.
    Retry(RegistryError, Option<Duration>),
    /// 401 during a transfer: a token may have expired; authenticate again once.
    Unauthorized(RegistryError),
    Fatal(RegistryError),
}

impl RegistryClient {
    /// Does the repository have this blob, of `size` bytes? An answer whose `Content-Length`
    /// says another size means the registry holds something else under the digest (broken
    /// storage, or a proxy mangling answers): the blob counts as absent, so it is uploaded and
    /// the registry checks the digest of what it receives. (go-containerregistry and containerd
    /// take any 200 as present; skipping a blob only on evidence that it is there is safer.)
    /// An answer without `Content-Length` is taken at its word, as they do.
    pub async fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url);
        let what = format!("a check for blob {}", short(digest));
        let response = self
            .send_with_retry(Some(&Scope::push(repo)), &what, || self.http.head(&url))
            .await?;
        match response.status() {
            s if s.is_success() => {
                // The header itself: a HEAD answer has no body for `content_length()` to size.
                let announced = header_str(response.headers(), CONTENT_LENGTH.as_str());
                match announced.map(|v| v.trim().parse::<u64>()) {
                    Some(Ok(n)) if n != size => {
                        self.events.warn(&format!(
                            "{} says blob {digest} in {repo} is there with {n} bytes, but it has {size}; uploading it",
                            self.registry
                        ));
                        Ok(false)
                    }
                    _ => Ok(true),
                }
            }
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
    pub(super) async fn start_upload(
        &self,
        repo: &Repository,
        what: &str,
    ) -> Result<String, RegistryError> {
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
            let body = source.body(progress, &activity, &*self.hints)?;
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
                    self.events
                        .detail(&format!("{what}: unauthorized; authenticating again"));
                    self.auth_state().tokens.clear();
                    continue;
                }
                Err(Attempt::Retry(e, after)) => (e, after),
            };
            // What the registry got has another digest: a race with another push, or a file
            // that no longer holds the blob, which no retry would mend.
            if error.is_digest_invalid() {
                source.check(digest, &*self.hints).await?;
            }
            if activity.bytes() > 0 {
                budget_from = Instant::now();
            }
            if attempt >= self.retry.attempts || budget_from.elapsed() >= self.retry.total {
                return Err(error);
            }
            // The registry may have stored the blob before the connection broke.
            if let Ok(true) = self.blob_exists(repo, digest, source.size()).await {
                self.events
                    .detail(&format!("{what}: {error}; but the blob arrived"));
                return Ok(());
            }
            let delay = retry_after.unwrap_or_else(|| backoff(&self.retry, attempt));
            self.events.detail(&format!(
                "{what}: {error}; starting the upload again in {:.1}s{} (attempt {}/{})",
                delay.as_secs_f32(),
                as_asked(retry_after),
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
        let request = self
            .authorize_at(&Scope::push(repo), &url, self.http.put(&url))
            .await?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(activity.watch(body));
        let response = self
            .send_watched(request, &activity, None)
            .await
            .map_err(|f| f.error)?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            StatusCode::UNAUTHORIZED if !self.is_own(&url) => {
                // Learn the upload host's challenge, so the caller's next copy can answer it (a
                // keychain that cannot tell what it holds for that host is the error to show).
                self.learn_foreign_challenge(&url, &response).await?;
                Err(self.foreign_unauthorized(repo, &url))
            }
            s => Err(self.status_error(Some(repo), &what, s, response).await),
        }
    }

    /// A PUT that completes the upload, with the blob (`body` and its size) or empty.
    pub(super) async fn put_blob(
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
    pub(super) async fn finish_transfer(
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

    /// The upload session URL in an answer's `Location` header, resolved against the registry.
    pub(super) fn location(
        &self,
        response: &Response,
        what: &str,
    ) -> Result<String, RegistryError> {
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
}

pub(super) fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

pub(super) fn short(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}…", &hex[..hex.len().min(12)])
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::registry::challenge::Challenge;
    use crate::registry::client::tests::{recording_stub, test_client};
    use crate::registry::events::Events;
    use crate::registry::http_client::http_client;
    use crate::registry::keychain::Credential;
    use crate::registry::options::ClientOptions;

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

    // `recording_stub` (registry/mod.rs tests) stands in for a storage host a registry
    // redirects to (no real registry here does).

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
        client.http = http_client(&ClientOptions::default(), &Events::default()).unwrap();
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
}
