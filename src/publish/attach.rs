//! Attaches documents (SBOM, provenance) to a pushed image as OCI 1.1 referrers: each becomes
//! an artifact manifest whose `artifactType` is the document's media type, whose config is the
//! empty descriptor, whose one layer is the document, and whose `subject` is the image. Then it
//! is made findable (the registry's referrers API, or the fallback tag).
//!
//! Works on any pushed image, whichever publisher pushed it: it only needs the digest.

use std::time::Duration;

use bytes::Bytes;
use miette::{Result, WrapErr};
use serde_json::{Value, json};

use crate::image::{OCI_MANIFEST, canonical_json, rfc3339};
use crate::publish::registry::lost_blob_race;
use crate::reference::{Digest, Repository};
use crate::registry::RegistryClient;
use crate::registry::referrers::ReferrersVia;
use crate::shell::Shell;
use crate::supply_chain::{Document, DocumentKind};

/// The OCI empty descriptor's media type and content (`{}`).
pub const EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_CONTENT: &[u8] = b"{}";

/// One attached document, as reported.
#[derive(Debug, Clone)]
pub struct Attached {
    pub kind: DocumentKind,
    pub artifact_type: &'static str,
    /// Digest of the referrer manifest (what `oras discover` lists).
    pub digest: Digest,
    pub via: ReferrersVia,
}

/// The artifact manifest for `document` about the image `subject` (its descriptor as JSON).
pub fn artifact_manifest(document: &Document, subject: &Value, epoch: u64) -> Result<Bytes> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": document.media_type,
        "config": {
            "mediaType": EMPTY_JSON,
            "digest": Digest::sha256_of(EMPTY_CONTENT).as_str(),
            "size": EMPTY_CONTENT.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": document.media_type,
            "digest": Digest::sha256_of(&document.bytes).as_str(),
            "size": document.bytes.len(),
        }],
        "subject": subject,
        "annotations": {
            "org.opencontainers.image.created": rfc3339(epoch),
        },
    });
    canonical_json(&manifest)
        .map_err(|e| miette::miette!("could not write the artifact manifest: {e}"))
}

/// The image a referrer is about, when the caller knows its manifest: media type and size.
#[derive(Debug, Clone)]
pub struct KnownManifest {
    pub media_type: String,
    pub size: usize,
}

/// Pushes each document as a referrer of `image` in `repo`. The documents' blobs and artifact
/// manifests go up side by side; then all are listed as referrers at once (one update of the
/// fallback tag, checked to hold them all: see [`RegistryClient::add_referrers`]).
pub async fn attach_all(
    client: &RegistryClient,
    repo: &Repository,
    image: &Digest,
    known: Option<KnownManifest>,
    documents: &[Document],
    epoch: u64,
    shell: &Shell,
) -> Result<Vec<Attached>> {
    if documents.is_empty() {
        return Ok(Vec::new());
    }
    let subject = subject_descriptor(client, repo, image, known).await?;
    with_race_retries(client, repo, image, shell, || async {
        upload_if_absent(
            client,
            repo,
            Bytes::from_static(EMPTY_CONTENT),
            "empty config",
            shell,
        )
        .await
    })
    .await?;
    let pushed = futures_util::future::join_all(documents.iter().map(|document| {
        with_race_retries(client, repo, image, shell, || {
            push_artifact(client, repo, &subject, document, epoch, shell)
        })
    }))
    .await;
    let mut listed = Vec::new();
    for (document, pushed) in documents.iter().zip(pushed) {
        match pushed? {
            Artifact::Pushed { digest, size } => listed.push((document, digest, size)),
            // The registry refuses OCI artifact manifests: said once, nothing more to try.
            Artifact::Refused(e) => {
                shell.warn(&format!(
                    "{} does not accept OCI artifact manifests ({e}), so the SBOM and provenance of {repo}@{image} were not attached; use a registry that takes OCI 1.1 manifests, or --sbom none --provenance false to silence this",
                    client.registry()
                ));
                break;
            }
        }
    }
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let descriptors: Vec<Value> = listed
        .iter()
        .map(|(document, digest, size)| referrer_descriptor(document, digest, *size, epoch))
        .collect();
    let kinds: Vec<&str> = listed.iter().map(|(document, ..)| what(document)).collect();
    let via = with_race_retries(client, repo, image, shell, || async {
        client
            .add_referrers(repo, image, &descriptors)
            .await
            .wrap_err_with(|| {
                format!(
                    "listing the {} as referrers of {repo}@{image}",
                    kinds.join(" and ")
                )
            })
    })
    .await?;
    Ok(listed
        .into_iter()
        .map(|(document, digest, _)| {
            shell.detail(&format!(
                "attached {} {digest} to {image} (via {})",
                what(document),
                via.describe()
            ));
            Attached {
                kind: document.kind,
                artifact_type: document.media_type,
                digest,
                via,
            }
        })
        .collect())
}

