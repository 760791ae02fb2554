//! OCI 1.1 referrers: the manifests whose `subject` is a given image.
//!
//! Registries with the referrers API list them at `GET /v2/<name>/referrers/<digest>`. Those
//! without it (distribution 2.8, Debian's `docker-registry`) answer 404 there; for them the
//! spec's fallback is the referrers tag schema: the tag `sha256-<hex>` holds an image index of
//! the referrers, which each client reads, extends and writes back (and, having no lock, reads
//! again to see that its entries stayed).

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::challenge::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::manifests::MANIFEST_LIMIT;
use crate::media_type::OCI_INDEX;
use crate::reference::{Digest, Repository};

/// How the referrers of an image were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersVia {
    Api,
    FallbackTag,
}

impl ReferrersVia {
    pub fn describe(self) -> &'static str {
        match self {
            ReferrersVia::Api => "the referrers API",
            ReferrersVia::FallbackTag => "the referrers tag",
        }
    }
}

/// The fallback tag for a subject: `sha256:abc…` → `sha256-abc…`.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

/// The descriptors in an index document; anything unreadable is an empty list.
fn manifests_of(index: &Value) -> Vec<Value> {
    index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl RegistryClient {
    /// `GET /v2/<repo>/referrers/<subject>`: `None` when the registry has no referrers API.
    pub async fn referrers_from_api(
        &self,
        repo: &Repository,
        subject: &Digest,
    ) -> Result<Option<Vec<Value>>, RegistryError> {
        let url = format!("{}/v2/{repo}/referrers/{subject}", self.base_url);
        let what = format!("the referrers of {repo}@{subject}");
        let response = self
            .send_with_retry(Some(&Scope::pull(repo)), &what, || {
                self.http.get(&url).header("Accept", OCI_INDEX)
            })
            .await?;
        match response.status() {
            // The spec: a registry without the API answers 404 (distribution 2.8 does).
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let body = self.read_body(response, MANIFEST_LIMIT, &what).await?;
                let index: Value =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                        registry: self.registry.to_string(),
                        what,
                        cause: e.to_string(),
                    })?;
                Ok(Some(manifests_of(&index)))
            }
            s => Err(self.status_error(Some(repo), &what, s, response).await),
        }
    }

    /// The index under the fallback tag, or an empty list when the tag does not exist yet.
    pub async fn referrers_from_tag(
        &self,
        repo: &Repository,
        subject: &Digest,
    ) -> Result<Vec<Value>, RegistryError> {
        let tag = fallback_tag(subject);
        match self.get_manifest(repo, &tag).await {
            Ok((_, bytes, _)) => {
                let index: Value =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                        registry: self.registry.to_string(),
                        what: format!("the referrers index {repo}:{tag}"),
                        cause: e.to_string(),
                    })?;
                Ok(manifests_of(&index))
            }
            Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Every referrer of `subject`, through the API when the registry has it, else the tag.
    pub async fn referrers(
        &self,
        repo: &Repository,
        subject: &Digest,
    ) -> Result<(Vec<Value>, ReferrersVia), RegistryError> {
        match self.referrers_from_api(repo, subject).await? {
            Some(list) => Ok((list, ReferrersVia::Api)),
            None => Ok((
                self.referrers_from_tag(repo, subject).await?,
                ReferrersVia::FallbackTag,
            )),
        }
    }

    /// Makes pushed referrer manifests findable. With the referrers API the registry indexes
    /// them by itself; otherwise they are added to the fallback tag's index (keeping every
    /// existing entry, adding none twice), which is then read back until it lists every one.
    ///
    /// The schema has no lock: another push of the same image (a CI matrix job attaching its
    /// own documents) may have read the tag just before our write and write its own list over
    /// ours a moment later. So after each write, and a short randomized wait that outlasts such
    /// a read-modify-write, the tag is read again and whatever went missing is merged back in,
    /// up to [`REFERRERS_TAG_ATTEMPTS`] writes; the other push does the same for its entries.
    /// If entries are still missing after that, the error says which.
    pub async fn add_referrers(
        &self,
        repo: &Repository,
        subject: &Digest,
        descriptors: &[Value],
    ) -> Result<ReferrersVia, RegistryError> {
        if self.referrers_from_api(repo, subject).await?.is_some() {
            return Ok(ReferrersVia::Api);
        }
        let tag = fallback_tag(subject);
        let mut listed = self.referrers_from_tag(repo, subject).await?;
        for attempt in 1..=REFERRERS_TAG_ATTEMPTS {
            let missing = missing_from(&listed, descriptors);
            if missing.is_empty() {
                return Ok(ReferrersVia::FallbackTag);
            }
            if attempt > 1 {
                self.events.detail(&format!(
                    "{repo}:{tag} lost {} of our referrers to another push; adding them again (write {attempt}/{REFERRERS_TAG_ATTEMPTS})",
                    missing.len()
                ));
            }
            listed.extend(missing.into_iter().cloned());
            self.put_referrers_index(repo, &tag, &listed).await?;
            tokio::time::sleep(settle_time(attempt)).await;
            listed = self.referrers_from_tag(repo, subject).await?;
        }
        let missing = missing_from(&listed, descriptors);
        if missing.is_empty() {
            return Ok(ReferrersVia::FallbackTag);
        }
        Err(RegistryError::ReferrersContended {
            registry: self.registry.to_string(),
            tag: format!("{repo}:{tag}"),
            missing: missing
                .iter()
                .filter_map(|d| d.get("digest").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(", "),
            attempts: REFERRERS_TAG_ATTEMPTS,
        })
    }

    /// Writes `manifests` as the image index under the fallback tag `tag`.
    async fn put_referrers_index(
        &self,
        repo: &Repository,
        tag: &str,
        manifests: &[Value],
    ) -> Result<(), RegistryError> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        // serde_json's Map is a BTreeMap (no preserve_order feature): the keys come out sorted,
        // so the same list is the same bytes every time.
        let bytes = serde_json::to_vec(&index).map_err(|e| RegistryError::Protocol {
            registry: self.registry.to_string(),
            what: "the referrers index".into(),
            cause: e.to_string(),
        })?;
        let bytes = Bytes::from(bytes);
        let index_digest = Digest::sha256_of(&bytes);
        self.put_manifest(repo, tag, OCI_INDEX, &bytes, &index_digest)
            .await
    }
}

