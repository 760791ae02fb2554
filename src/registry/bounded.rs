//! Reading answers within bounds: a body up to a size limit, each piece within the stall time,
//! and the first part of an error answer, parsed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Response;

use super::api_error::ErrorBody;

/// The most an image config or a token answer may weigh.
pub(super) const SMALL_BLOB_LIMIT: usize = 8 * 1024 * 1024;

/// The most of an error answer that is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Why a bounded body read ended early.
pub(super) enum BodyError {
    TooLarge,
    Stalled,
    Transport(reqwest::Error),
}

/// Reads a body up to `limit` bytes: an announced or streamed size past it stops the read at
/// once. Each piece must arrive within `stall`.
pub(super) async fn read_limited(
    mut response: Response,
    limit: usize,
    stall: Duration,
) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(stall, response.chunk()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(Err(e)) => return Err(BodyError::Transport(e)),
            Ok(Ok(None)) => return Ok(out.freeze()),
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

/// `4 MiB`, `64 KiB`.
pub(super) fn human_size(n: usize) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// The first 64 KiB of a response body as text, bounded in time; the rest is not read.
pub(super) async fn read_text(mut response: Response, limit: Duration) -> String {
    let mut out: Vec<u8> = Vec::new();
    let deadline = Instant::now() + limit;
    while out.len() < ERROR_BODY_LIMIT {
        match tokio::time::timeout_at(deadline.into(), response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = ERROR_BODY_LIMIT - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error answer: its start read (bounded in time) and parsed once.
pub(super) async fn read_error_body(response: Response, limit: Duration) -> ErrorBody {
    ErrorBody::parse(&read_text(response, limit).await)
}
