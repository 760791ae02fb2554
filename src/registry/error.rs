//! What can go wrong talking to a registry, sorted by what the user can do about it, with hints
//! that name the registry and the next step.

use miette::Diagnostic;

use super::api_error::{ApiError, ErrorCode, has_code, says};

/// Errors sorted by what the user can do about them.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RegistryError {
    #[error("cannot reach the registry at {url}{tried}: {cause}")]
    #[diagnostic(help("{hint}"))]
    Unreachable {
        url: String,
        tried: String,
        cause: String,
        hint: String,
    },

    /// A request sent round in circles by redirects (or through too many of them).
    #[error("{registry}: the request was {trouble}: {chain}")]
    #[diagnostic(help(
        "the registry, or a proxy in front of it, keeps sending this request on: check the address it advertises (distribution's `http.host`) and the proxy's redirect or rewrite rules"
    ))]
    Redirects {
        registry: String,
        trouble: String,
        chain: String,
    },

    #[error("TLS with {url} failed: {cause}")]
    #[diagnostic(help("{hint}"))]
    Tls {
        url: String,
        cause: String,
        hint: String,
    },

    /// A plain-HTTP request reached an HTTPS port (Go answers it with a 400).
    #[error("{url} is an HTTPS port, not plain HTTP")]
    #[diagnostic(help("{hint}"))]
    HttpsPort { url: String, hint: String },

    #[error("{registry}: {problem} `{repository}` (HTTP {status})")]
    #[diagnostic(help("{hint}"))]
    Unauthorized {
        registry: String,
        repository: String,
        problem: String,
        status: u16,
        hint: String,
    },

    /// The keychain cannot tell what it holds for the registry (a credential helper failed):
    /// nothing is sent, rather than requests without the credentials meant for them.
    #[error("cannot get credentials for {registry}: {cause}")]
    #[diagnostic(help("{hint}"))]
    Credentials {
        registry: String,
        cause: String,
        hint: String,
    },

    #[error("{registry}: the token service {realm} is plain HTTP; not sending credentials there")]
    #[diagnostic(help(
        "credentials are only sent over HTTPS, or plain HTTP to a loopback address; configure the registry's token realm with https://"
    ))]
    CleartextRealm { registry: String, realm: String },

    #[error("{what} was not found in {registry}")]
    #[diagnostic(help("{hint}"))]
    NotFound {
        registry: String,
        what: String,
        hint: String,
    },

    #[error("{registry} rejected {what}: HTTP {status}{detail}")]
    #[diagnostic(help("{hint}"))]
    Rejected {
        registry: String,
        what: String,
        status: u16,
        /// The registry's own message, as shown: ` (CODE message: detail)`, or empty.
        detail: String,
        /// The entries of the registry's error answer (none when it was not the spec's).
        errors: Vec<ApiError>,
        hint: String,
    },

    #[error("{registry} stored the manifest as {got}, but we sent {expected}")]
    DigestMismatch {
        registry: String,
        expected: String,
        got: String,
    },

    #[error("{registry} answered {what} with something we cannot read: {cause}")]
    Protocol {
        registry: String,
        what: String,
        cause: String,
    },

    /// The referrers fallback tag kept losing our entries to other pushes of the same image.
    #[error(
        "{registry}: the referrers tag {tag} still lacks {missing} after {attempts} writes; other pushes of the same image kept writing their own list over it"
    )]
    #[diagnostic(help(
        "the registry has no referrers API, so pushes that attach documents to one image take turns on one tag; push again when the others are done (already listed entries are kept)"
    ))]
    ReferrersContended {
        registry: String,
        tag: String,
        missing: String,
        attempts: u32,
    },

    #[error("reading the TLS settings: {0}")]
    TlsSetup(String),

    /// Plain HTTP to a host that is neither loopback nor listed in `insecure`: refused before
    /// any request is made.
    #[error("{url} is plain HTTP to a host that is not loopback; refusing to talk to it")]
    #[diagnostic(help("{hint}"))]
    PlainHttpRefused {
        url: String,
        /// The host (`host[:port]`) plain HTTP would have gone to.
        plain: String,
        hint: String,
    },

    /// A `*.localhost` name that resolves to something other than loopback addresses.
    #[error("{host} resolves to {addresses}, which are not loopback addresses")]
    #[diagnostic(help(
        "a `.localhost` name is treated as this machine only when it resolves to loopback addresses; fix the resolver or use 127.0.0.1"
    ))]
    NotLoopback { host: String, addresses: String },

    /// An answer larger than we accept for its kind (a hostile or broken registry).
    #[error("{registry} answered {what} with an answer larger than {limit}; not reading more")]
    TooLarge {
        registry: String,
        what: String,
        limit: String,
    },
    #[error("reading the blob to upload from {path}: {cause}")]
    #[diagnostic(help("{hint}"))]
    LocalBlob {
        path: String,
        cause: String,
        hint: String,
    },

    /// A file uploaded as a blob does not hold it (found after the registry answered
    /// `DIGEST_INVALID`): sending it again cannot help.
    #[error("{path} does not hold blob {expected}: its content has digest {actual}")]
    #[diagnostic(help("the file was changed or damaged on disk after it was written"))]
    LocalBlobDamaged {
        path: String,
        expected: String,
        actual: String,
    },
}

