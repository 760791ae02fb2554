//! Supply-chain documents about an image: an SBOM (SPDX 2.3 or CycloneDX 1.5 JSON) of what cargo
//! compiled into the binary, and an in-toto statement with SLSA provenance v1 of how it was
//! built. They are made from build facts ([`BuildFacts`], gathered next to the build) and the
//! image's digest; the publisher attaches them to the pushed image as OCI 1.1 referrers.
//!
//! Every document is deterministic: no random ids (namespaces and serial numbers are derived from
//! the image digest), times from SOURCE_DATE_EPOCH.

pub mod deps;
mod facts;
pub mod provenance;
pub mod sbom;

pub use facts::{BuildFacts, collect_facts};

use bytes::Bytes;

use crate::image::contents::Contents;
use crate::reference::Digest;
use crate::spec::{SbomFormat, SupplyChainSpec};

/// Media types of the documents (also the artifact types of their referrer manifests).
pub const SPDX_JSON: &str = "application/spdx+json";
pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";
pub const IN_TOTO_JSON: &str = "application/vnd.in-toto+json";

/// What a document is, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Sbom,
    Provenance,
}

/// One document, ready to be attached to an image.
#[derive(Debug, Clone)]
pub struct Document {
    pub kind: DocumentKind,
    /// The blob's media type, which is also the referrer's `artifactType`.
    pub media_type: &'static str,
    pub bytes: Bytes,
}

/// The image a document is about: its digest and the name it is published under.
#[derive(Debug, Clone)]
pub struct Subject {
    pub name: String,
    pub digest: Digest,
}

/// Every document the spec asks for, about `subject`; `contents`: what the image holds besides
/// the binary, when the builder knows it (for the SBOM).
pub fn documents(
    spec: &SupplyChainSpec,
    facts: &BuildFacts,
    subject: &Subject,
    contents: Option<&Contents>,
) -> Result<Vec<Document>, serde_json::Error> {
    let mut docs = Vec::new();
    match spec.sbom {
        SbomFormat::Spdx => docs.push(Document {
            kind: DocumentKind::Sbom,
            media_type: SPDX_JSON,
            bytes: sbom::spdx(facts, subject, contents)?,
        }),
        SbomFormat::Cyclonedx => docs.push(Document {
            kind: DocumentKind::Sbom,
            media_type: CYCLONEDX_JSON,
            bytes: sbom::cyclonedx(facts, subject, contents)?,
        }),
        SbomFormat::None => {}
    }
    if spec.provenance {
        docs.push(Document {
            kind: DocumentKind::Provenance,
            media_type: IN_TOTO_JSON,
            bytes: provenance::statement(facts, subject)?,
        });
    }
    Ok(docs)
}
