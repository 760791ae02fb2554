//! The wire: the HTTP client (TLS roots, loopback-only resolver for localhost names), bounded
//! body reading, retry timing (Retry-After, budgets), stall detection and URL redaction; and
//! sending: one request watched for stalls, and requests retried within the retry policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::{Scope, parse_challenge};
use super::error::{
    is_certificate_problem, is_plain_http_answer, transport_error, unreachable_hint, with_tries,
};
use super::{ClientOptions, RegistryClient, RegistryError, error_chain, events};
use crate::reference::is_loopback_host;

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

/// The least time an attempt should have after a backoff; with less, it would likely be cut at
/// the deadline and report the deadline instead of what is wrong with the registry.
pub(super) const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(500);

/// Whether, with `left` of the retry budget, waiting `delay` still leaves an attempt its time.
pub(super) fn worth_another_attempt(left: Duration, delay: Duration) -> bool {
    left > delay.saturating_add(MIN_ATTEMPT_TIME)
}

pub(super) fn is_localhost_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// The client's resolver: the system's, except that `localhost` and `*.localhost` names, which
/// we treat as this machine (plain HTTP, credentials allowed), connect only to the loopback
/// addresses they resolve to, and fail when they resolve to none.
pub(super) struct LoopbackNames;

impl reqwest::dns::Resolve for LoopbackNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addresses = usable_addresses(&host, found)?;
            let addrs: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

/// The addresses a connection to `host` may use: for a `localhost` name only the loopback ones,
/// and an error when there are none.
pub(super) fn usable_addresses(
    host: &str,
    found: Vec<std::net::SocketAddr>,
) -> Result<Vec<std::net::SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if !is_localhost_name(host) {
        return Ok(found);
    }
    let loopback: Vec<_> = found.into_iter().filter(|a| a.ip().is_loopback()).collect();
    if loopback.is_empty() {
        return Err(format!("{host} resolves to no loopback address").into());
    }
    Ok(loopback)
}