/// The subject descriptor needs the image manifest's exact type and size: from the caller when
/// it knows them, else read back, which works for every publisher (the engine does not tell).
async fn subject_descriptor(
    client: &RegistryClient,
    repo: &Repository,
    image: &Digest,
    known: Option<KnownManifest>,
) -> Result<Value> {
    let known = match known {
        Some(known) => known,
        None => {
            let (media_type, bytes, _) = client
                .get_manifest(repo, image.as_str())
                .await
                .wrap_err_with(|| format!("reading back {repo}@{image} to attach its SBOM"))?;
            KnownManifest {
                media_type,
                size: bytes.len(),
            }
        }
    };
    Ok(json!({
        "mediaType": known.media_type,
        "digest": image.as_str(),
        "size": known.size,
    }))
}

/// Concurrent pushes of one image (CI matrix jobs) race inside the registry over the same
/// artifact blobs and the same referrers tag: a lost race is settled by doing the step again
/// (each checks what is already there), within the attempts.
async fn with_race_retries<T, F, Fut>(
    client: &RegistryClient,
    repo: &Repository,
    image: &Digest,
    shell: &Shell,
    step: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match step().await {
            Err(e) if lost_blob_race(&e) && attempt < client.retry_policy().attempts => {
                shell.detail(&format!(
                    "attaching to {repo}@{image}: {e}; trying again (attempt {}/{})",
                    attempt + 1,
                    client.retry_policy().attempts
                ));
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

fn what(document: &Document) -> &'static str {
    match document.kind {
        DocumentKind::Sbom => "SBOM",
        DocumentKind::Provenance => "provenance",
    }
}

/// What became of a document's artifact manifest.
enum Artifact {
    Pushed {
        digest: Digest,
        size: usize,
    },
    /// The registry refuses OCI manifests altogether: what it said.
    Refused(String),
}

/// Uploads one document and its artifact manifest.
async fn push_artifact(
    client: &RegistryClient,
    repo: &Repository,
    subject: &Value,
    document: &Document,
    epoch: u64,
    shell: &Shell,
) -> Result<Artifact> {
    let what = what(document);
    upload_if_absent(client, repo, document.bytes.clone(), what, shell).await?;
    let manifest = artifact_manifest(document, subject, epoch)?;
    let digest = Digest::sha256_of(&manifest);
    match client
        .put_manifest(repo, digest.as_str(), OCI_MANIFEST, &manifest, &digest)
        .await
    {
        Ok(()) => Ok(Artifact::Pushed {
            digest,
            size: manifest.len(),
        }),
        // A registry that takes no OCI manifests cannot hold OCI 1.1 referrers at all: the
        // image stands, and the user is told what is missing and why.
        Err(e) if e.refuses_media_type() => Ok(Artifact::Refused(e.to_string())),
        Err(e) => Err(e).wrap_err_with(|| format!("pushing the {what} manifest to {repo}")),
    }
}

/// The descriptor of a pushed artifact manifest, as a referrers index lists it.
fn referrer_descriptor(document: &Document, digest: &Digest, size: usize, epoch: u64) -> Value {
    json!({
        "mediaType": OCI_MANIFEST,
        "artifactType": document.media_type,
        "digest": digest.as_str(),
        "size": size,
        "annotations": {
            "org.opencontainers.image.created": rfc3339(epoch),
        },
    })
}

async fn upload_if_absent(
    client: &RegistryClient,
    repo: &Repository,
    bytes: Bytes,
    what: &str,
    shell: &Shell,
) -> Result<()> {
    let digest = Digest::sha256_of(&bytes);
    if client
        .blob_exists(repo, &digest, bytes.len() as u64)
        .await?
    {
        return Ok(());
    }
    let progress = shell.upload_progress(what, bytes.len() as u64);
    let result = client
        .upload_bytes(repo, &digest, bytes, &progress, None)
        .await;
    progress.finish();
    result.wrap_err_with(|| format!("uploading the {what} to {}", client.registry()))
}
