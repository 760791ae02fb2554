//! Publishers put a finished image somewhere and say what digest it got there. They never know
//! how the image was made. `registry` pushes an in-process image over the distribution API;
//! `engine` has a Docker engine push an image it holds.

pub mod attach;
pub mod check_pull;
pub mod daemon;
pub mod engine;
pub mod index;
pub mod layout;
pub mod local;
pub mod registry;
pub mod tarball;

use miette::Result;

use crate::build::Built;
use crate::plan::Destination;
use crate::reference::Digest;
use crate::registry::pool::Clients;

/// Pushes a built image to the destination's registry with the publisher for its kind.
pub async fn publish(
    clients: &Clients,
    image: &Built,
    destination: &Destination,
) -> Result<Published> {
    match image {
        Built::Oci(image) => {
            registry::RegistryPublisher::new(clients)
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
