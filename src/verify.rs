//! `cargo adapt-push verify <reference>`: fetches an image and its referrers (the referrers API,
//! or the fallback tag) and checks that an SBOM and a provenance statement are attached and name
//! this very image. For an image index, the index and every platform image are checked.
//!
//! The report goes to stdout (it is this command's result); the exit code is non-zero when any
//! check fails.

use std::io::Write;

use miette::{IntoDiagnostic, Result};
use serde::Serialize;
use serde_json::Value;

use crate::image::{DOCKER_MANIFEST_LIST, OCI_INDEX};
use crate::reference::{Digest, ImageRef, Registry, Repository};
use crate::registry::pool::Clients;
use crate::registry::{ClientOptions, RegistryClient};
use crate::request::Format;
use crate::request::VerifyRequest;
use crate::shell::Shell;
use crate::spec::RegistryOptions;
use crate::supply_chain::{CYCLONEDX_JSON, IN_TOTO_JSON, SPDX_JSON, provenance};

/// One checked image (the index, or one platform image).
#[derive(Debug, Serialize)]
pub struct ImageReport {
    pub digest: String,
    pub media_type: String,
    /// `linux/arm64` for an image inside an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `referrers API` or `referrers tag`.
    pub referrers_via: String,
    pub sbom: Option<String>,
    pub provenance: Option<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    reference: String,
    ok: bool,
    images: Vec<ImageReport>,
}

/// Runs the verification; `Ok(false)` when a check failed (the report says which).
pub async fn run(args: VerifyRequest, shell: &Shell) -> Result<bool> {
    let reference = ImageRef::parse(&args.reference).map_err(|e| {
        miette::miette!(
            help = "give it as host[:port]/repository@sha256:… (what `cargo adapt-push` printed)",
            "`{}` is not an image reference: {}",
            args.reference,
            e.0
        )
    })?;
    let mut insecure = Vec::new();
    for host in &args.insecure {
        insecure.push(
            Registry::parse(host).map_err(|e| miette::miette!("--insecure {host}: {}", e.0))?,
        );
    }
    // The same translation as a push's, so both name the tool and retry alike.
    let options = ClientOptions::from(&RegistryOptions {
        insecure,
        ca_cert: args.ca_cert.clone(),
        ..RegistryOptions::default()
    });
    let clients = Clients::new(options, crate::publish::registry::hooks(shell));
    let client = clients.get(&reference.registry).await?;
    let repo = &reference.repository;
    let (media_type, bytes, digest) = client.get_manifest(repo, &reference.reference()).await?;

    let want = Wanted {
        sbom: args.sbom,
        provenance: args.provenance,
    };
    let mut images = vec![check_image(&client, repo, &digest, &media_type, None, want).await?];
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
        let index: Value = serde_json::from_slice(&bytes).into_diagnostic()?;
        for m in index["manifests"].as_array().into_iter().flatten() {
            let (Some(d), Some(t)) = (m["digest"].as_str(), m["mediaType"].as_str()) else {
                continue;
            };
            // Attestation manifests some tools put in the index are not platform images.
            let Some(platform) = m.get("platform") else {
                continue;
            };
            let platform = format!(
                "{}/{}{}",
                platform["os"].as_str().unwrap_or("?"),
                platform["architecture"].as_str().unwrap_or("?"),
                platform["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            );
            let d = Digest::parse(d).into_diagnostic()?;
            images.push(check_image(&client, repo, &d, t, Some(platform), want).await?);
        }
        // The index itself carries no documents of its own: its platform images do.
        if images.len() > 1 {
            images[0].problems.clear();
        }
    }
    let ok = images.iter().all(|i| i.problems.is_empty());
    print_report(
        &Report {
            reference: reference.to_string(),
            ok,
            images,
        },
        args.format,
    )?;
    Ok(ok)
}

#[derive(Debug, Clone, Copy)]
struct Wanted {
    sbom: bool,
    provenance: bool,
}

async fn check_image(
    client: &RegistryClient,
    repo: &Repository,
    digest: &Digest,
    media_type: &str,
    platform: Option<String>,
    want: Wanted,
) -> Result<ImageReport> {
    let (referrers, via) = client.referrers(repo, digest).await?;
    let mut report = ImageReport {
        digest: digest.to_string(),
        media_type: media_type.to_string(),
        platform,
        referrers_via: via.describe().to_string(),
        sbom: None,
        provenance: None,
        problems: Vec::new(),
    };
    for referrer in &referrers {
        let artifact_type = referrer["artifactType"].as_str().unwrap_or_default();
        let is_sbom = artifact_type == SPDX_JSON || artifact_type == CYCLONEDX_JSON;
        let is_provenance = artifact_type == IN_TOTO_JSON;
        if !is_sbom && !is_provenance {
            continue;
        }
        let Some(Ok(referrer_digest)) = referrer["digest"].as_str().map(Digest::parse) else {
            report
                .problems
                .push("a referrer entry has no valid digest".into());
            continue;
        };
        match read_document(client, repo, &referrer_digest, digest).await {
            Err(problem) => report
                .problems
                .push(format!("{artifact_type} {referrer_digest}: {problem}")),
            Ok(doc) if is_provenance => match provenance_subject_problem(&doc, digest) {
                None => report.provenance = Some(referrer_digest.to_string()),
                Some(problem) => report
                    .problems
                    .push(format!("provenance {referrer_digest}: {problem}")),
            },
            Ok(doc) => match sbom_problem(&doc, artifact_type) {
                None => report.sbom = Some(referrer_digest.to_string()),
                Some(problem) => report
                    .problems
                    .push(format!("SBOM {referrer_digest}: {problem}")),
            },
        }
    }
    if want.sbom && report.sbom.is_none() {
        report.problems.push(format!(
            "no SBOM is attached (none among {} referrers found through {})",
            referrers.len(),
            via.describe()
        ));
    }
    if want.provenance && report.provenance.is_none() {
        report.problems.push(format!(
            "no provenance is attached (none among {} referrers found through {})",
            referrers.len(),
            via.describe()
        ));
    }
    Ok(report)
}

/// The document a referrer carries, once its manifest is checked to name `subject`.
async fn read_document(
    client: &RegistryClient,
    repo: &Repository,
    referrer: &Digest,
    subject: &Digest,
) -> std::result::Result<Value, String> {
    let (_, bytes, _) = client
        .get_manifest(repo, referrer.as_str())
        .await
        .map_err(|e| format!("its manifest cannot be read: {e}"))?;
    let manifest: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("its manifest is not JSON: {e}"))?;
    if manifest["subject"]["digest"].as_str() != Some(subject.as_str()) {
        return Err(format!(
            "its subject is {}, not this image",
            manifest["subject"]["digest"].as_str().unwrap_or("missing")
        ));
    }
    let Some(Ok(blob)) = manifest["layers"][0]["digest"].as_str().map(Digest::parse) else {
        return Err("its manifest has no document layer".into());
    };
    let bytes = client
        .get_blob_bytes(repo, &blob)
        .await
        .map_err(|e| format!("the document cannot be read: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the document is not JSON: {e}"))
}

