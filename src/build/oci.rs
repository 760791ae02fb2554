//! The daemonless builder: `cargo build`, then layers assembled in-process.
//!
//! Layers are split by how often they change, so a code change re-uploads only the last one:
//! 1. runtime: the binary's runtime closure from the host (loader and shared libraries, when
//!    dynamically linked and on scratch) and the host's CA bundle;
//! 2. includes: files from `include`;
//! 3. the binary.

use std::path::{Path, PathBuf};

use miette::{Diagnostic, IntoDiagnostic, Result, WrapErr};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::cargo::{self, CargoOptions};
use crate::closure::{self, Linkage};
use crate::image::layer::{Layer, LayerBuilder, LayerCache};
use crate::image::{self, BaseImage, Image, RunConfig};
use crate::output;
use crate::plan::{Base, Target};
use crate::reference::{Digest, ImageRef};
use crate::registry::pool::Clients;

/// Where the binary goes in the image; also the entrypoint.
pub fn binary_path_in_image(bin: &str) -> String {
    format!("/usr/local/bin/{bin}")
}

/// The CA bundle Debian-family hosts keep; copied so TLS clients in the image work.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum BuildError {
    #[error("the binary {path} cannot go in a scratch image: {source}")]
    #[diagnostic(help(
        "build it statically (RUSTFLAGS=\"-C target-feature=+crt-static\"), or set `base` to an image that has its libraries"
    ))]
    Closure {
        path: PathBuf,
        source: closure::ClosureError,
    },
    #[error("{path} is not a Linux executable we can label: {reason}")]
    Architecture { path: PathBuf, reason: String },
    #[error("the base image {reference} has no linux/{architecture} image (it has: {available})")]
    #[diagnostic(help("choose a base image built for linux/{architecture}"))]
    NoPlatform {
        reference: String,
        architecture: String,
        available: String,
    },
    #[error(
        "the base image {reference} is a {media_type}, which is not an image manifest or index"
    )]
    UnsupportedBase {
        reference: String,
        media_type: String,
    },
}

/// Builds the binary with cargo and assembles its image.
pub async fn build(
    target: &Target,
    cargo_options: &CargoOptions,
    clients: &Clients,
) -> Result<Image> {
    output::status(
        "Building",
        &format!(
            "{} v{} (bin {}, profile {})",
            target.package, target.version, target.bin, cargo_options.profile
        ),
    );
    let binary = {
        let target = target.clone();
        let options = cargo_options.clone();
        tokio::task::spawn_blocking(move || {
            output::suspend(|| cargo::build_binary(&target, &options))
        })
        .await
        .into_diagnostic()??
    };
    assemble_for_binary(target, &binary, clients).await
}

/// Assembles the image for an already built binary.
pub async fn assemble_for_binary(
    target: &Target,
    binary: &Path,
    clients: &Clients,
) -> Result<Image> {
    let architecture = architecture_of(binary)?;
    let base = match &target.image.base {
        Base::Scratch => None,
        Base::Image(reference) => Some(fetch_base(reference, &architecture, clients).await?),
    };
    let layers = {
        let target = target.clone();
        let binary = binary.to_path_buf();
        let on_scratch = base.is_none();
        tokio::task::spawn_blocking(move || make_layers(&target, &binary, on_scratch))
            .await
            .into_diagnostic()??
    };
    let run = RunConfig {
        entrypoint: vec![binary_path_in_image(&target.bin)],
        env: target.image.env.clone(),
        labels: target.image.labels.clone(),
        annotations: target.image.annotations.clone(),
        user: target.image.user.clone(),
        epoch: target.image.epoch,
        architecture,
    };
    let image = image::assemble(base.as_ref(), layers, &run).into_diagnostic()?;
    output::detail(&format!(
        "image {} ({} layers)",
        image.digest,
        image.layers.len()
    ));
    Ok(image)
}

