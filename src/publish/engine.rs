//! Publishes an image that lives in a Docker engine: tag it `external/repository:tag` for every
//! destination tag and have the engine push each tag, explicitly (a push without a tag would send
//! every local tag of the repository), with our credentials for `external` as X-Registry-Auth.
//!
//! The engine answers HTTP 200 even when a push fails, so the progress stream is drained and its
//! first error item fails the push. The digest is not scraped from the stream's text: it is the
//! digest of the manifest the registry itself serves for the first tag, checked to describe the
//! image the engine built, and every other tag must serve the same manifest.
//!
//! The engine pushes from where it runs; the digest is read back from here. For a loopback
//! `external` (`localhost:5001`) and an engine on another host those are two registries, which is
//! warned about before the push and named in every error after it.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;
use miette::{Diagnostic, Result, WrapErr};

use super::Published;
use crate::engine::{self, EngineImage};
use crate::image;
use crate::reference::{Digest, Registry, Tag};
use crate::registry::error_chain;
use crate::registry::pool::Clients;
use crate::spec::Destination;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum EnginePushError {
    #[error("the Docker engine at {address} could not tag the image as {name}: {cause}")]
    Tag {
        address: String,
        name: String,
        cause: String,
    },

    #[error("the Docker engine at {address} failed to push {name}: {message}")]
    #[diagnostic(help("{hint}"))]
    Push {
        address: String,
        name: String,
        message: String,
        hint: String,
    },

    #[error(
        "{name} in the registry is not the image the engine built (the registry's {found}, the engine's {built})"
    )]
    #[diagnostic(help("did something else push to this tag at the same time? Run again"))]
    Mismatch {
        name: String,
        found: String,
        built: String,
    },

    #[error(
        "the tags of {repository} point at different manifests after the push: {first} is {first_digest}, {other} is {other_digest}"
    )]
    #[diagnostic(help("did something else push to these tags at the same time? Run again"))]
    TagsDiffer {
        repository: String,
        first: String,
        first_digest: String,
        other: String,
        other_digest: String,
    },
}

pub struct EnginePublisher<'a> {
    clients: &'a Clients,
}

/// What the engine said about each layer, for the summary line.
#[derive(Default)]
struct Counts {
    uploaded: usize,
    mounted: usize,
    present: usize,
}

impl<'a> EnginePublisher<'a> {
    pub fn new(clients: &'a Clients) -> Self {
        EnginePublisher { clients }
    }

    pub async fn publish(
        &self,
        image: &EngineImage,
        destination: &Destination,
    ) -> Result<Published> {
        let shell = image.engine.shell();
        let address = image.engine.address().to_string();
        let name = destination.push_name();
        let Some(first_tag) = destination.tags.first() else {
            return Err(miette::miette!("no tag to push {name} under"));
        };
        shell.status(
            "Pushing",
            &format!("{name} through the Docker engine at {address}"),
        );
        if destination.external.scheme().is_some() {
            shell.detail(&format!(
                "the engine chooses HTTP or HTTPS for {} by its own insecure-registries setting",
                destination.external
            ));
        }
        let split_view = split_view(image, destination, &address);
        let credentials = engine::credentials_for(&destination.external, true, shell).await?;
        // Podman verifies TLS unless told otherwise per push; where we ourselves speak plain
        // HTTP to the registry (loopback, `insecure`), so may it.
        if image.engine.is_podman()
            && let Ok(client) = self.clients.get(&destination.external).await
            && client.speaks_plain_http()
        {
            image.engine.allow_plain_http(&destination.external);
        }

        let mut counts = Counts::default();
        for (index, tag) in destination.tags.iter().enumerate() {
            // Layer counts from the first tag; later tags find every layer there.
            let counted = (index == 0).then_some(&mut counts);
            push_tag(
                image,
                destination,
                tag,
                credentials.clone(),
                split_view.as_deref(),
                counted,
            )
            .await?;
        }
        let digest = self
            .read_back(image, destination, first_tag, split_view.as_deref())
            .await?;

        let tags: Vec<&str> = destination.tags.iter().map(|t| t.as_str()).collect();
        shell.status(
            "Pushed",
            &format!(
                "{name}:{} ({} layers uploaded; {} mounted; {} already there)",
                tags.join(", :"),
                counts.uploaded,
                counts.mounted,
                counts.present
            ),
        );
        Ok(Published {
            digest,
            uploaded: counts.uploaded,
            mounted: counts.mounted,
            present: counts.present,
            uploaded_bytes: 0,
        })
    }

