//! What to tell the user to do about a problem. The client describes the problem in its own
//! terms ([`Problem`]); the application's [`Hints`] words the advice, naming its own flags,
//! settings and commands. [`DefaultHints`] words it in the client's terms.

use std::path::Path;

use super::keychain::Lookup;
use crate::reference::Registry;

/// A problem the user can do something about.
#[derive(Debug, Clone, Copy)]
pub enum Problem<'a> {
    /// Plain HTTP to `authority`, which is neither loopback nor listed in
    /// `ClientOptions::insecure`, was refused before any request.
    PlainHttpRefused { authority: &'a str },
    /// `registry` answered an HTTPS request in plain HTTP.
    PlainHttpServer { registry: &'a Registry },
    /// A plain-HTTP request to `registry` reached a port that speaks HTTPS.
    HttpsPort { registry: &'a Registry },
    /// `registry`'s certificate did not verify against the system's roots (plus `ca_cert`,
    /// the extra CA in `ClientOptions`, if any).
    UntrustedCertificate {
        registry: &'a Registry,
        ca_cert: Option<&'a Path>,
    },
    /// `registry` could not be reached, or stopped answering.
    Unreachable { registry: &'a Registry },
    /// The registry kept answering 429 until the retry budget ran out.
    RateLimited,
    /// The registry kept failing (5xx, 408) through `attempts` attempts.
    KeptFailing { attempts: u32 },
    /// `registry` refused the credentials the keychain found (`lookup`).
    CredentialsRefused {
        registry: &'a Registry,
        lookup: &'a Lookup,
    },
    /// `registry` asks for credentials, and the keychain found none (`lookup`).
    NoCredentials {
        registry: &'a Registry,
        lookup: &'a Lookup,
    },
    /// `origin`, an upload host `registry` sent an upload to, asks for credentials of its own.
    UploadHostCredentials {
        registry: &'a Registry,
        origin: &'a str,
    },
    /// The file a blob was to be uploaded from could not be read (the error names it).
    UnreadableBlobFile,
}

/// Words the advice for a problem (shown as an error's help).
pub trait Hints: Send + Sync {
    fn hint(&self, problem: &Problem<'_>) -> String;
}

/// Advice in the client's own terms, for an application that adds none of its own.
pub struct DefaultHints;

impl Hints for DefaultHints {
    fn hint(&self, problem: &Problem<'_>) -> String {
        match *problem {
            Problem::PlainHttpRefused { authority } => format!(
                "if {authority} really serves plain HTTP, list it among the insecure registries (credentials are never sent over plain HTTP); otherwise use https://"
            ),
            Problem::PlainHttpServer { registry } => {
                let plain = registry.without_scheme();
                if registry.is_loopback() {
                    format!("{plain} serves plain HTTP: use http://{plain}")
                } else {
                    format!(
                        "if {plain} really serves plain HTTP, list it among the insecure registries (credentials are never sent over plain HTTP)"
                    )
                }
            }
            Problem::HttpsPort { registry } => format!("use https://{registry}"),
            Problem::UntrustedCertificate {
                registry,
                ca_cert: Some(path),
            } => format!(
                "the certificate does not verify against the system's roots plus {}: check that it is the CA that signed the registry's certificate, and that the certificate names {}",
                path.display(),
                registry.without_scheme()
            ),
            Problem::UntrustedCertificate { ca_cert: None, .. } => {
                "trust the registry's CA (an extra CA certificate, or SSL_CERT_FILE)".into()
            }
            Problem::Unreachable { registry } => format!(
                "check that the registry runs and that {registry} is its address as seen from here"
            ),
            Problem::RateLimited => {
                "the registry is rate-limiting this client; wait, or allow more time for retries"
                    .into()
            }
            Problem::KeptFailing { attempts } => {
                format!("the registry kept failing through {attempts} attempts; check its health")
            }
            Problem::CredentialsRefused { lookup, .. } => format!(
                "credentials came from {} (looked in: {}); check them",
                lookup.source.as_deref().unwrap_or("the keychain"),
                lookup.searched.join(", ")
            ),
            Problem::NoCredentials { registry, lookup } => format!(
                "no credentials were found for {registry} (looked in: {})",
                lookup.searched.join(", ")
            ),
            Problem::UploadHostCredentials { registry, origin } => format!(
                "credentials of {registry} are never sent to another host; give the keychain credentials for {origin} itself if it really needs them"
            ),
            Problem::UnreadableBlobFile => {
                "the file was removed or cannot be read; write it again".into()
            }
        }
    }
}
