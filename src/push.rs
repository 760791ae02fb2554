//! One run: plan → build every image → publish each to its destinations → report.
//!
//! Destinations: the registry (the default), and the registry-less ones (`--tarball`,
//! `--oci-layout`, `--load`), which replace the registry push unless `--push` is given too.
//! `--no-push` builds only. Publishers are handed finished images; none knows how one was built.
//! The one overlap: the last image's layers go to the registry as soon as each is written, a
//! large new one even while it is compressed (see `build_sending_layers`), since no compile is
//! left to fail after it.

use std::path::Path;

use miette::{IntoDiagnostic, Result, WrapErr};

use crate::builder::{self, Built};
use crate::cargo::CargoOptions;
use crate::cli::PushArgs;
use crate::engine::{self, EngineImage};
use crate::output::{self, Pushed};
use crate::plan::{Plan, Target};
use crate::platform;
use crate::publish::{self, attach::KnownManifest, local::LocalImage, registry::EarlyBlobs};
use crate::registry::ClientOptions;
use crate::registry::pool::Clients;
use crate::spec::{BuildSpec, BuilderKind, Destination};
use crate::supply_chain;

/// Where images go, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    pub registry: bool,
    pub tarball: Option<std::path::PathBuf>,
    pub oci_layout: Option<std::path::PathBuf>,
    pub load: bool,
    pub check_pull: bool,
    /// Publish several images at once (`--workspace`, `resolve`).
    pub concurrent: bool,
}

impl Destinations {
    pub fn from_args(args: &PushArgs) -> Destinations {
        let local = args.tarball.is_some() || args.oci_layout.is_some() || args.load;
        Destinations {
            registry: !args.no_push && (args.push || !local),
            tarball: args.tarball.clone(),
            oci_layout: args.oci_layout.clone(),
            load: args.load,
            check_pull: args.check_pull,
            concurrent: args.workspace,
        }
    }

    fn local(&self) -> bool {
        self.tarball.is_some() || self.oci_layout.is_some() || self.load
    }
}

/// How a run ended, for the exit status.
pub struct Outcome {
    /// One entry per image built or tried, in package order.
    pub results: Vec<(Target, Result<Pushed>)>,
    pub planned: usize,
    /// `--workspace`: failures are per image, not "the next one".
    pub keep_going: bool,
}

impl Outcome {
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|(_, r)| r.is_ok()).count()
    }

    /// Some images done, some not: the exit status says so (see `main`).
    pub fn partial(&self) -> bool {
        self.succeeded() > 0 && self.succeeded() < self.planned
    }
}

/// Builds and publishes every target of `plan`. With `keep_going` (`--workspace`), one image
/// failing does not stop the others; otherwise a failed build publishes nothing at all, and a
/// failed push stops the ones after it.
pub async fn push_all(
    plan: &Plan,
    cargo_options: &CargoOptions,
    destinations: &Destinations,
    keep_going: bool,
) -> Result<Outcome> {
    check_local_destinations(plan, destinations)?;
    let pools = ClientPools::for_plan(plan);
    let cross_builds = cross_builds_for_all(plan, keep_going)?;
    let built = build_all(
        plan,
        cross_builds,
        &pools,
        cargo_options,
        destinations,
        keep_going,
    )
    .await?;
    let published = publish_all(built, &pools, destinations, keep_going).await;
    let results = write_local_destinations(published, destinations).await;
    Ok(Outcome {
        results,
        planned: plan.targets.len(),
        keep_going,
    })
}

/// `--tarball` and `--oci-layout` take only images built in-process.
fn check_local_destinations(plan: &Plan, destinations: &Destinations) -> Result<()> {
    if destinations.tarball.is_none() && destinations.oci_layout.is_none() {
        return Ok(());
    }
    match plan
        .targets
        .iter()
        .find(|t| t.build.builder == BuilderKind::Docker)
    {
        Some(t) => Err(miette::miette!(
            help = "use the daemonless builder for these destinations: --builder oci; or --load, which keeps the engine's image",
            "--tarball and --oci-layout write images built in-process; `{}` is built by the Docker engine",
            t.build.package
        )),
        None => Ok(()),
    }
}

