//! The run's compile: one `cargo build` per platform for every binary the run puts in an image,
//! after every build is prepared and before any image is assembled.
//!
//! Each invocation repeats the user's selection (`plan::Selection`): `--workspace` builds with
//! `--workspace` (features unified over every member, as `cargo build --workspace` does), `-p`
//! with those packages, `--bin` with those binaries, and the flags of a plain `cargo build`, so a
//! build the user just ran is reused as it is. Packages of the plan that nothing compiles on the
//! host for that platform (built by their own Dockerfile, or not wanted for it) are left out.
//!
//! With `Batch::Independent` (`--workspace`) cargo keeps going past a package that does not
//! compile, and exactly the images whose executable is missing fail. Otherwise a compile error
//! fails the run before anything is published.

use std::path::PathBuf;
use std::sync::Arc;

use miette::{IntoDiagnostic, Result};

use super::platforms::PlatformBuild;
use crate::cargo::{self, CargoError, CargoOptions, CompiledUnit, Invocation, Packages};
use crate::plan::{Plan, Target};
use crate::platform::CrossBuild;
use crate::request::Batch;
use crate::shell::Shell;

/// The binary compiled for one platform image, and every unit of the `cargo build` that made
/// it (what the SBOM's crates are taken from).
pub(super) struct Binary {
    pub(super) path: PathBuf,
    pub(super) units: Arc<[CompiledUnit]>,
}

/// Each target's prepared platforms, or why it cannot be built.
pub(super) type Prepared = Vec<Result<Vec<PlatformBuild>>>;

/// Each target's platforms with the binary compiled for each (`None` where the engine builds the
/// package's own Dockerfile), or why it cannot be built.
pub(super) type Compiled = Vec<Result<Vec<(PlatformBuild, Option<Binary>)>>>;

/// Compiles every binary of the run: one `cargo build` per platform. A target that fails here
/// fails the run, except with `Batch::Independent`, where it alone fails.
pub(super) async fn compile_all(
    plan: &Plan,
    prepared: Prepared,
    cargo_options: &CargoOptions,
    batch: Batch,
    shell: &Shell,
) -> Result<Compiled> {
    let mut binaries: Vec<Vec<Option<Binary>>> = prepared
        .iter()
        .map(|p| p.as_ref().map_or(0, Vec::len))
        .map(|n| (0..n).map(|_| None).collect())
        .collect();
    let mut failures: Vec<Option<miette::Report>> = prepared.iter().map(|_| None).collect();
    for (cross, members) in platform_groups(&prepared) {
        let invocation = invocation(plan, &prepared, &cross, &members, batch);
        let compiled = run(&invocation, cargo_options, shell).await?;
        let command = invocation.describe(cargo_options);
        if !compiled.succeeded && !batch.keeps_going() {
            return Err(CargoError::Failed { command }.into());
        }
        let units: Arc<[CompiledUnit]> = compiled.units.clone().into();
        for (t, p) in members {
            let spec = &plan.targets[t].build;
            if let Some(path) = compiled.executable(&spec.package_id, &spec.bin) {
                binaries[t][p] = Some(Binary {
                    path: path.to_path_buf(),
                    units: units.clone(),
                });
                continue;
            }
            let (command, package, bin) = (command.clone(), spec.package.clone(), spec.bin.clone());
            let error = if compiled.succeeded {
                CargoError::NoArtifact {
                    command,
                    package,
                    bin,
                }
            } else {
                CargoError::NotCompiled {
                    command,
                    package,
                    bin,
                }
            };
            if failures[t].is_none() {
                failures[t] = Some(super::target_failed(
                    &plan.targets[t],
                    error.into(),
                    batch,
                    shell,
                )?);
            }
        }
    }
    Ok(prepared
        .into_iter()
        .zip(binaries)
        .zip(failures)
        .map(
            |((platforms, binaries), failure)| match (platforms, failure) {
                (Err(e), _) | (Ok(_), Some(e)) => Err(e),
                (Ok(platforms), None) => Ok(platforms.into_iter().zip(binaries).collect()),
            },
        )
        .collect())
}

