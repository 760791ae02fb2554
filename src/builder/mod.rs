//! Builders turn a planned target into an image. They never know where the image goes.
//! `oci` assembles layers in-process (like ko and Jib); `docker` has a Docker engine build them.

pub mod base_check;
pub mod docker;
pub mod oci;

use std::path::PathBuf;
use std::sync::Arc;

use miette::{IntoDiagnostic, Result};

use crate::cargo::{self, CargoOptions};
use crate::engine::EngineImage;
use crate::image::Image;
use crate::image::contents::Contents;
use crate::image::early_upload::EarlyUpload;
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

/// Builds the target's image with the builder the plan chose. `early_upload` hears of each layer
/// the daemonless builder writes, as soon as it is written (the engine's layers stay inside it).
/// What the build does is told to `shell`.
pub async fn build(
    spec: &BuildSpec,
    cargo_options: &CargoOptions,
    clients: &Clients,
    early_upload: Option<Arc<dyn EarlyUpload>>,
    shell: &Shell,
) -> Result<Built> {
    Ok(match spec.builder {
        BuilderKind::Oci => {
            Built::Oci(oci::build(spec, cargo_options, clients, early_upload, shell).await?)
        }
        BuilderKind::Docker => {
            Built::Engine(docker::build(spec, cargo_options, clients, shell).await?)
        }
    })
}

/// `cargo build` of the target's binary, off the async runtime; cargo's output goes to stderr.
pub async fn build_binary(
    target: &BuildSpec,
    options: &CargoOptions,
    shell: &Shell,
) -> Result<PathBuf> {
    shell.status(
        "Building",
        &format!(
            "{} v{} (bin {}, profile {})",
            target.package, target.version, target.bin, options.profile
        ),
    );
    let target = target.clone();
    let options = options.clone();
    let shell = shell.clone();
    let binary = tokio::task::spawn_blocking(move || {
        shell.suspend(|| cargo::build_binary(&target, &options, &shell))
    })
    .await
    .into_diagnostic()??;
    Ok(binary)
}
