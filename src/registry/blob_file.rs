//! Uploading a blob from a file (a compressed layer in the on-disk cache), read in pieces as the
//! connection takes them, so a layer of any size costs a few hundred KiB of memory.
//!
//! Same protocol and retry rules as in-memory uploads: one monolithic PUT up to
//! [`MONOLITHIC_LIMIT`], otherwise one streamed PATCH and a closing PUT; a failed transfer starts
//! over with a fresh session (the file is simply read again from the start).

use std::path::Path;
use std::time::Instant;

use futures_util::TryStreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::io::AsyncReadExt;

use super::events;
use super::{
    Activity, Attempt, MONOLITHIC_LIMIT, RegistryClient, RegistryError, Scope, short, with_digest,
};
use crate::reference::{Digest, Repository};

/// Bytes read from the file per piece of the request body.
const FILE_CHUNK: usize = 256 * 1024;

impl RegistryClient {
    /// Uploads the `size` bytes of the file at `path` as blob `digest`.
    pub async fn upload_file(
        &self,
        repo: &Repository,
        digest: &Digest,
        path: &Path,
        size: u64,
        progress: &dyn events::Progress,
    ) -> Result<(), RegistryError> {
        let what = format!("the upload of blob {}", short(digest));
        let mut budget_from = Instant::now();
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let location = self.start_upload(repo, &what).await?;
            progress.reset();
            let activity = Activity::new();
            let body = file_body(path, size, progress, &activity)?;
            let result = if size <= MONOLITHIC_LIMIT as u64 {
                self.send_body(
                    repo,
                    &with_digest(&location, digest),
                    true,
                    body,
                    size,
                    &activity,
                )
                .await
                .map(|_| ())
            } else {
                match self
                    .send_body(repo, &location, false, body, size, &activity)
                    .await
                {
                    Ok(next) => {
                        self.put_blob(repo, &next, digest, None, progress, &Activity::new())
                            .await
                    }
                    Err(e) => Err(e),
                }
            };
            let (error, retry_after) = match result {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Unauthorized(e))
                    if reauthenticated && attempt >= self.retry.attempts =>
                {
                    return Err(e);
                }
                Err(Attempt::Unauthorized(_)) => {
                    // As in `upload_bytes`: the first re-authentication is free, later ones count.
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

    /// Sends the body as a PUT that completes the upload (`complete`), or as a PATCH; returns
    /// the session's next location for a PATCH.
    async fn send_body(
        &self,
        repo: &Repository,
        url: &str,
        complete: bool,
        body: reqwest::Body,
        size: u64,
        activity: &Activity,
    ) -> Result<String, Attempt> {
        let builder = if complete {
            self.http.put(url)
        } else {
            self.http.patch(url)
        };
        // The upload location may be on another host: credentials go only where they belong.
        let request = self
            .authorize_at(&Scope::push(repo), url, builder)
            .await
            .map_err(Attempt::Fatal)?
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        let (what, ok): (&str, &[StatusCode]) = if complete {
            (
                "a blob upload (PUT)",
                &[StatusCode::CREATED, StatusCode::NO_CONTENT, StatusCode::OK],
            )
        } else {
            (
                "a blob upload (PATCH)",
                &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT],
            )
        };
        let response = self
            .finish_transfer(repo, what, url, request, ok, activity)
            .await?;
        if complete {
            return Ok(String::new());
        }
        self.location(&response, what).map_err(Attempt::Fatal)
    }
}

/// The file's first `size` bytes as a request body that reports progress and activity.
fn file_body(
    path: &Path,
    size: u64,
    progress: &dyn events::Progress,
    activity: &Activity,
) -> Result<reqwest::Body, RegistryError> {
    let file = std::fs::File::open(path).map_err(|e| RegistryError::LocalBlob {
        path: path.display().to_string(),
        cause: e.to_string(),
    })?;
    let reader = tokio::fs::File::from_std(file).take(size);
    let (progress, activity) = (progress.share(), activity.clone());
    let stream = futures_util::stream::try_unfold(reader, |mut reader| async move {
        let mut buf = bytes::BytesMut::with_capacity(FILE_CHUNK);
        while buf.len() < FILE_CHUNK {
            if reader.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        Ok::<_, std::io::Error>((!buf.is_empty()).then(|| (buf.freeze(), reader)))
    })
    .inspect_ok(move |chunk| {
        progress.advance(chunk.len() as u64);
        activity.moved(chunk.len() as u64);
    });
    Ok(reqwest::Body::wrap_stream(stream))
}
