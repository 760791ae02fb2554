//! How the registry client is configured: trust, plain-HTTP exceptions and retry bounds, and the
//! hooks the application plugs in.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::events::Events;
use super::hints::{DefaultHints, Hints};
use super::keychain::{Anonymous, Keychain};
use crate::reference::Registry;

/// Retry bounds, per request (and per blob upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Give up once this much time has gone on one request, retries included; an attempt in
    /// flight is cut at this deadline.
    pub total: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No byte moved and no answer for this long: the attempt counts as stalled.
    pub stall: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            total: Duration::from_secs(25),
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            stall: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The defaults with the user's bounds: attempts, and the total time in seconds.
    pub fn with_bounds(attempts: Option<u32>, total_secs: Option<u64>) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        if let Some(a) = attempts {
            policy.attempts = a.max(1);
        }
        if let Some(s) = total_secs {
            policy.total = Duration::from_secs(s.max(1));
        }
        policy
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) that may be spoken to over plain HTTP besides loopback.
    pub insecure: Vec<Registry>,
    pub ca_cert: Option<PathBuf>,
    pub retry: RetryPolicy,
    /// Who is asking: the application's name and version, as the `User-Agent` says it, and its
    /// name as the OAuth2 `client_id` of a refresh-token exchange.
    pub identity: ClientIdentity,
}

/// How the client names the application it works for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `User-Agent`, e.g. `my-tool/1.2.3`.
    pub user_agent: String,
    /// OAuth2 `client_id` (the distribution token spec asks clients to name themselves).
    pub client_id: String,
}

impl Default for ClientIdentity {
    fn default() -> Self {
        ClientIdentity {
            user_agent: "oci-registry-client".into(),
            client_id: "oci-registry-client".into(),
        }
    }
}

/// What the application plugs into its clients, apart from their settings. The default has no
/// credentials, words hints in the client's terms and drops every event.
#[derive(Clone)]
pub struct Hooks {
    /// Where the clients' credentials come from.
    pub keychain: Arc<dyn Keychain>,
    /// How their errors' hints are worded.
    pub hints: Arc<dyn Hints>,
    /// Where the clients' progress messages go.
    pub events: Events,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            keychain: Arc::new(Anonymous),
            hints: Arc::new(DefaultHints),
            events: Events::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_bounds_from_the_cli() {
        let p = RetryPolicy::with_bounds(Some(0), Some(0));
        assert_eq!(p.attempts, 1);
        assert_eq!(p.total, Duration::from_secs(1));
        let p = RetryPolicy::with_bounds(None, None);
        assert_eq!(p.total, Duration::from_secs(25));
    }
}
