//! Pushes an [`Image`] to the `external` side of a destination over the distribution API:
//! HEAD each blob and skip those present, mount blobs that live in another repository of the
//! same registry, upload the rest, and put the manifest last, once every blob is confirmed, so
//! a tag never points at missing blobs. Layers the early upload (`early_upload`) sent while the
//! image was still being built are not checked again: the publisher takes their outcome as it
//! is.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use miette::{Result, WrapErr};

use super::Published;
use super::shell_events::ShellEvents;
use crate::credentials::DefaultKeychain;
use crate::image::{Blob, BlobSource, Image};
use crate::reference::{Digest, Repository};
use crate::registry::events::Events;
use crate::registry::pool::Clients;
use crate::registry::{
    ClientIdentity, ClientOptions, Hooks, Mount, RegistryClient, RegistryError, RetryPolicy,
};
use crate::registry_hints::AppHints;
use crate::shell::{Progress, Shell, human_bytes};
use crate::spec::Destination;

/// The plan's registry settings as the client's options (the registry knows nothing of the plan).
impl From<&crate::spec::RegistryOptions> for ClientOptions {
    fn from(o: &crate::spec::RegistryOptions) -> Self {
        ClientOptions {
            insecure: o.insecure.clone(),
            ca_cert: o.ca_cert.clone(),
            retry: RetryPolicy::with_bounds(o.retry_attempts, o.retry_timeout),
            identity: identity(),
        }
    }
}

/// How the registry client names this tool to registries and token services.
fn identity() -> ClientIdentity {
    ClientIdentity {
        user_agent: concat!("cargo-adapt-push/", env!("CARGO_PKG_VERSION")).into(),
        client_id: "cargo-adapt-push".into(),
    }
}

/// What the app plugs into its registry clients: its credential sources, its hints, and the
/// terminal for their messages.
pub fn hooks(shell: &Shell) -> Hooks {
    Hooks {
        keychain: Arc::new(DefaultKeychain),
        hints: Arc::new(AppHints),
        events: Events::to(Arc::new(ShellEvents(shell.clone()))),
    }
}

/// How many blobs move at once.
pub(super) const PARALLEL_BLOBS: usize = 4;
/// Whole-copy attempts for blobs streamed from another registry (the stream cannot rewind).
const STREAM_ATTEMPTS: u32 = 3;

/// Blobs sent to a destination while its image was still being built: what became of each.
#[derive(Default)]
pub struct EarlyUploadOutcomes {
    /// What became of each early upload, with the full retry policy behind it: a failure is
    /// the push's failure, not something to try all over again.
    pub(super) sent: std::sync::Mutex<HashMap<Digest, Result<BlobOutcome>>>,
    /// The registry could not be reached (after the retry policy's attempts): the publisher
    /// reports this rather than trying all over again.
    pub(super) unreachable: std::sync::Mutex<Option<RegistryError>>,
}

impl EarlyUploadOutcomes {
    /// The early upload's outcome for `digest`, if there was one (taken: each blob is
    /// published once per image).
    pub(super) fn take(&self, digest: &Digest) -> Option<Result<BlobOutcome>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(digest)
    }

    /// Why the early upload could not reach the registry, if it could not (taken: reported
    /// once).
    pub(super) fn take_unreachable(&self) -> Option<RegistryError> {
        self.unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

pub struct RegistryPublisher<'a> {
    clients: &'a Clients,
    /// Told what is pushed.
    pub(super) shell: &'a Shell,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum BlobOutcome {
    Present,
    Mounted,
    Uploaded(u64),
}

impl<'a> RegistryPublisher<'a> {
    /// A publisher through `clients` that tells `shell` what it pushes.
    pub fn new(clients: &'a Clients, shell: &'a Shell) -> Self {
        RegistryPublisher { clients, shell }
    }

    pub async fn publish(&self, image: &Image, destination: &Destination) -> Result<Published> {
        self.publish_after(image, destination, &EarlyUploadOutcomes::default())
            .await
    }

    /// Like [`publish`](Self::publish), for an image some of whose blobs were already sent
    /// while it was built: those are not checked again.
    pub async fn publish_after(
        &self,
        image: &Image,
        destination: &Destination,
        early: &EarlyUploadOutcomes,
    ) -> Result<Published> {
        if let Some(e) = early.take_unreachable() {
            return Err(e.into());
        }
        let client = self.clients.get(&destination.external).await?;
        let repo = &destination.repository;
        self.shell.status(
            "Pushing",
            &format!(
                "{} ({} blobs)",
                destination.push_name(),
                image.layers.len() + 1
            ),
        );

        let outcomes = self.push_blobs(&client, repo, image, early).await?;
        // Every blob is now confirmed in the registry: only now may a tag point at them.
        let digest = self.tag_image(&client, destination, image).await?;
        let published = Published::count(digest, &outcomes);
        report_pushed(self.shell, destination, image, &published);
        Ok(published)
    }

