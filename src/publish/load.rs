//! `--load`: the images into the Docker engine at `DOCKER_HOST` (or the current context), tagged
//! with every tag, by handing the engine the same archive `--tarball` writes.

use futures_util::StreamExt;
use miette::{Diagnostic, Result};
use tokio::io::AsyncReadExt;

use super::local::LocalImage;
use super::local::healing;
use super::tarball::{Tags, archive_file};
use crate::engine::Engine;
use crate::registry::error_chain;

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("--load: the Docker engine at {address} did not load the image: {cause}")]
#[diagnostic(help(
    "check that the engine runs (`docker -H {address} info`); --tarball FILE writes the same archive for `docker load -i FILE`"
))]
pub struct LoadError {
    address: String,
    cause: String,
}

pub async fn load(engine: &Engine, images: &[LocalImage]) -> Result<()> {
    let address = engine.address().to_string();
    let fail = |cause: String| LoadError {
        address: address.clone(),
        cause,
    };
    // The archive goes to a temporary file and from there to the engine in pieces, so no layer
    // is held whole in memory; the file is removed when `archive` is dropped.
    let archive = healing(
        || archive_file(images, Tags::All),
        |e| fail(format!("writing the archive to load: {e}")).into(),
        engine.shell(),
    )?;
    let file = tokio::fs::File::from_std(
        archive
            .reopen()
            .map_err(|e| fail(format!("reading the archive to load: {e}")))?,
    );
    let options = bollard::query_parameters::ImportImageOptionsBuilder::new()
        .quiet(true)
        .build();
    let mut stream = engine
        .docker()
        .import_image_stream(options, file_chunks(file), None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| fail(error_chain(&e)))?;
        if let Some(text) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            engine.shell().detail(text);
        }
    }
    for image in images {
        for reference in image.references() {
            engine.shell().status(
                "Loaded",
                &format!("{reference} into the engine at {address}"),
            );
        }
    }
    Ok(())
}

/// A file as a stream of pieces of at most 256 KiB.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = bytes::BytesMut::zeroed(256 * 1024);
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((buf.freeze(), file)))
    })
}

/// An image the engine built is already there: `--load` only gives it the pull names.
pub async fn tag_in_engine(
    image: &crate::engine::EngineImage,
    destination: &crate::spec::Destination,
) -> Result<()> {
    let address = image.engine.address().to_string();
    let name = destination.pull_name();
    for tag in &destination.tags {
        image
            .engine
            .docker()
            .tag_image(
                &image.id,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::new()
                        .repo(&name)
                        .tag(tag.as_str())
                        .build(),
                ),
            )
            .await
            .map_err(|e| LoadError {
                address: address.clone(),
                cause: format!("tagging {name}:{tag}: {}", error_chain(&e)),
            })?;
        image.engine.shell().status(
            "Loaded",
            &format!("{name}:{tag} (in the engine at {address})"),
        );
    }
    Ok(())
}
