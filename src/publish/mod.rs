//! Publishers put a finished image somewhere and say what digest it got there. They never know
//! how the image was made. `registry` pushes an in-process image over the distribution API;
//! `engine` has a Docker engine push an image it holds; `load` (`--load`) hands a Docker engine
//! the archive `tarball` writes.

pub mod attach;
pub mod check_pull;
pub mod early_upload;
pub mod engine;
pub mod index;
pub mod layout;
pub mod load;
pub mod local;
pub mod registry;
pub mod shell_events;
pub mod tarball;

use miette::Result;

use crate::builder::Built;
use crate::image::layer::CacheFile;
use crate::reference::Digest;
use crate::registry::pool::Clients;
use crate::shell::Shell;
use crate::spec::Destination;

/// Pushes a built image to the destination's registry with the publisher for its kind; what it
/// does is told to `shell` (an engine's push, to the engine's).
pub async fn publish(
    clients: &Clients,
    image: &Built,
    destination: &Destination,
    shell: &Shell,
) -> Result<Published> {
    match image {
        Built::Oci(image) => {
            registry::RegistryPublisher::new(clients, shell)
                .publish(image, destination)
                .await
        }
        Built::Engine(image) => {
            engine::EnginePublisher::new(clients)
                .publish(image, destination)
                .await
        }
    }
}

/// What a publisher reports back.
#[derive(Debug, Clone)]
pub struct Published {
    pub digest: Digest,
    /// Blobs uploaded, mounted, and already present: for the summary line.
    pub uploaded: usize,
    pub mounted: usize,
    pub present: usize,
    pub uploaded_bytes: u64,
}

/// A layer's file in the layer cache turned out damaged while it was read for a destination
/// (`damage` says how): evicts it and writes the layer again from its inputs, once whoever
/// asks, and says so the first time (to `shell`).
pub(crate) fn remake_damaged(file: &CacheFile, damage: &str, shell: &Shell) -> Result<()> {
    match file.remake() {
        Ok(true) => {
            shell.warn(&format!(
                "the layer cache's copy of {} was damaged ({damage}); removed it and wrote the layer again",
                file.description()
            ));
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(miette::miette!(
            help = format!(
                "run the push again; if this happens again, remove the layer cache {}",
                file.cache_dir().display()
            ),
            "the layer cache's copy of {} was damaged ({damage}), and writing the layer again failed: {e}",
            file.description()
        )),
    }
}
