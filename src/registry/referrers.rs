//! OCI 1.1 referrers: the manifests whose `subject` is a given image.
//!
//! Registries with the referrers API list them at `GET /v2/<name>/referrers/<digest>`. Those
//! without it (distribution 2.8, Debian's `docker-registry`) answer 404 there; for them the
//! spec's fallback is the referrers tag schema: the tag `sha256-<hex>` holds an image index of
//! the referrers, which each client reads, extends and writes back.

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{MANIFEST_LIMIT, RegistryClient, RegistryError, Scope};
use crate::image::{OCI_INDEX, canonical_json};
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

    /// Makes a pushed referrer manifest findable. With the referrers API the registry indexes it
    /// by itself; otherwise the fallback tag's index is read, extended (keeping every existing
    /// entry, adding none twice) and written back.
    ///
    /// Two clients updating the same tag at once can lose one entry (the schema has no lock);
    /// the spec accepts that, and a re-push adds it again.
    pub async fn register_referrer(
        &self,
        repo: &Repository,
        subject: &Digest,
        descriptor: Value,
    ) -> Result<ReferrersVia, RegistryError> {
        if self.referrers_from_api(repo, subject).await?.is_some() {
            return Ok(ReferrersVia::Api);
        }
        let mut manifests = self.referrers_from_tag(repo, subject).await?;
        let digest = descriptor.get("digest").cloned();
        if manifests.iter().any(|m| m.get("digest") == digest.as_ref()) {
            return Ok(ReferrersVia::FallbackTag);
        }
        manifests.push(descriptor);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        let bytes: Bytes = canonical_json(&index).map_err(|e| RegistryError::Protocol {
            registry: self.registry.to_string(),
            what: "the referrers index".into(),
            cause: e.to_string(),
        })?;
        let index_digest = Digest::sha256_of(&bytes);
        self.put_manifest(
            repo,
            &fallback_tag(subject),
            OCI_INDEX,
            &bytes,
            &index_digest,
        )
        .await?;
        Ok(ReferrersVia::FallbackTag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_tag_replaces_the_colon() {
        let d = Digest::sha256_of(b"x");
        let tag = fallback_tag(&d);
        assert_eq!(tag, format!("sha256-{}", d.hex()));
        assert!(crate::reference::Tag::parse(&tag).is_ok());
    }
}
