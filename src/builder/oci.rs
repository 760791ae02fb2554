//! The daemonless builder: the compiled binary's image, its layers assembled in-process.
//!
//! Layers are split by how often they change, so a code change re-uploads only the last one:
//! 1. runtime (scratch only): system files (users, /tmp, CA bundle; see `scratch`) and the
//!    binary's runtime closure from the host (loader and libraries, when dynamically linked);
//! 2. includes: files from `include`;
//! 3. the binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, IntoDiagnostic, Result, WrapErr};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::base_check;
use crate::image::base_fs::BaseFs;
use crate::image::early_upload::{EarlyUpload, EarlyUploadStream};
use crate::image::layer::{Layer, LayerBuilder, LayerCache, LayerSlot, Origin};
use crate::image::scratch;
use crate::image::{self, BaseImage, Family, Image, RunConfig};
use crate::reference::{Digest, ImageRef};
use crate::registry::pool::Clients;
use crate::runtime_closure::{self, Linkage};
use crate::shell::{Shell, human_bytes};
use crate::spec::Codec;
use crate::spec::MediaTypes;
use crate::spec::{Base, BuildSpec};

/// Where the binary goes in the image; also the entrypoint.
pub fn binary_path_in_image(bin: &str) -> String {
    format!("/usr/local/bin/{bin}")
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum BuildError {
    #[error("the binary {path} cannot go in a scratch image: {source}")]
    #[diagnostic(help(
        "build it statically (RUSTFLAGS=\"-C target-feature=+crt-static\"), or set `base` to an image that has its libraries"
    ))]
    Closure {
        path: PathBuf,
        source: runtime_closure::ClosureError,
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

/// Resolves the base for the platform `target.cross` names (the host's by default), before
/// anything is compiled: a typo in `base` should not cost a compile.
pub async fn prepare(
    target: &BuildSpec,
    clients: &Clients,
    shell: &Shell,
) -> Result<Option<BaseImage>> {
    let architecture = match &target.cross {
        Some(cross) => cross.platform.architecture(),
        None => host_architecture(),
    };
    resolve_base(target, architecture, clients, shell).await
}

/// Assembles the image of the compiled `binary` on the prepared base; `early_upload` hears of
/// each layer as soon as it is written.
pub async fn build(
    target: &BuildSpec,
    base: Option<BaseImage>,
    binary: &Path,
    clients: &Clients,
    early_upload: Option<Arc<dyn EarlyUpload>>,
    shell: &Shell,
) -> Result<Image> {
    assemble_with_base(target, binary, base, clients, early_upload, shell).await
}

/// Assembles the image for an already built binary.
pub async fn assemble_for_binary(
    target: &BuildSpec,
    binary: &Path,
    clients: &Clients,
    shell: &Shell,
) -> Result<Image> {
    let architecture = architecture_of(binary)?;
    let base = resolve_base(target, &architecture, clients, shell).await?;
    assemble_with_base(target, binary, base, clients, None, shell).await
}

async fn resolve_base(
    target: &BuildSpec,
    architecture: &str,
    clients: &Clients,
    shell: &Shell,
) -> Result<Option<BaseImage>> {
    match &target.image.base {
        Base::Scratch => Ok(None),
        Base::Image(reference) => fetch_base(reference, architecture, clients, shell)
            .await
            .wrap_err_with(|| {
                format!(
                    "resolving the base image {reference} (`base` for package `{}`)",
                    target.package
                )
            })
            .map(Some),
    }
}

async fn assemble_with_base(
    target: &BuildSpec,
    binary: &Path,
    base: Option<BaseImage>,
    clients: &Clients,
    early_upload: Option<Arc<dyn EarlyUpload>>,
    shell: &Shell,
) -> Result<Image> {
    let architecture = architecture_of(binary)?;
    if let Some(b) = &base {
        let base_arch = b.config.architecture().to_string();
        if base_arch != architecture {
            shell.warn(&format!(
                "the base image is for {base_arch}, but the binary is {architecture}"
            ));
        }
    }
    let base_fs = match &base {
        None => None,
        Some(b) => {
            let cache = target
                .layer_cache
                .parent()
                .unwrap_or(&target.layer_cache)
                .join("base-fs");
            let fs = base_check::load(b, clients, &cache, shell).await?;
            if let Some(fs) = &fs
                && target.image.check_base
            {
                let reference = match &target.image.base {
                    Base::Image(r) => r.to_string(),
                    Base::Scratch => String::new(),
                };
                base_check::check(binary, &reference, b, fs, clients, shell).await?;
            }
            fs
        }
    };
    let layers = {
        let target = target.clone();
        let binary = binary.to_path_buf();
        let shell = shell.clone();
        tokio::task::spawn_blocking(move || {
            make_layers(
                &target,
                &binary,
                base_fs.as_ref(),
                early_upload.as_deref(),
                &shell,
            )
        })
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
        family: target.image.media_types.map(|m| match m {
            MediaTypes::Oci => Family::Oci,
            MediaTypes::Docker => Family::Docker,
        }),
    };
    let image = image::assemble(base.as_ref(), layers, &run).into_diagnostic()?;
    shell.detail(&format!(
        "image {} ({} layers)",
        image.digest,
        image.layers.len()
    ));
    Ok(image)
}

/// Our layers, in the order the image lists them (see the module doc). Each is announced to
/// `early_upload` as soon as it is written, while the others may still be compressing.
fn make_layers(
    target: &BuildSpec,
    binary: &Path,
    base: Option<&BaseFs>,
    early_upload: Option<&dyn EarlyUpload>,
    shell: &Shell,
) -> Result<Vec<Layer>> {
    // One handle for this image's layers: the first lookup prunes the cache directory.
    let cache = LayerCache::new(target.layer_cache.clone(), shell.clone());
    let mut pending = Vec::new();
    if base.is_none() {
        let runtime = runtime_layer(target, binary, shell)?;
        if !runtime.is_empty() {
            pending.push(PendingLayer::new(
                runtime,
                layer_slot(&cache, target, "runtime"),
            ));
        }
    }
    if let Some(includes) = includes_layer(target, base)? {
        let mut includes = PendingLayer::new(includes, layer_slot(&cache, target, "includes"));
        includes.context = Some("reading the files of `include`".into());
        pending.push(includes);
    }
    let mut app = PendingLayer::new(
        binary_layer(target, binary, base),
        layer_slot(&cache, target, "binary"),
    );
    app.context = Some(format!("reading {}", binary.display()));
    pending.push(app);
    finish_layers(pending, target.image.compression, early_upload, shell)
}

/// A layer whose files are listed but not yet read, with what to say when one cannot be read.
struct PendingLayer {
    builder: LayerBuilder,
    slot: LayerSlot,
    context: Option<String>,
}

impl PendingLayer {
    fn new(builder: LayerBuilder, slot: LayerSlot) -> PendingLayer {
        PendingLayer {
            builder,
            slot,
            context: None,
        }
    }
}

/// The layer cache's slot for one kind of layer of this target.
fn layer_slot(cache: &LayerCache, target: &BuildSpec, kind: &str) -> LayerSlot {
    // One slot per platform, so building several platforms does not evict each other.
    cache.slot(match target.cross.as_ref().filter(|c| c.target.is_some()) {
        Some(c) => format!(
            "{}-{}-{}-{kind}",
            target.package,
            target.bin,
            c.platform.architecture()
        ),
        None => format!("{}-{}-{kind}", target.package, target.bin),
    })
}

/// Scratch only: the system files and, for a dynamically linked binary, its runtime closure
/// from the host.
fn runtime_layer(target: &BuildSpec, binary: &Path, shell: &Shell) -> Result<LayerBuilder> {
    let mut runtime = LayerBuilder::new("system files and runtime libraries", target.image.epoch);
    let in_image = binary_path_in_image(&target.bin);
    let closure =
        runtime_closure::runtime_closure_for(binary, Path::new(&in_image)).map_err(|source| {
            BuildError::Closure {
                path: binary.to_path_buf(),
                source,
            }
        })?;
    // The host's libraries are for the host's architecture: a cross-built binary must
    // stand alone (see platform.rs).
    if let (Some(cross), Linkage::Dynamic { .. }) = (&target.cross, &closure.linkage)
        && cross.target.is_some()
    {
        return Err(miette::miette!(
            help = "remove RUSTFLAGS (it replaces the `+crt-static` flag this tool adds), or use a `base` with the C runtime for that platform",
            "the {} binary {} is dynamically linked; the host's libraries cannot go in its image",
            cross.platform,
            binary.display()
        ));
    }
    match &closure.linkage {
        Linkage::Static => shell.detail("statically linked: no runtime libraries needed"),
        Linkage::Dynamic { interpreter } => shell.detail(&format!(
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
    scratch::add_system_files(&mut runtime, target.image.tzdata)
        .into_diagnostic()
        .wrap_err("adding the scratch image's system files")?;
    Ok(runtime)
}

/// The files of `include`, merged onto the base like `COPY`; `None` when there are none.
fn includes_layer(target: &BuildSpec, base: Option<&BaseFs>) -> Result<Option<LayerBuilder>> {
    if target.image.includes.is_empty() {
        return Ok(None);
    }
    let mut includes = LayerBuilder::new("included files", target.image.epoch);
    for include in &target.image.includes {
        includes
            .add_host_path(&include.image_path, &include.host_path)
            .into_diagnostic()
            .wrap_err_with(|| {
                format!(
                    "reading {} (`include`, to {})",
                    include.host_path.display(),
                    include.image_path
                )
            })?;
    }
    if let Some(base) = base {
        includes.merge_onto(base);
    }
    Ok(Some(includes))
}

fn binary_layer(target: &BuildSpec, binary: &Path, base: Option<&BaseFs>) -> LayerBuilder {
    let mut app = LayerBuilder::new(format!("binary {}", target.bin), target.image.epoch);
    app.add_host_file_mode(&binary_path_in_image(&target.bin), binary, 0o755);
    if let Some(base) = base {
        app.merge_onto(base);
    }
    app
}

/// The layers are independent: read, tar and hash them side by side (each one's compression
/// already uses every core), and return them in the order given.
fn finish_layers(
    pending: Vec<PendingLayer>,
    codec: Codec,
    early_upload: Option<&dyn EarlyUpload>,
    shell: &Shell,
) -> Result<Vec<Layer>> {
    let results: Vec<(std::io::Result<Layer>, Option<String>)> = std::thread::scope(|scope| {
        let running: Vec<_> = pending
            .into_iter()
            .map(|p| {
                let thread = scope.spawn(move || {
                    let description = p.builder.description().to_string();
                    let file_bytes = p.builder.file_bytes();
                    let mut streamed = false;
                    let layer = finish_layer(
                        p.builder,
                        &p.slot,
                        codec,
                        &mut || {
                            let stream = early_upload?.compressing(&description, file_bytes);
                            streamed = stream.is_some();
                            stream
                        },
                        shell,
                    )?;
                    if let Some(early_upload) = early_upload {
                        early_upload.finished(&layer, streamed);
                    }
                    Ok(layer)
                });
                (thread, p.context)
            })
            .collect();
        running
            .into_iter()
            .map(|(thread, context)| {
                let result = thread.join().unwrap_or_else(|_| {
                    Err(std::io::Error::other("the thread writing a layer stopped"))
                });
                (result, context)
            })
            .collect()
    });
    let mut layers = Vec::new();
    for (result, context) in results {
        let result = result.into_diagnostic();
        layers.push(match context {
            Some(context) => result.wrap_err(context)?,
            None => result?,
        });
    }
    Ok(layers)
}

/// Finishes a layer with a progress bar (on a terminal) while it is tarred and compressed;
/// `open_stream` may give a stream to copy the compressed bytes to (see
/// [`LayerBuilder::finish_with_cache`]).
fn finish_layer(
    builder: LayerBuilder,
    slot: &LayerSlot,
    codec: Codec,
    open_stream: &mut dyn FnMut() -> Option<Box<dyn EarlyUploadStream>>,
    shell: &Shell,
) -> std::io::Result<Layer> {
    let progress = shell.progress("Compressing", builder.description(), builder.file_bytes());
    let advance = progress.clone();
    let layer = builder.finish_with_cache(slot, codec, &move |n| advance.advance(n), open_stream);
    progress.finish();
    let layer = layer?;
    if layer.origin == Origin::Unchanged {
        shell.detail(&format!(
            "{}: inputs unchanged, layer {}",
            layer.description, layer.digest
        ));
    } else {
        shell.detail(&format!(
            "{}: compressed, layer {} ({})",
            layer.description,
            layer.digest,
            human_bytes(layer.size)
        ));
    }
    Ok(layer)
}

/// GOARCH name of an ELF executable's machine, read from its header alone.
fn architecture_of(binary: &Path) -> Result<String> {
    use std::io::Read;
    let fail = |reason: String| BuildError::Architecture {
        path: binary.to_path_buf(),
        reason,
    };
    let mut header = [0u8; 20];
    std::fs::File::open(binary)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| fail(e.to_string()))?;
    if &header[..4] != b"\x7fELF" {
        return Err(fail("not an ELF file".into()).into());
    }
    // e_machine, in the file's byte order (EI_DATA: 1 little, 2 big endian).
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        other => return Err(fail(format!("unknown ELF byte order {other}")).into()),
    };
    let arch = match machine {
        62 => "amd64",
        183 => "arm64",
        243 => "riscv64",
        21 => "ppc64le",
        22 => "s390x",
        other => return Err(fail(format!("unsupported ELF machine {other}")).into()),
    };
    Ok(arch.to_string())
}

/// GOARCH name of the machine we run on: what cargo builds for by default.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Reads a base image's manifest (choosing `linux/<arch>` from an index) and config.
pub async fn fetch_base(
    reference: &ImageRef,
    architecture: &str,
    clients: &Clients,
    shell: &Shell,
) -> Result<BaseImage> {
    shell.status("Resolving", &format!("base image {reference}"));
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
    Ok(BaseImage {
        registry: reference.registry.clone(),
        repository: reference.repository.clone(),
        manifest,
        manifest_media_type: media_type,
        config,
    })
}
