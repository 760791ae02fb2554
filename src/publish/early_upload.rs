//! The early upload: layers sent to the destination while the image is still being built.
//!
//! The builder announces each layer it writes to the [`EarlyUpload`] of
//! [`early_upload_channel`], and a new large layer's bytes while they are compressed;
//! [`upload_early`] receives them and sends each one, a finished layer checked with HEAD first
//! like any blob, a streamed one through a single upload session. What became of each
//! ([`EarlyUploadOutcomes`](super::registry::EarlyUploadOutcomes)) goes to
//! [`RegistryPublisher::publish_after`], which does not check those blobs again.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use miette::Result;

use super::registry::{BlobOutcome, EarlyUploadOutcomes, PARALLEL_BLOBS, RegistryPublisher};
use crate::image::early_upload::{EarlyUpload, EarlyUploadStream};
use crate::image::layer::Layer;
use crate::image::{Blob, BlobSource};
use crate::reference::{Digest, Repository};
use crate::registry::pool::Clients;
use crate::registry::{RegistryClient, RegistryError};
use crate::shell::{Shell, human_bytes};
use crate::spec::Destination;

/// How many pieces of compressed output (each at most a compression block, 512 KiB, plus its
/// framing) wait for a streamed upload; beyond that the compressor waits for the network.
const STREAM_QUEUE: usize = 4;

/// Layers whose files hold less (uncompressed) are not streamed.
const STREAM_FROM: u64 = 16 << 20;

/// A layer for [`upload_early`]: written to the layer cache, or still being compressed with its
/// bytes streamed as they come.
enum EarlyUploadLayer {
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
pub struct EarlyUploadReceiver {
    layers: tokio::sync::mpsc::UnboundedReceiver<EarlyUploadLayer>,
}

/// The builder's end of [`EarlyUploadReceiver`].
struct EarlyUploadSender {
    layers: tokio::sync::mpsc::UnboundedSender<EarlyUploadLayer>,
}

/// The early upload for the builder, and the layers it hears of for [`upload_early`].
pub fn early_upload_channel() -> (Arc<dyn EarlyUpload>, EarlyUploadReceiver) {
    let (sender, layers) = tokio::sync::mpsc::unbounded_channel();
    let sender = EarlyUploadSender { layers: sender };
    (Arc::new(sender), EarlyUploadReceiver { layers })
}

impl EarlyUpload for EarlyUploadSender {
    fn compressing(
        &self,
        description: &str,
        file_bytes: u64,
    ) -> Option<Box<dyn EarlyUploadStream>> {
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
        self.layers
            .send(EarlyUploadLayer::Streaming(streaming))
            .ok()?;
        Some(Box::new(StreamingLayerSender {
            chunks,
            done: Some(done),
        }))
    }

    fn finished(&self, layer: &Layer, streamed: bool) {
        // A streamed layer's upload hears of it through its stream.
        if !streamed {
            let _ = self.layers.send(EarlyUploadLayer::Finished(layer.clone()));
        }
    }
}

/// The compressor's end of a [`StreamingLayer`]: hands the compressor's output to the streamed
/// upload, on the compressor's thread (never an async one), waiting while the queue is full, so
/// memory stays bounded.
struct StreamingLayerSender {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    done: Option<tokio::sync::oneshot::Sender<Layer>>,
}

impl EarlyUploadStream for StreamingLayerSender {
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
/// [`stream_layer`]). Connects to the registry at once, so the ping and
/// credential lookup overlap the compile. Nothing here fails the run by itself: each outcome,
/// a failed upload (after the retry policy) or a failed connect included, is kept for the
/// publisher to report after the build, which may fail first.
pub async fn upload_early(
    clients: &Clients,
    destination: &Destination,
    layers: EarlyUploadReceiver,
    shell: &Shell,
) -> EarlyUploadOutcomes {
    let mut early = EarlyUploadOutcomes::default();
    let client = match clients.get(&destination.external).await {
        Ok(client) => client,
        // Dropping `layers` ends any stream begun meanwhile: its compressor goes on alone.
        Err(e) => {
            early.unreachable = std::sync::Mutex::new(Some(e));
            return early;
        }
    };
    let publisher = RegistryPublisher::new(clients, shell);
    let repo = &destination.repository;
    let arriving = stream::unfold(layers.layers, |mut layers| async move {
        layers.recv().await.map(|layer| (layer, layers))
    });
    let sent: Vec<Option<(Digest, Result<BlobOutcome>)>> = arriving
        .map(|layer| {
            let (publisher, client) = (&publisher, &client);
            async move {
                match layer {
                    EarlyUploadLayer::Finished(layer) => {
                        let blob = cached_blob(layer);
                        shell.detail(&format!(
                            "sending {} while the image is being built",
                            blob.description
                        ));
                        let outcome = publisher.push_blob(client, repo, &blob).await;
                        Some((blob.digest, outcome))
                    }
                    EarlyUploadLayer::Streaming(streaming) => {
                        stream_layer(publisher, client, repo, streaming).await
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

/// Uploads a layer while it is compressed: one session whose PATCH body follows the
/// compressor, closed with the digest once the layer is finished. Anything failing on the
/// way sends the finished layer from the layer cache instead, as if it had not been
/// streamed. `None`: the layer could not be made (the build reports why).
async fn stream_layer(
    publisher: &RegistryPublisher<'_>,
    client: &Arc<RegistryClient>,
    repo: &Repository,
    streaming: StreamingLayer,
) -> Option<(Digest, Result<BlobOutcome>)> {
    let StreamingLayer {
        description,
        chunks,
        done,
    } = streaming;
    publisher.shell.detail(&format!(
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
            publisher.shell.detail(&format!(
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
                    publisher.shell.detail(&format!(
                        "streaming {description}: {e}; sending it from the layer cache instead in {:.1}s as Retry-After asks",
                        wait.as_secs_f32()
                    ));
                    tokio::time::sleep(wait).await;
                }
                _ => publisher.shell.detail(&format!(
                    "streaming {description}: {e}; sending it from the layer cache instead"
                )),
            }
            let outcome = publisher.push_blob(client, repo, &blob).await;
            Some((blob.digest, outcome))
        }
    }
}
