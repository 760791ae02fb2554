//! The client for one registry and connecting it: the schemes to try, the credentials found, and
//! the fallback from one scheme to the other.

use std::path::PathBuf;
use std::sync::Arc;

use super::challenge::AuthState;
use super::error::RegistryError;
use super::events::Events;
use super::hints::Hints;
use super::http::{is_localhost_name, origin_of};
use super::keychain::{Credential, Keychain, Lookup, look_up};
use super::options::{ClientOptions, Hooks, RetryPolicy};
use super::plain_http::check_plain_http_allowed;
use crate::reference::{Registry, Scheme};

/// A connection to one registry.
pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    pub(super) registry: Registry,
    pub(super) base_url: String,
    /// `scheme://host[:port]` of `base_url`: the one origin the registry's credentials go to.
    pub(super) origin: String,
    /// Hosts that may be spoken to over plain HTTP besides loopback.
    pub(super) insecure: Vec<Registry>,
    pub(super) credential: Option<Credential>,
    pub(super) lookup: Lookup,
    /// Asked again for upload hosts that challenge on their own.
    pub(super) keychain: Arc<dyn Keychain>,
    pub(super) auth: std::sync::Mutex<AuthState>,
    /// Held while fetching a token, so concurrent requests wait for one fetch instead of each
    /// asking the token service.
    pub(super) token_fetch: tokio::sync::Mutex<()>,
    pub(super) retry: RetryPolicy,
    pub(super) ca_cert: Option<PathBuf>,
    /// The OAuth2 `client_id` this client gives a token service.
    pub(super) client_id: String,
    /// Words the hints of this client's errors.
    pub(super) hints: Arc<dyn Hints>,
    /// Where this client's messages go.
    pub(super) events: Events,
}

impl RegistryClient {
    /// Picks the scheme, finds credentials, and checks the registry answers `/v2/`.
    ///
    /// Without an explicit scheme: loopback hosts are tried over plain HTTP, then HTTPS if the
    /// port turns out to speak TLS; hosts listed in `insecure` over HTTPS, then plain HTTP if
    /// TLS fails; every other host over HTTPS only. The second scheme is tried only when the
    /// first failed in a way that points at it, never for an unreachable address.
    ///
    /// `http` is the shared client from [`http_client`](super::http_client::http_client), which
    /// the pool (`pool::Clients`) builds once for all its registries.
    /// `push_target`: this registry is pushed to (the keychain is told, see [`Keychain`]).
    pub async fn connect(
        registry: &Registry,
        options: &ClientOptions,
        hooks: &Hooks,
        http: reqwest::Client,
        push_target: bool,
    ) -> Result<Arc<RegistryClient>, RegistryError> {
        let lookup = look_up(&hooks.keychain, registry, push_target).await?;
        Self::connect_with(registry, options, hooks, http, lookup).await
    }

    async fn connect_with(
        registry: &Registry,
        options: &ClientOptions,
        hooks: &Hooks,
        http: reqwest::Client,
        mut lookup: Lookup,
    ) -> Result<Arc<RegistryClient>, RegistryError> {
        check_plain_http_allowed(registry, &options.insecure, &*hooks.hints)?;
        check_resolves_to_loopback(registry).await?;
        let schemes = schemes_to_try(registry, options);
        let authority = registry.api_authority();
        let events = &hooks.events;
        for w in lookup.warnings.drain(..) {
            events.warn(&w);
        }
        let mut errors: Vec<RegistryError> = Vec::new();
        for (i, &scheme) in schemes.iter().enumerate() {
            let base_url = match scheme {
                Scheme::Http => format!("http://{authority}"),
                Scheme::Https => format!("https://{authority}"),
            };
            if i > 0 {
                report_fallback(events, registry, scheme, &base_url);
            }
            let client = RegistryClient::at(registry, options, hooks, &http, &lookup, base_url);
            match client.ping().await {
                Ok(()) => {
                    client.report_connected(&lookup);
                    return Ok(Arc::new(client));
                }
                Err(e) => {
                    let switch = e.suggests_other_scheme();
                    events.detail(&e.to_string());
                    errors.push(e);
                    if !switch {
                        break;
                    }
                }
            }
        }
        Err(most_telling(registry, errors))
    }

