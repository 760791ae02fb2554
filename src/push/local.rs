//! The registry-less destinations (`--tarball`, `--oci-layout`, `--load`): they take every image
//! of the run at once (one tarball, one layout).

use miette::Result;

use crate::engine::{self, EngineImage};
use crate::plan::Target;
use crate::publish::{self, local::LocalImage};
use crate::report::ImageReport;
use crate::request::Outputs;
use crate::shell::Shell;

/// What the registry-less outputs need of one image.
pub(super) enum Local {
    Oci(LocalImage),
    Engine(EngineImage),
}

/// The registry-less outputs take every image at once (one tarball, one layout); if
/// writing them fails, every image counts as failed.
pub(super) async fn write_local_destinations(
    published: Vec<(Target, Result<ImageReport>, Option<Local>)>,
    outputs: &Outputs,
    shell: &Shell,
) -> Vec<(Target, Result<ImageReport>)> {
    let mut results = Vec::new();
    let mut local_images: Vec<LocalImage> = Vec::new();
    let mut engine_images: Vec<(EngineImage, Target)> = Vec::new();
    for (target, result, local) in published {
        match local {
            Some(Local::Oci(l)) => local_images.push(l),
            Some(Local::Engine(i)) => engine_images.push((i, target.clone())),
            None => {}
        }
        results.push((target, result));
    }
    if let Err(e) = write_local(outputs, &local_images, &engine_images, shell).await {
        for (_, r) in results.iter_mut() {
            if r.is_ok() {
                *r = Err(miette::miette!("{e:?}"));
            }
        }
    }
    results
}

pub(super) async fn write_local(
    outputs: &Outputs,
    images: &[LocalImage],
    engine_images: &[(EngineImage, Target)],
    shell: &Shell,
) -> Result<()> {
    if let Some(path) = &outputs.tarball
        && !images.is_empty()
    {
        publish::tarball::write_tarball(path, images, shell)?;
        shell.status("Wrote", &format!("{} (docker load -i)", path.display()));
    }
    if let Some(dir) = &outputs.oci_layout
        && !images.is_empty()
    {
        publish::layout::write_layout(dir, images, shell)?;
        shell.status("Wrote", &format!("the OCI layout {}", dir.display()));
    }
    if outputs.load {
        if !images.is_empty() {
            let engine = engine::Engine::connect(shell).await?;
            publish::load::load(&engine, images).await?;
        }
        for (image, target) in engine_images {
            publish::load::tag_in_engine(image, &target.destination).await?;
        }
    }
    Ok(())
}