/// One client pool per distinct set of registry options (usually one for the whole run), so
/// pings, credential lookups and tokens are not repeated for every package.
struct ClientPools {
    pools: Vec<(ClientOptions, Clients)>,
    /// For each target of the plan, in order, the index of its pool.
    of_target: Vec<usize>,
}

impl ClientPools {
    fn for_plan(plan: &Plan) -> ClientPools {
        let mut pools: Vec<(ClientOptions, Clients)> = Vec::new();
        let mut of_target = Vec::new();
        for target in &plan.targets {
            let options = ClientOptions::from(&target.registry_options);
            let pool = match pools.iter().position(|(o, _)| *o == options) {
                Some(i) => i,
                None => {
                    pools.push((
                        options.clone(),
                        Clients::new(options, publish::registry::hooks()),
                    ));
                    pools.len() - 1
                }
            };
            of_target.push(pool);
        }
        // Every pool knows every registry pushed to before any base is read: only those get
        // the ADAPT_PUSH_* credentials.
        for (_, clients) in &pools {
            for target in &plan.targets {
                clients.add_push_target(&target.destination.external);
            }
        }
        ClientPools { pools, of_target }
    }

    fn get(&self, pool: usize) -> &Clients {
        &self.pools[pool].1
    }
}

/// Every platform's toolchain is checked before anything is built.
fn cross_builds_for_all(
    plan: &Plan,
    keep_going: bool,
) -> Result<Vec<Result<Vec<Option<platform::CrossBuild>>>>> {
    let mut cross_builds = Vec::new();
    for target in &plan.targets {
        cross_builds.push(match cross_builds_for(target) {
            Err(e) if !keep_going => return Err(e),
            other => other,
        });
    }
    Ok(cross_builds)
}

/// A target's build: the target, its client pool, and each platform's image.
type BuiltTarget = (Target, usize, Result<Vec<PlatformImage>>);

/// Builds every image before publishing any, so a compile error leaves the registry untouched.
/// Only the last image's layers may go to the registry while it is built (no compile is left
/// to fail after it).
async fn build_all(
    plan: &Plan,
    cross_builds: Vec<Result<Vec<Option<platform::CrossBuild>>>>,
    pools: &ClientPools,
    cargo_options: &CargoOptions,
    destinations: &Destinations,
    keep_going: bool,
) -> Result<Vec<BuiltTarget>> {
    let mut built = Vec::new();
    let last = plan.targets.len().saturating_sub(1);
    for (i, ((target, crosses), &pool)) in plan
        .targets
        .iter()
        .zip(cross_builds)
        .zip(&pools.of_target)
        .enumerate()
    {
        let clients = pools.get(pool);
        let result = match crosses {
            Ok(crosses) => {
                let early =
                    i == last && destinations.registry && target.build.builder == BuilderKind::Oci;
                build_platforms(target, crosses, cargo_options, clients, early).await
            }
            Err(e) => Err(e),
        };
        let result = match result {
            Err(e) if !keep_going => return Err(e),
            other => other,
        };
        if result.is_err() {
            output::warn(&format!(
                "{} failed to build; the other packages go on",
                target.build.package
            ));
        }
        built.push((target.clone(), pool, result));
    }
    Ok(built)
}

/// Publishes: one after another, stopping at the first failure (`-p a -p b`), or several at
/// once (`--workspace`, `resolve`), in package order either way.
async fn publish_all(
    built: Vec<BuiltTarget>,
    pools: &ClientPools,
    destinations: &Destinations,
    keep_going: bool,
) -> Vec<(Target, Result<Pushed>, Option<Local>)> {
    if destinations.concurrent {
        use futures_util::StreamExt;
        return futures_util::stream::iter(built)
            .map(|(target, pool, image)| async move {
                match image {
                    Ok(image) => {
                        let (r, l) =
                            publish_with_local(&target, pools.get(pool), &image, destinations)
                                .await;
                        (target, r, l)
                    }
                    Err(e) => (target, Err(e), None),
                }
            })
            .buffered(PARALLEL_IMAGES)
            .collect()
            .await;
    }
    let mut published = Vec::new();
    for (target, pool, image) in built {
        let image = match image {
            Ok(image) => image,
            Err(e) => {
                published.push((target, Err(e), None));
                continue;
            }
        };
        let (result, local) =
            publish_with_local(&target, pools.get(pool), &image, destinations).await;
        let failed = result.is_err();
        published.push((target, result, local));
        if failed && !keep_going {
            break;
        }
    }
    published
}

