//! What a command asks for, in plain terms: `cli` fills these from the command line, and an
//! embedder or a test can build them directly. Nothing here knows clap.

use std::path::PathBuf;

use crate::plan;

// The types a request holds, nameable by an embedder from here.
pub use crate::cargo::CargoOptions;
pub use crate::plan::{BuilderChoice, Request as PlanRequest};
pub use crate::spec::{MediaTypes, SbomFormat};

/// One command to run.
#[derive(Debug, Clone)]
pub enum Command {
    /// Build and push (the default command).
    Push(PushRequest),
    /// `resolve -f`: push the images YAML names and write their references into it.
    Resolve(ResolveRequest),
    /// `verify REF`: check an image's SBOM and provenance.
    Verify(VerifyRequest),
}

impl Command {
    /// `-q` and `-v…`: how much to print on stderr.
    pub fn verbosity(&self) -> (bool, u8) {
        match self {
            Command::Push(push) | Command::Resolve(ResolveRequest { push, .. }) => {
                (push.quiet, push.verbose)
            }
            Command::Verify(_) => (false, 0),
        }
    }
}

/// Build images and send them to their outputs.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// `--manifest-path`; `None`: the nearest Cargo.toml upward from the current directory.
    pub manifest_path: Option<PathBuf>,
    /// What to build and where to push it, as the plan takes it.
    pub plan: plan::Request,
    pub cargo: CargoOptions,
    pub outputs: Outputs,
    /// `--workspace`: each image stands alone (one failing stops no other).
    pub batch: Batch,
    /// `--format`: what stdout carries.
    pub format: Format,
    /// `--image-refs`: also write the pull references to this file.
    pub image_refs: Option<PathBuf>,
    /// `--dry-run`: print the plan, build and push nothing.
    pub dry_run: bool,
    pub quiet: bool,
    pub verbose: u8,
}

/// Where a run's images go (`--help` lists these flags under "Destinations"; one registry
/// destination of an image is a `spec::Destination`). Whether the registry is among them is
/// decided here, once: the plan reads it too (a registry-less run needs no registry configured).
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Push to the registry: unless `--no-push`, or registry-less outputs without `--push`.
    pub registry: bool,
    /// `--tarball`: a `docker load` tar.
    pub tarball: Option<PathBuf>,
    /// `--oci-layout`: an OCI image layout, added to.
    pub oci_layout: Option<PathBuf>,
    /// `--load`: into the Docker engine.
    pub load: bool,
    /// `--check-pull`: fetch the manifest through the internal address after the push.
    pub check_pull: bool,
}

impl Outputs {
    /// From the command line's destination flags (`--push` and `--no-push` exclude each other).
    pub fn from_flags(
        push: bool,
        no_push: bool,
        tarball: Option<PathBuf>,
        oci_layout: Option<PathBuf>,
        load: bool,
        check_pull: bool,
    ) -> Outputs {
        let mut outputs = Outputs {
            registry: false,
            tarball,
            oci_layout,
            load,
            check_pull,
        };
        outputs.registry = !no_push && (push || !outputs.local());
        outputs
    }

    /// Any registry-less destination (`--tarball`, `--oci-layout`, `--load`).
    pub fn local(&self) -> bool {
        self.tarball.is_some() || self.oci_layout.is_some() || self.load
    }
}

/// How the images of one run depend on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batch {
    /// `-p a -p b`: a failed build publishes nothing; a failed push stops the ones after it.
    #[default]
    Sequential,
    /// `resolve`: a failed build publishes nothing; then every image is published at once.
    AllOrNothing,
    /// `--workspace`: one image failing stops no other; published at once.
    Independent,
}

impl Batch {
    /// Whether one image's failure leaves the others going.
    pub fn keeps_going(self) -> bool {
        self == Batch::Independent
    }

    /// Whether several images are published at once.
    pub fn concurrent(self) -> bool {
        self != Batch::Sequential
    }
}

/// `resolve -f`: YAML in, YAML out with each `adapt://` placeholder replaced.
#[derive(Debug, Clone, Default)]
pub struct ResolveRequest {
    /// `-f`: files, directories of .yaml/.yml files, or `-` for stdin.
    pub files: Vec<PathBuf>,
    /// `--in-place`: rewrite the files instead of printing.
    pub in_place: bool,
    /// How the images are built and pushed (the destination is always the registry).
    pub push: PushRequest,
}

/// `verify REF`: does the image carry an SBOM and provenance that name it.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// `host[:port]/repository@sha256:…` or `…:tag`, as given.
    pub reference: String,
    pub format: Format,
    pub ca_cert: Option<PathBuf>,
    /// Registries that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Require an SBOM (not `--no-sbom`).
    pub sbom: bool,
    /// Require provenance (not `--no-provenance`).
    pub provenance: bool,
}

/// What stdout carries: text lines or one JSON document (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}