pub(super) fn url_is_loopback(url: &url::Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// Query parameters whose values are content addresses, repository names or token scopes,
/// never secrets.
pub(super) const PLAIN_QUERY_KEYS: &[&str] =
    &["digest", "mount", "from", "n", "last", "service", "scope"];

/// A URL fit for traces and error messages: upload `Location`s may carry signed tokens or
/// session state in the query, so every query value but a few known-harmless ones becomes `…`
/// (and a password in the URL becomes `redacted`).
pub(super) fn redact_url(url: &url::Url) -> String {
    let mut base = url.clone();
    if base.password().is_some() {
        let _ = base.set_password(Some("redacted"));
    }
    base.set_fragment(None);
    let Some(query) = url.query() else {
        return base.to_string();
    };
    base.set_query(None);
    let params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if PLAIN_QUERY_KEYS.contains(&k) => format!("{k}={v}"),
            Some((k, _)) => format!("{k}=…"),
            None => "…".to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

pub(super) fn is_retryable_transport(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    // A certificate or protocol mismatch will not go away by asking again.
    let chain = error_chain(e).to_ascii_lowercase();
    !(is_certificate_problem(&chain) || is_plain_http_answer(&chain))
}

pub(super) fn is_retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` as a delay: seconds, or an HTTP date (relative to `now`).
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = header_str(headers, "retry-after")?;
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

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

/// The registry's own error message (`{"errors":[{"code","message"}]}`), shortened.
pub(super) async fn error_detail(response: Response, limit: Duration) -> String {
    let text = read_text(response, limit).await;
    let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let summary = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    // `detail` is free-form JSON: often the reason itself ("unknown media type").
                    let detail = match e.get("detail") {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => format!(": {s}"),
                        Some(other) => format!(": {other}"),
                    };
                    let text = format!(
                        "{} {}{detail}",
                        e.get("code").and_then(|c| c.as_str()).unwrap_or(""),
                        e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                    );
                    text.trim().chars().take(300).collect::<String>()
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| text.chars().take(200).collect());
    if summary.trim().is_empty() {
        String::new()
    } else {
        format!(" ({})", summary.trim())
    }
}

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

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

/// One HTTP client for all registries: rustls with ring, the system's roots (or SSL_CERT_FILE /
/// SSL_CERT_DIR) plus an extra CA. Blocking (it reads certificate files): call it off the async
/// runtime, as [`super::pool::Clients`] does.
pub(super) fn http_client(options: &ClientOptions) -> Result<reqwest::Client, RegistryError> {
    let mut roots = rustls::RootCertStore::empty();
    // rustls-native-certs reads SSL_CERT_FILE / SSL_CERT_DIR instead of the system store when set.
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        events::detail(&format!("loading the system's CA certificates: {e}"));
    }
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &options.ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| RegistryError::TlsSetup(format!("{}: {e}", path.display())))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert =
                cert.map_err(|e| RegistryError::TlsSetup(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| RegistryError::TlsSetup(format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(RegistryError::TlsSetup(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::TlsSetup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // No read timeout here: reqwest's runs from the start of the request, so it would cut long
    // uploads. Stalls are detected per request instead (see `send_watched`).
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("cargo-adapt-push/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .dns_resolver(Arc::new(LoopbackNames))
        // Redirects (registries send blob downloads to storage hosts) are followed; reqwest
        // drops Authorization when scheme, host or port change.
        .redirect(redirect_policy())
        .build()
        .map_err(|e| RegistryError::TlsSetup(e.to_string()))
}

/// The most redirects one request follows (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// Follows redirects, giving up on a chain that comes back to an address it already visited
/// (a loop: no point going round ten times) or that runs past [`MAX_REDIRECTS`], with the chain
/// in the error so the message can show where the request went.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let looped = attempt.previous().contains(attempt.url());
        if !looped && attempt.previous().len() <= MAX_REDIRECTS {
            return attempt.follow();
        }
        let chain = attempt
            .previous()
            .iter()
            .chain([attempt.url()])
            .map(redact_url)
            .collect();
        let status = attempt.status().as_u16();
        attempt.error(RedirectTrouble {
            looped,
            chain,
            status,
        })
    })
}

/// A redirect chain given up on (see [`redirect_policy`]): the addresses it went through,
/// redacted, the first being the one asked.
#[derive(Debug)]
pub(super) struct RedirectTrouble {
    pub(super) looped: bool,
    pub(super) chain: Vec<String>,
    /// The status of the last redirect.
    pub(super) status: u16,
}

impl std::fmt::Display for RedirectTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.looped {
            write!(f, "redirected in a loop (HTTP {})", self.status)
        } else {
            write!(
                f,
                "redirected more than {MAX_REDIRECTS} times (HTTP {})",
                self.status
            )
        }
    }
}

impl std::error::Error for RedirectTrouble {}

/// The most an image config or a token answer may weigh.
pub(super) const SMALL_BLOB_LIMIT: usize = 8 * 1024 * 1024;

/// The most of an error answer that is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Request bodies are handed to the connection in pieces of this size, so progress (and
/// stall detection) sees bytes move.
const BODY_CHUNK: usize = 64 * 1024;

/// One attempt's failure, and whether trying again may help.
pub(super) struct Failed {
    pub(super) error: RegistryError,
    pub(super) retryable: bool,
}

/// `scheme://host[:port]` of a URL (the port only when not the scheme's default); an
/// unparseable URL is an origin of its own that matches nothing.
pub(super) fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "null".into())
}

