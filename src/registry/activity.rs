//! Watching a transfer: when bytes last moved and how many, so a stalled request is told from a
//! slow one, and request bodies that report their bytes as progress and activity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::events;

/// When bytes last moved on a request, and how many: tells a slow transfer from a stalled one.
#[derive(Clone)]
pub(super) struct Activity(Arc<ActivityInner>);

pub(super) struct ActivityInner {
    start: Instant,
    /// Milliseconds after `start` of the last movement.
    last_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity(Arc::new(ActivityInner {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }))
    }

    /// `body` as a request body whose bytes count as movement of this activity (so a stalled
    /// upload is told from a slow one).
    pub(super) fn watch<S, E>(&self, body: S) -> reqwest::Body
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        use futures_util::StreamExt as _;
        let watched = self.clone();
        reqwest::Body::wrap_stream(body.map(move |chunk| {
            if let Ok(c) = &chunk {
                watched.moved(c.len() as u64);
            }
            chunk
        }))
    }

    pub(super) fn moved(&self, n: u64) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.store(ms, Ordering::Relaxed);
        self.0.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        self.0.start + Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed))
    }

    pub(super) fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
}

/// Request bodies are handed to the connection in pieces of this size, so progress (and
/// stall detection) sees bytes move.
const BODY_CHUNK: usize = 64 * 1024;

/// Request body that reports progress (and activity, for stall detection) as it is read.
pub(super) fn progress_body(
    bytes: Bytes,
    progress: Box<dyn events::Progress>,
    activity: Activity,
) -> reqwest::Body {
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(BODY_CHUNK)
        .map(|i| bytes.slice(i..(i + BODY_CHUNK).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |c| {
        progress.advance(c.len() as u64);
        activity.moved(c.len() as u64);
        Ok::<Bytes, std::io::Error>(c)
    }));
    reqwest::Body::wrap_stream(stream)
}