fn provenance_subject_problem(doc: &Value, subject: &Digest) -> Option<String> {
    if doc["_type"] != provenance::STATEMENT_TYPE {
        return Some("not an in-toto Statement v1".into());
    }
    let names_us = doc["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"].as_str() == Some(subject.hex()));
    (!names_us).then(|| "its in-toto subject does not name this image's digest".into())
}

fn sbom_problem(doc: &Value, artifact_type: &str) -> Option<String> {
    let ok = if artifact_type == SPDX_JSON {
        doc["spdxVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("SPDX-"))
            && doc["packages"].is_array()
    } else {
        doc["bomFormat"] == "CycloneDX" && doc["components"].is_array()
    };
    (!ok).then(|| format!("not a readable {artifact_type} document"))
}

fn print_report(report: &Report, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, report).into_diagnostic()?;
            writeln!(out).into_diagnostic()?;
        }
        Format::Text => {
            for image in &report.images {
                let what = match &image.platform {
                    Some(p) => format!("{} ({p})", image.digest),
                    None => image.digest.clone(),
                };
                let verdict = if image.problems.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                };
                writeln!(out, "{verdict:<6} {what}").into_diagnostic()?;
                writeln!(out, "       referrers via {}", image.referrers_via).into_diagnostic()?;
                if let Some(d) = &image.sbom {
                    writeln!(out, "       sbom       {d}").into_diagnostic()?;
                }
                if let Some(d) = &image.provenance {
                    writeln!(out, "       provenance {d}").into_diagnostic()?;
                }
                for p in &image.problems {
                    writeln!(out, "       problem:   {p}").into_diagnostic()?;
                }
            }
            let summary = if report.ok {
                format!("verified {}", report.reference)
            } else {
                format!("verification FAILED for {}", report.reference)
            };
            writeln!(out, "{summary}").into_diagnostic()?;
        }
    }
    out.flush().into_diagnostic()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provenance_must_name_the_image() {
        let ours = Digest::sha256_of(b"ours");
        let other = Digest::sha256_of(b"other");
        let doc = json!({
            "_type": provenance::STATEMENT_TYPE,
            "subject": [{ "name": "x", "digest": { "sha256": other.hex() } }],
        });
        assert!(provenance_subject_problem(&doc, &ours).is_some());
        assert!(provenance_subject_problem(&doc, &other).is_none());
        assert!(provenance_subject_problem(&json!({}), &other).is_some());
    }

    #[test]
    fn sboms_must_be_readable_documents() {
        assert!(
            sbom_problem(
                &json!({"spdxVersion": "SPDX-2.3", "packages": []}),
                SPDX_JSON
            )
            .is_none()
        );
        assert!(sbom_problem(&json!({"bomFormat": "CycloneDX"}), CYCLONEDX_JSON).is_some());
        assert!(sbom_problem(&json!({"nothing": 1}), SPDX_JSON).is_some());
    }
}