impl RegistryClient {
    /// Sends a request built by `make`, authenticating on a challenge (once) and retrying
    /// transient failures (connection errors, stalls, 408, 429, 5xx) with backoff, within the
    /// retry policy. A retryable status left over when the budget is spent is returned as the
    /// response, for the caller to turn into an error.
    pub(super) async fn send_with_retry(
        &self,
        scope: Option<&Scope>,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let started = Instant::now();
        let deadline = started + self.retry.total;
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let request = self.authorize(scope, make()).await?;
            let outcome = self
                .send_watched(request, &Activity::new(), Some(deadline))
                .await;
            let left = deadline.saturating_duration_since(Instant::now());
            let may_retry = attempt < self.retry.attempts && !left.is_zero();
            let delay = match outcome {
                Err(failed) => {
                    let delay = if failed.retryable && may_retry {
                        self.delay_after_failure(what, &failed.error, attempt, left)
                    } else {
                        None
                    };
                    match delay {
                        Some(delay) => delay,
                        None => return Err(with_tries(failed.error, attempt, started.elapsed())),
                    }
                }
                // A 401 (an expired or revoked token): authenticate again, the first time for
                // free, then counting as attempts within the budget.
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && scope.is_some()
                        && (!reauthenticated || (may_retry && self.uses_tokens())) =>
                {
                    if !self.learn_challenge(what, &response) {
                        return Ok(response);
                    }
                    if !reauthenticated {
                        attempt -= 1;
                    }
                    reauthenticated = true;
                    continue;
                }
                Ok(response) if is_retryable_status(response.status()) && may_retry => {
                    match self.delay_after_status(what, &response, attempt, left) {
                        Some(delay) => delay,
                        None => return Ok(response),
                    }
                }
                Ok(response) => return Ok(response),
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// How long to wait before retrying after a transport failure, or `None` when waiting would
    /// use up the budget: the next attempt could only be cut at the deadline, so what actually
    /// went wrong is reported instead.
    fn delay_after_failure(
        &self,
        what: &str,
        error: &RegistryError,
        attempt: u32,
        left: Duration,
    ) -> Option<Duration> {
        let delay = self.backoff(attempt);
        if !worth_another_attempt(left, delay) {
            events::detail(&format!(
                "{what}: {error}; no time left in the retry budget for another attempt"
            ));
            return None;
        }
        events::detail(&format!(
            "{what}: {error}; retrying in {:.1}s (attempt {}/{})",
            delay.as_secs_f32(),
            attempt + 1,
            self.retry.attempts
        ));
        Some(delay)
    }

    /// Takes the challenge of a 401 and drops the cached tokens, so the next attempt
    /// authenticates again. `false` when the answer carries no challenge we understand.
    fn learn_challenge(&self, what: &str, response: &Response) -> bool {
        let challenge = header_str(response.headers(), WWW_AUTHENTICATE.as_str())
            .as_deref()
            .and_then(parse_challenge);
        let Some(challenge) = challenge else {
            return false;
        };
        events::trace(&format!("{what}: 401; authenticating again"));
        let mut state = self.auth_state();
        state.challenge = Some(challenge);
        state.tokens.clear();
        true
    }

    /// How long to wait before retrying after a retryable status (the server's `Retry-After`,
    /// or the backoff), or `None` when that leaves no time for another attempt.
    fn delay_after_status(
        &self,
        what: &str,
        response: &Response,
        attempt: u32,
        left: Duration,
    ) -> Option<Duration> {
        let status = response.status();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
        if !worth_another_attempt(left, delay) {
            events::detail(&match retry_after {
                Some(_) => format!(
                    "{what}: {} answered {status} and asks to wait {:.0}s, beyond the retry budget",
                    self.registry,
                    delay.as_secs_f32()
                ),
                None => format!(
                    "{what}: {} answered {status}; no time left in the retry budget for another attempt",
                    self.registry,
                ),
            });
            return None;
        }
        events::detail(&format!(
            "{what}: {} answered {status}; retrying in {:.1}s{} (attempt {}/{})",
            self.registry,
            delay.as_secs_f32(),
            as_asked(retry_after),
            attempt + 1,
            self.retry.attempts
        ));
        Some(delay)
    }

    /// Sends one request, failing it when nothing has moved for the stall time or when the
    /// hard `limit` passes.
    pub(super) async fn send_watched(
        &self,
        request: RequestBuilder,
        activity: &Activity,
        limit: Option<Instant>,
    ) -> Result<Response, Failed> {
        let request = request.build().map_err(|e| Failed {
            error: self.transport_error(&e),
            retryable: false,
        })?;
        if events::tracing() {
            let auth = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(' ').next())
                .map(|scheme| format!(" (Authorization: {scheme} <redacted>)"))
                .unwrap_or_default();
            events::trace(&format!(
                "-> {} {}{auth}",
                request.method(),
                redact_url(request.url())
            ));
        }
        let label = format!("{} {}", request.method(), request.url().path());
        let sent = Instant::now();
        let send = self.http.execute(request);
        tokio::pin!(send);
        loop {
            let stall_at = activity.last() + self.retry.stall;
            let wake = limit.map_or(stall_at, |l| l.min(stall_at));
            tokio::select! {
                result = &mut send => {
                    return match result {
                        Ok(response) => {
                            events::trace(&format!(
                                "<- {} for {label} after {} ms",
                                response.status(),
                                sent.elapsed().as_millis()
                            ));
                            Ok(response)
                        }
                        Err(e) => Err(Failed {
                            retryable: is_retryable_transport(&e),
                            error: self.transport_error(&e),
                        }),
                    };
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    let idle = now.saturating_duration_since(activity.last());
                    if limit.is_some_and(|l| now >= l) || idle >= self.retry.stall {
                        return Err(Failed {
                            retryable: true,
                            error: RegistryError::Unreachable {
                                url: self.base_url.clone(),
                                tried: String::new(),
                                cause: format!(
                                    "no answer and no progress for {:.0}s",
                                    idle.as_secs_f32()
                                ),
                                hint: self.unreachable_hint(),
                            },
                        });
                    }
                }
            }
        }
    }

    /// Reads a small response body whole, at most `limit` bytes (checked while it streams, so
    /// an endless or huge answer costs no memory), each piece within the stall time.
    pub(super) async fn read_body(
        &self,
        response: Response,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, RegistryError> {
        let too_large = || RegistryError::TooLarge {
            registry: self.registry.to_string(),
            what: what.to_string(),
            limit: human_size(limit),
        };
        match read_limited(response, limit, self.retry.stall).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge) => Err(too_large()),
            Err(BodyError::Transport(e)) => Err(self.transport_error(&e)),
            Err(BodyError::Stalled) => Err(RegistryError::Unreachable {
                url: self.base_url.clone(),
                tried: String::new(),
                cause: "the answer stalled midway".into(),
                hint: self.unreachable_hint(),
            }),
        }
    }