/// The registry-less destinations take every image at once (one tarball, one layout); if
/// writing them fails, every image counts as failed.
async fn write_local_destinations(
    published: Vec<(Target, Result<Pushed>, Option<Local>)>,
    destinations: &Destinations,
) -> Vec<(Target, Result<Pushed>)> {
    let mut results = Vec::new();
    let mut local_images: Vec<LocalImage> = Vec::new();
    let mut engine_images: Vec<(EngineImage, Target)> = Vec::new();
    for (target, result, local) in published {
        match local {
            Some(Local::Oci(l)) => local_images.push(l),
            Some(Local::Engine(i)) => engine_images.push((i, target.clone())),
            None => {}
        }
        results.push((target, result));
    }
    if let Err(e) = write_local(destinations, &local_images, &engine_images).await {
        for (_, r) in results.iter_mut() {
            if r.is_ok() {
                *r = Err(miette::miette!("{e:?}"));
            }
        }
    }
    results
}

/// How many images are published at once when that is allowed.
const PARALLEL_IMAGES: usize = 4;

/// What the registry-less destinations need of one image.
enum Local {
    Oci(LocalImage),
    Engine(EngineImage),
}

/// One image to the registry (when asked), then made ready for the registry-less destinations.
async fn publish_with_local(
    target: &Target,
    clients: &Clients,
    images: &[PlatformImage],
    destinations: &Destinations,
) -> (Result<Pushed>, Option<Local>) {
    let image = match images {
        [one] => one,
        several => {
            let result = if destinations.local() || !destinations.registry {
                Err(miette::miette!(
                    help = "push it to a registry, or build one platform (--platform) for these destinations",
                    "{}: an image of several platforms (an index) goes only to a registry; --tarball, --oci-layout, --load and --no-push take one platform",
                    target.build.package
                ))
            } else {
                publish_platforms(target, clients, several, destinations).await
            };
            return (result, None);
        }
    };
    let result = publish_one(target, clients, image, destinations).await;
    if result.is_err() || !destinations.local() {
        return (result, None);
    }
    match &image.image {
        Built::Oci(i) => match publish::local::materialize(i, &target.destination, clients).await {
            Ok(l) => (result, Some(Local::Oci(l))),
            Err(e) => (Err(e), None),
        },
        Built::Engine(i) => (result, Some(Local::Engine(i.clone()))),
    }
}

async fn write_local(
    destinations: &Destinations,
    images: &[LocalImage],
    engine_images: &[(EngineImage, Target)],
) -> Result<()> {
    if let Some(path) = &destinations.tarball
        && !images.is_empty()
    {
        publish::tarball::write_tarball(path, images)?;
        output::status("Wrote", &format!("{} (docker load -i)", path.display()));
    }
    if let Some(dir) = &destinations.oci_layout
        && !images.is_empty()
    {
        publish::layout::write_layout(dir, images)?;
        output::status("Wrote", &format!("the OCI layout {}", dir.display()));
    }
    if destinations.load {
        if !images.is_empty() {
            let engine = engine::Engine::connect().await?;
            publish::daemon::load(&engine, images).await?;
        }
        for (image, target) in engine_images {
            publish::daemon::tag_in_engine(image, &target.destination).await?;
        }
    }
    Ok(())
}