impl RegistryError {
    /// A manifest or blob PUT lost a race with a concurrent push of the same blobs: the
    /// registry no longer sees a blob, or saw a half-written one.
    pub fn is_blob_race(&self) -> bool {
        [
            ErrorCode::BlobUnknown,
            ErrorCode::ManifestBlobUnknown,
            ErrorCode::DigestInvalid,
            ErrorCode::BlobUploadUnknown,
        ]
        .iter()
        .any(|code| self.has_code(code))
    }

    /// The registry found that the bytes it got do not have the digest they were sent as.
    pub fn is_digest_invalid(&self) -> bool {
        self.has_code(&ErrorCode::DigestInvalid)
    }

    /// A manifest PUT refused for its media type (older Quay, Artifactory and ECR setups answer
    /// OCI manifests with `MANIFEST_INVALID`, `UNSUPPORTED` or 415; some say only in words).
    pub fn refuses_media_type(&self) -> bool {
        match self {
            RegistryError::Rejected {
                status,
                detail,
                errors,
                ..
            } => {
                *status == 415
                    || (*status == 400
                        && (has_code(errors, &ErrorCode::ManifestInvalid)
                            || has_code(errors, &ErrorCode::Unsupported)
                            || says(errors, detail, "unsupported")
                            || says(errors, detail, "media type")))
            }
            _ => false,
        }
    }

    /// Whether the registry's error answer has `code`.
    pub fn has_code(&self, code: &ErrorCode) -> bool {
        matches!(self, RegistryError::Rejected { errors, .. } if has_code(errors, code))
    }

    /// Whether this failure says the other scheme (HTTP vs HTTPS) is the one to use.
    pub(super) fn suggests_other_scheme(&self) -> bool {
        matches!(
            self,
            RegistryError::Tls { .. } | RegistryError::HttpsPort { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::api_error::ErrorBody;

    fn rejected(status: u16, body: &str) -> RegistryError {
        let body = ErrorBody::parse(body);
        RegistryError::Rejected {
            registry: "r.example".into(),
            what: "manifest team/app:v1".into(),
            status,
            detail: body.shown,
            errors: body.errors,
            hint: String::new(),
        }
    }

    fn envelope(code: &str, message: &str) -> String {
        format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#)
    }

    #[test]
    fn what_an_answer_means_is_read_from_its_codes() {
        for code in [
            "BLOB_UNKNOWN",
            "MANIFEST_BLOB_UNKNOWN",
            "DIGEST_INVALID",
            "BLOB_UPLOAD_UNKNOWN",
        ] {
            assert!(rejected(400, &envelope(code, "m")).is_blob_race(), "{code}");
        }
        assert!(!rejected(400, &envelope("BLOB_UPLOAD_INVALID", "m")).is_blob_race());
        assert!(rejected(400, &envelope("DIGEST_INVALID", "m")).is_digest_invalid());
        assert!(!rejected(400, &envelope("SIZE_INVALID", "m")).is_digest_invalid());
        // Words are not codes: a message naming one does not count.
        assert!(!rejected(400, &envelope("UNKNOWN", "not a BLOB_UNKNOWN")).is_blob_race());

        assert!(
            rejected(400, &envelope("MANIFEST_INVALID", "manifest invalid")).refuses_media_type()
        );
        assert!(rejected(400, &envelope("UNSUPPORTED", "m")).refuses_media_type());
        assert!(rejected(415, "").refuses_media_type());
        assert!(rejected(400, "unsupported media type").refuses_media_type());
        assert!(rejected(400, &envelope("NAME_INVALID", "bad media type")).refuses_media_type());
        assert!(!rejected(400, &envelope("NAME_INVALID", "invalid name")).refuses_media_type());
        assert!(!rejected(404, &envelope("MANIFEST_INVALID", "m")).refuses_media_type());
    }
}
