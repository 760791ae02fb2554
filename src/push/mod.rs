//! One run: plan → prepare every build → compile every binary (one `cargo build` per platform)
//! → assemble every image → publish each to its destinations → report.
//!
//! Destinations: the registry (the default), and the registry-less ones (`--tarball`,
//! `--oci-layout`, `--load`), which replace the registry push unless `--push` is given too.
//! `--no-push` builds only. Publishers are handed finished images; none knows how one was built.
//! The one overlap: the last image's layers go to the registry as soon as each is written, a
//! large new one even while it is compressed (see `platforms::build_sending_layers`), since
//! every binary is compiled by then and no other image is left to fail after it.
//!
//! `compile`: the run's `cargo build`s; `platforms`: one build per platform and the image
//! index; `attachments`: the SBOM and provenance; `local`: the registry-less destinations;
//! `report`: what the run reports.

mod attachments;
mod compile;
mod local;
mod platforms;
mod report;

use std::path::Path;

use miette::{IntoDiagnostic, Result};

use crate::builder::Built;
use crate::cargo::{self, CargoOptions};
use crate::plan::{self, Plan, Target};
use crate::platform;
use crate::publish;
use crate::registry::ClientOptions;
use crate::registry::pool::Clients;
use crate::report::ImageReport;
use crate::request::{Batch, Outputs, PushRequest};
use crate::shell::Shell;
use crate::spec::BuilderKind;
use attachments::{attach_documents, known_manifest};
use local::{Local, write_local_destinations};
use platforms::{
    PlatformImage, build_platforms, cross_builds_for, prepare_platforms, publish_platforms,
};
use report::{finish, image_report};

/// A push, and whether some images were done while others failed (exit status 3). What it does
/// is told to `shell`.
pub async fn run(request: &PushRequest, shell: &Shell) -> (Result<()>, bool) {
    match push_planned(request, shell).await {
        Ok(Some(outcome)) => finish(outcome, request, shell),
        Ok(None) => (Ok(()), false),
        Err(e) => (Err(e), false),
    }
}

/// Plans and, unless `--dry-run`, builds and publishes every image.
async fn push_planned(request: &PushRequest, shell: &Shell) -> Result<Option<Outcome>> {
    let (manifest, metadata) =
        cargo::workspace_metadata(request.manifest_path.as_deref(), &request.cargo)?;
    let facts = plan::HostFacts::default();
    let plan = plan::make_plan(&request.plan, &metadata, &manifest, &facts)?;
    crate::report::plan_warnings(&plan, shell);

    if request.dry_run {
        crate::report::print_plan(&plan, request.format).into_diagnostic()?;
        return Ok(None);
    }

    if let Some(path) = &request.image_refs {
        check_writable(path)?;
    }
    let outcome = push_all(
        &plan,
        &request.cargo,
        &request.outputs,
        request.batch,
        shell,
    )
    .await?;
    Ok(Some(outcome))
}

/// Fails early (before any build) when `--image-refs` cannot be written.
fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(miette::miette!(
            help = "create the directory first, or choose another path",
            "--image-refs {}: the directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(miette::miette!(
            "--image-refs {}: is a directory; give a file path",
            path.display()
        ));
    }
    Ok(())
}

/// How a run ended, for the exit status.
pub struct Outcome {
    /// One entry per image built or tried, in package order.
    pub results: Vec<(Target, Result<ImageReport>)>,
    pub planned: usize,
    /// How the images depended on each other (`--workspace`: failures are per image, not "the
    /// next one").
    pub batch: Batch,
}

impl Outcome {
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|(_, r)| r.is_ok()).count()
    }

    /// Some images done, some not: exit status 3.
    pub fn partial(&self) -> bool {
        self.succeeded() > 0 && self.succeeded() < self.planned
    }
}

