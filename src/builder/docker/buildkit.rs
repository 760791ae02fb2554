//! Builds through the engine's BuildKit (`POST /build?version=2`), so Dockerfiles written for it
//! work (`RUN --mount=type=cache`, heredocs) and cache mounts persist between builds.
//!
//! bollard decodes the build stream into types that cannot hold BuildKit's progress records
//! (base64 protobuf in `aux`) without its `buildkit` feature, which brings a gRPC stack and
//! requires a client session. The engine takes a BuildKit build of an uploaded tar context
//! without a session, so this module sends that one request itself, over the engine's unix
//! socket or plain TCP, and reads the progress records with a small protobuf reader. Engines
//! reached through TLS or SSH use the classic builder (with a note).

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::log::BuildOutput;

/// One line of build output from the engine, at most (it is untrusted).
const MAX_LINE: usize = 4 * 1024 * 1024;
/// An error answer's body, at most.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The whole build, at most: the bound the engine client puts on its requests.
const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Where the engine listens, when this module can talk to it.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(String),
    Tcp(String),
}

impl Endpoint {
    /// `unix:///path` or `tcp://host:port` without TLS; anything else is not ours to handle.
    pub fn of(address: &str, tls: bool) -> Option<Endpoint> {
        if let Some(path) = address.strip_prefix("unix://") {
            return Some(Endpoint::Unix(path.to_string()));
        }
        if tls {
            return None;
        }
        address
            .strip_prefix("tcp://")
            .or_else(|| address.strip_prefix("http://"))
            .map(|host| Endpoint::Tcp(host.trim_end_matches('/').to_string()))
    }
}

/// How a BuildKit build ended without an image.
#[derive(Debug)]
pub enum Failure {
    /// The engine refused the request (HTTP status and its message).
    Refused(u16, String),
    /// The build failed (an `errorDetail` in the stream).
    Failed(String),
    Transport(String),
}

/// Sends the build and follows its output; returns the image id.
pub async fn build<S>(
    endpoint: &Endpoint,
    api_version: &str,
    query: &[(&str, String)],
    registry_config: Option<String>,
    context: S,
    shown: &mut BuildOutput,
) -> Result<Option<String>, Failure>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let build = send_and_follow(
        endpoint,
        api_version,
        query,
        registry_config,
        context,
        shown,
    );
    tokio::time::timeout(BUILD_TIMEOUT, build)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Transport(format!(
                "no end to the build after {} minutes",
                BUILD_TIMEOUT.as_secs() / 60
            )))
        })
}

async fn send_and_follow<S>(
    endpoint: &Endpoint,
    api_version: &str,
    query: &[(&str, String)],
    registry_config: Option<String>,
    context: S,
    shown: &mut BuildOutput,
) -> Result<Option<String>, Failure>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let path = format!("/v{api_version}/build?{query}");
    let body = BodyExt::boxed_unsync(StreamBody::new(context.map_ok(Frame::data)));
    let mut request = hyper::Request::post(match endpoint {
        Endpoint::Unix(socket) => hyperlocal::Uri::new(socket, &path).into(),
        Endpoint::Tcp(host) => format!("http://{host}{path}")
            .parse::<hyper::Uri>()
            .map_err(|e| Failure::Transport(e.to_string()))?,
    })
    .header("Content-Type", "application/x-tar");
    if let Some(config) = registry_config {
        request = request.header("X-Registry-Config", config);
    }
    let request = request
        .body(body)
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let response = send(endpoint, request).await?;
    let status = response.status();
    let body = response.into_body().into_data_stream();
    if !status.is_success() {
        return Err(refusal(status, body).await);
    }
    follow(body, shown).await
}

type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
type ResponseBody = http_body_util::BodyDataStream<hyper::body::Incoming>;

/// Sends the build request over the engine's unix socket or plain TCP.
async fn send(
    endpoint: &Endpoint,
    request: hyper::Request<RequestBody>,
) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
    match endpoint {
        Endpoint::Unix(_) => {
            Client::builder(TokioExecutor::new())
                .build(hyperlocal::UnixConnector)
                .request(request)
                .await
        }
        Endpoint::Tcp(_) => {
            Client::builder(TokioExecutor::new())
                .build_http()
                .request(request)
                .await
        }
    }
    .map_err(|e| Failure::Transport(crate::registry::error_chain(&e)))
}

/// The engine's refusal: its `message` (or the start of its answer), read within bounds.
async fn refusal(status: hyper::StatusCode, mut body: ResponseBody) -> Failure {
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        text.extend_from_slice(&chunk);
        if text.len() > MAX_ERROR_BODY {
            text.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    let message = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().to_string());
    Failure::Refused(status.as_u16(), message)
}

/// Follows the build's JSON lines to the end; the image id, when the build names one.
async fn follow(
    mut body: ResponseBody,
    shown: &mut BuildOutput,
) -> Result<Option<String>, Failure> {
    let mut progress = Progress::default();
    let mut image_id = None;
    let mut pending = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failure::Transport(crate::registry::error_chain(&e)))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            handle_line(&line, &mut progress, shown, &mut image_id)?;
        }
        if pending.len() > MAX_LINE {
            return Err(Failure::Transport(
                "the engine sent a build output line over 4 MiB".into(),
            ));
        }
    }
    handle_line(&pending, &mut progress, shown, &mut image_id)?;
    Ok(image_id)
}

