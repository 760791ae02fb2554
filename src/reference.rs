//! Registry addresses and image references, following the grammar of the OCI distribution spec
//! and Docker's `reference` package: `host[:port][/path]`, `[::1]:5000`, `localhost`, lowercase
//! repository paths, tags and digests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a string is not a valid registry address or reference; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(pub String);

/// An error whose message may quote the input: any userinfo in it is hidden.
fn err<T>(msg: impl Into<String>) -> Result<T, ReferenceError> {
    Err(ReferenceError(redact_userinfo(&msg.into())))
}

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
    host: String,
    port: Option<u16>,
    /// `http://` or `https://` given by the user; `None` means "decide by policy".
    scheme: Option<Scheme>,
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

/// `text` with the userinfo of every address in it (`[scheme://]user:password@host…`) replaced
/// by `<redacted>`: the one redaction for everything shown to people (errors, Cargo.toml
/// snippets, logs, CI annotations), so a password written into an address is never echoed.
///
/// An address is a run of text between spaces, quotes, backticks or angle brackets; its
/// authority runs from the start (or after `://`) to the first `/`, `?` or `#`, and the userinfo
/// is everything in it before the LAST `@`, as in RFC 3986 and the address parser (so a password
/// holding `@` is hidden whole). E-mail addresses (`a@b.org`: no `:` before the `@`) and
/// digest references (`busybox:1@sha256:…`) are not addresses with userinfo and stay as they are.
pub fn redact_userinfo(text: &str) -> String {
    let boundary = |c: char| c.is_whitespace() || matches!(c, '"' | '`' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(end) = rest.find(boundary) {
        out.push_str(&redact_token(&rest[..end]));
        let c = rest[end..].chars().next().expect("a boundary character");
        out.push(c);
        rest = &rest[end + c.len_utf8()..];
    }
    out.push_str(&redact_token(rest));
    out
}

/// One address-like run of text with its userinfo replaced (see [`redact_userinfo`]).
fn redact_token(token: &str) -> std::borrow::Cow<'_, str> {
    let start = token.find("://").map_or(0, |i| i + 3);
    let end = token[start..]
        .find(['/', '?', '#'])
        .map_or(token.len(), |i| start + i);
    let Some(at) = token[start..end].rfind('@').map(|i| start + i) else {
        return token.into();
    };
    let (userinfo, host) = (&token[start..at], &token[at + 1..end]);
    let has_password = userinfo.contains(':') || userinfo.contains('@');
    let names_a_host = host
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[');
    if userinfo.is_empty() || !has_password || !names_a_host || looks_like_digest(host) {
        return token.into();
    }
    format!("{}<redacted>@{}", &token[..start], &token[at + 1..]).into()
}

/// `algorithm:encoded` with a long encoded part (a digest, not `host:port`).
fn looks_like_digest(text: &str) -> bool {
    text.split_once(':').is_some_and(|(algorithm, encoded)| {
        !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && encoded.len() >= 32
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    })
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

fn split_scheme(input: &str) -> Result<(Option<Scheme>, &str), ReferenceError> {
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

/// Refuses a reference whose registry part carries `user:password@`, before anything else reads
/// it: split at its first `@` as a digest, such a reference would echo pieces of the password in
/// the digest's error. The registry part runs to the first `/`; without a `/`, a single `@`
/// followed by something that is not `host[:port]` is a digest (`busybox@sha256:…`).
fn refuse_userinfo(rest: &str, whole: &str) -> Result<(), ReferenceError> {
    let first = rest.split('/').next().unwrap_or(rest);
    let Some(at) = first.rfind('@') else {
        return Ok(());
    };
    let after = &first[at + 1..];
    let a_digest = first.len() == rest.len()
        && first.matches('@').count() == 1
        && (after.starts_with("sha256:")
            || after.starts_with("sha512:")
            || parse_authority(after, whole).is_err());
    if a_digest {
        return Ok(());
    }
    // Always an error (the `@`), with the userinfo redacted.
    parse_authority(first, whole).map(|_| ())
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port`; returns the lowercase host and the port.
fn parse_authority(authority: &str, whole: &str) -> Result<(String, Option<u16>), ReferenceError> {
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

/// A repository path: `team/greeter`. Lowercase components joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository(String);

impl Repository {
    pub fn parse(path: &str) -> Result<Repository, ReferenceError> {
        validate_repository_path(path)?;
        Ok(Repository(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_repository_path(path: &str) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return err("the repository path is empty");
    }
    if path.len() > 255 {
        return err(format!(
            "the repository path `{path}` is {} characters long; the limit is 255",
            path.len()
        ));
    }
    for component in path.split('/') {
        validate_path_component(component).map_err(|why| {
            ReferenceError(format!("`{path}` is not a valid repository path: {why}"))
        })?;
    }
    Ok(())
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn validate_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("it has an empty component (`//`, or a leading or trailing `/`)".into());
    }
    if let Some(c) = component.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "`{component}` has the uppercase letter `{c}`; repository paths are lowercase (try `{}`)",
            component.to_ascii_lowercase()
        ));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "`{component}` must start and end with a lowercase letter or digit"
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or any number of `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let valid = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !valid {
            return Err(format!(
                "`{component}` has `{sep}`; components may only use `.`, `_`, `__` or `-` between lowercase letters and digits"
            ));
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(tag: &str) -> Result<Tag, ReferenceError> {
        let valid_first = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let valid_rest = |c: char| valid_first(c) || c == '.' || c == '-';
        let mut chars = tag.chars();
        match chars.next() {
            None => return err("the tag is empty"),
            Some(c) if !valid_first(c) => {
                return err(format!(
                    "the tag `{tag}` must start with a letter, digit or `_`"
                ));
            }
            _ => {}
        }
        if let Some(c) = chars.find(|c| !valid_rest(*c)) {
            return err(format!(
                "the tag `{tag}` has `{c}`; tags use letters, digits, `_`, `.` and `-` only"
            ));
        }
        if tag.len() > 128 {
            return err(format!("the tag `{tag}` is longer than 128 characters"));
        }
        Ok(Tag(tag.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A content digest: `sha256:<64 hex>` (or sha512 with 128).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(digest: &str) -> Result<Digest, ReferenceError> {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return err(format!(
                "`{digest}` is not a digest; expected `sha256:` followed by 64 hex digits"
            ));
        };
        let expected = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return err(format!(
                    "`{digest}`: unsupported digest algorithm `{algorithm}` (sha256 or sha512)"
                ));
            }
        };
        if hex.len() != expected || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return err(format!(
                "`{digest}`: a {algorithm} digest is {expected} lowercase hex digits"
            ));
        }
        Ok(Digest(digest.to_string()))
    }

    /// The sha256 digest of some bytes.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        use sha2::{Digest as _, Sha256};
        Digest::from_sha256_bytes(&Sha256::digest(bytes))
    }

    pub fn from_sha256_bytes(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, for file names.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full image reference: registry, repository, and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: Registry,
    pub repository: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference the way `docker pull` does: a first component with `.` or `:`, or
    /// `localhost`, is the registry; otherwise Docker Hub (and `library/` for one component).
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        if input.is_empty() {
            return err("the image reference is empty");
        }
        let (scheme, rest) = split_scheme(input)?;
        refuse_userinfo(rest, input)?;
        let (name_and_tag, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
            None => (rest, None),
        };
        // The tag is after the last `:` that follows the last `/` (a `:` before it is a port).
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (
                    &name_and_tag[..at],
                    Some(Tag::parse(&name_and_tag[at + 1..])?),
                )
            }
            None => (name_and_tag, None),
        };
        let (first, remainder) = match name.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (name, None),
        };
        let first_is_registry = remainder.is_some()
            && (first.contains('.')
                || first.contains(':')
                || first.starts_with('[')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()));
        let (registry, path) = if first_is_registry {
            let (host, port) = parse_authority(first, input)?;
            (
                Registry { host, port, scheme },
                remainder.unwrap_or_default().to_string(),
            )
        } else {
            if scheme.is_some() {
                return err(format!(
                    "`{input}`: a scheme needs a registry host after it"
                ));
            }
            let path = if remainder.is_none() {
                format!("library/{name}")
            } else {
                name.to_string()
            };
            (Registry::docker_hub(), path)
        };
        let repository = Repository::parse(&path)?;
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".into(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
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
    fn userinfo_is_never_echoed() {
        for input in [
            "https://bob:s3cret-pw@registry.example/team",
            "bob:s3cret-pw@registry.example:5000",
            "http://bob:s3cret-pw@[::1]:5000",
        ] {
            let e = RegistryLocation::parse(input).unwrap_err().to_string();
            assert!(!e.contains("s3cret-pw") && !e.contains("bob"), "{e}");
            assert!(e.contains("<redacted>@"), "{e}");
        }
        let toml =
            "registry = \"https://bob:s3cret-pw@r.example/x\"\nauthors = [\"A <a@b.org>\"]\n";
        let shown = redact_userinfo(toml);
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("https://<redacted>@r.example/x"), "{shown}");
        assert!(shown.contains("<a@b.org>"), "{shown}");
    }

    #[test]
    fn redaction_hides_the_userinfo_up_to_the_last_at() {
        for (text, shown) in [
            ("alice:Pa@SECRET-TAIL@host", "<redacted>@host"),
            (
                "registry = \"alice:Pa@SECRET-TAIL@host:5000/team\"",
                "registry = \"<redacted>@host:5000/team\"",
            ),
            (
                "`https://u:Top@Sec:ret%40X9@127.0.0.1:5000/base:1` is not",
                "`https://<redacted>@127.0.0.1:5000/base:1` is not",
            ),
            (
                "-> GET http://u:pw@[::1]:5000/v2/",
                "-> GET http://<redacted>@[::1]:5000/v2/",
            ),
            (
                "ADAPT_PUSH_REGISTRY=u:p@w@h.example",
                "<redacted>@h.example",
            ),
            ("(u:p@ss@h.example)", "<redacted>@h.example)"),
            ("a\tu:x@y@h:1\n", "a\t<redacted>@h:1\n"),
        ] {
            assert_eq!(redact_userinfo(text), shown, "{text}");
        }
        let digest = format!("sha256:{}", "ab".repeat(32));
        for same in [
            "authors = [\"A <a@b.org>\"]".to_string(),
            "mail a@b.org, or ssh://git@host/x, or git@github.com:org/repo.git".into(),
            format!("localhost:5000/app:v1@{digest}"),
            format!("`busybox:1.36@{digest}`"),
            format!("registry:5000/team/app@{digest} (pushed)"),
            "user@ alone, @host, :@, a:b@".into(),
            "ünïcödé:ß@ ok".into(),
        ] {
            assert_eq!(redact_userinfo(&same), same);
        }
    }

    #[test]
    fn an_image_reference_with_userinfo_is_refused_whole() {
        for input in [
            "u:Top:Secret9@Mid:dle@InnerTail%40Pct@127.0.0.1:5000/base:1",
            "u:TopSecret9@host.example/base:1",
            "http://u:TopSecret9@[::1]:5000/base",
            "u:Mid@InnerTail@host.example:5000",
        ] {
            let e = ImageRef::parse(input).unwrap_err().0;
            for piece in ["Secret9", "Mid", "InnerTail", "Pct", "u:"] {
                assert!(!e.contains(piece), "{input}: {e}");
            }
            assert!(
                e.contains("<redacted>@") && e.contains("user:password@"),
                "{e}"
            );
        }
        // A single `@` before a digest is still a digest, good or bad.
        let digest = format!("sha256:{}", "c".repeat(64));
        assert!(ImageRef::parse(&format!("busybox@{digest}")).is_ok());
        assert!(ImageRef::parse(&format!("busybox:1.36@{digest}")).is_ok());
        let e = ImageRef::parse("busybox@sha256:12").unwrap_err().0;
        assert!(e.contains("hex digits"), "{e}");
        let e = ImageRef::parse("busybox@md5:zz").unwrap_err().0;
        assert!(e.contains("unsupported digest algorithm"), "{e}");
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

    #[test]
    fn repository_paths() {
        for good in ["a", "team/greeter", "a.b_c__d---e/f0", "x/y/z/w", "0"] {
            Repository::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "", "Team/x", "a/", "/a", "a//b", "_a", "a_", "a___b", "a._b", "a b", "a:b", "é",
        ] {
            assert!(
                Repository::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(Repository::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_and_digests() {
        for good in ["latest", "1.2.3", "_x", "v1-rc.1", &"a".repeat(128)] {
            Tag::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", ".x", "-x", "1.0+build", "a/b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
        let hex64 = "a".repeat(64);
        Digest::parse(&format!("sha256:{hex64}")).unwrap();
        for bad in [
            "sha256:abc".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("md5:{hex64}"),
            hex64.clone(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::sha256_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn image_references() {
        let d = format!("sha256:{}", "b".repeat(64));
        let cases: Vec<(String, &str, &str, Option<&str>, bool)> = vec![
            (
                "busybox".into(),
                "docker.io",
                "library/busybox",
                None,
                false,
            ),
            (
                "busybox:1.36".into(),
                "docker.io",
                "library/busybox",
                Some("1.36"),
                false,
            ),
            ("acme/app".into(), "docker.io", "acme/app", None, false),
            ("localhost/app".into(), "localhost", "app", None, false),
            (
                "localhost:5000/a/b:v1".into(),
                "localhost:5000",
                "a/b",
                Some("v1"),
                false,
            ),
            (
                "[::1]:5000/base:1".into(),
                "[::1]:5000",
                "base",
                Some("1"),
                false,
            ),
            (
                format!("ghcr.io/acme/base@{d}"),
                "ghcr.io",
                "acme/base",
                None,
                true,
            ),
            (
                format!("ghcr.io/acme/base:1@{d}"),
                "ghcr.io",
                "acme/base",
                Some("1"),
                true,
            ),
            (
                "http://127.0.0.1:5000/base:1".into(),
                "127.0.0.1:5000",
                "base",
                Some("1"),
                false,
            ),
        ];
        for (input, registry, repo, tag, pinned) in cases {
            let r = ImageRef::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry.authority(), registry, "{input}");
            assert_eq!(r.repository.as_str(), repo, "{input}");
            assert_eq!(r.tag.as_ref().map(|t| t.as_str()), tag, "{input}");
            assert_eq!(r.digest.is_some(), pinned, "{input}");
        }
    }

    #[test]
    fn malformed_image_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "a:b:c",
            "ghcr.io/x@sha256:12",
            "ftp://h/x",
            "x:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_image_reference_prints_as_given_and_docker_hub_has_its_api_host() {
        let r = ImageRef::parse("localhost:5000/a/b:v1").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a/b:v1");
        assert_eq!(r.reference(), "v1");
        assert!(Registry::docker_hub().is_docker_hub());
        assert_eq!(
            Registry::docker_hub().api_authority(),
            "registry-1.docker.io"
        );
    }
}
