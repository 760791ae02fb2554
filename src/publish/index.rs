//! A multi-platform image: every platform's image pushed by digest, then an OCI image index
//! listing them with their platforms, pushed under the destination's tags. The pull reference
//! names the index; a runtime picks the image for its platform.

use bytes::Bytes;
use miette::{Result, WrapErr};
use serde_json::json;

use super::Published;
use super::registry::RegistryPublisher;
use crate::image::{Image, OCI_INDEX, canonical_json};
use crate::platform::Platform;
use crate::reference::Digest;
use crate::registry::pool::Clients;
use crate::shell::Shell;
use crate::spec::Destination;

/// The index document for `images` (in the order given).
pub fn index_for(images: &[(Platform, &Image)]) -> Result<Bytes> {
    let manifests: Vec<_> = images
        .iter()
        .map(|(platform, image)| {
            let mut p = json!({ "os": "linux", "architecture": platform.architecture() });
            if let Some(v) = platform.variant() {
                p["variant"] = json!(v);
            }
            json!({
                "mediaType": image.manifest_media_type,
                "digest": image.digest.as_str(),
                "size": image.manifest.len(),
                "platform": p,
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    canonical_json(&index).map_err(|e| miette::miette!("could not write the image index: {e}"))
}

/// Pushes every platform image (blobs, then the manifest by digest), then the index under
/// each tag. Returns the index's digest (in `Published`) and the per-platform results.
pub async fn publish_index(
    clients: &Clients,
    images: &[(Platform, &Image)],
    destination: &Destination,
    shell: &Shell,
) -> Result<(Published, Vec<Published>)> {
    let client = clients.get(&destination.external).await?;
    let repo = &destination.repository;
    // Platform images carry no tag of their own: only the index is tagged.
    let untagged = Destination {
        tags: Vec::new(),
        ..destination.clone()
    };
    let mut per_platform = Vec::new();
    for (platform, image) in images {
        shell.status("Pushing", &format!("{platform} image {}", image.digest));
        let published = RegistryPublisher::new(clients, shell)
            .publish(image, &untagged)
            .await?;
        client
            .put_manifest(
                repo,
                image.digest.as_str(),
                &image.manifest_media_type,
                &image.manifest,
                &image.digest,
            )
            .await
            .wrap_err_with(|| format!("pushing the {platform} manifest to {repo}"))?;
        per_platform.push(published);
    }
    let index = index_for(images)?;
    let digest = Digest::sha256_of(&index);
    for tag in &destination.tags {
        client
            .put_manifest(repo, tag.as_str(), OCI_INDEX, &index, &digest)
            .await
            .wrap_err_with(|| {
                format!(
                    "pushing the image index as {}:{tag}",
                    destination.push_name()
                )
            })?;
    }
    if destination.tags.is_empty() {
        client
            .put_manifest(repo, digest.as_str(), OCI_INDEX, &index, &digest)
            .await
            .wrap_err_with(|| format!("pushing the image index to {repo}"))?;
    }
    let platforms: Vec<String> = images.iter().map(|(p, _)| p.to_string()).collect();
    shell.status(
        "Pushed",
        &format!(
            "{}@{digest} (index of {})",
            destination.push_name(),
            platforms.join(", ")
        ),
    );
    let total = |f: fn(&Published) -> usize| per_platform.iter().map(f).sum();
    Ok((
        Published {
            digest,
            uploaded: total(|p| p.uploaded),
            mounted: total(|p| p.mounted),
            present: total(|p| p.present),
            uploaded_bytes: per_platform.iter().map(|p| p.uploaded_bytes).sum(),
        },
        per_platform,
    ))
}
