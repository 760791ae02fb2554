//! What an image holds besides the binary, as the builder put it there: each regular file with
//! its digest and where it came from, the host packages those files belong to, and the base
//! image by digest. It travels with the built image to the SBOM (`supply_chain`); publishers
//! ignore it.

use std::path::PathBuf;

use crate::dpkg::{OsRelease, Package};
use crate::reference::Digest;

/// Everything in an image that did not come from cargo.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// The base image, when there is one: its own files stay its own, named by this.
    pub base: Option<BaseRecord>,
    /// The regular files our layers add (the binary aside), sorted by path.
    pub files: Vec<ContentFile>,
    /// The host packages that files were attributed to, sorted by key (`libc6:amd64`).
    pub packages: Vec<Package>,
    /// What the host's package database could tell about copied host files.
    pub host_packages: HostPackages,
}

/// The base image: as the settings name it, and the manifest our image was built on.
#[derive(Debug, Clone)]
pub struct BaseRecord {
    /// As the settings name it (`registry/repository:tag`).
    pub reference: String,
    /// `registry/repository`: where it is pulled from.
    pub repository: String,
    /// The manifest's digest (the platform's, when the reference names an index).
    pub digest: Digest,
}

/// One regular file of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFile {
    /// Absolute path in the image.
    pub path: String,
    /// sha256 of the bytes in the layer, 64 hex digits.
    pub sha256: String,
    /// sha1 of the same bytes, 40 hex digits.
    pub sha1: String,
    pub size: u64,
    pub origin: FileOrigin,
    /// Key of the package (in [`Contents::packages`]) the host file belongs to.
    pub package: Option<String>,
}

/// Where a file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOrigin {
    /// The program interpreter of the runtime closure, copied from the host.
    Loader { host_path: PathBuf },
    /// A shared library of the runtime closure, copied from the host.
    Library { host_path: PathBuf },
    /// The host's CA bundle.
    CaBundle { host_path: PathBuf },
    /// The host's time zone database (`tzdata = true`).
    Tzdata { host_path: PathBuf },
    /// Written by this tool: users, name service settings, the package records.
    System,
    /// From `include`.
    Included { host_path: PathBuf },
}

impl FileOrigin {
    /// A short name for documents: `library`, `ca-bundle`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            FileOrigin::Loader { .. } => "loader",
            FileOrigin::Library { .. } => "library",
            FileOrigin::CaBundle { .. } => "ca-bundle",
            FileOrigin::Tzdata { .. } => "tzdata",
            FileOrigin::System => "system",
            FileOrigin::Included { .. } => "included",
        }
    }

    pub fn host_path(&self) -> Option<&PathBuf> {
        match self {
            FileOrigin::Loader { host_path }
            | FileOrigin::Library { host_path }
            | FileOrigin::CaBundle { host_path }
            | FileOrigin::Tzdata { host_path }
            | FileOrigin::Included { host_path } => Some(host_path),
            FileOrigin::System => None,
        }
    }
}

/// Whether copied host files could be attributed to packages.
#[derive(Debug, Clone, Default)]
pub enum HostPackages {
    /// No file was copied from the host's system (a base image, or a static binary with
    /// nothing else from the host): nothing to attribute.
    #[default]
    NotNeeded,
    /// The host's dpkg database was read; `os` is the host's distribution.
    Dpkg { os: OsRelease },
    /// Host files were copied, but no package database could attribute them (not a
    /// Debian-family host, or its database could not be read): why.
    Unavailable { reason: String },
}
