//! Uploading a blob whose digest is known only once its last byte is made (a layer still being
//! compressed), the way go-containerregistry's streamed layers go: POST a session, one PATCH
//! whose chunked body follows the producer, then the closing PUT `?digest=`. One attempt, no
//! retries: the caller has the whole blob on disk by the end and uploads it again from there
//! when anything here fails.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::activity::Activity;
use super::blobs::{Attempt, short};
use super::challenge::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use crate::reference::{Digest, Repository};

/// Why a streamed upload failed, and how long the registry asked to wait (`Retry-After`) before
/// the blob is sent again.
#[derive(Debug)]
pub struct StreamFailed {
    pub error: RegistryError,
    pub retry_after: Option<Duration>,
}

impl From<RegistryError> for StreamFailed {
    fn from(error: RegistryError) -> Self {
        StreamFailed {
            error,
            retry_after: None,
        }
    }
}

/// An upload session whose bytes all went in; [`RegistryClient::finish_streamed`] names them.
#[derive(Debug)]
pub struct StreamedUpload {
    /// Where the closing PUT goes (the PATCH's answer).
    location: String,
    /// Bytes the registry took.
    pub bytes: u64,
}

impl RegistryClient {
    /// Opens an upload session and sends `body` into it as it comes (chunked, no length known),
    /// until `body` ends. The session's URL and what the PATCH carried is returned for
    /// [`finish_streamed`](Self::finish_streamed). Credentials go to the session's URL only
    /// when it is on the registry's own origin (or one that challenged), as with every upload.
    pub async fn upload_streamed<S, E>(
        &self,
        repo: &Repository,
        body: S,
    ) -> Result<StreamedUpload, StreamFailed>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let what = "a streamed blob upload (PATCH)";
        let location = self.start_upload(repo, what).await?;
        let activity = Activity::new();
        let request = self
            .authorize_at(&Scope::push(repo), &location, self.http.patch(&location))
            .await?
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(activity.watch(body));
        let response = self
            .finish_transfer(
                repo,
                what,
                &location,
                request,
                &[StatusCode::ACCEPTED, StatusCode::NO_CONTENT],
                &activity,
            )
            .await
            .map_err(stream_failed)?;
        Ok(StreamedUpload {
            location: self.location(&response, what)?,
            bytes: activity.bytes(),
        })
    }

    /// Closes a streamed upload as blob `digest`; the registry checks the bytes against it.
    pub async fn finish_streamed(
        &self,
        repo: &Repository,
        upload: StreamedUpload,
        digest: &Digest,
    ) -> Result<(), StreamFailed> {
        self.events.trace(&format!(
            "closing the streamed upload of blob {}",
            short(digest)
        ));
        self.put_blob(repo, &upload.location, digest, None, &Activity::new())
            .await
            .map_err(stream_failed)
    }
}

/// One attempt is all a stream gets: whatever the kind of failure, it is the caller's to handle.
fn stream_failed(attempt: Attempt) -> StreamFailed {
    match attempt {
        Attempt::Retry(error, retry_after) => StreamFailed { error, retry_after },
        Attempt::Unauthorized(e) | Attempt::Fatal(e) => e.into(),
    }
}