/// The registry push (when asked) with its SBOM and provenance, then what the report says
/// about the image.
async fn publish_one(
    target: &Target,
    clients: &Clients,
    image: &PlatformImage,
    destinations: &Destinations,
) -> Result<Pushed> {
    let d = &target.destination;
    let mut attached = Vec::new();
    let digest = if destinations.registry {
        let published = match &image.image {
            Built::Oci(i) => {
                publish::registry::RegistryPublisher::new(clients)
                    .publish_after(i, d, &image.early)
                    .await?
            }
            engine => publish::publish(clients, engine, d).await?,
        };
        if destinations.check_pull {
            publish::check_pull::check_pull(clients, d, &published.digest).await?;
        }
        if let Some(facts) = &image.facts {
            let known = known_manifest(&image.image, &published.digest);
            attached = attach_documents(target, clients, &published.digest, known, facts).await?;
        }
        published.digest.to_string()
    } else {
        image.image.identity()
    };
    let pushed = destinations.registry;
    Ok(Pushed {
        package: target.build.package.clone(),
        bin: target.build.bin.clone(),
        push_ref: pushed.then(|| format!("{}@{digest}", d.push_name())),
        pull_ref: pushed.then(|| format!("{}@{digest}", d.pull_name())),
        digest,
        tags: d.tags.iter().map(|t| t.to_string()).collect(),
        builder: target.build.builder.name().to_string(),
        sbom: referrer(&attached, supply_chain::DocumentKind::Sbom, d),
        provenance: referrer(&attached, supply_chain::DocumentKind::Provenance, d),
        platforms: Vec::new(),
    })
}

fn referrer(
    attached: &[publish::attach::Attached],
    kind: supply_chain::DocumentKind,
    d: &Destination,
) -> Option<output::Referrer> {
    attached
        .iter()
        .find(|a| a.kind == kind)
        .map(|a| output::Referrer {
            digest: a.digest.to_string(),
            artifact_type: a.artifact_type.to_string(),
            pull_ref: format!("{}@{}", d.pull_name(), a.digest),
            listed_via: a.via.describe().to_string(),
        })
}

// --- Platforms: one build per platform, an image index on top. ---

/// One platform's build of a target.
struct PlatformImage {
    /// `None`: the host's platform, chosen by default.
    platform: Option<platform::Platform>,
    image: Built,
    facts: Option<supply_chain::BuildFacts>,
    /// Layers already sent to the destination while the image was built.
    early: EarlyBlobs,
}

