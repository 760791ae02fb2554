//! Builders turn a planned target into an image. They never know where the image goes.
//! `oci` assembles layers in-process (like ko and Jib); `docker` has a Docker engine build them.

pub mod base_check;
pub mod docker;
pub mod oci;

use std::path::Path;
use std::sync::Arc;

use miette::Result;

use crate::engine::{Engine, EngineImage};
use crate::image::contents::Contents;
use crate::image::early_upload::EarlyUpload;
use crate::image::{BaseImage, Image};
use crate::registry::pool::Clients;
use crate::shell::Shell;
use crate::spec::{BuildSpec, BuilderKind};

/// A built image: assembled in-process, or held by a Docker engine.
pub enum Built {
    Oci(Image),
    Engine(EngineImage),
}

impl Built {
    /// What identifies the image before any registry has it: the manifest digest of an
    /// in-process image; an engine's image has no manifest until it is pushed, so its ID (the
    /// config's digest).
    pub fn identity(&self) -> String {
        match self {
            Built::Oci(image) => image.digest.to_string(),
            Built::Engine(image) => image.id.clone(),
        }
    }

    /// What the image holds besides the binary, when we made its layers.
    pub fn contents(&self) -> Option<&Contents> {
        match self {
            Built::Oci(image) => Some(&image.contents),
            Built::Engine(image) => image.contents.as_ref(),
        }
    }
}

/// What a builder checks and fetches before anything is compiled, so that a typo in `base` or
/// a missing engine costs no compile: the base image (daemonless), the engine connection.
pub enum Prepared {
    /// Boxed: a base is large, and a run holds one per platform image until it is assembled.
    Oci(Box<Option<BaseImage>>),
    Engine(Engine),
}

/// Prepares the build of `spec` (for the platform its `cross` names).
pub async fn prepare(spec: &BuildSpec, clients: &Clients, shell: &Shell) -> Result<Prepared> {
    Ok(match spec.builder {
        BuilderKind::Oci => Prepared::Oci(Box::new(oci::prepare(spec, clients, shell).await?)),
        // Ask the engine first: a missing engine should not cost a cargo build.
        BuilderKind::Docker => Prepared::Engine(Engine::connect(shell).await?),
    })
}

/// Builds the target's image from its compiled `binary` (`None` only when the engine builds the
/// package's own Dockerfile: see `BuildSpec::compiled_on_host`). `early_upload` hears of each
/// layer the daemonless builder writes, as soon as it is written (the engine's layers stay
/// inside it). What the build does is told to `shell`.
pub async fn build(
    spec: &BuildSpec,
    prepared: Prepared,
    binary: Option<&Path>,
    clients: &Clients,
    early_upload: Option<Arc<dyn EarlyUpload>>,
    shell: &Shell,
) -> Result<Built> {
    Ok(match prepared {
        Prepared::Oci(base) => {
            let binary = binary.ok_or_else(|| no_binary(spec))?;
            Built::Oci(oci::build(spec, *base, binary, clients, early_upload, shell).await?)
        }
        Prepared::Engine(engine) => {
            Built::Engine(docker::build(spec, engine, binary, clients, shell).await?)
        }
    })
}

/// A builder that needs the compiled binary was not given one: a bug in the run, not the
/// user's doing.
fn no_binary(spec: &BuildSpec) -> miette::Report {
    miette::miette!(
        "internal error: bin `{}` of `{}` reached the builder without a compiled binary",
        spec.bin,
        spec.package
    )
}
