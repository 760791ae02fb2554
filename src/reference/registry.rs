//! Registry addresses: `host[:port]` with an optional scheme (`ghcr.io`, `localhost:5001`,
//! `[::1]:5000`, `http://…`), and a registry with a leading repository path (`ghcr.io/acme`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::repository::validate_repository_path;
use super::{ReferenceError, Repository, err};

/// The transport a registry address asked for with an explicit scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// A registry host, with optional port: `ghcr.io`, `localhost:5001`, `[::1]:5000`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    /// Lowercase host name or IP literal, without brackets.
    pub(super) host: String,
    pub(super) port: Option<u16>,
    /// `http://` or `https://` given by the user; `None` means "decide by policy".
    pub(super) scheme: Option<Scheme>,
}

impl Registry {
    /// Parses `host[:port]` with an optional `http://` or `https://` prefix.
    pub fn parse(input: &str) -> Result<Registry, ReferenceError> {
        let location = RegistryLocation::parse(input)?;
        if let Some(ns) = location.namespace {
            return err(format!(
                "`{input}` has a path (`{ns}`); a registry host is expected here, like `localhost:5000`"
            ));
        }
        Ok(location.registry)
    }

    /// Docker Hub, the registry implied by references like `busybox` or `library/debian`.
    pub fn docker_hub() -> Registry {
        Registry {
            host: "docker.io".into(),
            port: None,
            scheme: None,
        }
    }

    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The host name or IP literal, without brackets or port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `host[:port]` as it appears in an image reference (IPv6 in brackets), without scheme.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The host to open connections to for the API: Docker Hub's API lives elsewhere.
    pub fn api_authority(&self) -> String {
        if self.is_docker_hub() {
            "registry-1.docker.io".into()
        } else {
            self.authority()
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        self.port.is_none()
            && matches!(
                self.host.as_str(),
                "docker.io" | "index.docker.io" | "registry-1.docker.io"
            )
    }

    /// Loopback hosts may be spoken to over plain HTTP without being listed as insecure.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// The same registry with an explicit scheme dropped, for comparing addresses.
    pub fn without_scheme(&self) -> Registry {
        Registry {
            scheme: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 or `::1` (brackets allowed), in any case.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A registry plus an optional leading repository path, as written in `registry = "ghcr.io/acme"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryLocation {
    pub registry: Registry,
    /// Validated repository path prefix under the registry (`acme` in `ghcr.io/acme`).
    pub namespace: Option<String>,
}

impl RegistryLocation {
    pub fn parse(input: &str) -> Result<RegistryLocation, ReferenceError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return err("the registry address is empty; expected something like `localhost:5000`");
        }
        if trimmed != input {
            return err(format!(
                "`{input}` has surrounding spaces; write it as `{trimmed}`"
            ));
        }
        let (scheme, rest) = split_scheme(input)?;
        let rest = rest.trim_end_matches('/');
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (host, port) = parse_authority(authority, input)?;
        let namespace = match path {
            None => None,
            Some(p) => {
                validate_repository_path(p).map_err(|e| {
                    ReferenceError(format!(
                        "the path in registry `{input}` is not valid: {}",
                        e.0
                    ))
                })?;
                Some(p.to_string())
            }
        };
        Ok(RegistryLocation {
            registry: Registry { host, port, scheme },
            namespace,
        })
    }

    /// Parses an address images are pushed to or pulled from. Beyond [`parse`](Self::parse), the
    /// host must read as a registry in an image reference: Docker's rule takes a first component
    /// without `.` or `:` (other than `localhost`) as a Docker Hub namespace, so `registry/app`
    /// would mean `docker.io/registry/app`.
    pub fn parse_destination(input: &str) -> Result<RegistryLocation, ReferenceError> {
        let location = RegistryLocation::parse(input)?;
        let r = &location.registry;
        if r.port.is_none()
            && !r.host.contains('.')
            && !r.host.contains(':')
            && r.host != "localhost"
        {
            return err(format!(
                "`{input}`: in an image reference `{host}/...` would mean Docker Hub (docker.io/{host}/...); give the port, like `{host}:5000`, or a domain, like `{host}.local`",
                host = r.host
            ));
        }
        Ok(location)
    }

    /// The full repository for an image path under this location.
    pub fn repository(&self, image: &str) -> Result<Repository, ReferenceError> {
        match &self.namespace {
            Some(ns) => Repository::parse(&format!("{ns}/{image}")),
            None => Repository::parse(image),
        }
    }
}

impl fmt::Display for RegistryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}", self.registry, ns),
            None => write!(f, "{}", self.registry),
        }
    }
}

pub(super) fn split_scheme(input: &str) -> Result<(Option<Scheme>, &str), ReferenceError> {
    if let Some(i) = input.find("://") {
        let scheme = &input[..i];
        let rest = &input[i + 3..];
        return match scheme.to_ascii_lowercase().as_str() {
            "http" => Ok((Some(Scheme::Http), rest)),
            "https" => Ok((Some(Scheme::Https), rest)),
            "oci" | "docker" => err(format!(
                "`{input}`: the `{scheme}://` scheme is not used for registries; write the address alone, like `{rest}`"
            )),
            _ => err(format!(
                "`{input}`: unsupported scheme `{scheme}://`; use `https://` (the default) or `http://` for a plain-HTTP registry, or no scheme at all"
            )),
        };
    }
    Ok((None, input))
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port`; returns the lowercase host and the port.
pub(super) fn parse_authority(
    authority: &str,
    whole: &str,
) -> Result<(String, Option<u16>), ReferenceError> {
    if authority.is_empty() {
        return err(format!(
            "`{whole}` has no host; expected something like `localhost:5000`"
        ));
    }
    if let Some(at) = authority.rfind('@') {
        // Never echo what is before the `@`: it is likely a password.
        let shown = whole.replacen(&authority[..at], "<redacted>", 1);
        return err(format!(
            "`{shown}` contains `user:password@`: credentials do not belong in the registry address; use `docker login` or ADAPT_PUSH_USERNAME/ADAPT_PUSH_PASSWORD"
        ));
    }
    let (host, port_text) = if let Some(rest) = authority.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return err(format!(
                "`{whole}`: `[` opens an IPv6 address that is never closed"
            ));
        };
        let v6 = &rest[..end];
        if v6.parse::<Ipv6Addr>().is_err() {
            return err(format!("`{whole}`: `{v6}` is not an IPv6 address"));
        }
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p if p.starts_with(':') => Some(&p[1..]),
            _ => {
                return err(format!(
                    "`{whole}`: unexpected `{after}` after the IPv6 address"
                ));
            }
        };
        (v6.to_ascii_lowercase(), port)
    } else {
        if authority.matches(':').count() > 1 {
            return err(format!(
                "`{whole}`: an IPv6 address must be written in brackets, like `[::1]:5000`"
            ));
        }
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        validate_host_name(host, whole)?;
        (host.to_ascii_lowercase(), port)
    };
    let port = match port_text {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return err(format!("`{whole}`: `{p}` is not a port number (1-65535)")),
        },
    };
    Ok((host, port))
}

fn validate_host_name(host: &str, whole: &str) -> Result<(), ReferenceError> {
    if host.is_empty() {
        return err(format!("`{whole}` has no host before the port"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return err(format!(
                "`{whole}`: `{host}` is not a valid host name (letters, digits, `-` and `.` only)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_locations() {
        // (input, authority, namespace, scheme)
        let ok: &[(&str, &str, Option<&str>, Option<Scheme>)] = &[
            ("localhost", "localhost", None, None),
            ("localhost:5001", "localhost:5001", None, None),
            ("registry:5000", "registry:5000", None, None),
            ("ghcr.io/acme", "ghcr.io", Some("acme"), None),
            ("ghcr.io/acme/team", "ghcr.io", Some("acme/team"), None),
            ("GHCR.io/acme", "ghcr.io", Some("acme"), None),
            ("127.0.0.1:5000", "127.0.0.1:5000", None, None),
            ("[::1]:5000", "[::1]:5000", None, None),
            ("[::1]", "[::1]", None, None),
            ("[FE80::1]:80", "[fe80::1]:80", None, None),
            (
                "http://localhost:5000",
                "localhost:5000",
                None,
                Some(Scheme::Http),
            ),
            (
                "https://ghcr.io/acme/",
                "ghcr.io",
                Some("acme"),
                Some(Scheme::Https),
            ),
            (
                "HTTP://10.0.0.1:5000",
                "10.0.0.1:5000",
                None,
                Some(Scheme::Http),
            ),
            (
                "my-registry.internal:443",
                "my-registry.internal:443",
                None,
                None,
            ),
        ];
        for (input, authority, namespace, scheme) in ok {
            let loc = RegistryLocation::parse(input)
                .unwrap_or_else(|e| panic!("{input} should parse: {e}"));
            assert_eq!(loc.registry.authority(), *authority, "{input}");
            assert_eq!(loc.namespace.as_deref(), *namespace, "{input}");
            assert_eq!(loc.registry.scheme(), *scheme, "{input}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            (" localhost", "spaces"),
            ("ftp://host", "unsupported scheme"),
            ("oci://ghcr.io", "not used for registries"),
            ("localhost:0", "port number"),
            ("localhost:70000", "port number"),
            ("localhost:50a", "port number"),
            ("localhost:", "port number"),
            ("::1:5000", "brackets"),
            ("[::1", "never closed"),
            ("[nothex]:5000", "not an IPv6"),
            ("[::1]x", "unexpected"),
            ("user:pw@ghcr.io", "credentials"),
            ("under_score.io", "host name"),
            ("-bad.io", "host name"),
            ("ghcr.io/Acme", "uppercase"),
            ("ghcr.io//acme", "empty component"),
            ("http://", "no host"),
            ("ghcr.io/a..b", "components may only use"),
        ];
        for (input, expect) in bad {
            let e = RegistryLocation::parse(input).expect_err(input);
            assert!(e.0.contains(expect), "{input}: {e} should mention {expect}");
        }
    }

    #[test]
    fn destinations_must_read_as_registries_in_references() {
        for good in [
            "localhost",
            "registry:5000",
            "registry.local",
            "127.0.0.1",
            "[::1]",
            "ghcr.io/acme",
        ] {
            RegistryLocation::parse_destination(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["registry", "registry/team", "http://kind-registry"] {
            let e = RegistryLocation::parse_destination(bad).expect_err(bad);
            assert!(e.0.contains("Docker Hub"), "{bad}: {e}");
        }
    }

    #[test]
    fn loopback_detection() {
        for (input, loopback) in [
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("[::1]:5000", true),
            ("foo.localhost", true),
            ("registry:5000", false),
            ("10.0.0.1", false),
            ("ghcr.io", false),
            ("localhost.evil.com", false),
            ("LOCALHOST:5000", true),
        ] {
            assert_eq!(
                Registry::parse(input).unwrap().is_loopback(),
                loopback,
                "{input}"
            );
        }
    }

    #[test]
    fn loopback_hosts_with_brackets_and_case() {
        for (host, loopback) in [
            ("[::1]", true),
            ("::1", true),
            ("Localhost", true),
            ("127.9.9.9", true),
            ("[::2]", false),
            ("registry", false),
            ("", false),
        ] {
            assert_eq!(is_loopback_host(host), loopback, "{host}");
        }
    }
}