fn make_layers(target: &Target, binary: &Path, on_scratch: bool) -> Result<Vec<Layer>> {
    let epoch = target.image.epoch;
    let mut layers = Vec::new();
    let cache = |kind: &str| LayerCache {
        dir: target.layer_cache.clone(),
        slot: format!("{}-{}-{kind}", target.package, target.bin),
    };

    let mut runtime = LayerBuilder::new("runtime libraries and CA certificates", epoch);
    if on_scratch {
        let closure = closure::runtime_closure(binary).map_err(|source| BuildError::Closure {
            path: binary.to_path_buf(),
            source,
        })?;
        match &closure.linkage {
            Linkage::Static => output::detail("statically linked: no runtime libraries needed"),
            Linkage::Dynamic { interpreter } => output::detail(&format!(
                "dynamically linked ({}): adding {} runtime files from the host",
                interpreter.display(),
                closure.files.len()
            )),
        }
        for file in &closure.files {
            let image_path = file.image_path.to_string_lossy();
            runtime
                .add_host_file(&image_path, &file.host_path)
                .into_diagnostic()
                .wrap_err_with(|| format!("reading {}", file.host_path.display()))?;
        }
        if Path::new(CA_BUNDLE).is_file() {
            runtime.add_host_file_mode(CA_BUNDLE, Path::new(CA_BUNDLE), 0o644);
        }
    }
    if !runtime.is_empty() {
        layers.push(
            runtime
                .finish_with_cache(Some(&cache("runtime")))
                .into_diagnostic()?,
        );
    }

    if !target.image.includes.is_empty() {
        let mut includes = LayerBuilder::new("included files", epoch);
        for include in &target.image.includes {
            includes
                .add_host_path(&include.image_path, &include.host_path)
                .into_diagnostic()
                .wrap_err_with(|| format!("reading {}", include.host_path.display()))?;
        }
        layers.push(
            includes
                .finish_with_cache(Some(&cache("includes")))
                .into_diagnostic()?,
        );
    }

    let mut app = LayerBuilder::new(format!("binary {}", target.bin), epoch);
    app.add_host_file_mode(&binary_path_in_image(&target.bin), binary, 0o755);
    layers.push(
        app.finish_with_cache(Some(&cache("binary")))
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", binary.display()))?,
    );
    Ok(layers)
}

/// GOARCH name of an ELF executable's machine.
fn architecture_of(binary: &Path) -> Result<String> {
    use object::Object;
    let data = std::fs::read(binary)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {}", binary.display()))?;
    let file = object::File::parse(&*data).map_err(|e| BuildError::Architecture {
        path: binary.to_path_buf(),
        reason: e.to_string(),
    })?;
    let arch = match file.architecture() {
        object::Architecture::X86_64 => "amd64",
        object::Architecture::Aarch64 => "arm64",
        object::Architecture::Riscv64 => "riscv64",
        object::Architecture::PowerPc64 => "ppc64le",
        object::Architecture::S390x => "s390x",
        other => {
            return Err(BuildError::Architecture {
                path: binary.to_path_buf(),
                reason: format!("unsupported architecture {other:?}"),
            }
            .into());
        }
    };
    Ok(arch.to_string())
}

/// Reads a base image's manifest (choosing linux/<arch> from an index) and config.
pub async fn fetch_base(
    reference: &ImageRef,
    architecture: &str,
    clients: &Clients,
) -> Result<BaseImage> {
    output::status("Resolving", &format!("base image {reference}"));
    let client = clients.get(&reference.registry).await?;
    let repo = &reference.repository;
    let (mut media_type, mut bytes, _) = client.get_manifest(repo, &reference.reference()).await?;
    if media_type == image::OCI_INDEX || media_type == image::DOCKER_MANIFEST_LIST {
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading the index of {reference}"))?;
        let mut available = Vec::new();
        let mut chosen = None;
        for m in index.manifests() {
            let Some(p) = m.platform() else { continue };
            let (os, arch) = (p.os().to_string(), p.architecture().to_string());
            available.push(format!("{os}/{arch}"));
            if os == "linux" && arch == architecture && chosen.is_none() {
                chosen = Some(m.digest().to_string());
            }
        }
        let Some(digest) = chosen else {
            return Err(BuildError::NoPlatform {
                reference: reference.to_string(),
                architecture: architecture.into(),
                available: available.join(", "),
            }
            .into());
        };
        (media_type, bytes, _) = client.get_manifest(repo, &digest).await?;
    }
    if media_type != image::OCI_MANIFEST && media_type != image::DOCKER_MANIFEST {
        return Err(BuildError::UnsupportedBase {
            reference: reference.to_string(),
            media_type,
        }
        .into());
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading the manifest of {reference}"))?;
    let config_digest = Digest::parse(manifest.config().digest().as_ref()).into_diagnostic()?;
    let config_bytes = client.get_blob_bytes(repo, &config_digest).await?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading the config of {reference}"))?;
    let base_arch = config.architecture().to_string();
    if base_arch != architecture {
        output::warn(&format!(
            "the base image {reference} is for {base_arch}, but the binary is {architecture}"
        ));
    }
    Ok(BaseImage {
        registry: reference.registry.clone(),
        repository: reference.repository.clone(),
        manifest,
        manifest_media_type: media_type,
        config,
    })
}
