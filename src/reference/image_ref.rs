//! The full image reference (`[registry/]repository[:tag][@digest]`), parsed the way `docker
//! pull` reads one.

use std::fmt;

use super::registry::{parse_authority, split_scheme};
use super::{Digest, ReferenceError, Registry, Repository, Tag, err};

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

#[cfg(test)]
mod tests {
    use super::*;

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
