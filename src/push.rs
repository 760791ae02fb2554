//! One run: plan → build every image → publish each to its destinations → report.
//!
//! Destinations: the registry (the default), and the registry-less ones (`--tarball`,
//! `--oci-layout`, `--load`), which replace the registry push unless `--push` is given too.
//! `--no-push` builds only. Publishers are handed finished images; none knows how one was built.

use miette::Result;

use crate::cargo::CargoOptions;
use crate::cli::PushArgs;
use crate::engine::{self, EngineImage};
use crate::image::Image;
use crate::output::{self, Pushed};
use crate::plan::{BuildSpec, BuilderKind, Plan, Target};
use crate::publish::engine::EnginePublisher;
use crate::publish::registry::RegistryPublisher;
use crate::publish::{self, local::LocalImage};
use crate::registry::ClientOptions;
use crate::registry::pool::Clients;

pub enum Built {
    Oci(Image),
    Engine(EngineImage),
}

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
    if destinations.tarball.is_some() || destinations.oci_layout.is_some() {
        if let Some(t) = plan
            .targets
            .iter()
            .find(|t| t.build.builder == BuilderKind::Docker)
        {
            return Err(miette::miette!(
                help = "use the daemonless builder for these destinations: --builder oci; or --load, which keeps the engine's image",
                "--tarball and --oci-layout write images built in-process; `{}` is built by the Docker engine",
                t.build.package
            ));
        }
    }
    // One client pool per distinct set of registry options (usually one for the whole run),
    // so pings, credential lookups and tokens are not repeated for every package.
    let mut pools: Vec<(ClientOptions, Clients)> = Vec::new();
    let mut built: Vec<(Target, usize, Result<Built>)> = Vec::new();
    // Build every image before publishing any, so a compile error leaves the registry untouched.
    for target in &plan.targets {
        let options = ClientOptions::from(&target.registry_options);
        let pool = match pools.iter().position(|(o, _)| *o == options) {
            Some(i) => i,
            None => {
                pools.push((options.clone(), Clients::new(options)));
                pools.len() - 1
            }
        };
        let result = match build(&target.build, cargo_options, &pools[pool].1).await {
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

    // Publish: one after another, stopping at the first failure (`-p a -p b`), or several at
    // once (`--workspace`, `resolve`), in package order either way.
    let mut published: Vec<(Target, Result<Pushed>, Option<Local>)> = Vec::new();
    if destinations.concurrent {
        use futures_util::StreamExt;
        let pools = &pools;
        published = futures_util::stream::iter(built)
            .map(|(target, pool, image)| async move {
                match image {
                    Ok(image) => {
                        let (r, l) =
                            publish_with_local(&target, &pools[pool].1, &image, destinations).await;
                        (target, r, l)
                    }
                    Err(e) => (target, Err(e), None),
                }
            })
            .buffered(PARALLEL_IMAGES)
            .collect()
            .await;
    } else {
        for (target, pool, image) in built {
            let image = match image {
                Ok(image) => image,
                Err(e) => {
                    published.push((target, Err(e), None));
                    continue;
                }
            };
            let (result, local) =
                publish_with_local(&target, &pools[pool].1, &image, destinations).await;
            let failed = result.is_err();
            published.push((target, result, local));
            if failed && !keep_going {
                break;
            }
        }
    }
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

    // The registry-less destinations take every image at once (one tarball, one layout).
    if let Err(e) = write_local(destinations, &local_images, &engine_images).await {
        for (_, r) in results.iter_mut() {
            if r.is_ok() {
                *r = Err(miette::miette!("{e:?}"));
            }
        }
    }
    Ok(Outcome {
        results,
        planned: plan.targets.len(),
        keep_going,
    })
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
    image: &Built,
    destinations: &Destinations,
) -> (Result<Pushed>, Option<Local>) {
    let result = publish_one(target, clients, image, destinations).await;
    if result.is_err() || !destinations.local() {
        return (result, None);
    }
    match image {
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

async fn build(spec: &BuildSpec, cargo_options: &CargoOptions, clients: &Clients) -> Result<Built> {
    Ok(match spec.builder {
        BuilderKind::Oci => {
            Built::Oci(crate::build::oci::build(spec, cargo_options, clients).await?)
        }
        BuilderKind::Docker => {
            Built::Engine(crate::build::docker::build(spec, cargo_options, clients).await?)
        }
    })
}

/// The registry push (when asked), then what the report says about the image.
async fn publish_one(
    target: &Target,
    clients: &Clients,
    image: &Built,
    destinations: &Destinations,
) -> Result<Pushed> {
    let d = &target.destination;
    let digest = if destinations.registry {
        let published = match image {
            Built::Oci(image) => RegistryPublisher::new(clients).publish(image, d).await?,
            Built::Engine(image) => EnginePublisher::new(clients).publish(image, d).await?,
        };
        if destinations.check_pull {
            publish::check_pull::check_pull(clients, d, &published.digest).await?;
        }
        published.digest.to_string()
    } else {
        match image {
            Built::Oci(image) => image.digest.to_string(),
            // An engine's image has no manifest until it is pushed: its ID (the config's
            // digest) is what identifies it there.
            Built::Engine(image) => image.id.clone(),
        }
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
    })
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
