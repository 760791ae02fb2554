//! `cargo adapt-push`: build a crate's container image, push it through the external address of
//! a split registry, print the digest-pinned pull reference at the internal address.
//!
//! Data flows one way: CLI + cargo metadata → plan → builder → image → publisher → report.

mod build;
mod cargo;
mod cli;
mod closure;
mod config;
mod engine;
mod image;
mod output;
mod plan;
mod platform;
mod publish;
mod reference;
mod registry;
mod supply_chain;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, Result, WrapErr};

use crate::cargo::CargoOptions;
use crate::output::Pushed;
use crate::plan::{BuildSpec, BuilderKind, Target};
use crate::publish::engine::EnginePublisher;
use crate::publish::registry::RegistryPublisher;
use crate::registry::ClientOptions;
use crate::registry::pool::Clients;

fn main() -> ExitCode {
    ignore_empty_settings();
    if let Some(verify_args) = verify::requested() {
        return run_verify(verify_args);
    }
    let args = cli::parse();
    output::init(args.quiet, args.verbose);
    // On a terminal, miette's graphical reports; in CI logs, no wrapping, so messages stay whole.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .wrap_lines(terminal)
                .build(),
        )
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: cli::PushArgs) -> Result<()> {
    let manifest = locate_manifest(args.manifest_path.as_deref())?;
    let cargo_options = CargoOptions::from_args(&args);
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(cargo::cargo_program())
        .manifest_path(&manifest)
        .no_deps()
        .other_options(cargo_options.manifest_flags())
        .exec()
        .map_err(|e| {
            miette::miette!(
                help = "run `cargo metadata` there to see cargo's full message",
                "cargo could not read {}: {e}",
                manifest.display()
            )
        })?;
    let plan = plan::make_plan(&args, &metadata, &manifest)?;

    if args.dry_run {
        output::print_plan(&plan, args.format).into_diagnostic()?;
        return Ok(());
    }

    if let Some(path) = &args.image_refs {
        check_writable(path)?;
    }

    // Build every image before pushing any, so a compile error in one package leaves the
    // registry untouched.
    // One client pool per distinct set of registry options (usually one for the whole run),
    // so pings, credential lookups and tokens are not repeated for every package.
    let mut pools: Vec<(ClientOptions, Clients)> = Vec::new();
    let mut pool_of = Vec::new();
    // Every platform's toolchain is checked before anything is built.
    let mut cross_builds = Vec::new();
    for target in &plan.targets {
        cross_builds.push(cross_builds_for(target)?);
    }
    for target in &plan.targets {
        let options = ClientOptions::from(&target.registry_options);
        let pool = match pools.iter().position(|(o, _)| *o == options) {
            Some(i) => i,
            None => {
                pools.push((options.clone(), Clients::new(options)));
                pools.len() - 1
            }
        };
        pool_of.push(pool);
    }
    // Every pool knows every registry pushed to before any base is read: only those get the
    // ADAPT_PUSH_* credentials.
    for (_, clients) in &pools {
        for target in &plan.targets {
            clients.add_push_target(&target.destination.external);
        }
    }
    let mut built = Vec::new();
    for ((target, crosses), &pool) in plan.targets.iter().zip(cross_builds).zip(&pool_of) {
        let mut images = Vec::new();
        for cross in crosses {
            let mut spec = target.build.clone();
            spec.cross = cross;
            let image = build(&spec, &cargo_options, &pools[pool].1).await?;
            let facts = build_facts(target, &spec, &cargo_options).await?;
            images.push(PlatformImage {
                platform: spec.cross.as_ref().map(|c| c.platform),
                image,
                facts,
            });
        }
        built.push((target, pool, images));
    }

    let mut pushed = Vec::new();
    let mut failure = None;
    for (target, pool, images) in &built {
        let result = match images.as_slice() {
            [one] => publish(target, &pools[*pool].1, &one.image, one.facts.as_ref()).await,
            several => publish_platforms(target, &pools[*pool].1, several).await,
        };
        match result {
            Ok(p) => pushed.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // What did get pushed is still reported, so its references are not lost.
    if failure.is_none() || !pushed.is_empty() {
        output::report(&pushed, args.format, args.image_refs.as_deref())?;
    }
    match failure {
        None => Ok(()),
        Some(e) if !pushed.is_empty() => Err(e.wrap_err(format!(
            "pushed {} of {} images (their references are on stdout); the next one failed",
            pushed.len(),
            built.len()
        ))),
        Some(e) => Err(e),
    }
}

enum Built {
    Oci(image::Image),
    Engine(engine::EngineImage),
}

async fn build(spec: &BuildSpec, cargo_options: &CargoOptions, clients: &Clients) -> Result<Built> {
    Ok(match spec.builder {
        BuilderKind::Oci => Built::Oci(build::oci::build(spec, cargo_options, clients).await?),
        BuilderKind::Docker => {
            Built::Engine(build::docker::build(spec, cargo_options, clients).await?)
        }
    })
}

async fn publish(
    target: &Target,
    clients: &Clients,
    image: &Built,
    facts: Option<&supply_chain::BuildFacts>,
) -> Result<Pushed> {
    let published = match image {
        Built::Oci(image) => {
            RegistryPublisher::new(clients)
                .publish(image, &target.destination)
                .await?
        }
        Built::Engine(image) => {
            EnginePublisher::new(clients)
                .publish(image, &target.destination)
                .await?
        }
    };
    let d = &target.destination;
    let attached = match facts {
        Some(facts) => attach_documents(target, clients, &published.digest, facts).await?,
        None => Vec::new(),
    };
    Ok(Pushed {
        package: target.build.package.clone(),
        bin: target.build.bin.clone(),
        push_ref: format!("{}@{}", d.push_name(), published.digest),
        pull_ref: format!("{}@{}", d.pull_name(), published.digest),
        digest: published.digest.to_string(),
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
    d: &plan::Destination,
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
    let mut platforms = Vec::new();
    for ((platform, _), (p, pushed)) in list.iter().zip(images.iter().zip(&per_platform)) {
        let attached = match &p.facts {
            Some(facts) => attach_documents(target, clients, &pushed.digest, facts).await?,
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
        push_ref: format!("{}@{}", d.push_name(), published.digest),
        pull_ref: format!("{}@{}", d.pull_name(), published.digest),
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
    if spec.sbom == supply_chain::SbomFormat::None && !spec.provenance {
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

async fn attach_documents(
    target: &Target,
    clients: &Clients,
    digest: &reference::Digest,
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
        publish::attach::attach_all(&client, &d.repository, digest, &documents, facts.epoch)
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

/// `cargo adapt-push verify <reference>`: exit 0 when verified, 1 when a check failed.
fn run_verify(argv: Vec<std::ffi::OsString>) -> ExitCode {
    use clap::Parser;
    let args = verify::VerifyArgs::parse_from(argv);
    output::init(false, 0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(verify::run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(2)
        }
    }
}

/// CI systems often define variables but leave them empty; an empty `ADAPT_PUSH_*` means unset.
fn ignore_empty_settings() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| k.to_string_lossy().starts_with("ADAPT_PUSH_") && v.is_empty())
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        // SAFETY: called first thing in main, before the runtime or any other thread starts.
        unsafe { std::env::remove_var(key) };
    }
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

/// `--manifest-path`, else the nearest Cargo.toml from the current directory upward (cargo's rule).
fn locate_manifest(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        let path = if path.is_dir() {
            path.join("Cargo.toml")
        } else {
            path.to_path_buf()
        };
        if !path.is_file() {
            return Err(miette::miette!(
                "--manifest-path: {} does not exist",
                path.display()
            ));
        }
        return path.canonicalize().into_diagnostic();
    }
    let cwd = std::env::current_dir().into_diagnostic()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("Cargo.toml");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(miette::miette!(
        help = "run it inside a Rust package, or pass --manifest-path",
        "could not find Cargo.toml in {} or any parent directory",
        cwd.display()
    ))
}