/// Builds and publishes every target of `plan`: each build prepared (bases resolved, the engine
/// connected), then every binary compiled (one `cargo build` per platform), then each image
/// assembled, then published. With `Batch::Independent` (`--workspace`), one image failing does
/// not stop the others; otherwise a failed build publishes nothing at all, and
/// (`Batch::Sequential`) a failed push stops the ones after it.
pub async fn push_all(
    plan: &Plan,
    cargo_options: &CargoOptions,
    outputs: &Outputs,
    batch: Batch,
    shell: &Shell,
) -> Result<Outcome> {
    check_local_destinations(plan, outputs)?;
    let pools = ClientPools::for_plan(plan, shell);
    let cross_builds = cross_builds_for_all(plan, batch)?;
    let prepared = prepare_all(plan, cross_builds, &pools, batch, shell).await?;
    let compiled = compile::compile_all(plan, prepared, cargo_options, batch, shell).await?;
    let built = build_all(plan, compiled, &pools, cargo_options, outputs, batch, shell).await?;
    let published = publish_all(built, &pools, outputs, batch, shell).await;
    let results = write_local_destinations(published, outputs, shell).await;
    Ok(Outcome {
        results,
        planned: plan.targets.len(),
        batch,
    })
}

/// A target that failed at some step: the run's error, unless images stand alone
/// (`Batch::Independent`), where the others go on.
fn target_failed(
    target: &Target,
    error: miette::Report,
    batch: Batch,
    shell: &Shell,
) -> Result<miette::Report> {
    if !batch.keeps_going() {
        return Err(error);
    }
    shell.warn(&format!(
        "{} failed to build; the other packages go on",
        target.build.package
    ));
    Ok(error)
}

