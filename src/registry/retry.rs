//! Retry timing: which failures are worth another attempt, how long to wait (backoff with
//! jitter, or the registry's `Retry-After`), and whether the budget leaves time for one.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::http::{error_chain, header_str, is_certificate_problem, is_plain_http_answer};
use super::options::RetryPolicy;

/// The least time an attempt should have after a backoff; with less, it would likely be cut at
/// the deadline and report the deadline instead of what is wrong with the registry.
pub(super) const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(500);

/// Whether, with `left` of the retry budget, waiting `delay` still leaves an attempt its time.
pub(super) fn worth_another_attempt(left: Duration, delay: Duration) -> bool {
    left > delay.saturating_add(MIN_ATTEMPT_TIME)
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

/// Exponential backoff with jitter: half to all of `first_delay * 2^(attempt-1)`, capped.
pub(super) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .first_delay
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(policy.max_delay);
    let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
    cap.mul_f64(jitter)
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

    #[test]
    fn no_retry_is_started_that_the_deadline_would_cut() {
        let ms = Duration::from_millis;
        assert!(worth_another_attempt(ms(3000), ms(1000)));
        assert!(!worth_another_attempt(ms(1000), ms(1000)));
        assert!(!worth_another_attempt(ms(1200), ms(1000)));
        assert!(!worth_another_attempt(Duration::ZERO, ms(250)));
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
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            assert!(backoff(&policy, attempt) <= Duration::from_secs(5));
        }
        assert!(backoff(&policy, 1) <= Duration::from_millis(250));
        assert!(backoff(&policy, 1) >= Duration::from_millis(125));
    }
}
