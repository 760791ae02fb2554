//! Manifests: GET by tag or digest (with the exact bytes and their digest) and PUT, checking
//! the registry stored exactly our bytes.

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;

use super::challenge::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::http::header_str;
use crate::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::reference::{Digest, Repository};

/// Manifest types we ask for when reading (the `Accept` header lists them in this order).
const MANIFEST_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The most a manifest may weigh: what the distribution spec asks registries to accept.
pub const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

impl RegistryClient {
    /// Fetches a manifest by tag or digest: (media type, exact bytes, digest of those bytes).
    pub async fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<(String, Bytes, Digest), RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base_url);
        let what = format!("manifest {repo}:{reference}");
        let accept = MANIFEST_TYPES.join(", ");
        let response = self
            .send_with_retry(Some(&Scope::pull(repo)), &what, || {
                self.http.get(&url).header("Accept", &accept)
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(Some(repo), &what, response.status(), response)
                .await);
        }
        let media_type = header_str(response.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = self.read_body(response, MANIFEST_LIMIT, &what).await?;
        let digest = Digest::sha256_of(&bytes);
        if reference.starts_with("sha256:") && reference != digest.as_str() {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.to_string(),
                expected: reference.to_string(),
                got: digest.to_string(),
            });
        }
        let media_type = match media_type.split(';').next().map(str::trim) {
            Some(m) if !m.is_empty() && m != "application/json" => m.to_string(),
            // Some registries send no useful type: read it from the document.
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| OCI_MANIFEST.to_string()),
        };
        Ok((media_type, bytes, digest))
    }

    /// Uploads a manifest under `reference` and checks the registry stored exactly our bytes.
    pub async fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &Bytes,
        expected: &Digest,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base_url);
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .send_with_retry(Some(&Scope::push(repo)), &what, || {
                self.http
                    .put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(self
                .status_error(Some(repo), &what, response.status(), response)
                .await);
        }
        if let Some(got) = header_str(response.headers(), "docker-content-digest")
            && got != expected.as_str()
        {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.to_string(),
                expected: expected.to_string(),
                got,
            });
        }
        Ok(())
    }
}
