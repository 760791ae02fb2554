//! Sending: one request watched for stalls and cut at its deadline, and requests retried within
//! the retry policy, authenticating again when a token runs out.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::activity::Activity;
use super::bounded::{BodyError, human_size, read_limited};
use super::challenge::{Scope, parse_challenge};
use super::client::RegistryClient;
use super::diagnose::{transport_error, with_tries};
use super::error::RegistryError;
use super::hints::Problem;
use super::http::{header_str, redact_url};
use super::retry::{
    as_asked, backoff, is_retryable_status, is_retryable_transport, retry_after,
    worth_another_attempt,
};

/// One attempt's failure, and whether trying again may help.
pub(super) struct Failed {
    pub(super) error: RegistryError,
    pub(super) retryable: bool,
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
        let delay = backoff(&self.retry, attempt);
        if !worth_another_attempt(left, delay) {
            self.events.detail(&format!(
                "{what}: {error}; no time left in the retry budget for another attempt"
            ));
            return None;
        }
        self.events.detail(&format!(
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
        self.events
            .trace(&format!("{what}: 401; authenticating again"));
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
        let delay = retry_after.unwrap_or_else(|| backoff(&self.retry, attempt));
        if !worth_another_attempt(left, delay) {
            self.events.detail(&match retry_after {
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
        self.events.detail(&format!(
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
        if self.events.tracing() {
            let auth = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(' ').next())
                .map(|scheme| format!(" (Authorization: {scheme} <redacted>)"))
                .unwrap_or_default();
            self.events.trace(&format!(
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
                            self.events.trace(&format!(
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

    pub(super) fn transport_error(&self, e: &reqwest::Error) -> RegistryError {
        transport_error(
            &self.base_url,
            &self.registry,
            self.ca_cert.as_deref(),
            &*self.hints,
            e,
        )
    }

    pub(super) fn unreachable_hint(&self) -> String {
        self.hints.hint(&Problem::Unreachable {
            registry: &self.registry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::client::tests::test_client;
    use crate::registry::options::RetryPolicy;

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
}