/// Builds each platform of `target`, with the facts its SBOM and provenance will state. With
/// `send_early` (and one platform), each layer goes to the registry as soon as it is written,
/// while the later ones are still compressing.
async fn build_platforms(
    target: &Target,
    crosses: Vec<Option<platform::CrossBuild>>,
    cargo_options: &CargoOptions,
    clients: &Clients,
    send_early: bool,
) -> Result<Vec<PlatformImage>> {
    let send_early = send_early && crosses.len() == 1;
    let mut images = Vec::new();
    for cross in crosses {
        let mut spec = target.build.clone();
        spec.cross = cross;
        let building = async {
            if send_early {
                build_sending_layers(&spec, target, cargo_options, clients).await
            } else {
                let image = builder::build(&spec, cargo_options, clients, None).await;
                (image, EarlyBlobs::default())
            }
        };
        let (image, early, facts) = if cargo_options.locked || cargo_options.frozen {
            // The build cannot change Cargo.lock: read the facts (rustc -vV, cargo metadata,
            // git) while it runs. A build error still comes first.
            let ((image, early), facts) =
                tokio::join!(building, build_facts(target, &spec, cargo_options));
            (image?, early, facts?)
        } else {
            let (image, early) = building.await;
            let image = image?;
            (
                image,
                early,
                build_facts(target, &spec, cargo_options).await?,
            )
        };
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
    target: &Target,
    cargo_options: &CargoOptions,
    clients: &Clients,
) -> (Result<Built>, EarlyBlobs) {
    let (listener, layers) = publish::registry::early_layers();
    // The listener (and so the sender) is dropped when the build ends, which ends the uploads.
    tokio::join!(
        builder::build(spec, cargo_options, clients, Some(listener)),
        publish::registry::upload_early(clients, &target.destination, layers),
    )
}

/// How to build each platform a target asks for (`[None]`: the host's, as a plain cargo build).
fn cross_builds_for(target: &Target) -> Result<Vec<Option<platform::CrossBuild>>> {
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
async fn publish_platforms(
    target: &Target,
    clients: &Clients,
    images: &[PlatformImage],
    destinations: &Destinations,
) -> Result<Pushed> {
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
    let (published, per_platform) = publish::index::publish_index(clients, &list, d).await?;
    if destinations.check_pull {
        publish::check_pull::check_pull(clients, d, &published.digest).await?;
    }
    let mut platforms = Vec::new();
    for ((platform, _), (p, pushed)) in list.iter().zip(images.iter().zip(&per_platform)) {
        let attached = match &p.facts {
            Some(facts) => {
                let known = known_manifest(&p.image, &pushed.digest);
                attach_documents(target, clients, &pushed.digest, known, facts).await?
            }
            None => Vec::new(),
        };
        platforms.push(output::PlatformPushed {
            platform: platform.to_string(),
            digest: pushed.digest.to_string(),
            pull_ref: format!("{}@{}", d.pull_name(), pushed.digest),
            sbom: referrer(&attached, supply_chain::DocumentKind::Sbom, d),
            provenance: referrer(&attached, supply_chain::DocumentKind::Provenance, d),
        });
    }
    Ok(Pushed {
        package: target.build.package.clone(),
        bin: target.build.bin.clone(),
        push_ref: Some(format!("{}@{}", d.push_name(), published.digest)),
        pull_ref: Some(format!("{}@{}", d.pull_name(), published.digest)),
        digest: published.digest.to_string(),
        tags: d.tags.iter().map(|t| t.to_string()).collect(),
        builder: target.build.builder.name().to_string(),
        sbom: None,
        provenance: None,
        platforms,
    })
}

// --- Supply chain: facts gathered beside the build, documents attached after the push. ---

/// The facts the SBOM and provenance state, when the target wants either. A user's Dockerfile
/// compiles inside the engine, out of our sight: no documents are claimed for it.
async fn build_facts(
    target: &Target,
    build: &BuildSpec,
    cargo_options: &CargoOptions,
) -> Result<Option<supply_chain::BuildFacts>> {
    let spec = target.supply_chain;
    if spec.sbom == crate::spec::SbomFormat::None && !spec.provenance {
        return Ok(None);
    }
    if target.build.builder == BuilderKind::Docker && target.build.docker.dockerfile.is_some() {
        output::detail(&format!(
            "{}: built by its Dockerfile, so no SBOM or provenance is attached",
            target.build.package
        ));
        return Ok(None);
    }
    let build = build.clone();
    let options = cargo_options.clone();
    let facts = tokio::task::spawn_blocking(move || {
        let triple = build.cross.as_ref().and_then(|c| c.target.clone());
        supply_chain::collect_facts(&build, &options, triple.as_deref())
    })
    .await
    .into_diagnostic()??;
    Ok(Some(facts))
}

/// The pushed manifest's type and size, when it is one we made (the OCI form or its Docker
/// schema 2 fallback): then the referrers need not read it back.
fn known_manifest(built: &Built, pushed: &crate::reference::Digest) -> Option<KnownManifest> {
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

async fn attach_documents(
    target: &Target,
    clients: &Clients,
    digest: &crate::reference::Digest,
    known: Option<KnownManifest>,
    facts: &supply_chain::BuildFacts,
) -> Result<Vec<publish::attach::Attached>> {
    let d = &target.destination;
    let subject = supply_chain::Subject {
        name: d.pull_name(),
        digest: digest.clone(),
    };
    let documents = supply_chain::documents(&target.supply_chain, facts, &subject)
        .map_err(|e| miette::miette!("could not write the SBOM or provenance: {e}"))?;
    let client = clients.get(&d.external).await?;
    // The image itself is already pushed: say so, so its reference is not lost.
    let attached =
        publish::attach::attach_all(&client, &d.repository, digest, known, &documents, facts.epoch)
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
        output::status(
            "Attached",
            &format!("{} to {}@{digest}", kinds.join(" and "), d.push_name()),
        );
    }
    Ok(attached)
}

/// Prints what succeeded (package order) and turns failures into the run's error. The flag says
/// whether some images were done while others failed (exit status 3).
pub fn finish(outcome: Outcome, args: &PushArgs) -> (Result<()>, bool) {
    let partial = outcome.partial();
    (finish_inner(outcome, args), partial)
}

fn finish_inner(outcome: Outcome, args: &PushArgs) -> Result<()> {
    let planned = outcome.planned;
    let keep_going = outcome.keep_going;
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
        output::report(&done, args.format, args.image_refs.as_deref())?;
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
        output::error(&format!("{package}: {e:?}"));
    }
    Err(miette::miette!("{summary}"))
}