    /// Every blob of the image, several at once; those sent early are not checked again, and
    /// one whose early upload failed (after the same retries) fails the push the same way.
    async fn push_blobs(
        &self,
        client: &Arc<RegistryClient>,
        repo: &Repository,
        image: &Image,
        early: &EarlyUploadOutcomes,
    ) -> Result<Vec<BlobOutcome>> {
        stream::iter(image.blobs())
            .map(|blob| async {
                match early.take(&blob.digest) {
                    Some(outcome) => outcome,
                    None => self.push_blob(client, repo, blob).await,
                }
            })
            .buffered(PARALLEL_BLOBS)
            .try_collect()
            .await
    }

    /// Puts the manifest under every tag and returns the digest the registry holds: the image's,
    /// or that of its Docker schema 2 form when the registry refuses the OCI manifest.
    async fn tag_image(
        &self,
        client: &Arc<RegistryClient>,
        destination: &Destination,
        image: &Image,
    ) -> Result<Digest> {
        let repo = &destination.repository;
        for (i, tag) in destination.tags.iter().enumerate() {
            let result = self
                .put_manifest_settling_races(client, repo, image, tag.as_str())
                .await;
            let result = match (result, image.as_docker_schema2()) {
                (Err(e), Some(docker)) if i == 0 && refuses_media_type(&e) => {
                    self.shell.warn(&format!(
                        "{} refused the OCI manifest ({e}); pushing the same image with Docker schema 2 media types instead. Set `media-types = \"docker\"` (or --media-types docker) to push that directly",
                        client.registry()
                    ));
                    // Same config and layer bytes: only the manifest differs.
                    self.put_tags(client, destination, &docker).await?;
                    return Ok(docker.digest);
                }
                (result, _) => result,
            };
            result.wrap_err_with(|| {
                format!("pushing the manifest as {}:{tag}", destination.push_name())
            })?;
            self.shell
                .detail(&format!("tagged {}:{tag}", destination.push_name()));
        }
        Ok(image.digest.clone())
    }

    async fn put_tags(
        &self,
        client: &Arc<RegistryClient>,
        destination: &Destination,
        image: &Image,
    ) -> Result<()> {
        for tag in &destination.tags {
            self.put_manifest_settling_races(client, &destination.repository, image, tag.as_str())
                .await
                .wrap_err_with(|| {
                    format!("pushing the manifest as {}:{tag}", destination.push_name())
                })?;
            self.shell
                .detail(&format!("tagged {}:{tag}", destination.push_name()));
        }
        Ok(())
    }

