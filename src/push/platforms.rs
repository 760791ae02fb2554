//! Platforms: one build per platform a target asks for (prepared, then assembled from the
//! binary compiled for it), an image index on top.

use std::path::Path;

use miette::Result;

use super::attachments::{attach_documents, build_facts, known_manifest};
use super::compile::Binary;
use super::report::{image_report, platform_report};
use crate::builder::{self, Built};
use crate::cargo::CargoOptions;
use crate::plan::Target;
use crate::platform;
use crate::publish::{self, registry::EarlyUploadOutcomes};
use crate::registry::pool::Clients;
use crate::report::ImageReport;
use crate::request::Outputs;
use crate::shell::Shell;
use crate::spec::BuildSpec;
use crate::supply_chain;

/// One platform's build of a target, prepared (its base resolved, or the engine connected)
/// before anything is compiled.
pub(super) struct PlatformBuild {
    /// The target's spec with this platform's `cross` set.
    pub(super) spec: BuildSpec,
    pub(super) prepared: builder::Prepared,
}

/// One platform's build of a target.
pub(super) struct PlatformImage {
    /// `None`: the host's platform, chosen by default.
    pub(super) platform: Option<platform::Platform>,
    pub(super) image: Built,
    pub(super) facts: Option<supply_chain::BuildFacts>,
    /// Layers already sent to the destination while the image was built.
    pub(super) early: EarlyUploadOutcomes,
}

/// Prepares each platform's build of `target`: what its builder must check before any compile.
pub(super) async fn prepare_platforms(
    target: &Target,
    crosses: Vec<Option<platform::CrossBuild>>,
    clients: &Clients,
    shell: &Shell,
) -> Result<Vec<PlatformBuild>> {
    let mut builds = Vec::new();
    for cross in crosses {
        let mut spec = target.build.clone();
        spec.cross = cross;
        let prepared = builder::prepare(&spec, clients, shell).await?;
        builds.push(PlatformBuild { spec, prepared });
    }
    Ok(builds)
}

/// Builds each platform's image of `target` from its compiled binary, with the facts its SBOM
/// and provenance will state. With `send_early` (and one platform), each layer goes to the
/// registry as soon as it is written, while the later ones are still compressing.
pub(super) async fn build_platforms(
    target: &Target,
    builds: Vec<(PlatformBuild, Option<Binary>)>,
    cargo_options: &CargoOptions,
    clients: &Clients,
    send_early: bool,
    shell: &Shell,
) -> Result<Vec<PlatformImage>> {
    let send_early = send_early && builds.len() == 1;
    let mut images = Vec::new();
    for (PlatformBuild { spec, prepared }, binary) in builds {
        let path = binary.as_ref().map(|b| b.path.as_path());
        let building = async {
            if send_early {
                build_sending_layers(&spec, prepared, path, target, clients, shell).await
            } else {
                let image = builder::build(&spec, prepared, path, clients, None, shell).await;
                (image, EarlyUploadOutcomes::default())
            }
        };
        // The compile has settled Cargo.lock: the facts (rustc -vV, cargo metadata, git) are
        // read while the image is assembled. An image error still comes first.
        let units = binary.as_ref().map(|b| &b.units[..]).unwrap_or_default();
        let ((image, early), facts) = tokio::join!(
            building,
            build_facts(target, &spec, cargo_options, units, shell)
        );
        let (image, facts) = (image?, facts?);
        images.push(PlatformImage {
            platform: spec.cross.as_ref().map(|c| c.platform),
            image,
            facts,
            early,
        });
    }
    Ok(images)
}

/// Builds one image while its layers go to the destination as they are written.
async fn build_sending_layers(
    spec: &BuildSpec,
    prepared: builder::Prepared,
    binary: Option<&Path>,
    target: &Target,
    clients: &Clients,
    shell: &Shell,
) -> (Result<Built>, EarlyUploadOutcomes) {
    let (early_upload, layers) = publish::early_upload::early_upload_channel();
    // The early upload (and so the sender) is dropped when the build ends, which ends the uploads.
    tokio::join!(
        builder::build(spec, prepared, binary, clients, Some(early_upload), shell),
        publish::early_upload::upload_early(clients, &target.destination, layers, shell),
    )
}

/// How to build each platform a target asks for (`[None]`: the host's, as a plain cargo build).
pub(super) fn cross_builds_for(target: &Target) -> Result<Vec<Option<platform::CrossBuild>>> {
    let mut platforms = target.platforms.clone();
    if platforms.is_empty() {
        if cfg!(target_os = "linux") {
            return Ok(vec![None]);
        }
        // Images run Linux: on another OS (a macOS laptop) the default is linux/<host arch>.
        platforms = platform::Platform::host().into_iter().collect();
        if platforms.is_empty() {
            return Err(miette::miette!(
                help = "name one with --platform, e.g. --platform linux/amd64",
                "no Linux platform matches this machine's architecture ({})",
                std::env::consts::ARCH
            ));
        }
    }
    let dir = target
        .build
        .manifest_path
        .parent()
        .unwrap_or(Path::new("."));
    let host = platform::Host::detect(dir)?;
    let mut builds = Vec::new();
    for p in platforms {
        builds.push(Some(platform::prepare(p, &host)?));
    }
    Ok(builds)
}

/// Pushes each platform's image by digest and an index under the tags; the SBOM and provenance
/// are attached to each platform's image (their dependencies and targets differ).
pub(super) async fn publish_platforms(
    target: &Target,
    clients: &Clients,
    images: &[PlatformImage],
    outputs: &Outputs,
    shell: &Shell,
) -> Result<ImageReport> {
    let mut list = Vec::new();
    for p in images {
        match (&p.image, p.platform) {
            (Built::Oci(image), Some(platform)) => list.push((platform, image)),
            _ => {
                return Err(miette::miette!(
                    "an image index is only made by the daemonless builder"
                ));
            }
        }
    }
    let d = &target.destination;
    let (published, per_platform) = publish::index::publish_index(clients, &list, d, shell).await?;
    if outputs.check_pull {
        publish::check_pull::check_pull(clients, d, &published.digest, shell).await?;
    }
    let mut platforms = Vec::new();
    for ((platform, _), (p, pushed)) in list.iter().zip(images.iter().zip(&per_platform)) {
        let attached = match &p.facts {
            Some(facts) => {
                let known = known_manifest(&p.image, &pushed.digest);
                attach_documents(
                    target,
                    clients,
                    &pushed.digest,
                    known,
                    facts,
                    p.image.contents(),
                    shell,
                )
                .await?
            }
            None => Vec::new(),
        };
        platforms.push(platform_report(platform, &pushed.digest, &attached, d));
    }
    // The index itself has no documents: each platform's image has its own.
    Ok(image_report(
        target,
        published.digest.to_string(),
        true,
        &[],
        platforms,
    ))
}
