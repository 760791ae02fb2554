//! Registry-less destinations (`--tarball`, `--oci-layout`, `--load`): an image with every blob's
//! bytes in hand, named as the cluster would pull it. The manifest bytes are the very ones a
//! registry push sends, so the digest is the same whatever the destination.

use bytes::Bytes;
use miette::{IntoDiagnostic, Result, WrapErr};

use crate::image::{Blob, BlobSource, Image};
use crate::plan::Destination;
use crate::reference::Digest;
use crate::registry::pool::Clients;

/// An image whose blobs are all in memory, with the names it goes by.
pub struct LocalImage {
    /// `internal/repository`: the pull reference's repository, without tag or digest.
    pub name: String,
    pub tags: Vec<String>,
    pub manifest: Bytes,
    pub manifest_media_type: String,
    pub digest: Digest,
    pub config: (Blob, Bytes),
    pub layers: Vec<(Blob, Bytes)>,
}

impl LocalImage {
    /// `name:tag` for every tag.
    pub fn references(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| format!("{}:{t}", self.name))
            .collect()
    }

    /// Manifest, config and layers as (digest, bytes): every blob of a layout.
    pub fn blobs(&self) -> impl Iterator<Item = (&Digest, &Bytes)> {
        std::iter::once((&self.digest, &self.manifest))
            .chain(std::iter::once((&self.config.0.digest, &self.config.1)))
            .chain(self.layers.iter().map(|(b, bytes)| (&b.digest, bytes)))
    }
}

/// Fetches what is still in a registry (a base image's layers) so the image can be written out.
pub async fn materialize(
    image: &Image,
    destination: &Destination,
    clients: &Clients,
) -> Result<LocalImage> {
    let mut layers = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        layers.push((layer.clone(), blob_bytes(layer, clients).await?));
    }
    Ok(LocalImage {
        name: destination.pull_name(),
        tags: destination.tags.iter().map(|t| t.to_string()).collect(),
        manifest: image.manifest.clone(),
        manifest_media_type: image.manifest_media_type.clone(),
        digest: image.digest.clone(),
        config: (
            image.config.clone(),
            blob_bytes(&image.config, clients).await?,
        ),
        layers,
    })
}

async fn blob_bytes(blob: &Blob, clients: &Clients) -> Result<Bytes> {
    match &blob.source {
        BlobSource::Bytes(b) => Ok(b.clone()),
        BlobSource::File(path) => tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .into_diagnostic()
            .wrap_err_with(|| {
                format!(
                    "reading {} from the layer cache ({})",
                    blob.description,
                    path.display()
                )
            }),
        BlobSource::Registry {
            registry,
            repository,
        } => {
            let client = clients.get(registry).await?;
            client
                .get_blob_bytes(repository, &blob.digest)
                .await
                .wrap_err_with(|| {
                    format!(
                        "fetching {} from {registry}/{repository} to write it out",
                        blob.description
                    )
                })
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a reader never
/// sees half a file and an interrupted run leaves the old one.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