    /// A client for `registry` at `base_url`, not yet checked. The credentials found are left
    /// out over plain HTTP off loopback (with a warning).
    fn at(
        registry: &Registry,
        options: &ClientOptions,
        hooks: &Hooks,
        http: &reqwest::Client,
        lookup: &Lookup,
        base_url: String,
    ) -> RegistryClient {
        let mut credential = lookup.credential.clone();
        if base_url.starts_with("http://") && !registry.is_loopback() && credential.is_some() {
            hooks.events.warn(&format!(
                "not sending the credentials from {} to {registry} over plain HTTP; pushing anonymously",
                lookup.source.as_deref().unwrap_or("the environment")
            ));
            credential = None;
        }
        RegistryClient {
            http: http.clone(),
            registry: registry.clone(),
            origin: origin_of(&base_url),
            base_url,
            insecure: options.insecure.clone(),
            credential,
            lookup: lookup.clone(),
            keychain: hooks.keychain.clone(),
            auth: std::sync::Mutex::new(AuthState::default()),
            token_fetch: tokio::sync::Mutex::new(()),
            retry: options.retry,
            ca_cert: options.ca_cert.clone(),
            client_id: options.identity.client_id.clone(),
            hints: hooks.hints.clone(),
            events: hooks.events.clone(),
        }
    }