/// Which (target, platform) pairs each platform's invocation compiles for: every prepared
/// platform whose binary is compiled on the host, grouped by platform in the plan's order.
fn platform_groups(prepared: &Prepared) -> Vec<(Option<CrossBuild>, Vec<(usize, usize)>)> {
    let mut groups: Vec<(Option<CrossBuild>, Vec<(usize, usize)>)> = Vec::new();
    for (t, platforms) in prepared.iter().enumerate() {
        let Ok(platforms) = platforms else { continue };
        for (p, build) in platforms.iter().enumerate() {
            if !build.spec.compiled_on_host() {
                continue;
            }
            match groups.iter_mut().find(|(c, _)| *c == build.spec.cross) {
                Some((_, members)) => members.push((t, p)),
                None => groups.push((build.spec.cross.clone(), vec![(t, p)])),
            }
        }
    }
    groups
}

/// The `cargo build` for one platform: the user's selection, narrowed to what is compiled here.
fn invocation(
    plan: &Plan,
    prepared: &Prepared,
    cross: &Option<CrossBuild>,
    members: &[(usize, usize)],
    batch: Batch,
) -> Invocation {
    let specs: Vec<_> = members
        .iter()
        .map(|&(t, _)| &plan.targets[t].build)
        .collect();
    let packages = if plan.selection.workspace {
        Packages::Workspace {
            exclude: not_compiled_for(plan, prepared, cross),
        }
    } else {
        let mut named: Vec<String> = Vec::new();
        for spec in &specs {
            let named_as = format!("{}@{}", spec.package, spec.version);
            if !named.contains(&named_as) {
                named.push(named_as);
            }
        }
        Packages::Named(named)
    };
    let mut bins: Vec<String> = Vec::new();
    if plan.selection.bins {
        for spec in &specs {
            if !bins.contains(&spec.bin) {
                bins.push(spec.bin.clone());
            }
        }
    }
    Invocation {
        manifest_path: specs[0].manifest_path.clone(),
        packages,
        bins,
        cross: cross.clone(),
        keep_going: batch.keeps_going(),
    }
}

/// Runs the invocation off the async runtime; cargo's output goes to stderr.
async fn run(
    invocation: &Invocation,
    options: &CargoOptions,
    shell: &Shell,
) -> Result<cargo::Compiled> {
    shell.status("Building", &invocation.describe(options));
    let invocation = invocation.clone();
    let options = options.clone();
    let shell = shell.clone();
    let compiled = tokio::task::spawn_blocking(move || {
        shell.suspend(|| cargo::compile(&invocation, &options, &shell))
    })
    .await
    .into_diagnostic()??;
    Ok(compiled)
}

/// The plan's packages nothing is compiled for on this platform (`--exclude` them from the
/// `--workspace` build): those built by their own Dockerfile, and those whose images do not
/// want the platform. Not one that failed to prepare: leaving it out would change the others'
/// features, and so their SBOMs and the reuse of the user's build.
fn not_compiled_for(plan: &Plan, prepared: &Prepared, cross: &Option<CrossBuild>) -> Vec<String> {
    let compiled_here = |t: usize, target: &Target| {
        target.build.compiled_on_host()
            && prepared[t].as_ref().map_or(true, |platforms| {
                platforms.iter().any(|b| b.spec.cross == *cross)
            })
    };
    let mut exclude: Vec<String> = Vec::new();
    for target in &plan.targets {
        let package = &target.build.package;
        let wanted = plan
            .targets
            .iter()
            .enumerate()
            .filter(|(_, other)| other.build.package_id == target.build.package_id)
            .any(|(t, other)| compiled_here(t, other));
        if !wanted && !exclude.contains(package) {
            exclude.push(package.clone());
        }
    }
    exclude
}
