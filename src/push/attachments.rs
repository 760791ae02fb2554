//! Supply chain: the facts gathered beside the build, the documents attached after the push.

use miette::{IntoDiagnostic, Result, WrapErr};

use crate::builder::Built;
use crate::cargo::{CargoOptions, CompiledUnit};
use crate::image::contents::Contents;
use crate::plan::Target;
use crate::publish::{self, attach::KnownManifest};
use crate::registry::pool::Clients;
use crate::shell::Shell;
use crate::spec::{BuildSpec, BuilderKind};
use crate::supply_chain;

/// The facts the SBOM and provenance state, when the target wants either; `units` are those of
/// the `cargo build` that compiled the binary. A user's Dockerfile
/// compiles inside the engine, out of our sight: no documents are claimed for it.
pub(super) async fn build_facts(
    target: &Target,
    build: &BuildSpec,
    cargo_options: &CargoOptions,
    units: &[CompiledUnit],
    shell: &Shell,
) -> Result<Option<supply_chain::BuildFacts>> {
    let spec = target.supply_chain;
    if spec.sbom == crate::spec::SbomFormat::None && !spec.provenance {
        return Ok(None);
    }
    if target.build.builder == BuilderKind::Docker && target.build.docker.dockerfile.is_some() {
        shell.detail(&format!(
            "{}: built by its Dockerfile, so no SBOM or provenance is attached",
            target.build.package
        ));
        return Ok(None);
    }
    let build = build.clone();
    let options = cargo_options.clone();
    let units = units.to_vec();
    let facts = tokio::task::spawn_blocking(move || {
        let triple = build.cross.as_ref().and_then(|c| c.target.clone());
        supply_chain::collect_facts(&build, &options, triple.as_deref(), &units)
    })
    .await
    .into_diagnostic()??;
    Ok(Some(facts))
}

/// The pushed manifest's type and size, when it is one we made (the OCI form or its Docker
/// schema 2 fallback): then the referrers need not read it back.
pub(super) fn known_manifest(
    built: &Built,
    pushed: &crate::reference::Digest,
) -> Option<KnownManifest> {
    let Built::Oci(image) = built else {
        return None;
    };
    let docker = image.as_docker_schema2();
    [Some(image), docker.as_ref()]
        .into_iter()
        .flatten()
        .find(|i| i.digest == *pushed)
        .map(|i| KnownManifest {
            media_type: i.manifest_media_type.clone(),
            size: i.manifest.len(),
        })
}

/// Attaches the documents about the pushed image `digest`; `contents` is what the builder says
/// the image holds besides the binary.
#[allow(clippy::too_many_arguments)]
pub(super) async fn attach_documents(
    target: &Target,
    clients: &Clients,
    digest: &crate::reference::Digest,
    known: Option<KnownManifest>,
    facts: &supply_chain::BuildFacts,
    contents: Option<&Contents>,
    shell: &Shell,
) -> Result<Vec<publish::attach::Attached>> {
    let d = &target.destination;
    let subject = supply_chain::Subject {
        name: d.pull_name(),
        digest: digest.clone(),
    };
    let documents = supply_chain::documents(&target.supply_chain, facts, &subject, contents)
        .map_err(|e| miette::miette!("could not write the SBOM or provenance: {e}"))?;
    let client = clients.get(&d.external).await?;
    // The image itself is already pushed: say so, so its reference is not lost.
    let attached = publish::attach::attach_all(
        &client,
        &d.repository,
        digest,
        known,
        &documents,
        facts.epoch,
        shell,
    )
    .await
    .wrap_err_with(|| {
        format!(
            "{}@{digest} was pushed, but its SBOM and provenance could not be attached (to push without them: --sbom none --provenance false)",
            d.pull_name()
        )
    })?;
    if !attached.is_empty() {
        let kinds: Vec<&str> = attached
            .iter()
            .map(|a| match a.kind {
                supply_chain::DocumentKind::Sbom => "SBOM",
                supply_chain::DocumentKind::Provenance => "provenance",
            })
            .collect();
        shell.status(
            "Attached",
            &format!("{} to {}@{digest}", kinds.join(" and "), d.push_name()),
        );
    }
    Ok(attached)
}
