//! Pushes an [`Image`] to the `external` side of a destination over the distribution API:
//! HEAD each blob and skip those present, mount blobs that live in another repository of the
//! same registry, upload the rest, and put the manifest last, once every blob is confirmed, so
//! a tag never points at missing blobs. [`upload_early`] sends layers while the image is still
//! being built; the publisher then takes their outcome as it is.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use miette::{Result, WrapErr};

use super::Published;
use crate::credentials::DefaultKeychain;
use crate::image::layer::{Layer, LayerTap};
use crate::image::{Blob, BlobSource, Image, LayerEvents, LayerListener};
use crate::output::{self, human_bytes};
use crate::reference::{Digest, Repository};
use crate::registry::events::Events;
use crate::registry::pool::Clients;
use crate::registry::{ClientOptions, Hooks, Mount, RegistryClient, RegistryError, RetryPolicy};
use crate::registry_hints::AppHints;
use crate::spec::Destination;

/// The plan's registry settings as the client's options (the registry knows nothing of the plan).
impl From<&crate::spec::RegistryOptions> for ClientOptions {
    fn from(o: &crate::spec::RegistryOptions) -> Self {
        ClientOptions {
            insecure: o.insecure.clone(),
            ca_cert: o.ca_cert.clone(),
            retry: RetryPolicy::with_bounds(o.retry_attempts, o.retry_timeout),
        }
    }
}

/// What the app plugs into its registry clients: its credential sources, its hints, and the
/// terminal for their messages.
pub fn hooks() -> Hooks {
    Hooks {
        keychain: Arc::new(DefaultKeychain),
        hints: Arc::new(AppHints),
        events: Events::to(Arc::new(output::Terminal)),
    }
}

/// How many blobs move at once.
const PARALLEL_BLOBS: usize = 4;
/// Whole-copy attempts for blobs streamed from another registry (the stream cannot rewind).
const STREAM_ATTEMPTS: u32 = 3;

pub struct RegistryPublisher<'a> {
    clients: &'a Clients,
}

#[derive(Debug, Clone, Copy)]
enum BlobOutcome {
    Present,
    Mounted,
    Uploaded(u64),
}

impl<'a> RegistryPublisher<'a> {
    pub fn new(clients: &'a Clients) -> Self {
        RegistryPublisher { clients }
    }

    pub async fn publish(&self, image: &Image, destination: &Destination) -> Result<Published> {
        self.publish_after(image, destination, &EarlyBlobs::default())
            .await
    }