    /// PUTs the manifest. Concurrent pushes of one image into one repository race inside the
    /// registry (distribution 2.8 may lose a blob link another push was writing and answer
    /// `MANIFEST_BLOB_UNKNOWN`, `BLOB_UNKNOWN` or `DIGEST_INVALID`): then every blob is checked
    /// again (HEAD), what is missing is uploaded, and the manifest sent again, within the
    /// retry policy's attempts.
    async fn put_manifest_settling_races(
        &self,
        client: &Arc<RegistryClient>,
        repo: &Repository,
        image: &Image,
        tag: &str,
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = client
                .put_manifest(
                    repo,
                    tag,
                    &image.manifest_media_type,
                    &image.manifest,
                    &image.digest,
                )
                .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_blob_race() && attempt < client.retry_policy().attempts => {
                    self.shell.detail(&format!(
                        "the manifest for :{tag}: {e}; checking the blobs again (attempt {}/{})",
                        attempt + 1,
                        client.retry_policy().attempts
                    ));
                    for blob in image.blobs() {
                        self.push_blob(client, repo, blob).await?;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(super) async fn push_blob(
        &self,
        client: &Arc<RegistryClient>,
        repo: &Repository,
        blob: &Blob,
    ) -> Result<BlobOutcome> {
        if client.blob_exists(repo, &blob.digest, blob.size).await? {
            self.shell.detail(&format!(
                "{} {} is already there",
                blob.description, blob.digest
            ));
            return Ok(BlobOutcome::Present);
        }
        match &blob.source {
            BlobSource::File(file) => {
                let mut remade = false;
                loop {
                    let progress = self.shell.upload_progress(&blob.description, blob.size);
                    let result = client
                        .upload_file(repo, &blob.digest, file.path(), blob.size, &progress)
                        .await;
                    // The cache file does not hold the layer: written again from its inputs,
                    // then sent once more.
                    if let Err(damage @ RegistryError::LocalBlobDamaged { .. }) = &result
                        && !remade
                    {
                        progress.finish();
                        remade = true;
                        let (file, damage) = (file.clone(), damage.to_string());
                        let shell = self.shell.clone();
                        tokio::task::spawn_blocking(move || {
                            super::remake_damaged(&file, &damage, &shell)
                        })
                        .await
                        .map_err(|e| miette::miette!("writing a damaged layer again: {e}"))??;
                        continue;
                    }
                    return uploaded(client, blob, &progress, result, self.shell);
                }
            }
            BlobSource::Bytes(bytes) => {
                let progress = self.shell.upload_progress(&blob.description, blob.size);
                let result = client
                    .upload_bytes(repo, &blob.digest, bytes.clone(), &progress, None)
                    .await;
                uploaded(client, blob, &progress, result, self.shell)
            }
            BlobSource::Registry {
                registry,
                repository,
            } => {
                let mut session = None;
                if registry.api_authority() == client.registry().api_authority() {
                    match client.mount_blob(repo, &blob.digest, repository).await? {
                        Mount::Mounted => {
                            self.shell
                                .detail(&format!("mounted {} from {repository}", blob.description));
                            return Ok(BlobOutcome::Mounted);
                        }
                        // Mount refused: the registry opened an upload instead; use it.
                        Mount::UploadStarted(location) => session = Some(location),
                    }
                }
                let source = self.clients.get(registry).await?;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self
                        .copy_blob(&source, repository, client, repo, blob, session.take())
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if attempt < STREAM_ATTEMPTS => {
                            // The registry may have stored it before the connection broke.
                            if let Ok(true) =
                                client.blob_exists(repo, &blob.digest, blob.size).await
                            {
                                break;
                            }
                            self.shell.detail(&format!(
                                "copying {}: {e}; starting over",
                                blob.description
                            ));
                            tokio::time::sleep(std::time::Duration::from_millis(
                                500 * u64::from(attempt),
                            ))
                            .await;
                        }
                        Err(e) => {
                            return Err(miette::Report::new(e)).wrap_err_with(|| {
                                format!("copying {} from {registry}/{repository}", blob.description)
                            });
                        }
                    }
                }
                Ok(BlobOutcome::Uploaded(blob.size))
            }
        }
    }

    /// Streams a blob from one registry into another without holding it in memory.
    async fn copy_blob(
        &self,
        source: &RegistryClient,
        source_repo: &Repository,
        dest: &RegistryClient,
        dest_repo: &Repository,
        blob: &Blob,
        session: Option<String>,
    ) -> Result<(), RegistryError> {
        let response = source.get_blob(source_repo, &blob.digest).await?;
        let progress = self.shell.upload_progress(&blob.description, blob.size);
        let p = progress.clone();
        let body = response
            .bytes_stream()
            .inspect_ok(move |chunk| p.advance(chunk.len() as u64));
        let result = dest
            .upload_stream(dest_repo, &blob.digest, blob.size, body, session)
            .await;
        progress.finish();
        result
    }
}

impl Published {
    /// The summary of what became of each blob.
    fn count(digest: Digest, outcomes: &[BlobOutcome]) -> Published {
        let mut published = Published {
            digest,
            uploaded: 0,
            mounted: 0,
            present: 0,
            uploaded_bytes: 0,
        };
        for o in outcomes {
            match o {
                BlobOutcome::Present => published.present += 1,
                BlobOutcome::Mounted => published.mounted += 1,
                BlobOutcome::Uploaded(n) => {
                    published.uploaded += 1;
                    published.uploaded_bytes += n;
                }
            }
        }
        published
    }
}

/// The "Pushed" line: where, under which tags (or digest), and what moved.
fn report_pushed(shell: &Shell, destination: &Destination, image: &Image, published: &Published) {
    let tags: Vec<&str> = destination.tags.iter().map(|t| t.as_str()).collect();
    // No tags: a platform image of an index, pushed by digest.
    let named = if tags.is_empty() {
        format!("@{}", image.digest)
    } else {
        format!(":{}", tags.join(", :"))
    };
    shell.status(
        "Pushed",
        &format!(
            "{}{named} ({} uploaded, {}; {} mounted; {} already there)",
            destination.push_name(),
            published.uploaded,
            human_bytes(published.uploaded_bytes),
            published.mounted,
            published.present
        ),
    );
}

/// Whether a push failed because the registry refuses the manifest's media type.
pub(crate) fn refuses_media_type(error: &miette::Report) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::refuses_media_type)
    })
}

/// Whether a push failed because it lost a race with a concurrent push of the same blobs.
pub(crate) fn lost_blob_race(error: &miette::Report) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::is_blob_race)
    })
}

/// The end of an upload from here (a file of the layer cache, or bytes): the bar closes, a
/// failure names the blob and the registry, a success is reported.
fn uploaded(
    client: &RegistryClient,
    blob: &Blob,
    progress: &Progress,
    result: Result<(), RegistryError>,
    shell: &Shell,
) -> Result<BlobOutcome> {
    progress.finish();
    result.wrap_err_with(|| format!("uploading {} to {}", blob.description, client.registry()))?;
    shell.detail(&format!(
        "uploaded {} ({})",
        blob.description,
        human_bytes(blob.size)
    ));
    Ok(BlobOutcome::Uploaded(blob.size))
}