    /// The registry, not the engine's text, says what the tags now hold: the first tag's
    /// manifest must be the engine's image, and every other tag the same manifest.
    async fn read_back(
        &self,
        image: &EngineImage,
        destination: &Destination,
        first_tag: &Tag,
        split_view: Option<&str>,
    ) -> Result<Digest> {
        let name = destination.push_name();
        let in_split_view = |message: String| match split_view {
            Some(explanation) => format!("{message} ({explanation})"),
            None => message,
        };
        // What the registry here holds need not be what the engine pushed over there.
        let mismatch = |report: miette::Report| match split_view {
            Some(explanation) => report.wrap_err(format!("after the push: {explanation}")),
            None => report,
        };
        let client = self.clients.get(&destination.external).await?;
        let repo = &destination.repository;
        let (media_type, bytes, digest) = client
            .get_manifest(repo, first_tag.as_str())
            .await
            .wrap_err_with(|| {
                in_split_view(format!("reading back {name}:{first_tag} after the push"))
            })?;
        check_same_image(
            &format!("{name}:{first_tag}"),
            &image.id,
            &media_type,
            &bytes,
            &digest,
        )
        .map_err(|e| mismatch(e.into()))?;
        for tag in &destination.tags[1..] {
            let (_, _, other) = client
                .get_manifest(repo, tag.as_str())
                .await
                .wrap_err_with(|| {
                    in_split_view(format!("reading back {name}:{tag} after the push"))
                })?;
            if other != digest {
                return Err(mismatch(miette::Report::new(EnginePushError::TagsDiffer {
                    repository: name.clone(),
                    first: first_tag.to_string(),
                    first_digest: digest.to_string(),
                    other: tag.to_string(),
                    other_digest: other.to_string(),
                })));
            }
        }

        Ok(digest)
    }
}

/// When `external` is loopback but the engine runs on another host, the two see different
/// registries: warned about, and the explanation added to later errors.
fn split_view(image: &EngineImage, destination: &Destination, address: &str) -> Option<String> {
    // `localhost` means the engine's host to the engine and this one to us.
    let split_view = destination
        .external
        .is_loopback()
        .then(|| image.engine.remote_host())
        .flatten()
        .map(|engine_host| {
            let registry = &destination.external;
            format!(
                "the engine pushes to {registry} as {engine_host} sees it, and the digest is read back from {registry} as this machine sees it: two different registries unless a tunnel joins them"
            )
        });
    if let Some(explanation) = &split_view {
        image.engine.shell().warn(&format!(
            "{} is a loopback address but the Docker engine at {address} runs on another host: {explanation}. Give `external` an address that both this machine and the engine reach",
            destination.external
        ));
    }
    split_view
}

/// Tags the image under `tag` in the engine and has the engine push it; `counts` (for the
/// first tag) gathers what happened to the layers.
async fn push_tag(
    image: &EngineImage,
    destination: &Destination,
    tag: &Tag,
    credentials: Option<DockerCredentials>,
    split_view: Option<&str>,
    mut counts: Option<&mut Counts>,
) -> Result<()> {
    let docker = image.engine.docker();
    let address = image.engine.address().to_string();
    let name = destination.push_name();
    let tagged = format!("{name}:{tag}");
    docker
        .tag_image(
            &image.id,
            Some(
                TagImageOptionsBuilder::new()
                    .repo(&name)
                    .tag(tag.as_str())
                    .build(),
            ),
        )
        .await
        .map_err(|e| EnginePushError::Tag {
            address: address.clone(),
            name: tagged.clone(),
            cause: error_chain(&e),
        })?;
    let mut stream = docker.push_image(
        &name,
        Some(PushImageOptionsBuilder::new().tag(tag.as_str()).build()),
        credentials.clone(),
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                let Some(status) = info.status.as_deref() else {
                    continue;
                };
                if let Some(counts) = counts.as_deref_mut() {
                    match status {
                        "Pushed" => counts.uploaded += 1,
                        "Layer already exists" => counts.present += 1,
                        s if s.starts_with("Mounted from") => counts.mounted += 1,
                        _ => {}
                    }
                }
                if info
                    .progress_detail
                    .as_ref()
                    .is_none_or(|p| p.current.is_none())
                {
                    image.engine.shell().trace(&format!("engine: {status}"));
                }
            }
            Err(e) => {
                let message = match e {
                    bollard::errors::Error::DockerStreamError { error } => error,
                    bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                    other => error_chain(&other),
                };
                return Err(EnginePushError::Push {
                    address: address.clone(),
                    hint: push_hint(
                        &message,
                        &destination.external,
                        split_view.is_some(),
                        image.engine.is_podman(),
                    ),
                    name: tagged,
                    message: message.trim().to_string(),
                }
                .into());
            }
        }
    }
    image.engine.shell().detail(&format!("tagged {tagged}"));
    Ok(())
}

