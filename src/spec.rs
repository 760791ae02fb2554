//! What the plan hands to the stages below it: a `BuildSpec` for a builder (what to build), a
//! `Destination` for a publisher (where it goes), and the settings they share. Plain data in a
//! leaf module, so that builders, publishers and the plan all import it and none imports another.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::reference::{ImageRef, Registry, Repository, Tag};

/// A builder's whole input. It says nothing about where the image will be pushed.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Cargo's id of the package: what the compile's executables are matched by (two packages
    /// may have bins of the same name).
    pub package_id: cargo_metadata::PackageId,
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

impl BuildSpec {
    /// Whether cargo compiles the binary on this machine: always, except when the engine
    /// builds the package's own Dockerfile (which compiles inside the engine, if at all).
    pub fn compiled_on_host(&self) -> bool {
        self.builder == BuilderKind::Oci || self.docker.dockerfile.is_none()
    }
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
    pub compression: Codec,
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

/// Media types of the manifest we push (`--media-types`, `media-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    Docker,
}

/// Which SBOM format to attach (`sbom = "spdx" | "cyclonedx" | "none"`, `--sbom`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SbomFormat {
    #[default]
    Spdx,
    Cyclonedx,
    None,
}

impl SbomFormat {
    pub fn parse(text: &str) -> Option<SbomFormat> {
        match text {
            "spdx" => Some(SbomFormat::Spdx),
            "cyclonedx" => Some(SbomFormat::Cyclonedx),
            "none" => Some(SbomFormat::None),
            _ => None,
        }
    }
}

/// What to attach to an image, decided by the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupplyChainSpec {
    pub sbom: SbomFormat,
    pub provenance: bool,
}

impl Default for SupplyChainSpec {
    fn default() -> Self {
        SupplyChainSpec {
            sbom: SbomFormat::Spdx,
            provenance: true,
        }
    }
}

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    #[default]
    Gzip,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}