    /// Traces where the registry answered and with which credentials.
    fn report_connected(&self, lookup: &Lookup) {
        self.events.trace(&format!(
            "{} answers at {} ({})",
            self.registry,
            self.base_url,
            match &lookup.source {
                Some(s) if self.credential.is_some() => format!("credentials from {s}"),
                _ => "anonymous".into(),
            }
        ));
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether this client speaks plain HTTP: only where that is allowed (loopback, `insecure`).
    pub fn speaks_plain_http(&self) -> bool {
        self.base_url.starts_with("http://")
    }
}

/// A `localhost` or `*.localhost` name counts as loopback only when it resolves to loopback
/// addresses (the client's resolver, [`LoopbackNames`](super::http_client::LoopbackNames), then
/// connects only to those).
async fn check_resolves_to_loopback(registry: &Registry) -> Result<(), RegistryError> {
    let host = registry.host();
    if !is_localhost_name(host) {
        return Ok(());
    }
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    if addresses.is_empty() || addresses.iter().all(|a| a.ip().is_loopback()) {
        // Nothing resolved: the connection fails with the resolver's own error.
        return Ok(());
    }
    Err(RegistryError::NotLoopback {
        host: host.to_string(),
        addresses: addresses
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The schemes to try, in order (see [`RegistryClient::connect`]).
fn schemes_to_try(registry: &Registry, options: &ClientOptions) -> Vec<Scheme> {
    match registry.scheme() {
        Some(s) => vec![s],
        None if registry.is_loopback() => vec![Scheme::Http, Scheme::Https],
        None if options.insecure.contains(&registry.without_scheme()) => {
            vec![Scheme::Https, Scheme::Http]
        }
        None => vec![Scheme::Https],
    }
}

/// Says that the next scheme is tried, warning when that means plain HTTP off loopback.
fn report_fallback(events: &Events, registry: &Registry, scheme: Scheme, base_url: &str) {
    events.detail(&format!("trying {base_url} instead"));
    if scheme == Scheme::Http && !registry.is_loopback() {
        events.warn(&format!(
            "{registry} does not speak HTTPS; using plain HTTP because it is listed in `insecure`"
        ));
    }
}

/// The error to report when no scheme worked. The last error is the most telling, unless it
/// only says "wrong scheme" about a scheme that was a fallback: then the first one is.
fn most_telling(registry: &Registry, mut errors: Vec<RegistryError>) -> RegistryError {
    let last = errors.pop();
    let first = errors.into_iter().next();
    match (first, last) {
        (Some(first), Some(last))
            if last.suggests_other_scheme() && !first.suggests_other_scheme() =>
        {
            first
        }
        (Some(first), Some(RegistryError::HttpsPort { .. })) => first,
        (_, Some(last)) => last,
        (first, None) => first.unwrap_or_else(|| RegistryError::Unreachable {
            url: registry.to_string(),
            tried: String::new(),
            cause: "no scheme to try".into(),
            hint: String::new(),
        }),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use miette::Diagnostic;

    use super::*;
    use crate::reference::{Digest, Repository};

    pub(in crate::registry) fn test_client(
        registry: &str,
        base_url: &str,
        credential: Option<Credential>,
    ) -> RegistryClient {
        RegistryClient {
            http: plain_http(),
            registry: Registry::parse(registry).unwrap(),
            origin: origin_of(base_url),
            base_url: base_url.into(),
            insecure: Vec::new(),
            credential,
            lookup: Lookup::default(),
            keychain: Arc::new(crate::registry::keychain::Anonymous),
            auth: std::sync::Mutex::new(AuthState::default()),
            token_fetch: tokio::sync::Mutex::new(()),
            retry: RetryPolicy::default(),
            ca_cert: None,
            client_id: "oci-registry-client".into(),
            hints: Arc::new(crate::registry::hints::DefaultHints),
            events: Events::default(),
        }
    }

    /// A stub server's read of one request head (without its body); `None` when the client
    /// closed the connection.
    fn read_request_head(reader: &mut impl std::io::BufRead) -> Option<String> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            if line == "\r\n" {
                return Some(head);
            }
            head.push_str(&line);
        }
    }

    pub(in crate::registry) fn plain_http() -> reqwest::Client {
        client_builder().build().unwrap()
    }

    fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    }

    /// A stub HTTP server standing in for a registry at a non-loopback name (no real registry
    /// can be reached under such a name on this machine; the client's resolver is pointed at
    /// 127.0.0.1 instead). It challenges with Basic auth and records every request's headers.
    fn basic_challenge_stub() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        recording_stub(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"stub\"\r\nContent-Length: 0\r\n\r\n"
                .into(),
        )
    }

    /// A plain-HTTP stub answering every request with `answer` and recording each request
    /// head; a TLS ClientHello gets the 400 a plain-HTTP server gives. For protocol corners no
    /// real registry here produces (each test says which).
    pub(in crate::registry) fn recording_stub(
        answer: String,
    ) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    if reader
                        .fill_buf()
                        .map(|b| b.first() == Some(&0x16))
                        .unwrap_or(false)
                    {
                        let _ = writer.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    while let Some(head) = read_request_head(&mut reader) {
                        log.lock().unwrap().push(head);
                        let _ = writer.write_all(answer.as_bytes());
                    }
                });
            }
        });
        (port, seen)
    }

    fn alice() -> Lookup {
        Lookup {
            credential: Some(Credential::Basic {
                username: "alice".into(),
                password: "hunter2-secret".into(),
            }),
            source: Some("the test".into()),
            from_environment: false,
            searched: vec!["the test".into()],
            warnings: Vec::new(),
        }
    }

    /// `registry.example.test:PORT` resolving to the stub on 127.0.0.1.
    fn stub_registry(
        scheme: &str,
    ) -> (
        Registry,
        reqwest::Client,
        Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let (port, seen) = basic_challenge_stub();
        let host = "registry.example.test";
        let registry = Registry::parse(&format!("{scheme}{host}:{port}")).unwrap();
        assert!(!registry.is_loopback());
        let http = client_builder()
            .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        (registry, http, seen)
    }

    async fn assert_no_credentials_sent(
        client: &RegistryClient,
        seen: &std::sync::Mutex<Vec<String>>,
    ) {
        assert!(client.credential.is_none());
        let repo = Repository::parse("team/app").unwrap();
        let err = client
            .blob_exists(&repo, &Digest::sha256_of(b"x"), 1)
            .await
            .expect_err("the stub never accepts");
        let text = format!("{err} {:?}", err);
        assert!(text.contains("credentials are required"), "{text}");
        assert!(
            text.contains("not sent") && text.contains("plain HTTP"),
            "{text}"
        );
        let requests = seen.lock().unwrap().clone();
        assert!(requests.len() >= 2, "{requests:?}");
        for r in &requests {
            assert!(!r.to_ascii_lowercase().contains("authorization"), "{r}");
        }
    }

    #[tokio::test]
    async fn credentials_never_go_over_plain_http_to_a_non_loopback_host() {
        // http:// written out, not listed in `insecure`: refused before any request, and the
        // message shows the line to add.
        let (registry, http, seen) = stub_registry("http://");
        let err = RegistryClient::connect_with(
            &registry,
            &ClientOptions::default(),
            &Hooks::default(),
            http,
            alice(),
        )
        .await
        .err()
        .expect("plain HTTP to a non-loopback host without an `insecure` entry");
        let text = format!(
            "{err} {}",
            err.help().map(|h| h.to_string()).unwrap_or_default()
        );
        // The error names the host to allow; the hint (here the client's own wording; the
        // app's shows the `insecure` line, see registry_hints) says how.
        let authority = registry.without_scheme().to_string();
        assert!(
            matches!(&err, RegistryError::PlainHttpRefused { plain, .. } if *plain == authority),
            "{text}"
        );
        assert!(
            text.contains(&format!("if {authority} really serves plain HTTP")),
            "{text}"
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );

        // http:// written out and listed in `insecure`: spoken to, without the credentials.
        let (registry, http, seen) = stub_registry("http://");
        let options = ClientOptions {
            insecure: vec![registry.without_scheme()],
            ..ClientOptions::default()
        };
        let client =
            RegistryClient::connect_with(&registry, &options, &Hooks::default(), http, alice())
                .await
                .expect("the stub answers /v2/ with 401, which is a registry");
        assert_no_credentials_sent(&client, &seen).await;

        // Listed in `insecure`: HTTPS fails (the stub speaks plain HTTP), then plain HTTP, still
        // without the credentials.
        let (registry, http, seen) = stub_registry("");
        let options = ClientOptions {
            insecure: vec![registry.clone()],
            ..ClientOptions::default()
        };
        let client =
            RegistryClient::connect_with(&registry, &options, &Hooks::default(), http, alice())
                .await
                .expect("falls back to plain HTTP for an insecure registry");
        assert!(client.base_url.starts_with("http://"));
        assert_no_credentials_sent(&client, &seen).await;
    }

    /// A keychain that cannot tell what it holds stops the client before its first request:
    /// nothing goes to the registry without the credentials meant for it.
    #[tokio::test]
    async fn a_broken_keychain_stops_the_client_before_any_request() {
        let (port, seen) = recording_stub("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into());
        let registry = Registry::parse(&format!("127.0.0.1:{port}")).unwrap();
        let hooks = Hooks {
            keychain: Arc::new(crate::registry::keychain::tests::Panics),
            ..Hooks::default()
        };
        let options = ClientOptions::default();
        let err = RegistryClient::connect(&registry, &options, &hooks, plain_http(), true)
            .await
            .err()
            .expect("the keychain panics");
        assert!(matches!(err, RegistryError::Credentials { .. }), "{err}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        // The same registry with a keychain that answers is spoken to.
        RegistryClient::connect(&registry, &options, &Hooks::default(), plain_http(), true)
            .await
            .expect("an open registry");
        assert!(!seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_silent_fallback_to_plain_http_for_a_non_loopback_host() {
        let (registry, http, seen) = stub_registry("");
        let err = RegistryClient::connect_with(
            &registry,
            &ClientOptions::default(),
            &Hooks::default(),
            http,
            alice(),
        )
        .await
        .err()
        .expect("a plain-HTTP server is not accepted as HTTPS");
        let text = format!("{err} {:?}", err);
        assert!(text.contains("HTTP response to an HTTPS client"), "{text}");
        assert!(text.contains("insecure"), "{text}");
        // Only a TLS handshake reached it: no HTTP request at all.
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
    }
}
