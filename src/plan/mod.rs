//! CLI + cargo metadata → a validated plan: which binary, which image, where it goes.
//! Everything a user can get wrong is checked here, before anything is built or pushed.

mod builder;
mod extras;
mod include;
mod registry;
mod select;
mod tags;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::Metadata;

use crate::config::{ClusterConfig, ConfigError, Origin};
use crate::reference::{ImageRef, Registry, Repository, Tag};
use select::select_packages;
use target::plan_target;

/// Everything needed to build and push, per package.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
}

/// One image to build and push.
#[derive(Debug, Clone)]
pub struct Target {
    /// What to build: all a builder sees.
    pub build: BuildSpec,
    /// Where it goes: all a publisher sees.
    pub destination: Destination,
    pub registry_options: RegistryOptions,
    /// Which supply-chain documents to attach to the pushed image.
    pub supply_chain: crate::supply_chain::SupplyChainSpec,
    /// `platforms` / `--platform`; empty: the host's platform, one image, no index.
    pub platforms: Vec<crate::platform::Platform>,
    /// What the user should hear about the settings that is not an error (the run prints it).
    pub warnings: Vec<String>,
}

/// A builder's whole input. It says nothing about where the image will be pushed.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub package: String,
    pub version: String,
    pub manifest_path: PathBuf,
    pub bin: String,
    pub builder: BuilderKind,
    pub image: ImageSpec,
    pub docker: DockerSpec,
    /// Where compressed layers are kept between runs (under cargo's target directory).
    pub layer_cache: PathBuf,
    /// Building for another platform than the host's: set per platform before building.
    pub cross: Option<crate::platform::CrossBuild>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    Oci,
    Docker,
}

impl BuilderKind {
    pub fn name(self) -> &'static str {
        match self {
            BuilderKind::Oci => "oci",
            BuilderKind::Docker => "docker",
        }
    }
}

/// Where the image goes: pushed through `external`, pulled by the cluster through `internal`.
/// The two may name different paths (a pull-through cache or mirror rewrites the path but keeps
/// the digest), so the pull reference is always pinned by digest.
#[derive(Debug, Clone)]
pub struct Destination {
    pub external: Registry,
    pub internal: Registry,
    /// The repository pushed to, under `external` (its path prefix, then the image).
    pub repository: Repository,
    /// The repository the cluster pulls, under `internal` (its path prefix, then the image).
    pub pull_repository: Repository,
    pub tags: Vec<Tag>,
}

impl Destination {
    /// `external/repository`, the name pushes go to.
    pub fn push_name(&self) -> String {
        format!("{}/{}", self.external, self.repository)
    }

    /// `internal/pull_repository`, the name the cluster pulls.
    pub fn pull_name(&self) -> String {
        format!("{}/{}", self.internal, self.pull_repository)
    }
}

/// What goes into the image besides the binary.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub base: Base,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub user: Option<String>,
    pub includes: Vec<Include>,
    /// Seconds since the epoch for file mtimes and `created`: SOURCE_DATE_EPOCH, else 0.
    pub epoch: u64,
    /// Check that the base image can start the binary (`check-base`, default on).
    pub check_base: bool,
    /// Scratch images: add the host's /usr/share/zoneinfo (`tzdata`).
    pub tzdata: bool,
    /// `media-types` / `--media-types`; `None`: OCI, or the base image's family.
    pub media_types: Option<MediaTypes>,
    /// How our layers are compressed (`compression`).
    pub compression: crate::image::compress::Codec,
}

#[derive(Debug, Clone)]
pub enum Base {
    /// No base: the binary and, if dynamically linked, its runtime closure from the host.
    Scratch,
    /// Layers of this image, then ours.
    Image(ImageRef),
}

#[derive(Debug, Clone)]
pub struct Include {
    pub host_path: PathBuf,
    pub image_path: String,
}

