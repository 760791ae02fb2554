//! What a run reports: each image's entry (one constructor for every path) and, at the end, the
//! report on stdout with the run's error made of the failures.

use miette::Result;

use crate::plan::Target;
use crate::platform::Platform;
use crate::publish::attach::Attached;
use crate::reference::Digest;
use crate::report::{ImageReport, PlatformReport, Referrer};
use crate::request::PushRequest;
use crate::shell::Shell;
use crate::spec::Destination;
use crate::supply_chain::DocumentKind;

use super::Outcome;

/// What the report says about a target's image (one constructor for every path): its digest,
/// its references when it went to the registry, and the documents attached to it.
pub(super) fn image_report(
    target: &Target,
    digest: String,
    to_registry: bool,
    attached: &[Attached],
    platforms: Vec<PlatformReport>,
) -> ImageReport {
    let d = &target.destination;
    ImageReport {
        package: target.build.package.clone(),
        bin: target.build.bin.clone(),
        push_ref: to_registry.then(|| format!("{}@{digest}", d.push_name())),
        pull_ref: to_registry.then(|| format!("{}@{digest}", d.pull_name())),
        digest,
        tags: d.tags.iter().map(|t| t.to_string()).collect(),
        builder: target.build.builder.name().to_string(),
        sbom: referrer(attached, DocumentKind::Sbom, d),
        provenance: referrer(attached, DocumentKind::Provenance, d),
        platforms,
    }
}

/// What the report says about one platform's image inside an index.
pub(super) fn platform_report(
    platform: &Platform,
    digest: &Digest,
    attached: &[Attached],
    d: &Destination,
) -> PlatformReport {
    PlatformReport {
        platform: platform.to_string(),
        digest: digest.to_string(),
        pull_ref: format!("{}@{}", d.pull_name(), digest),
        sbom: referrer(attached, DocumentKind::Sbom, d),
        provenance: referrer(attached, DocumentKind::Provenance, d),
    }
}

/// The attached document of `kind`, as the report names it.
fn referrer(attached: &[Attached], kind: DocumentKind, d: &Destination) -> Option<Referrer> {
    attached.iter().find(|a| a.kind == kind).map(|a| Referrer {
        digest: a.digest.to_string(),
        artifact_type: a.artifact_type.to_string(),
        pull_ref: format!("{}@{}", d.pull_name(), a.digest),
        listed_via: a.via.describe().to_string(),
    })
}

/// Prints what succeeded (package order) and turns failures into the run's error. The flag says
/// whether some images were done while others failed (exit status 3). With several failures,
/// each is told to `shell`.
pub fn finish(outcome: Outcome, request: &PushRequest, shell: &Shell) -> (Result<()>, bool) {
    let partial = outcome.partial();
    (finish_inner(outcome, request, shell), partial)
}

fn finish_inner(outcome: Outcome, request: &PushRequest, shell: &Shell) -> Result<()> {
    let planned = outcome.planned;
    let keep_going = outcome.batch.keeps_going();
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for (target, result) in outcome.results {
        match result {
            Ok(p) => done.push(p),
            Err(e) => errors.push((target.build.package, e)),
        }
    }
    // What did get pushed is still reported, so its references are not lost.
    if !done.is_empty() || errors.is_empty() {
        crate::report::print(&done, request.format, request.image_refs.as_deref())?;
        crate::ci::write_github_output(&done)?;
    }
    if errors.is_empty() {
        return Ok(());
    }
    if errors.len() == 1 && (done.is_empty() || !keep_going) {
        let (_, e) = errors.remove(0);
        if done.is_empty() {
            return Err(e);
        }
        return Err(e.wrap_err(format!(
            "pushed {} of {planned} images (their references are on stdout); the next one failed",
            done.len()
        )));
    }
    let names: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    let summary = format!(
        "{} of {planned} images failed ({}); {} done (on stdout)",
        errors.len(),
        names.join(", "),
        done.len()
    );
    for (package, e) in &errors {
        shell.error(&format!("{package}: {e:?}"));
    }
    Err(miette::miette!("{summary}"))
}