/// The manifest must describe the engine's image: its config digest is the image ID (classic
/// image store), or the manifest's own digest is (containerd image store).
fn check_same_image(
    name: &str,
    id: &str,
    media_type: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Result<(), EnginePushError> {
    if digest.as_str() == id {
        return Ok(());
    }
    let config = (media_type == image::DOCKER_MANIFEST || media_type == image::OCI_MANIFEST)
        .then(|| serde_json::from_slice::<serde_json::Value>(bytes).ok())
        .flatten()
        .and_then(|m| m["config"]["digest"].as_str().map(String::from));
    match config {
        Some(config) if config == id => Ok(()),
        Some(config) => Err(EnginePushError::Mismatch {
            name: name.to_string(),
            found: format!("config is {config}"),
            built: format!("image is {id}"),
        }),
        None => Err(EnginePushError::Mismatch {
            name: name.to_string(),
            found: format!("{media_type} is {digest}"),
            built: format!("image is {id}"),
        }),
    }
}

/// What to try for the usual ways an engine push fails. Advice about the engine and the registry
/// only: which builder made the image is not the publisher's business.
fn push_hint(message: &str, registry: &Registry, split_view: bool, podman: bool) -> String {
    let lower = message.to_ascii_lowercase();
    let plain_http = lower.contains("http response to https client")
        || lower.contains("server gave http response");
    if plain_http && podman {
        format!(
            "Podman talks HTTPS to {registry}; for a plain-HTTP registry list it with insecure = true in registries.conf (/etc/containers/registries.conf or ~/.config/containers/registries.conf: [[registry]] location = \"{registry}\" insecure = true), or in `insecure` in [package.metadata.cluster] so this tool pushes with tlsVerify=false"
        )
    } else if plain_http {
        format!(
            "the engine talks HTTPS to {registry}; for a plain-HTTP registry add \"{registry}\" to the engine's insecure-registries (daemon.json) and restart the engine"
        )
    } else if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("denied")
    {
        format!(
            "{registry} refused our credentials; log in with `docker login {registry}` or set ADAPT_PUSH_USERNAME/ADAPT_PUSH_PASSWORD"
        )
    } else if split_view {
        format!(
            "the engine pushes from the host it runs on, where {registry} is that host's own loopback: give `external` an address that both this machine and the engine reach"
        )
    } else if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("dial tcp")
    {
        format!(
            "the engine pushes from where it runs: {registry} must be reachable from the engine, not only from here"
        )
    } else {
        "nothing was tagged in the registry by this push unless the message says otherwise".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_identity() {
        let id = format!("sha256:{}", "a".repeat(64));
        let manifest = format!(r#"{{"schemaVersion":2,"config":{{"digest":"{id}"}},"layers":[]}}"#);
        let digest = Digest::sha256_of(manifest.as_bytes());
        assert!(
            check_same_image(
                "x",
                &id,
                image::DOCKER_MANIFEST,
                manifest.as_bytes(),
                &digest
            )
            .is_ok()
        );
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(
            check_same_image(
                "x",
                &other,
                image::DOCKER_MANIFEST,
                manifest.as_bytes(),
                &digest
            )
            .is_err()
        );
        // containerd image store: the ID is the manifest (or index) digest.
        assert!(check_same_image("x", digest.as_str(), image::OCI_INDEX, b"{}", &digest).is_ok());
        assert!(check_same_image("x", &id, image::OCI_INDEX, b"{}", &digest).is_err());
    }

    #[test]
    fn hints_are_about_the_engine_and_the_registry() {
        let local = Registry::parse("localhost:5001").unwrap();
        let http = push_hint(
            "Get \"https://localhost:5001/v2/\": http: server gave HTTP response to HTTPS client",
            &local,
            false,
            false,
        );
        assert!(http.contains("insecure-registries"), "{http}");
        assert!(!http.contains("--builder"), "{http}");
        let podman = push_hint(
            "pinging container registry localhost:5001: http: server gave HTTP response to HTTPS client",
            &local,
            false,
            true,
        );
        assert!(podman.contains("registries.conf"), "{podman}");
        assert!(!podman.contains("daemon.json"), "{podman}");
        let refused = push_hint(
            "dial tcp 127.0.0.1:5001: connect: connection refused",
            &local,
            true,
            false,
        );
        assert!(refused.contains("loopback"), "{refused}");
        let here = push_hint(
            "dial tcp 10.0.0.1:5001: connect: connection refused",
            &local,
            false,
            false,
        );
        assert!(here.contains("reachable from the engine"), "{here}");
    }
}
