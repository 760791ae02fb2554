//! The one HTTP client for all registries: TLS roots (the system's plus an extra CA), a resolver
//! that keeps `localhost` names on loopback, and a redirect policy that gives up on loops.

use std::sync::Arc;
use std::time::Duration;

use super::error::RegistryError;
use super::events::Events;
use super::http::{is_localhost_name, redact_url};
use super::options::ClientOptions;

/// One HTTP client for all registries: rustls with ring, the system's roots (or SSL_CERT_FILE /
/// SSL_CERT_DIR) plus an extra CA. Blocking (it reads certificate files): call it off the async
/// runtime, as the pool (`pool::Clients`) does.
pub(super) fn http_client(
    options: &ClientOptions,
    events: &Events,
) -> Result<reqwest::Client, RegistryError> {
    let mut roots = rustls::RootCertStore::empty();
    // rustls-native-certs reads SSL_CERT_FILE / SSL_CERT_DIR instead of the system store when set.
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        events.detail(&format!("loading the system's CA certificates: {e}"));
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
        .user_agent(options.identity.user_agent.as_str())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .dns_resolver(Arc::new(LoopbackNames))
        // Redirects (registries send blob downloads to storage hosts) are followed; reqwest
        // drops Authorization when scheme, host or port change.
        .redirect(redirect_policy())
        .build()
        .map_err(|e| RegistryError::TlsSetup(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::client::tests::test_client;

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
        client.http = http_client(&ClientOptions::default(), &Events::default()).unwrap();
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