    /// Exponential backoff with jitter: half to all of `first_delay * 2^(attempt-1)`, capped.
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.retry.max_delay);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        cap.mul_f64(jitter)
    }

    pub(super) fn transport_error(&self, e: &reqwest::Error) -> RegistryError {
        transport_error(&self.base_url, &self.registry, self.ca_cert.as_deref(), e)
    }

    pub(super) fn unreachable_hint(&self) -> String {
        unreachable_hint(&self.registry)
    }
}

/// For a retry message: whether the delay is the one the registry's `Retry-After` asked for.
pub(super) fn as_asked(retry_after: Option<Duration>) -> &'static str {
    if retry_after.is_some() {
        " as Retry-After asks"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;
    use crate::reference::Digest;
    use crate::registry::RetryPolicy;
    use crate::registry::tests::test_client;

    #[test]
    fn urls_in_traces_and_errors_hide_query_values() {
        let d = Digest::sha256_of(b"x");
        let u = url::Url::parse(&format!(
            "https://r.example/v2/a/blobs/uploads/1?_state=c2VjcmV0&X-Amz-Signature=abc123&digest={d}"
        ))
        .unwrap();
        let shown = redact_url(&u);
        assert_eq!(
            shown,
            format!("https://r.example/v2/a/blobs/uploads/1?_state=…&X-Amz-Signature=…&digest={d}")
        );
        let u = url::Url::parse("https://user:pw-secret@r.example/v2/?token#frag").unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("pw-secret") && !shown.contains("token"),
            "{shown}"
        );
        assert_eq!(
            redact_url(&url::Url::parse("http://r.example/v2/").unwrap()),
            "http://r.example/v2/"
        );
    }

    /// A stub that redirects `/n` to `/n+1` for ever (no registry does; a protocol corner).
    fn endless_redirects() -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut first = String::new();
                        if reader.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut line = String::new();
                        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                            line.clear();
                        }
                        let n: u32 = first
                            .split_whitespace()
                            .nth(1)
                            .and_then(|p| p.trim_start_matches('/').parse().ok())
                            .unwrap_or(0);
                        let answer = format!(
                            "HTTP/1.1 302 Found\r\nLocation: /{}\r\nContent-Length: 0\r\n\r\n",
                            n + 1
                        );
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn an_endless_redirect_chain_is_cut_and_shown() {
        let port = endless_redirects();
        let mut client = test_client(
            &format!("127.0.0.1:{port}"),
            &format!("http://127.0.0.1:{port}"),
            None,
        );
        client.http = http_client(&ClientOptions::default()).unwrap();
        let err = client.ping().await.expect_err("never ends");
        let text = err.to_string();
        assert!(matches!(err, RegistryError::Redirects { .. }), "{text}");
        assert!(
            text.contains("redirected more than 10 times (HTTP 302)"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http://127.0.0.1:{port}/v2/ → http://127.0.0.1:{port}/1 → "
            )),
            "{text}"
        );
        assert!(text.ends_with("/11"), "{text}");
    }

    #[test]
    fn no_retry_is_started_that_the_deadline_would_cut() {
        let ms = Duration::from_millis;
        assert!(worth_another_attempt(ms(3000), ms(1000)));
        assert!(!worth_another_attempt(ms(1000), ms(1000)));
        assert!(!worth_another_attempt(ms(1200), ms(1000)));
        assert!(!worth_another_attempt(Duration::ZERO, ms(250)));
    }

    #[tokio::test]
    async fn a_refused_port_is_reported_as_refused_when_the_budget_runs_out() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut client = test_client(
            &format!("127.0.0.1:{port}"),
            &format!("http://127.0.0.1:{port}"),
            None,
        );
        client.retry = RetryPolicy::with_bounds(Some(50), Some(2));
        let started = Instant::now();
        let err = client.ping().await.expect_err("nothing listens there");
        let text = err.to_string();
        assert!(
            text.to_ascii_lowercase().contains("refused"),
            "the real cause: {text}"
        );
        assert!(!text.contains("no progress"), "{text}");
        assert!(text.contains("attempts over"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2), "{text}");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(now + Duration::from_secs(7))).unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn backoff_is_bounded() {
        let client = test_client("localhost:1", "http://localhost:1", None);
        for attempt in 1..40 {
            assert!(client.backoff(attempt) <= Duration::from_secs(5));
        }
        assert!(client.backoff(1) <= Duration::from_millis(250));
        assert!(client.backoff(1) >= Duration::from_millis(125));
    }

    #[test]
    fn localhost_names_connect_only_to_loopback_addresses() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            usable_addresses("app.localhost", vec![a("203.0.113.7:0"), a("127.0.0.1:0")]).unwrap(),
            vec![a("127.0.0.1:0")]
        );
        assert!(usable_addresses("app.localhost", vec![a("203.0.113.7:0")]).is_err());
        assert!(usable_addresses("LOCALHOST", vec![a("[2001:db8::1]:0")]).is_err());
        assert_eq!(
            usable_addresses("registry.example", vec![a("203.0.113.7:0")]).unwrap(),
            vec![a("203.0.113.7:0")]
        );
    }
}
