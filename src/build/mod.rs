//! Builders turn a planned target into an image. They never know where the image goes.
//! `oci` assembles layers in-process (like ko and Jib); `docker` has a Docker engine build them.

pub mod base_check;
pub mod docker;
pub mod oci;
pub mod scratch;

use std::path::PathBuf;

use miette::{IntoDiagnostic, Result};

use crate::cargo::{self, CargoOptions};
use crate::output;
use crate::plan::BuildSpec;

/// `cargo build` of the target's binary, off the async runtime; cargo's output goes to stderr.
pub async fn build_binary(target: &BuildSpec, options: &CargoOptions) -> Result<PathBuf> {
    output::status(
        "Building",
        &format!(
            "{} v{} (bin {}, profile {})",
            target.package, target.version, target.bin, options.profile
        ),
    );
    let target = target.clone();
    let options = options.clone();
    let binary = tokio::task::spawn_blocking(move || {
        output::suspend(|| cargo::build_binary(&target, &options))
    })
    .await
    .into_diagnostic()??;
    Ok(binary)
}