/// How many times the fallback tag is written before giving up on a contended one.
pub const REFERRERS_TAG_ATTEMPTS: u32 = 5;

/// The descriptors of `ours` whose digest `listed` lacks.
fn missing_from<'a>(listed: &[Value], ours: &'a [Value]) -> Vec<&'a Value> {
    ours.iter()
        .filter(|d| {
            let digest = d.get("digest");
            !listed.iter().any(|m| m.get("digest") == digest)
        })
        .collect()
}

/// The wait between writing the fallback tag and reading it back: long against another push's
/// read-then-write of the tag (two requests' worth of work, with scheduling delays on a busy CI
/// machine), randomized so two pushes that collided fall out of step, and longer after each
/// collision.
fn settle_time(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * attempt;
    base + base.mul_f64(rand::random::<f64>() * 1.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_entries_are_found_by_digest() {
        let a = json!({"digest": "sha256:a", "artifactType": "x"});
        let b = json!({"digest": "sha256:b"});
        let listed = vec![json!({"digest": "sha256:a", "annotations": {}})];
        let ours = vec![a, b.clone()];
        assert_eq!(missing_from(&listed, &ours), vec![&b]);
        assert!(missing_from(&ours, &ours).is_empty());
    }

    #[test]
    fn settling_is_randomized_and_bounded() {
        let first: Vec<Duration> = (0..50).map(|_| settle_time(1)).collect();
        assert!(first.iter().all(|d| *d >= Duration::from_millis(100)));
        assert!(first.iter().all(|d| *d <= Duration::from_millis(250)));
        assert!(first.iter().any(|d| *d != first[0]));
        let worst: Duration = (1..=REFERRERS_TAG_ATTEMPTS)
            .map(|a| Duration::from_millis(250) * a)
            .sum();
        assert!(worst <= Duration::from_secs(4));
    }

    #[test]
    fn fallback_tag_replaces_the_colon() {
        let d = Digest::sha256_of(b"x");
        let tag = fallback_tag(&d);
        assert_eq!(tag, format!("sha256-{}", d.hex()));
        assert!(crate::reference::Tag::parse(&tag).is_ok());
    }
}