/// `--tarball` and `--oci-layout` take only images built in-process.
fn check_local_destinations(plan: &Plan, outputs: &Outputs) -> Result<()> {
    if outputs.tarball.is_none() && outputs.oci_layout.is_none() {
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
    /// Each pool's clients report to `shell`.
    fn for_plan(plan: &Plan, shell: &Shell) -> ClientPools {
        let mut pools: Vec<(ClientOptions, Clients)> = Vec::new();
        let mut of_target = Vec::new();
        for target in &plan.targets {
            let options = ClientOptions::from(&target.registry_options);
            let pool = match pools.iter().position(|(o, _)| *o == options) {
                Some(i) => i,
                None => {
                    pools.push((
                        options.clone(),
                        Clients::new(options, publish::registry::hooks(shell)),
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
    batch: Batch,
) -> Result<Vec<Result<Vec<Option<platform::CrossBuild>>>>> {
    let mut cross_builds = Vec::new();
    for target in &plan.targets {
        cross_builds.push(match cross_builds_for(target) {
            Err(e) if !batch.keeps_going() => return Err(e),
            other => other,
        });
    }
    Ok(cross_builds)
}

/// Prepares every target's builds before anything is compiled, so a typo in a `base` or a
/// missing engine costs no compile.
async fn prepare_all(
    plan: &Plan,
    cross_builds: Vec<Result<Vec<Option<platform::CrossBuild>>>>,
    pools: &ClientPools,
    batch: Batch,
    shell: &Shell,
) -> Result<compile::Prepared> {
    let mut prepared = Vec::new();
    for ((target, crosses), &pool) in plan.targets.iter().zip(cross_builds).zip(&pools.of_target) {
        let result = match crosses {
            Ok(crosses) => prepare_platforms(target, crosses, pools.get(pool), shell).await,
            Err(e) => Err(e),
        };
        prepared.push(match result {
            Err(e) => Err(target_failed(target, e, batch, shell)?),
            ok => ok,
        });
    }
    Ok(prepared)
}

/// A target's build: the target, its client pool, and each platform's image.
type BuiltTarget = (Target, usize, Result<Vec<PlatformImage>>);

/// Assembles every image before publishing any, so a failed build leaves the registry
/// untouched. Only the last image's layers may go to the registry while it is built (no build
/// is left to fail after it).
async fn build_all(
    plan: &Plan,
    compiled: compile::Compiled,
    pools: &ClientPools,
    cargo_options: &CargoOptions,
    outputs: &Outputs,
    batch: Batch,
    shell: &Shell,
) -> Result<Vec<BuiltTarget>> {
    let mut built = Vec::new();
    let last = plan.targets.len().saturating_sub(1);
    for (i, ((target, builds), &pool)) in plan
        .targets
        .iter()
        .zip(compiled)
        .zip(&pools.of_target)
        .enumerate()
    {
        let clients = pools.get(pool);
        let early = i == last && outputs.registry && target.build.builder == BuilderKind::Oci;
        let result = match builds {
            Ok(builds) => {
                match build_platforms(target, builds, cargo_options, clients, early, shell).await {
                    Ok(images) => Ok(images),
                    Err(e) => Err(target_failed(target, e, batch, shell)?),
                }
            }
            // Told when it failed.
            Err(e) => Err(e),
        };
        built.push((target.clone(), pool, result));
    }
    Ok(built)
}

/// Publishes: one after another, stopping at the first failure (`-p a -p b`), or several at
/// once (`--workspace`, `resolve`), in package order either way.
async fn publish_all(
    built: Vec<BuiltTarget>,
    pools: &ClientPools,
    outputs: &Outputs,
    batch: Batch,
    shell: &Shell,
) -> Vec<(Target, Result<ImageReport>, Option<Local>)> {
    if batch.concurrent() {
        use futures_util::StreamExt;
        return futures_util::stream::iter(built)
            .map(|(target, pool, image)| async move {
                match image {
                    Ok(image) => {
                        let clients = pools.get(pool);
                        let (r, l) =
                            publish_with_local(&target, clients, &image, outputs, shell).await;
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
            publish_with_local(&target, pools.get(pool), &image, outputs, shell).await;
        let failed = result.is_err();
        published.push((target, result, local));
        if failed && !batch.keeps_going() {
            break;
        }
    }
    published
}

/// How many images are published at once when that is allowed.
const PARALLEL_IMAGES: usize = 4;

/// One image to the registry (when asked), then made ready for the registry-less outputs.
async fn publish_with_local(
    target: &Target,
    clients: &Clients,
    images: &[PlatformImage],
    outputs: &Outputs,
    shell: &Shell,
) -> (Result<ImageReport>, Option<Local>) {
    let image = match images {
        [one] => one,
        several => {
            let result = if outputs.local() || !outputs.registry {
                Err(miette::miette!(
                    help = "push it to a registry, or build one platform (--platform) for these destinations",
                    "{}: an image of several platforms (an index) goes only to a registry; --tarball, --oci-layout, --load and --no-push take one platform",
                    target.build.package
                ))
            } else {
                publish_platforms(target, clients, several, outputs, shell).await
            };
            return (result, None);
        }
    };
    let result = publish_one(target, clients, image, outputs, shell).await;
    if result.is_err() || !outputs.local() {
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

/// The registry push (when asked) with its SBOM and provenance, then what the report says
/// about the image.
async fn publish_one(
    target: &Target,
    clients: &Clients,
    image: &PlatformImage,
    outputs: &Outputs,
    shell: &Shell,
) -> Result<ImageReport> {
    let d = &target.destination;
    let mut attached = Vec::new();
    let digest = if outputs.registry {
        let published = match &image.image {
            Built::Oci(i) => {
                publish::registry::RegistryPublisher::new(clients, shell)
                    .publish_after(i, d, &image.early)
                    .await?
            }
            engine => publish::publish(clients, engine, d, shell).await?,
        };
        if outputs.check_pull {
            publish::check_pull::check_pull(clients, d, &published.digest, shell).await?;
        }
        if let Some(facts) = &image.facts {
            let known = known_manifest(&image.image, &published.digest);
            attached = attach_documents(
                target,
                clients,
                &published.digest,
                known,
                facts,
                image.image.contents(),
                shell,
            )
            .await?;
        }
        published.digest.to_string()
    } else {
        image.image.identity()
    };
    Ok(image_report(
        target,
        digest,
        outputs.registry,
        &attached,
        Vec::new(),
    ))
}
