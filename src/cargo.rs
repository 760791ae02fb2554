//! The cargo we drive: `cargo metadata` for the workspace, and the one `cargo build` per
//! platform that compiles every binary of a run (`Invocation` → `Compiled`: each binary's
//! executable and the units cargo reported).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::Message;
use miette::{Diagnostic, IntoDiagnostic, Result};

use crate::shell::{Shell, Verbosity};

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
pub struct CompiledUnit {
    pub package_id: cargo_metadata::PackageId,
    pub target_kinds: Vec<cargo_metadata::TargetKind>,
    /// Every feature the unit was compiled with (cargo's fully expanded set).
    pub features: Vec<String>,
    /// The files it wrote: in a `--target` build, target units are under `target/<triple>/`,
    /// host units (build scripts, proc-macros and their dependencies) are not.
    pub filenames: Vec<PathBuf>,
}

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
    #[error("`{command}` failed (cargo's errors are above); nothing was pushed")]
    Failed { command: String },
    #[error("`{command}` did not compile bin `{bin}` of `{package}` (cargo's errors are above)")]
    NotCompiled {
        command: String,
        package: String,
        bin: String,
    },
    #[error("`{command}` finished but reported no executable for bin `{bin}` of `{package}`")]
    #[diagnostic(help(
        "is `{bin}` a [[bin]] target of `{package}` whose `required-features` are on? `cargo build --bin {bin} -p {package}` says"
    ))]
    NoArtifact {
        command: String,
        package: String,
        bin: String,
    },
}

/// The cargo that invoked us (`$CARGO`), else `cargo` on PATH.
pub fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The packages one `cargo build` compiles, as the user selected them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packages {
    /// `--workspace`, with `--exclude` for the members named (`cargo build --workspace`
    /// resolves features for every member at once, so this is what reuses the user's build).
    Workspace { exclude: Vec<String> },
    /// `-p` each (`name@version`).
    Named(Vec<String>),
}

/// One `cargo build` for everything a run compiles for one platform.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Any manifest of the workspace (`--manifest-path`; it changes no fingerprint).
    pub manifest_path: PathBuf,
    pub packages: Packages,
    /// `--bin` each; empty: every binary of the packages, as `cargo build` does.
    pub bins: Vec<String>,
    /// `None`: the host, exactly as a plain `cargo build`.
    pub cross: Option<crate::platform::CrossBuild>,
    /// `--keep-going`: one package failing to compile does not stop the others.
    pub keep_going: bool,
}

impl Invocation {
    /// The command as a user would type it, for messages (without the JSON plumbing).
    pub fn describe(&self, options: &CargoOptions) -> String {
        let mut words = vec!["cargo".to_string(), self.subcommand().to_string()];
        match &self.packages {
            Packages::Workspace { exclude } => {
                words.push("--workspace".into());
                for e in exclude {
                    words.extend(["--exclude".into(), e.clone()]);
                }
            }
            Packages::Named(specs) => {
                for spec in specs {
                    words.extend(["-p".into(), spec.clone()]);
                }
            }
        }
        for bin in &self.bins {
            words.extend(["--bin".into(), bin.clone()]);
        }
        words.extend(["--profile".into(), options.profile.clone()]);
        if let Some(triple) = self.cross.as_ref().and_then(|c| c.target.as_ref()) {
            words.extend(["--target".into(), triple.clone()]);
        }
        words.join(" ")
    }

    fn subcommand(&self) -> &'static str {
        if self.cross.as_ref().is_some_and(|c| c.zig) {
            "zigbuild"
        } else {
            "build"
        }
    }

    /// The command line: the flags a plain `cargo build --profile P` has (`--profile release`
    /// is `--release`), plus only what changes no fingerprint (`--message-format`, `--quiet`,
    /// `--keep-going`, `--manifest-path`), so a user's earlier build of the same selection is
    /// reused as it is.
    fn command(&self, options: &CargoOptions, quiet: bool) -> Command {
        let mut cmd = Command::new(cargo_program());
        cmd.arg(self.subcommand())
            .arg("--manifest-path")
            .arg(&self.manifest_path);
        match &self.packages {
            Packages::Workspace { exclude } => {
                cmd.arg("--workspace");
                for e in exclude {
                    cmd.args(["--exclude", e]);
                }
            }
            Packages::Named(specs) => {
                for spec in specs {
                    cmd.args(["--package", spec]);
                }
            }
        }
        for bin in &self.bins {
            cmd.args(["--bin", bin]);
        }
        cmd.args(["--profile", &options.profile])
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
        if self.keep_going {
            cmd.arg("--keep-going");
        }
        if let Some(cross) = &self.cross {
            crate::platform::add_cargo_args(&mut cmd, cross);
        }
        if quiet {
            cmd.arg("--quiet");
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        cmd
    }
}

/// What one `cargo build` reported: every unit it compiled or found fresh, and each binary's
/// executable.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// In the order cargo reported them.
    pub units: Vec<CompiledUnit>,
    /// (package, bin name) → the executable.
    executables: Vec<(cargo_metadata::PackageId, String, PathBuf)>,
    /// Whether cargo exited with success (with `--keep-going`, some executables may be missing).
    pub succeeded: bool,
}

