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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{IntoDiagnostic, Result, WrapErr};

use super::platforms::PlatformBuild;
use crate::cargo::{
    self, CargoError, CargoOptions, CompiledUnit, Executable, Invocation, Packages,
};
use crate::plan::{Plan, Target};
use crate::platform::CrossBuild;
use crate::request::Batch;
use crate::shell::Shell;
use crate::spec::BuildSpec;

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
    let mut fail = |t: usize, error: CargoError| -> Result<()> {
        if failures[t].is_none() {
            failures[t] = Some(super::target_failed(
                &plan.targets[t],
                error.into(),
                batch,
                shell,
            )?);
        }
        Ok(())
    };
    for (cross, members) in platform_groups(&prepared) {
        let invocation = invocation(plan, &prepared, &cross, &members, batch);
        let mut compiled = run(&invocation, cargo_options, shell).await?;
        if !compiled.succeeded && !batch.keeps_going() {
            return Err(CargoError::Failed {
                command: invocation.describe(cargo_options),
            }
            .into());
        }
        let units: Arc<[CompiledUnit]> = std::mem::take(&mut compiled.units).into();
        let mut collided = Vec::new();
        for (t, p) in members {
            let spec = &plan.targets[t].build;
            match compiled.executable(&spec.package_id, &spec.bin) {
                Executable::Found(path) => {
                    binaries[t][p] = Some(Binary {
                        path: path.to_path_buf(),
                        units: units.clone(),
                    })
                }
                Executable::Collided => collided.push((t, p)),
                Executable::Missing => {
                    fail(t, missing(&invocation, &compiled, spec, cargo_options))?
                }
            }
        }
        // Bins of one name in several packages share one file in cargo's target directory: each
        // is built alone, as cargo's collision warning advises, and taken before the next.
        for (t, p) in collided {
            let spec = &plan.targets[t].build;
            let alone = Invocation {
                packages: Packages::Named(vec![format!("{}@{}", spec.package, spec.version)]),
                bins: vec![spec.bin.clone()],
                keep_going: false,
                ..invocation.clone()
            };
            let compiled = run(&alone, cargo_options, shell).await?;
            match compiled.executable(&spec.package_id, &spec.bin) {
                Executable::Found(path) if compiled.succeeded => {
                    binaries[t][p] = Some(Binary {
                        path: set_apart(path, spec, &cargo_options.profile)?,
                        units: compiled.units.into(),
                    })
                }
                _ => fail(t, missing(&alone, &compiled, spec, cargo_options))?,
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

/// One platform (`None`: the host's, as a plain `cargo build`) and the (target, platform index)
/// pairs its invocation compiles for.
type PlatformGroup = (Option<CrossBuild>, Vec<(usize, usize)>);

/// Every prepared platform whose binary is compiled on the host, grouped by platform in the
/// plan's order.
fn platform_groups(prepared: &Prepared) -> Vec<PlatformGroup> {
    let mut groups: Vec<PlatformGroup> = Vec::new();
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
    shell.status("Running", &format!("`{}`", invocation.describe(options)));
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

/// Why a binary the build should have made is not there.
fn missing(
    invocation: &Invocation,
    compiled: &cargo::Compiled,
    spec: &BuildSpec,
    options: &CargoOptions,
) -> CargoError {
    let (command, package, bin) = (
        invocation.describe(options),
        spec.package.clone(),
        spec.bin.clone(),
    );
    if compiled.succeeded {
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
    }
}

/// Keeps a binary built alone out of the way of the next package's bin of the same name, which
/// cargo writes to the same file: a hard link (a copy across file systems) at a path of its own,
/// `target/adapt-push/bins/<target>/<profile>/<package>-<version>/<bin>`, kept across runs so
/// the layer cache knows it (an unchanged binary is the same file, not linked again).
fn set_apart(executable: &Path, spec: &BuildSpec, profile: &str) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let target = spec
        .cross
        .as_ref()
        .and_then(|c| c.target.as_deref())
        .unwrap_or("host");
    let dir = spec
        .layer_cache
        .parent()
        .unwrap_or(&spec.layer_cache)
        .join("bins")
        .join(target)
        .join(profile)
        .join(format!("{}-{}", spec.package, spec.version));
    let kept = dir.join(&spec.bin);
    let same_file = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same_file(executable, &kept) {
        return Ok(kept);
    }
    let context = || format!("keeping {} as {}", executable.display(), kept.display());
    std::fs::create_dir_all(&dir)
        .into_diagnostic()
        .wrap_err_with(context)?;
    // Linked beside it, then renamed over it: another run reading it sees one file or the other.
    let fresh = dir.join(format!(".{}.{}", spec.bin, std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    std::fs::hard_link(executable, &fresh)
        .or_else(|_| std::fs::copy(executable, &fresh).map(|_| ()))
        .and_then(|()| std::fs::rename(&fresh, &kept))
        .into_diagnostic()
        .wrap_err_with(context)?;
    Ok(kept)
}