    /// Like [`publish`](Self::publish), for an image some of whose blobs were already sent
    /// while it was built: those are not checked again.
    pub async fn publish_after(
        &self,
        image: &Image,
        destination: &Destination,
        early: &EarlyBlobs,
    ) -> Result<Published> {
        let unreachable = early
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(e) = unreachable {
            return Err(e.into());
        }
        let client = self.clients.get(&destination.external).await?;
        let repo = &destination.repository;
        output::status(
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
        report_pushed(destination, image, &published);
        Ok(published)
    }

    /// Every blob of the image, several at once; those sent early are not checked again, and
    /// one whose early upload failed (after the same retries) fails the push the same way.
    async fn push_blobs(
        &self,
        client: &Arc<RegistryClient>,
        repo: &Repository,
        image: &Image,
        early: &EarlyBlobs,
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
                    output::warn(&format!(
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
            output::detail(&format!("tagged {}:{tag}", destination.push_name()));
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
            output::detail(&format!("tagged {}:{tag}", destination.push_name()));
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
                    output::detail(&format!(
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

    async fn push_blob(
        &self,
        client: &Arc<RegistryClient>,
        repo: &Repository,
        blob: &Blob,
    ) -> Result<BlobOutcome> {
        if client.blob_exists(repo, &blob.digest, blob.size).await? {
            output::detail(&format!(
                "{} {} is already there",
                blob.description, blob.digest
            ));
            return Ok(BlobOutcome::Present);
        }
        match &blob.source {
            BlobSource::File(file) => {
                let mut remade = false;
                loop {
                    let progress = output::Progress::bytes(&blob.description, blob.size);
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
                        tokio::task::spawn_blocking(move || super::remake_damaged(&file, &damage))
                            .await
                            .map_err(|e| miette::miette!("writing a damaged layer again: {e}"))??;
                        continue;
                    }
                    return uploaded(client, blob, &progress, result);
                }
            }
            BlobSource::Bytes(bytes) => {
                let progress = output::Progress::bytes(&blob.description, blob.size);
                let result = client
                    .upload_bytes(repo, &blob.digest, bytes.clone(), &progress, None)
                    .await;
                uploaded(client, blob, &progress, result)
            }
            BlobSource::Registry {
                registry,
                repository,
            } => {
                let mut session = None;
                if registry.api_authority() == client.registry().api_authority() {
                    match client.mount_blob(repo, &blob.digest, repository).await? {
                        Mount::Mounted => {
                            output::detail(&format!(
                                "mounted {} from {repository}",
                                blob.description
                            ));
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
                            output::detail(&format!(
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
        let progress = output::Progress::bytes(&blob.description, blob.size);
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

/// Blobs sent to a destination while its image was still being built: what became of each.
#[derive(Default)]
pub struct EarlyBlobs {
    /// What became of each early upload, with the full retry policy behind it: a failure is
    /// the push's failure, not something to try all over again.
    sent: std::sync::Mutex<HashMap<Digest, Result<BlobOutcome>>>,
    /// The registry could not be reached (after the retry policy's attempts): the publisher
    /// reports this rather than trying all over again.
    unreachable: std::sync::Mutex<Option<RegistryError>>,
}

impl EarlyBlobs {
    /// The early upload's outcome for `digest`, if there was one (taken: each blob is
    /// published once per image).
    fn take(&self, digest: &Digest) -> Option<Result<BlobOutcome>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(digest)
    }
}

/// How many pieces of compressed output (each at most a compression block, 512 KiB, plus its
/// framing) wait for a streamed upload; beyond that the compressor waits for the network.
const STREAM_QUEUE: usize = 4;

/// Layers whose files hold less (uncompressed) are not streamed.
const STREAM_FROM: u64 = 16 << 20;

/// A layer for [`upload_early`]: written to the layer cache, or still being compressed with its
/// bytes streamed as they come.
enum EarlyLayer {
    Finished(Layer),
    Streaming(StreamingLayer),
}

/// A layer being compressed: its compressed bytes as they come, then the finished layer.
struct StreamingLayer {
    description: String,
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    /// Dropped unsent when the layer could not be made (the build says why).
    done: tokio::sync::oneshot::Receiver<Layer>,
}

/// The layers the builder hands to [`upload_early`].
pub struct EarlyLayers {
    layers: tokio::sync::mpsc::UnboundedReceiver<EarlyLayer>,
}

/// The builder's end of [`EarlyLayers`].
struct EarlyListener {
    layers: tokio::sync::mpsc::UnboundedSender<EarlyLayer>,
}

/// A listener for the builder, and the layers it hears of for [`upload_early`].
pub fn early_layers() -> (LayerListener, EarlyLayers) {
    let (sender, layers) = tokio::sync::mpsc::unbounded_channel();
    let listener = EarlyListener { layers: sender };
    (Arc::new(listener), EarlyLayers { layers })
}

impl LayerEvents for EarlyListener {
    fn compressing(&self, description: &str, file_bytes: u64) -> Option<Box<dyn LayerTap>> {
        // A small layer is compressed in moments: it waits, and is checked with HEAD first.
        // (The builder asks only once a layer's bytes differ from its last blob's.)
        if file_bytes < STREAM_FROM {
            return None;
        }
        let (chunks, receiver) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        let (done, finished) = tokio::sync::oneshot::channel();
        let streaming = StreamingLayer {
            description: description.to_string(),
            chunks: receiver,
            done: finished,
        };
        // Fails when upload_early gave up (the registry could not be reached): no stream then.
        self.layers.send(EarlyLayer::Streaming(streaming)).ok()?;
        Some(Box::new(StreamTap {
            chunks,
            done: Some(done),
        }))
    }

    fn finished(&self, layer: &Layer, tapped: bool) {
        // A streamed layer's upload hears of it through its tap.
        if !tapped {
            let _ = self.layers.send(EarlyLayer::Finished(layer.clone()));
        }
    }
}

/// Hands the compressor's output to a streamed upload, on the compressor's thread (never an
/// async one): waits while the queue is full, so memory stays bounded.
struct StreamTap {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: Option<tokio::sync::oneshot::Sender<Layer>>,
}

impl LayerTap for StreamTap {
    fn write(&mut self, bytes: &[u8]) -> bool {
        // Fails once the upload gave up (its end of the queue is gone).
        self.chunks
            .blocking_send(Bytes::copy_from_slice(bytes))
            .is_ok()
    }

    fn finish(mut self: Box<Self>, layer: &Layer) {
        // Sent before the queue closes (when `self` drops), so the upload has the digest at
        // the end of its body.
        if let Some(done) = self.done.take() {
            let _ = done.send(layer.clone());
        }
    }
}

/// Sends each layer that arrives on `layers` to the destination's repository, several at
/// once, until the builder drops its end: a finished layer checked with HEAD first, like any
/// blob; a layer with new content streamed while it is compressed (see
/// [`RegistryPublisher::stream_layer`]). Connects to the registry at once, so the ping and
/// credential lookup overlap the compile. Nothing here fails the run by itself: each outcome,
/// a failed upload (after the retry policy) or a failed connect included, is kept for the
/// publisher to report after the build, which may fail first.
pub async fn upload_early(
    clients: &Clients,
    destination: &Destination,
    layers: EarlyLayers,
) -> EarlyBlobs {
    let mut early = EarlyBlobs::default();
    let client = match clients.get(&destination.external).await {
        Ok(client) => client,
        // Dropping `layers` ends any stream begun meanwhile: its compressor goes on alone.
        Err(e) => {
            early.unreachable = std::sync::Mutex::new(Some(e));
            return early;
        }
    };
    let publisher = RegistryPublisher::new(clients);
    let repo = &destination.repository;
    let arriving = stream::unfold(layers.layers, |mut layers| async move {
        layers.recv().await.map(|layer| (layer, layers))
    });
    let sent: Vec<Option<(Digest, Result<BlobOutcome>)>> = arriving
        .map(|layer| {
            let (publisher, client) = (&publisher, &client);
            async move {
                match layer {
                    EarlyLayer::Finished(layer) => {
                        let blob = cached_blob(layer);
                        output::detail(&format!(
                            "sending {} while the image is being built",
                            blob.description
                        ));
                        let outcome = publisher.push_blob(client, repo, &blob).await;
                        Some((blob.digest, outcome))
                    }
                    EarlyLayer::Streaming(streaming) => {
                        publisher.stream_layer(client, repo, streaming).await
                    }
                }
            }
        })
        .buffer_unordered(PARALLEL_BLOBS)
        .collect()
        .await;
    early.sent = std::sync::Mutex::new(sent.into_iter().flatten().collect());
    early
}

/// A layer in the layer cache as a blob to upload.
fn cached_blob(layer: Layer) -> Blob {
    Blob {
        digest: layer.digest,
        size: layer.size,
        // Not sent with a blob upload; the manifest names the type.
        media_type: String::new(),
        source: BlobSource::File(layer.file),
        description: layer.description,
    }
}

impl RegistryPublisher<'_> {
    /// Uploads a layer while it is compressed: one session whose PATCH body follows the
    /// compressor, closed with the digest once the layer is finished. Anything failing on the
    /// way sends the finished layer from the layer cache instead, as if it had not been
    /// streamed. `None`: the layer could not be made (the build reports why).
    async fn stream_layer(
        &self,
        client: &Arc<RegistryClient>,
        repo: &Repository,
        streaming: StreamingLayer,
    ) -> Option<(Digest, Result<BlobOutcome>)> {
        let StreamingLayer {
            description,
            chunks,
            done,
        } = streaming;
        output::detail(&format!(
            "streaming {description} to {} while it is compressed",
            client.registry()
        ));
        let body = stream::unfold(chunks, |mut chunks| async move {
            chunks
                .recv()
                .await
                .map(|chunk| (Ok::<_, std::io::Error>(chunk), chunks))
        });
        // On failure the body is dropped, and with it the queue: the compressor goes on alone.
        let sent = client.upload_streamed(repo, body).await;
        let layer = done.await.ok()?;
        let result = match sent {
            Ok(upload) if upload.bytes == layer.size => {
                client.finish_streamed(repo, upload, &layer.digest).await
            }
            Ok(upload) => Err(RegistryError::Protocol {
                registry: client.registry().to_string(),
                what: format!("the streamed upload of {description}"),
                cause: format!("it carried {} of {} bytes", upload.bytes, layer.size),
            }
            .into()),
            Err(failed) => Err(failed),
        };
        let blob = cached_blob(layer);
        match result {
            Ok(()) => {
                output::detail(&format!(
                    "uploaded {description} ({}) while it was compressed",
                    human_bytes(blob.size)
                ));
                Some((blob.digest, Ok(BlobOutcome::Uploaded(blob.size))))
            }
            Err(failed) => {
                let e = failed.error;
                // A registry that asked to wait (429, 503 with Retry-After) is given that time,
                // as the normal upload would, within the retry policy's total time.
                match failed.retry_after {
                    Some(wait) if wait <= client.retry_policy().total => {
                        output::detail(&format!(
                            "streaming {description}: {e}; sending it from the layer cache instead in {:.1}s as Retry-After asks",
                            wait.as_secs_f32()
                        ));
                        tokio::time::sleep(wait).await;
                    }
                    _ => output::detail(&format!(
                        "streaming {description}: {e}; sending it from the layer cache instead"
                    )),
                }
                let outcome = self.push_blob(client, repo, &blob).await;
                Some((blob.digest, outcome))
            }
        }
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
fn report_pushed(destination: &Destination, image: &Image, published: &Published) {
    let tags: Vec<&str> = destination.tags.iter().map(|t| t.as_str()).collect();
    // No tags: a platform image of an index, pushed by digest.
    let named = if tags.is_empty() {
        format!("@{}", image.digest)
    } else {
        format!(":{}", tags.join(", :"))
    };
    output::status(
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
    progress: &output::Progress,
    result: Result<(), RegistryError>,
) -> Result<BlobOutcome> {
    progress.finish();
    result.wrap_err_with(|| format!("uploading {} to {}", blob.description, client.registry()))?;
    output::detail(&format!(
        "uploaded {} ({})",
        blob.description,
        human_bytes(blob.size)
    ));
    Ok(BlobOutcome::Uploaded(blob.size))
}
