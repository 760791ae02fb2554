//! What stdout carries: the result of a run (each image's pull reference, or one JSON document
//! with `--format json`), the plan of a `--dry-run`, and the `--image-refs` file. Everything
//! else goes to stderr (`shell`). Also the plan's warnings, which only the commands print.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::plan::Plan;
use crate::request::Format;
use crate::shell::Shell;

/// The plan's warnings (settings that are allowed but worth knowing about), once per target,
/// on `shell`.
pub fn plan_warnings(plan: &Plan, shell: &Shell) {
    // The images of a package's several binaries share its settings, and so their warnings.
    let mut said: Vec<&String> = Vec::new();
    for warning in plan.targets.iter().flat_map(|t| &t.warnings) {
        if !said.contains(&warning) {
            shell.warn(warning);
            said.push(warning);
        }
    }
}

/// What the report says about one image: pushed, or only built (`--no-push` and the
/// registry-less destinations).
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub package: String,
    pub bin: String,
    /// `None` when the image did not go to a registry.
    pub push_ref: Option<String>,
    pub pull_ref: Option<String>,
    pub digest: String,
    pub tags: Vec<String>,
    pub builder: String,
    /// The SBOM attached as a referrer of the image, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Referrer>,
    /// The provenance attached as a referrer of the image, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Referrer>,
    /// For an image index: each platform's image and its documents.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformReport>,
}

/// What the report says about one platform's image inside a pushed index.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformReport {
    pub platform: String,
    pub digest: String,
    pub pull_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Referrer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Referrer>,
}

/// A document attached to a pushed image.
#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    /// Digest of the referrer's artifact manifest.
    pub digest: String,
    pub artifact_type: String,
    /// `internal/repository@digest` of the artifact manifest.
    pub pull_ref: String,
    /// `referrers API` or `referrers tag` (the OCI 1.1 fallback).
    pub listed_via: String,
}

#[derive(Serialize)]
struct Report<'a> {
    images: &'a [ImageReport],
}

impl ImageReport {
    /// What stdout says about the image: the pull reference, or the digest when not pushed.
    pub fn result_line(&self) -> &str {
        self.pull_ref.as_deref().unwrap_or(&self.digest)
    }
}

/// Writes the result to stdout (and the refs file when asked).
pub fn print(
    images: &[ImageReport],
    format: Format,
    image_refs: Option<&Path>,
) -> miette::Result<()> {
    use miette::{IntoDiagnostic, WrapErr};
    let mut out = std::io::stdout().lock();
    match format {
        Format::Text => {
            for image in images {
                writeln!(out, "{}", image.result_line()).into_diagnostic()?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &Report { images }).into_diagnostic()?;
            writeln!(out).into_diagnostic()?;
        }
    }
    out.flush()
        .into_diagnostic()
        .wrap_err("writing to stdout")?;
    if let Some(path) = image_refs {
        let text: String = images
            .iter()
            .map(|i| format!("{}\n", i.result_line()))
            .collect();
        std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing --image-refs {}", path.display()))?;
    }
    Ok(())
}

/// One planned image, for `--dry-run --format json`: the fields of a real push's report that are
/// known before building (no digest yet).
#[derive(Serialize)]
struct PlannedImage<'a> {
    package: &'a str,
    version: &'a str,
    bin: &'a str,
    builder: &'a str,
    base: String,
    /// The config's User as we set it; `null`: none of ours (the base's, the Dockerfile's, or
    /// none at all, which runs as root).
    user: Option<&'a str>,
    /// The engine builds the user's own Dockerfile, which says who the image runs as.
    #[serde(skip)]
    own_dockerfile: bool,
    push_name: String,
    pull_name: String,
    tags: Vec<String>,
    /// Empty: the host's platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<String>,
    /// `spdx`, `cyclonedx` or `none`.
    sbom: &'static str,
    provenance: bool,
}

#[derive(Serialize)]
struct PlanReport<'a> {
    images: Vec<PlannedImage<'a>>,
}

/// `--dry-run`: the plan on stdout, as text or JSON.
pub fn print_plan(plan: &Plan, format: Format) -> std::io::Result<()> {
    let images: Vec<PlannedImage> = plan
        .targets
        .iter()
        .map(|t| {
            let own_dockerfile = t.build.builder == crate::spec::BuilderKind::Docker
                && t.build.docker.dockerfile.is_some();
            PlannedImage {
                package: &t.build.package,
                version: &t.build.version,
                bin: &t.build.bin,
                builder: t.build.builder.name(),
                base: match &t.build.image.base {
                    crate::spec::Base::Scratch => "scratch".to_string(),
                    crate::spec::Base::Image(r) => r.to_string(),
                },
                own_dockerfile,
                user: t.build.image.user.as_deref().filter(|_| !own_dockerfile),
                push_name: t.destination.push_name(),
                pull_name: t.destination.pull_name(),
                tags: t.destination.tags.iter().map(|t| t.to_string()).collect(),
                platforms: t.platforms.iter().map(|p| p.to_string()).collect(),
                sbom: match t.supply_chain.sbom {
                    crate::spec::SbomFormat::Spdx => "spdx",
                    crate::spec::SbomFormat::Cyclonedx => "cyclonedx",
                    crate::spec::SbomFormat::None => "none",
                },
                provenance: t.supply_chain.provenance,
            }
        })
        .collect();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &PlanReport { images })?;
            writeln!(out)?;
        }
        Format::Text => {
            for i in &images {
                writeln!(out, "{} {} (bin {})", i.package, i.version, i.bin)?;
                writeln!(out, "  builder   {}", i.builder)?;
                writeln!(out, "  base      {}", i.base)?;
                let user = match i.user {
                    Some(u) => u,
                    None if i.own_dockerfile => "the Dockerfile's",
                    None if i.base == "scratch" => "none (root)",
                    None => "the base's",
                };
                writeln!(out, "  user      {user}")?;
                writeln!(
                    out,
                    "  push to   {} (tags: {})",
                    i.push_name,
                    i.tags.join(", ")
                )?;
                writeln!(
                    out,
                    "  pull as   {}@sha256:<digest of the pushed manifest>",
                    i.pull_name
                )?;
                if !i.platforms.is_empty() {
                    writeln!(out, "  platforms {}", i.platforms.join(", "))?;
                }
                writeln!(
                    out,
                    "  attach    sbom {}, provenance {}",
                    i.sbom,
                    if i.provenance { "yes" } else { "no" }
                )?;
            }
        }
    }
    out.flush()
}
