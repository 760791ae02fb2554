//! The facts about one build that the SBOM and the provenance state: the dependency graph for
//! the target and features, the toolchain, the source revision and Cargo.lock's digest.

use std::path::{Path, PathBuf};
use std::process::Command;

use miette::{Diagnostic, Result};

use super::deps::{self, DependencyGraph, LockChecksums};
use crate::cargo::CargoOptions;
use crate::reference::Digest;
use crate::spec::BuildSpec;

#[derive(Debug, Clone)]
pub struct BuildFacts {
    pub package: String,
    pub version: String,
    pub bin: String,
    /// The Rust target triple the binary was built for.
    pub target: String,
    pub profile: String,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    /// `rustc 1.95.0 (abcdef 2026-…)`, as `rustc -V` says.
    pub rustc: String,
    pub tool_version: &'static str,
    pub git: Option<GitState>,
    /// sha256 of Cargo.lock, when there is one.
    pub cargo_lock: Option<Digest>,
    pub graph: DependencyGraph,
    /// Seconds since the epoch for document timestamps (SOURCE_DATE_EPOCH, else 0).
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitState {
    pub commit: String,
    /// Uncommitted changes (tracked or untracked, not ignored) at build time.
    pub dirty: bool,
    /// `remote.origin.url` with any user or password removed.
    pub remote: Option<String>,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum FactsError {
    #[error("cargo metadata failed for {manifest} (for the SBOM): {cause}")]
    #[diagnostic(help(
        "run `cargo metadata --filter-platform {target}` there to see cargo's message; or set `sbom = \"none\"` and `provenance = false`"
    ))]
    Metadata {
        manifest: String,
        target: String,
        cause: String,
    },
    #[error("reading the dependency graph of {package}: {cause}")]
    Graph { package: String, cause: String },
    #[error("could not run {program} -vV: {cause}")]
    Rustc { program: String, cause: String },
}

/// Gathers the facts for a binary built for `target` (a Rust triple; `None`: the host's).
/// Blocking: runs cargo, rustc and git.
pub fn collect_facts(
    build: &BuildSpec,
    options: &CargoOptions,
    target: Option<&str>,
    _units: &[crate::cargo::CompiledUnit],
) -> Result<BuildFacts, FactsError> {
    let package_dir = build
        .manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let rustc = rustc_version(&package_dir)?;
    let target = match target {
        Some(t) => t.to_string(),
        None => rustc.host.clone(),
    };

    let mut flags = vec!["--filter-platform".to_string(), target.clone()];
    flags.extend(options.manifest_flags());
    if !options.features.is_empty() {
        flags.push("--features".into());
        flags.push(options.features.join(","));
    }
    if options.all_features {
        flags.push("--all-features".into());
    }
    if options.no_default_features {
        flags.push("--no-default-features".into());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(crate::cargo::cargo_program())
        .manifest_path(&build.manifest_path)
        .other_options(flags)
        .exec()
        .map_err(|e| FactsError::Metadata {
            manifest: build.manifest_path.display().to_string(),
            target: target.clone(),
            cause: e.to_string(),
        })?;
    let lock_path = metadata
        .workspace_root
        .join("Cargo.lock")
        .into_std_path_buf();
    let checksums = LockChecksums::read(&lock_path);
    let graph =
        deps::resolve(&metadata, &build.package, &build.version, &checksums).map_err(|e| {
            FactsError::Graph {
                package: build.package.clone(),
                cause: e.to_string(),
            }
        })?;
    let cargo_lock = std::fs::read(&lock_path)
        .ok()
        .map(|b| Digest::sha256_of(&b));

    Ok(BuildFacts {
        package: build.package.clone(),
        version: build.version.clone(),
        bin: build.bin.clone(),
        target,
        profile: options.profile.clone(),
        features: options.features.clone(),
        all_features: options.all_features,
        no_default_features: options.no_default_features,
        rustc: rustc.version,
        tool_version: env!("CARGO_PKG_VERSION"),
        git: git_state(&package_dir),
        cargo_lock,
        graph,
        epoch: build.image.epoch,
    })
}

struct Rustc {
    version: String,
    host: String,
}

/// `rustc -vV` in the package's directory, so a rust-toolchain file there is honoured.
fn rustc_version(dir: &Path) -> Result<Rustc, FactsError> {
    let program = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&program)
        .arg("-vV")
        .current_dir(dir)
        .output()
        .map_err(|e| FactsError::Rustc {
            program: program.clone(),
            cause: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(FactsError::Rustc {
            program,
            cause: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next().unwrap_or_default().trim().to_string();
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(Rustc { version, host })
}

/// The commit and dirty flag of the checkout holding `dir`; `None` outside git.
fn git_state(dir: &Path) -> Option<GitState> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"])?;
    let dirty = git(&["status", "--porcelain"]).is_none_or(|s| !s.is_empty());
    let remote = git(&["config", "--get", "remote.origin.url"])
        .filter(|r| !r.is_empty())
        .map(|r| without_userinfo(&r));
    Some(GitState {
        commit,
        dirty,
        remote,
    })
}

/// A remote URL must not carry a token into a published document.
fn without_userinfo(remote: &str) -> String {
    match url::Url::parse(remote) {
        Ok(mut u) if u.has_authority() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => remote.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_lose_their_credentials() {
        assert_eq!(
            without_userinfo("https://user:s3cret@git.example/a/b.git"),
            "https://git.example/a/b.git"
        );
        assert_eq!(
            without_userinfo("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
    }
}