fn handle_line(
    line: &[u8],
    progress: &mut Progress,
    shown: &mut BuildOutput,
    image_id: &mut Option<String>,
) -> Result<(), Failure> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(());
    }
    let Ok(item) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Ok(());
    };
    if let Some(message) = item["errorDetail"]["message"]
        .as_str()
        .or_else(|| item["error"].as_str())
    {
        return Err(Failure::Failed(message.to_string()));
    }
    match item["id"].as_str() {
        Some("moby.image.id") => {
            if let Some(id) = item["aux"]["ID"].as_str() {
                *image_id = Some(id.to_string());
            }
        }
        Some("moby.buildkit.trace") => {
            if let Some(data) = item["aux"].as_str()
                && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(data)
            {
                for text in progress.read(&raw) {
                    shown.text(&text);
                }
            }
        }
        _ => {
            if let Some(text) = item["stream"].as_str() {
                shown.text(text);
            }
        }
    }
    Ok(())
}

/// Turns BuildKit status records into text lines: each step's name once, its log output, and
/// its error.
#[derive(Default)]
struct Progress {
    /// Step numbers by vertex digest, in the order steps appeared.
    steps: BTreeMap<String, usize>,
    errors_shown: HashSet<String>,
}

impl Progress {
    fn read(&mut self, status: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for (field, value) in Fields(status) {
            match (field, value) {
                // vertexes
                (1, Value::Bytes(vertex)) => {
                    let (mut digest, mut name, mut error) = (None, None, None);
                    for (f, v) in Fields(vertex) {
                        match (f, v) {
                            (1, Value::Bytes(b)) => digest = Some(lossy(b)),
                            (3, Value::Bytes(b)) => name = Some(lossy(b)),
                            (7, Value::Bytes(b)) => error = Some(lossy(b)),
                            _ => {}
                        }
                    }
                    let Some(digest) = digest else { continue };
                    let next = self.steps.len() + 1;
                    let step = *self.steps.entry(digest.clone()).or_insert_with(|| {
                        if let Some(name) = &name {
                            out.push(format!("#{next} {name}\n"));
                        }
                        next
                    });
                    if let Some(error) = error.filter(|e| !e.is_empty())
                        && self.errors_shown.insert(digest)
                    {
                        out.push(format!("#{step} ERROR: {error}\n"));
                    }
                }
                // logs
                (3, Value::Bytes(log)) => {
                    let (mut digest, mut message) = (None, None);
                    for (f, v) in Fields(log) {
                        match (f, v) {
                            (1, Value::Bytes(b)) => digest = Some(lossy(b)),
                            (4, Value::Bytes(b)) => message = Some(lossy(b)),
                            _ => {}
                        }
                    }
                    let step = digest.and_then(|d| self.steps.get(&d).copied());
                    for line in message.unwrap_or_default().lines() {
                        match step {
                            Some(n) => out.push(format!("#{n} {line}\n")),
                            None => out.push(format!("{line}\n")),
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

enum Value<'a> {
    Varint,
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message; stops at the first malformed byte (input is untrusted).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let key = varint(&mut self.0)?;
        let value = match key & 7 {
            0 => {
                varint(&mut self.0)?;
                Value::Varint
            }
            1 => {
                self.0 = self.0.get(8..)?;
                Value::Varint
            }
            2 => {
                let len = usize::try_from(varint(&mut self.0)?).ok()?;
                let bytes = self.0.get(..len)?;
                self.0 = &self.0[len..];
                Value::Bytes(bytes)
            }
            5 => {
                self.0 = self.0.get(4..)?;
                Value::Varint
            }
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn reads_step_names_logs_and_errors() {
        let vertex = [field(1, b"sha256:aa"), field(3, b"[2/2] RUN echo hi")].concat();
        let log = [field(1, b"sha256:aa"), field(4, b"hi\nthere\n")].concat();
        let failed = [field(1, b"sha256:aa"), field(7, b"exit code: 1")].concat();
        let mut p = Progress::default();
        assert_eq!(p.read(&field(1, &vertex)), ["#1 [2/2] RUN echo hi\n"]);
        assert_eq!(p.read(&field(3, &log)), ["#1 hi\n", "#1 there\n"]);
        assert_eq!(p.read(&field(1, &vertex)), Vec::<String>::new());
        assert_eq!(p.read(&field(1, &failed)), ["#1 ERROR: exit code: 1\n"]);
        // Truncated or malformed input ends the reading, nothing else.
        assert!(p.read(&[0x0a, 0x7f, 1]).is_empty());
        assert!(p.read(&[0xff; 12]).is_empty());
    }

    #[test]
    fn endpoints() {
        assert!(matches!(
            Endpoint::of("unix:///var/run/docker.sock", false),
            Some(Endpoint::Unix(p)) if p == "/var/run/docker.sock"
        ));
        assert!(matches!(
            Endpoint::of("tcp://127.0.0.1:2375", false),
            Some(Endpoint::Tcp(h)) if h == "127.0.0.1:2375"
        ));
        assert!(Endpoint::of("tcp://127.0.0.1:2376", true).is_none());
        assert!(Endpoint::of("ssh://me@host", false).is_none());
    }
}
