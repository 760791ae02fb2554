//! Running `cargo build` for the selected binary and finding the file it produced.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::Message;
use miette::{Diagnostic, IntoDiagnostic, Result};

use crate::shell::{Shell, Verbosity};
use crate::spec::BuildSpec;

/// Options passed through to cargo unchanged.
#[derive(Debug, Clone, Default)]
pub struct CargoOptions {
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub profile: String,
    pub locked: bool,
    pub frozen: bool,
    pub offline: bool,
}

impl CargoOptions {
    /// `--locked`, `--frozen`, `--offline` as given, for every cargo command we run.
    pub fn manifest_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.locked {
            flags.push("--locked".into());
        }
        if self.frozen {
            flags.push("--frozen".into());
        }
        if self.offline {
            flags.push("--offline".into());
        }
        flags
    }
}

/// One unit cargo compiled (or found fresh) in a build, from its `compiler-artifact` message:
/// which package, which kind of target, with which features. Cargo's messages carry no edges
/// and no host/target flag; the SBOM rebuilds the linked closure from these and the resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // read by the SBOM's dependency graph (issue 17, landing in steps)
pub struct CompiledUnit {
    pub package_id: cargo_metadata::PackageId,
    pub target_kinds: Vec<cargo_metadata::TargetKind>,
    /// Every feature the unit was compiled with (cargo's fully expanded set).
    pub features: Vec<String>,
    /// The files it wrote: in a `--target` build, target units are under `target/<triple>/`,
    /// host units (build scripts, proc-macros and their dependencies) are not.
    pub filenames: Vec<PathBuf>,
}

#[allow(dead_code)] // called by the one-invocation build (issue 17, landing in steps)
impl CompiledUnit {
    pub fn from_artifact(artifact: &cargo_metadata::Artifact) -> CompiledUnit {
        CompiledUnit {
            package_id: artifact.package_id.clone(),
            target_kinds: artifact.target.kind.clone(),
            features: artifact.features.clone(),
            filenames: artifact
                .filenames
                .iter()
                .map(|f| f.clone().into_std_path_buf())
                .collect(),
        }
    }
}

/// The Cargo.toml to start from (`--manifest-path`, else found upward) and `cargo metadata`
/// (without dependencies) for its workspace.
pub fn workspace_metadata(
    manifest_path: Option<&Path>,
    options: &CargoOptions,
) -> miette::Result<(PathBuf, cargo_metadata::Metadata)> {
    let manifest = locate_manifest(manifest_path)?;
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(cargo_program())
        .manifest_path(&manifest)
        .no_deps()
        .other_options(options.manifest_flags())
        .exec()
        .map_err(|e| {
            miette::miette!(
                help = "run `cargo metadata` there to see cargo's full message",
                "cargo could not read {}: {e}",
                manifest.display()
            )
        })?;
    Ok((manifest, metadata))
}

/// `--manifest-path`, else the nearest Cargo.toml from the current directory upward (cargo's rule).
fn locate_manifest(given: Option<&Path>) -> miette::Result<PathBuf> {
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

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum CargoError {
    #[error("could not run cargo ({program}): {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`cargo build` failed for package `{package}` (its errors are above)")]
    Failed { package: String },
    #[error("`cargo build` finished but reported no executable for bin `{bin}` of `{package}`")]
    #[diagnostic(help(
        "is `{bin}` a [[bin]] target of `{package}`? `cargo build --bin {bin} -p {package}` should produce it"
    ))]
    NoArtifact { package: String, bin: String },
}

/// The cargo that invoked us (`$CARGO`), else `cargo` on PATH.
pub fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the target's binary; cargo's own output goes to stderr (quiet when the shell is).
/// Blocking.
pub fn build_binary(
    target: &BuildSpec,
    options: &CargoOptions,
    shell: &Shell,
) -> Result<PathBuf, CargoError> {
    let program = cargo_program();
    let mut cmd = Command::new(&program);
    let zig = target.cross.as_ref().is_some_and(|c| c.zig);
    cmd.arg(if zig { "zigbuild" } else { "build" })
        .arg("--manifest-path")
        .arg(&target.manifest_path)
        .args([
            "--package",
            &format!("{}@{}", target.package, target.version),
        ])
        .args(["--bin", &target.bin])
        .args(["--profile", &options.profile])
        .arg("--message-format=json-render-diagnostics")
        .args(options.manifest_flags());
    if !options.features.is_empty() {
        cmd.args(["--features", &options.features.join(",")]);
    }
    if options.all_features {
        cmd.arg("--all-features");
    }
    if options.no_default_features {
        cmd.arg("--no-default-features");
    }
    if let Some(cross) = &target.cross {
        crate::platform::add_cargo_args(&mut cmd, cross);
    }
    if shell.verbosity() == Verbosity::Quiet {
        cmd.arg("--quiet");
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null());
    shell.trace(&format!("running {cmd:?}"));

    let mut child = cmd.spawn().map_err(|source| CargoError::Spawn {
        program: program.clone(),
        source,
    })?;
    let mut executable = None;
    if let Some(stdout) = child.stdout.take() {
        for message in Message::parse_stream(BufReader::new(stdout)).flatten() {
            if let Message::CompilerArtifact(artifact) = message
                && artifact.target.name == target.bin
                && artifact.target.is_bin()
                && let Some(path) = artifact.executable
            {
                executable = Some(path.into_std_path_buf());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|source| CargoError::Spawn { program, source })?;
    if !status.success() {
        return Err(CargoError::Failed {
            package: target.package.clone(),
        });
    }
    executable.ok_or_else(|| CargoError::NoArtifact {
        package: target.package.clone(),
        bin: target.bin.clone(),
    })
}
