//! Where the bytes of a blob upload come from: memory, or a file (a compressed layer in the
//! on-disk cache) read in pieces as the connection takes them, so a layer of any size costs a few
//! hundred KiB of memory. Either source can be read again from the start, which is what lets a
//! failed transfer start over with a fresh upload session.

use std::path::Path;

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::io::AsyncReadExt;

use super::activity::{Activity, progress_body};
use super::error::RegistryError;
use super::events;
use super::hints::{Hints, Problem};
use crate::reference::Digest;

/// Bytes read from the file per piece of the request body.
const FILE_CHUNK: usize = 256 * 1024;

/// The content of a blob to upload.
pub(super) enum BlobSource<'a> {
    /// A blob held in memory.
    Bytes(Bytes),
    /// The first `size` bytes of the file at `path`.
    File { path: &'a Path, size: u64 },
}

impl BlobSource<'_> {
    /// The blob's size in bytes.
    pub(super) fn size(&self) -> u64 {
        match self {
            BlobSource::Bytes(bytes) => bytes.len() as u64,
            BlobSource::File { size, .. } => *size,
        }
    }

    /// Fails when a file does not hold the blob `digest` (any more): read again and hashed, when
    /// the registry said what it got has another digest. Bytes in memory are taken as given.
    pub(super) async fn check(
        &self,
        digest: &Digest,
        hints: &dyn Hints,
    ) -> Result<(), RegistryError> {
        let BlobSource::File { path, size } = self else {
            return Ok(());
        };
        if !digest.as_str().starts_with("sha256:") {
            return Ok(());
        }
        let (owned, size) = (path.to_path_buf(), *size);
        let hashed = tokio::task::spawn_blocking(move || sha256_of_file(&owned, size))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        let actual = hashed.map_err(|e| unreadable(path, e, hints))?;
        if actual == *digest {
            return Ok(());
        }
        Err(RegistryError::LocalBlobDamaged {
            path: path.display().to_string(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        })
    }

    /// The blob from its start as a request body that reports progress and activity.
    pub(super) fn body(
        &self,
        progress: &dyn events::Progress,
        activity: &Activity,
        hints: &dyn Hints,
    ) -> Result<reqwest::Body, RegistryError> {
        match self {
            BlobSource::Bytes(bytes) => Ok(progress_body(
                bytes.clone(),
                progress.share(),
                activity.clone(),
            )),
            BlobSource::File { path, size } => file_body(path, *size, progress, activity, hints),
        }
    }
}

/// The file at `path` could not be read.
fn unreadable(path: &Path, error: std::io::Error, hints: &dyn Hints) -> RegistryError {
    RegistryError::LocalBlob {
        path: path.display().to_string(),
        cause: error.to_string(),
        hint: hints.hint(&Problem::UnreadableBlobFile),
    }
}

/// The sha256 of the file's first `size` bytes, read in pieces.
fn sha256_of_file(path: &Path, size: u64) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut reader = std::fs::File::open(path)?.take(size);
    let mut hasher = sha2::Sha256::new();
    let mut piece = vec![0; FILE_CHUNK];
    loop {
        let n = reader.read(&mut piece)?;
        if n == 0 {
            break;
        }
        hasher.update(&piece[..n]);
    }
    Ok(Digest::from_sha256_bytes(&hasher.finalize()))
}

/// The file's first `size` bytes as a request body that reports progress and activity.
fn file_body(
    path: &Path,
    size: u64,
    progress: &dyn events::Progress,
    activity: &Activity,
    hints: &dyn Hints,
) -> Result<reqwest::Body, RegistryError> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, e, hints))?;
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