/// Settings for the Docker engine builder.
#[derive(Debug, Clone)]
pub struct DockerSpec {
    /// `None` means generate one (the package has no Dockerfile).
    pub dockerfile: Option<PathBuf>,
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub pull: bool,
    pub platform: Option<String>,
    /// Build with BuildKit: `Some(true)` always, `Some(false)` never (classic builder), `None`
    /// when the engine has it.
    pub buildkit: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure: Vec<Registry>,
    pub ca_cert: Option<PathBuf>,
    /// `--retry-attempts` / `--retry-timeout` (seconds); `None`: the client's defaults.
    pub retry_attempts: Option<u32>,
    pub retry_timeout: Option<u64>,
}

/// What the command line asks of the plan, in plain terms: `cli` fills it from its arguments
/// (`resolve` narrows it to one package and binary per reference).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--workspace`: every member.
    pub workspace: bool,
    /// `-p`: package names or specs.
    pub packages: Vec<String>,
    pub bin: Option<String>,
    pub builder: Option<BuilderChoice>,
    pub media_types: Option<MediaTypes>,
    /// `--registry`, `--registry-external`, `--registry-internal`.
    pub registry: Option<String>,
    pub registry_external: Option<String>,
    pub registry_internal: Option<String>,
    /// `--registry-from-cluster`, asking the cluster of `kube_context`.
    pub registry_from_cluster: bool,
    pub kube_context: Option<String>,
    /// No registry is pushed to (`--no-push`, or only registry-less destinations).
    pub registry_less: bool,
    pub ca_cert: Option<PathBuf>,
    pub retry_attempts: Option<u32>,
    pub retry_timeout: Option<u64>,
    /// `--tag`: replaces `tags`.
    pub tags: Vec<String>,
    pub sbom: Option<crate::supply_chain::SbomFormat>,
    pub provenance: Option<bool>,
    pub platforms: Vec<String>,
}

/// Which builder was asked for (`--builder`, `builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderChoice {
    /// The engine builder when the package has a Dockerfile, else the daemonless one.
    Auto,
    Oci,
    Docker,
}

/// Media types of the manifest we push (`--media-types`, `media-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    Docker,
}

/// Builds the plan from the CLI and `cargo metadata`.
pub fn make_plan(
    request: &Request,
    metadata: &Metadata,
    manifest: &Path,
) -> Result<Plan, ConfigError> {
    let packages = select_packages(request, metadata, manifest)?;
    let workspace_manifest = metadata
        .workspace_root
        .join("Cargo.toml")
        .into_std_path_buf();
    let workspace_config = ClusterConfig::from_table(
        &metadata.workspace_metadata["cluster"],
        &Origin::workspace(&workspace_manifest),
    )?;
    let epoch = source_date_epoch()?;
    let mut targets = Vec::new();
    for package in packages {
        let manifest_path = package.manifest_path.clone().into_std_path_buf();
        let package_config = ClusterConfig::from_table(
            &package.metadata["cluster"],
            &Origin::package(&manifest_path),
        )?;
        let config = package_config.merged_over(workspace_config.clone());
        let layer_cache = metadata
            .target_directory
            .join("adapt-push")
            .join("layers")
            .into_std_path_buf();
        targets.push(plan_target(
            request,
            package,
            &config,
            epoch,
            layer_cache,
            metadata.workspace_root.as_std_path(),
        )?);
    }
    Ok(Plan { targets })
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else the Unix epoch.
fn source_date_epoch() -> Result<u64, ConfigError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(s) if s.is_empty() => Ok(0),
        // Beyond year 9999 `created` could not be written as RFC 3339.
        Ok(s) => s.trim().parse::<u64>().ok().filter(|n| *n <= 253_402_300_799).ok_or_else(|| {
            ConfigError::plain(
                format!("SOURCE_DATE_EPOCH=`{s}` is not a whole number of seconds since 1970 (up to year 9999)"),
                Some("unset it, or set it to e.g. `git log -1 --format=%ct`".into()),
            )
        }),
    }
}
