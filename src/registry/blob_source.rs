//! Where the bytes of a blob upload come from: memory, or a file (a compressed layer in the
//! on-disk cache) read in pieces as the connection takes them, so a layer of any size costs a few
//! hundred KiB of memory. Either source can be read again from the start, which is what lets a
//! failed transfer start over with a fresh upload session.

use std::path::Path;

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::io::AsyncReadExt;

use super::RegistryError;
use super::events;
use super::transport::{Activity, progress_body};

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

    /// The blob from its start as a request body that reports progress and activity.
    pub(super) fn body(
        &self,
        progress: &dyn events::Progress,
        activity: &Activity,
    ) -> Result<reqwest::Body, RegistryError> {
        match self {
            BlobSource::Bytes(bytes) => Ok(progress_body(
                bytes.clone(),
                progress.share(),
                activity.clone(),
            )),
            BlobSource::File { path, size } => file_body(path, *size, progress, activity),
        }
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