/// What became of one binary in a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executable<'a> {
    Found(&'a Path),
    /// A bin of the same name of another package went to the same file (cargo warns of the
    /// collision), so which of them the file holds now is unknown: build it alone.
    Collided,
    /// Not built: it failed to compile, or (when cargo succeeded) it is not a bin cargo built.
    Missing,
}

impl Compiled {
    /// The executable of bin `bin` of the package `package_id` (two packages may have bins of
    /// the same name).
    pub fn executable(&self, package_id: &cargo_metadata::PackageId, bin: &str) -> Executable<'_> {
        let Some((_, _, path)) = self
            .executables
            .iter()
            .find(|(id, name, _)| id == package_id && name == bin)
        else {
            return Executable::Missing;
        };
        if self
            .executables
            .iter()
            .any(|(id, _, other)| other == path && id != package_id)
        {
            return Executable::Collided;
        }
        Executable::Found(path)
    }

    fn record(&mut self, artifact: &cargo_metadata::Artifact) {
        self.units.push(CompiledUnit::from_artifact(artifact));
        if artifact.target.is_bin()
            && let Some(path) = &artifact.executable
        {
            self.executables.push((
                artifact.package_id.clone(),
                artifact.target.name.clone(),
                path.clone().into_std_path_buf(),
            ));
        }
    }
}

/// Runs the invocation; cargo's own output goes to stderr (quiet when the shell is). A failed
/// build is `Ok` with `succeeded: false`: which binaries are missing says which targets failed.
/// Blocking.
pub fn compile(
    invocation: &Invocation,
    options: &CargoOptions,
    shell: &Shell,
) -> Result<Compiled, CargoError> {
    let mut cmd = invocation.command(options, shell.verbosity() == Verbosity::Quiet);
    shell.trace(&format!("running {cmd:?}"));
    let program = cargo_program();
    let mut child = cmd.spawn().map_err(|source| CargoError::Spawn {
        program: program.clone(),
        source,
    })?;
    let mut compiled = Compiled::default();
    if let Some(stdout) = child.stdout.take() {
        for message in Message::parse_stream(BufReader::new(stdout)).flatten() {
            if let Message::CompilerArtifact(artifact) = message {
                compiled.record(&artifact);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|source| CargoError::Spawn { program, source })?;
    compiled.succeeded = status.success();
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(invocation: &Invocation, options: &CargoOptions) -> Vec<String> {
        invocation
            .command(options, false)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_is_the_user_s_selection_with_plain_build_flags() {
        let options = CargoOptions {
            profile: "release".into(),
            locked: true,
            ..CargoOptions::default()
        };
        let workspace = Invocation {
            manifest_path: PathBuf::from("/w/Cargo.toml"),
            packages: Packages::Workspace {
                exclude: vec!["docked".into()],
            },
            bins: Vec::new(),
            cross: None,
            keep_going: true,
        };
        assert_eq!(
            args(&workspace, &options),
            [
                "build",
                "--manifest-path",
                "/w/Cargo.toml",
                "--workspace",
                "--exclude",
                "docked",
                "--profile",
                "release",
                "--message-format=json-render-diagnostics",
                "--locked",
                "--keep-going",
            ]
        );
        assert_eq!(
            workspace.describe(&options),
            "cargo build --workspace --exclude docked --profile release"
        );
        let named = Invocation {
            packages: Packages::Named(vec!["api@0.1.0".into(), "worker@0.2.0".into()]),
            bins: vec!["server".into()],
            keep_going: false,
            ..workspace
        };
        assert_eq!(
            named.describe(&options),
            "cargo build -p api@0.1.0 -p worker@0.2.0 --bin server --profile release"
        );
        assert!(!args(&named, &options).contains(&"--keep-going".to_string()));
    }

    #[test]
    fn a_binary_is_found_by_package_and_name_and_a_shared_file_is_no_one_s() {
        let id = |p: &str| cargo_metadata::PackageId {
            repr: format!("path+file:///w/{p}#0.1.0"),
        };
        let exe = |p: &str, bin: &str, path: &str| (id(p), bin.to_string(), PathBuf::from(path));
        let compiled = Compiled {
            units: Vec::new(),
            executables: vec![
                exe("api", "api", "/t/release/api"),
                exe("alpha", "serve", "/t/release/serve"),
                exe("beta", "serve", "/t/release/serve"),
            ],
            succeeded: true,
        };
        assert_eq!(
            compiled.executable(&id("api"), "api"),
            Executable::Found(Path::new("/t/release/api"))
        );
        assert_eq!(
            compiled.executable(&id("api"), "serve"),
            Executable::Missing
        );
        assert_eq!(
            compiled.executable(&id("gamma"), "api"),
            Executable::Missing
        );
        assert_eq!(
            compiled.executable(&id("beta"), "serve"),
            Executable::Collided
        );
    }
}
