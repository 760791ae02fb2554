//! The registry client's hints in this tool's words: the `[package.metadata.cluster]` keys and
//! command-line flags that fix a problem, `docker login` and `ADAPT_PUSH_*` for credentials, the
//! layer cache. The client only says what the problem is ([`Problem`]).

use crate::registry::{Hints, Problem};

/// The hints for registry errors that `cargo adapt-push` shows.
pub struct AppHints;

impl Hints for AppHints {
    fn hint(&self, problem: &Problem<'_>) -> String {
        match *problem {
            Problem::PlainHttpRefused { authority } => format!(
                "if {authority} really serves plain HTTP, add `insecure = [\"{authority}\"]` to [package.metadata.cluster] (credentials are never sent over plain HTTP); otherwise use https://"
            ),
            Problem::PlainHttpServer { registry } => {
                let plain = registry.without_scheme();
                if registry.is_loopback() {
                    format!(
                        "{plain} serves plain HTTP: write it as http://{plain}, or without a scheme (loopback addresses may use plain HTTP)"
                    )
                } else {
                    format!(
                        "if {plain} really serves plain HTTP, list it in `insecure = [\"{plain}\"]` in [package.metadata.cluster] (credentials are never sent over plain HTTP)"
                    )
                }
            }
            Problem::HttpsPort { registry } => format!(
                "write the registry as https://{registry} (and trust its CA with `ca-cert` or --ca-cert if it is private)"
            ),
            Problem::UntrustedCertificate { ca_cert: None, .. } => {
                "trust the registry's CA with `ca-cert = \"path/to/ca.pem\"` in [package.metadata.cluster], --ca-cert FILE, or SSL_CERT_FILE".into()
            }
            Problem::Unreachable { registry } => format!(
                "check that the registry runs and that {registry} is its address as seen from here (the `external` side of a split registry)"
            ),
            Problem::RateLimited => {
                "the registry is rate-limiting this client; wait, or allow more time with --retry-timeout".into()
            }
            Problem::KeptFailing { attempts } => format!(
                "the registry kept failing through {attempts} attempts; check its health, or allow more with --retry-attempts / --retry-timeout"
            ),
            Problem::CredentialsRefused { registry, lookup } => {
                let source = lookup.source.as_deref().unwrap_or_default();
                if lookup.from_environment {
                    format!(
                        "the credentials came from {source}: check them (they take precedence over `docker login`; unset them to use the Docker config's instead)"
                    )
                } else {
                    format!(
                        "credentials came from {source} (looked in: {}); check the username and password or token, log in again with `docker login {registry}`, or set ADAPT_PUSH_USERNAME and ADAPT_PUSH_PASSWORD",
                        lookup.searched.join(", ")
                    )
                }
            }
            Problem::NoCredentials { registry, lookup } => format!(
                "no credentials were found for {registry} (looked in: {}); log in with `docker login {registry}`, or set ADAPT_PUSH_USERNAME and ADAPT_PUSH_PASSWORD",
                lookup.searched.join(", ")
            ),
            Problem::UploadHostCredentials { registry, origin } => format!(
                "credentials of {registry} are never sent to another host; log in to {origin} itself (`docker login`) if it really needs credentials"
            ),
            Problem::UnreadableBlobFile => {
                "it is in the layer cache under target/adapt-push; run the push again".into()
            }
            // Said in the client's terms already.
            Problem::UntrustedCertificate {
                ca_cert: Some(_), ..
            } => crate::registry::DefaultHints.hint(problem),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::reference::Registry;
    use crate::registry::Lookup;

    /// Each hint as `cargo adapt-push` has always shown it.
    #[test]
    fn hints_name_the_tools_keys_flags_and_commands() {
        let lan = Registry::parse("registry.lan:5000").unwrap();
        let local = Registry::parse("127.0.0.1:5000").unwrap();
        let hint = |p: Problem<'_>| AppHints.hint(&p);
        assert_eq!(
            hint(Problem::PlainHttpRefused {
                authority: "registry.lan:5000"
            }),
            "if registry.lan:5000 really serves plain HTTP, add `insecure = [\"registry.lan:5000\"]` to [package.metadata.cluster] (credentials are never sent over plain HTTP); otherwise use https://"
        );
        assert_eq!(
            hint(Problem::PlainHttpServer { registry: &lan }),
            "if registry.lan:5000 really serves plain HTTP, list it in `insecure = [\"registry.lan:5000\"]` in [package.metadata.cluster] (credentials are never sent over plain HTTP)"
        );
        assert_eq!(
            hint(Problem::PlainHttpServer { registry: &local }),
            "127.0.0.1:5000 serves plain HTTP: write it as http://127.0.0.1:5000, or without a scheme (loopback addresses may use plain HTTP)"
        );
        assert_eq!(
            hint(Problem::HttpsPort { registry: &local }),
            "write the registry as https://127.0.0.1:5000 (and trust its CA with `ca-cert` or --ca-cert if it is private)"
        );
        assert_eq!(
            hint(Problem::UntrustedCertificate {
                registry: &lan,
                ca_cert: None
            }),
            "trust the registry's CA with `ca-cert = \"path/to/ca.pem\"` in [package.metadata.cluster], --ca-cert FILE, or SSL_CERT_FILE"
        );
        assert_eq!(
            hint(Problem::UntrustedCertificate {
                registry: &lan,
                ca_cert: Some(Path::new("ca.pem"))
            }),
            "the certificate does not verify against the system's roots plus ca.pem: check that it is the CA that signed the registry's certificate, and that the certificate names registry.lan:5000"
        );
        assert_eq!(
            hint(Problem::Unreachable { registry: &lan }),
            "check that the registry runs and that registry.lan:5000 is its address as seen from here (the `external` side of a split registry)"
        );
        assert_eq!(
            hint(Problem::RateLimited),
            "the registry is rate-limiting this client; wait, or allow more time with --retry-timeout"
        );
        assert_eq!(
            hint(Problem::KeptFailing { attempts: 8 }),
            "the registry kept failing through 8 attempts; check its health, or allow more with --retry-attempts / --retry-timeout"
        );
        let from_file = Lookup {
            source: Some("/home/u/.docker/config.json (auths)".into()),
            searched: vec![
                "ADAPT_PUSH_USERNAME".into(),
                "/home/u/.docker/config.json".into(),
            ],
            ..Lookup::default()
        };
        assert_eq!(
            hint(Problem::CredentialsRefused {
                registry: &lan,
                lookup: &from_file
            }),
            "credentials came from /home/u/.docker/config.json (auths) (looked in: ADAPT_PUSH_USERNAME, /home/u/.docker/config.json); check the username and password or token, log in again with `docker login registry.lan:5000`, or set ADAPT_PUSH_USERNAME and ADAPT_PUSH_PASSWORD"
        );
        let from_environment = Lookup {
            source: Some("ADAPT_PUSH_TOKEN".into()),
            from_environment: true,
            ..from_file.clone()
        };
        assert_eq!(
            hint(Problem::CredentialsRefused {
                registry: &lan,
                lookup: &from_environment
            }),
            "the credentials came from ADAPT_PUSH_TOKEN: check them (they take precedence over `docker login`; unset them to use the Docker config's instead)"
        );
        assert_eq!(
            hint(Problem::NoCredentials {
                registry: &lan,
                lookup: &from_file
            }),
            "no credentials were found for registry.lan:5000 (looked in: ADAPT_PUSH_USERNAME, /home/u/.docker/config.json); log in with `docker login registry.lan:5000`, or set ADAPT_PUSH_USERNAME and ADAPT_PUSH_PASSWORD"
        );
        assert_eq!(
            hint(Problem::UploadHostCredentials {
                registry: &lan,
                origin: "https://storage.lan"
            }),
            "credentials of registry.lan:5000 are never sent to another host; log in to https://storage.lan itself (`docker login`) if it really needs credentials"
        );
        assert_eq!(
            hint(Problem::UnreadableBlobFile),
            "it is in the layer cache under target/adapt-push; run the push again"
        );
    }
}
