//! The daemonless builder: the compiled binary's image, its layers assembled in-process.
//!
//! Layers are split by how often they change, so a code change re-uploads only the last one:
//! 1. runtime (scratch only): system files (users, /tmp, CA bundle; see `scratch`) and the
//!    binary's runtime closure from the host (loader and libraries, when dynamically linked);
//! 2. includes: files from `include`;
//! 3. the binary.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, IntoDiagnostic, Result, WrapErr};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::base_check;
use crate::image::base_fs::BaseFs;
use crate::image::contents::{BaseRecord, ContentFile, Contents, FileOrigin, HostPackages};
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
    let (layers, mut contents) = {
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
    let mut image = image::assemble(base.as_ref(), layers, &run).into_diagnostic()?;
    if let (Some(b), Base::Image(reference)) = (&base, &target.image.base) {
        contents.base = Some(BaseRecord {
            reference: reference.to_string(),
            repository: format!("{}/{}", reference.registry, reference.repository),
            digest: b.digest.clone(),
        });
    }
    image.contents = contents;
    shell.detail(&format!(
        "image {} ({} layers)",
        image.digest,
        image.layers.len()
    ));
    Ok(image)
}

/// Our layers, in the order the image lists them (see the module doc), and what they hold
/// besides the binary. Each is announced to `early_upload` as soon as it is written, while the
/// others may still be compressing.
fn make_layers(
    target: &BuildSpec,
    binary: &Path,
    base: Option<&BaseFs>,
    early_upload: Option<&dyn EarlyUpload>,
    shell: &Shell,
) -> Result<(Vec<Layer>, Contents)> {
    // One handle for this image's layers: the first lookup prunes the cache directory.
    let cache = LayerCache::new(target.layer_cache.clone(), shell.clone());
    let mut pending = Vec::new();
    let mut record = RuntimeRecord::default();
    if base.is_none() {
        let (runtime, r) = runtime_layer(target, binary, shell)?;
        record = r;
        if !runtime.is_empty() {
            pending.push(PendingLayer::new(
                runtime,
                layer_slot(&cache, target, "runtime"),
            ));
        }
    }
    let has_includes = match includes_layer(target, base)? {
        Some(includes) => {
            let mut includes = PendingLayer::new(includes, layer_slot(&cache, target, "includes"));
            includes.context = Some("reading the files of `include`".into());
            pending.push(includes);
            true
        }
        None => false,
    };
    let mut app = PendingLayer::new(
        binary_layer(target, binary, base),
        layer_slot(&cache, target, "binary"),
    );
    app.context = Some(format!("reading {}", binary.display()));
    pending.push(app);
    let layers = finish_layers(pending, target.image.compression, early_upload, shell)?;
    let contents = contents_of(&layers, has_includes, record);
    Ok((layers, contents))
}

/// What the runtime layer's files are, known while it is listed.
#[derive(Default)]
struct RuntimeRecord {
    /// By image path; files not named here were written by us ([`FileOrigin::System`]).
    origins: HashMap<String, FileOrigin>,
    /// By host path, the key of the package it belongs to.
    owners: BTreeMap<PathBuf, String>,
    packages: Vec<crate::dpkg::Package>,
    host_packages: HostPackages,
}

/// The files of our layers but the last (the binary's), with where each came from. A path two
/// layers hold is the later layer's in the image, and so in the list.
fn contents_of(layers: &[Layer], has_includes: bool, record: RuntimeRecord) -> Contents {
    let Some((binary, others)) = layers.split_last() else {
        return Contents::default();
    };
    let mut files = BTreeMap::new();
    for (i, layer) in others.iter().enumerate() {
        let includes = has_includes && i + 1 == others.len();
        for f in &layer.files {
            let origin = if includes {
                match &f.host_path {
                    Some(host_path) => FileOrigin::Included {
                        host_path: host_path.clone(),
                    },
                    None => FileOrigin::System,
                }
            } else {
                record
                    .origins
                    .get(&f.path)
                    .cloned()
                    .unwrap_or(FileOrigin::System)
            };
            let package = match (&origin, &f.host_path) {
                (FileOrigin::Included { .. }, _) | (_, None) => None,
                (_, Some(host)) => record.owners.get(host).cloned(),
            };
            let file = ContentFile {
                path: f.path.clone(),
                sha256: f.sha256.clone(),
                sha1: f.sha1.clone(),
                size: f.size,
                origin,
                package,
            };
            files.insert(f.path.clone(), file);
        }
    }
    for f in &binary.files {
        files.remove(&f.path);
    }
    let files: Vec<ContentFile> = files.into_values().collect();
    // A package whose files were all replaced by later layers is not in the image.
    let packages = record
        .packages
        .into_iter()
        .filter(|p| {
            let key = p.key();
            files.iter().any(|f| f.package.as_ref() == Some(&key))
        })
        .collect();
    Contents {
        base: None,
        files,
        packages,
        host_packages: record.host_packages,
    }
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
/// from the host; then the records of the host packages those files came from.
fn runtime_layer(
    target: &BuildSpec,
    binary: &Path,
    shell: &Shell,
) -> Result<(LayerBuilder, RuntimeRecord)> {
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
    let record = host_records(
        &mut runtime,
        &closure,
        Path::new(crate::dpkg::ADMIN_DIR),
        Path::new(crate::dpkg::OS_RELEASE),
        shell,
    );
    Ok((runtime, record))
}

/// Names where each host file of the runtime layer came from, attributes them to the host's
/// dpkg packages (the database at `admin_dir`, the distribution from `os_release`), and adds
/// those packages' records to the layer.
fn host_records(
    runtime: &mut LayerBuilder,
    closure: &runtime_closure::RuntimeClosure,
    admin_dir: &Path,
    os_release: &Path,
    shell: &Shell,
) -> RuntimeRecord {
    let mut record = RuntimeRecord::default();
    let interpreter = match &closure.linkage {
        Linkage::Dynamic { interpreter } => Some(interpreter.as_path()),
        Linkage::Static => None,
    };
    let host = runtime.host_files();
    for (image_path, host_path) in &host {
        let host_path = host_path.clone();
        let origin = if let Some(f) = closure
            .files
            .iter()
            .find(|f| f.image_path.as_os_str() == image_path.as_str())
        {
            if Some(f.image_path.as_path()) == interpreter {
                FileOrigin::Loader { host_path }
            } else {
                FileOrigin::Library { host_path }
            }
        } else if image_path == scratch::CA_BUNDLE {
            FileOrigin::CaBundle { host_path }
        } else if image_path.starts_with("/usr/share/zoneinfo/") {
            FileOrigin::Tzdata { host_path }
        } else {
            FileOrigin::System
        };
        record.origins.insert(image_path.clone(), origin);
    }
    if host.is_empty() {
        return record;
    }
    let paths: Vec<PathBuf> = host.into_iter().map(|(_, h)| h).collect();
    record.host_packages = match crate::dpkg::attribute(admin_dir, &paths) {
        Ok(Some(attribution)) => {
            let os = crate::dpkg::OsRelease::read(os_release).unwrap_or_default();
            record.owners = attribution.owners;
            record.packages = attribution.packages.into_values().collect();
            let etc = os_release.parent().unwrap_or(Path::new("/etc"));
            scratch::add_package_records(runtime, &record.packages, &os, etc);
            shell.detail(&format!(
                "host files from {} dpkg packages: {}",
                record.packages.len(),
                record
                    .packages
                    .iter()
                    .map(|p| format!("{} {}", p.key(), p.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            HostPackages::Dpkg { os }
        }
        Ok(None) => HostPackages::Unavailable {
            reason: format!(
                "this host has no dpkg database ({}): the files copied from it are listed by digest, not by package",
                admin_dir.display()
            ),
        },
        Err(e) => {
            shell.warn(&format!(
                "the host's packages could not be read, so the SBOM lists the host files by digest only: {e}"
            ));
            HostPackages::Unavailable {
                reason: format!("the dpkg database could not be read: {e}"),
            }
        }
    };
    record
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
        digest: Digest::sha256_of(&bytes),
        manifest,
        manifest_media_type: media_type,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A host with `lib/libz.so.1` (dpkg: zlib1g) and `lib/libmine.so` (no package); `dpkg`:
    /// whether it has a dpkg database. Returns the closure of a binary loading both.
    fn host(root: &Path, dpkg: bool) -> runtime_closure::RuntimeClosure {
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/libz.so.1"), "z").unwrap();
        std::fs::write(root.join("lib/libmine.so"), "m").unwrap();
        std::fs::write(root.join("os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
        std::fs::write(root.join("debian_version"), "12.11\n").unwrap();
        if dpkg {
            std::fs::create_dir_all(root.join("dpkg/info")).unwrap();
            std::fs::write(
                root.join("dpkg/status"),
                "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\n\
                 Source: zlib\nVersion: 1:1.2.13.dfsg-1\n",
            )
            .unwrap();
            std::fs::write(
                root.join("dpkg/info/zlib1g:amd64.list"),
                format!("/.\n{}/lib/libz.so.1\n", root.display()),
            )
            .unwrap();
        }
        let file = |name: &str| runtime_closure::RuntimeFile {
            image_path: PathBuf::from(format!("/lib/{name}")),
            host_path: root.join("lib").join(name),
        };
        runtime_closure::RuntimeClosure {
            linkage: Linkage::Dynamic {
                interpreter: "/lib64/ld-linux-x86-64.so.2".into(),
            },
            files: vec![file("libmine.so"), file("libz.so.1")],
        }
    }

    fn records(dpkg: bool) -> (RuntimeRecord, Vec<Layer>) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let closure = host(&root, dpkg);
        let mut runtime = LayerBuilder::new("runtime", 0);
        for f in &closure.files {
            runtime
                .add_host_file(&f.image_path.to_string_lossy(), &f.host_path)
                .unwrap();
        }
        let shell = Shell::capture(crate::shell::Verbosity::Normal);
        let record = host_records(
            &mut runtime,
            &closure,
            &root.join("dpkg"),
            &root.join("os-release"),
            &shell,
        );
        let layers = vec![runtime.finish().unwrap(), layer(&[("/app", "binary")])];
        (record, layers)
    }

    #[test]
    fn host_files_are_attributed_and_their_packages_recorded_in_the_image() {
        let (record, layers) = records(true);
        let written: Vec<&str> = layers[0].files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            written,
            [
                "/etc/debian_version",
                "/etc/os-release",
                "/lib/libmine.so",
                "/lib/libz.so.1",
                "/var/lib/dpkg/status.d/zlib1g"
            ]
        );
        let contents = contents_of(&layers, false, record);
        assert!(matches!(contents.host_packages, HostPackages::Dpkg { .. }));
        assert_eq!(contents.packages.len(), 1);
        let by_path = |p: &str| contents.files.iter().find(|f| f.path == p).unwrap();
        assert_eq!(
            by_path("/lib/libz.so.1").package.as_deref(),
            Some("zlib1g:amd64")
        );
        assert!(matches!(
            by_path("/lib/libz.so.1").origin,
            FileOrigin::Library { .. }
        ));
        assert_eq!(by_path("/lib/libmine.so").package, None);
        assert_eq!(
            by_path("/var/lib/dpkg/status.d/zlib1g").origin,
            FileOrigin::System
        );
    }

    #[test]
    fn without_dpkg_the_files_are_kept_and_the_gap_is_recorded() {
        let (record, layers) = records(false);
        let written: Vec<&str> = layers[0].files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            written,
            ["/lib/libmine.so", "/lib/libz.so.1"],
            "no package records"
        );
        let contents = contents_of(&layers, false, record);
        assert!(
            matches!(&contents.host_packages, HostPackages::Unavailable { reason } if reason.contains("no dpkg database")),
            "{:?}",
            contents.host_packages
        );
        assert_eq!(contents.files.len(), 2);
        assert!(contents.files.iter().all(|f| f.package.is_none()));
    }

    fn layer(files: &[(&str, &'static str)]) -> Layer {
        let mut b = LayerBuilder::new("t", 0);
        for (path, content) in files {
            b.add_bytes(path, Bytes::from_static(content.as_bytes()), 0o644);
        }
        b.finish().unwrap()
    }

    #[test]
    fn a_path_a_later_layer_replaces_is_listed_once_as_the_later_layers() {
        let layers = [
            layer(&[("/etc/passwd", "ours"), ("/etc/group", "g")]),
            layer(&[("/etc/passwd", "included"), ("/usr/local/bin/app", "x")]),
            layer(&[("/usr/local/bin/app", "binary")]),
        ];
        let contents = contents_of(&layers, true, RuntimeRecord::default());
        let paths: Vec<&str> = contents.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/etc/group", "/etc/passwd"],
            "the binary is not listed"
        );
        let passwd = &contents.files[1];
        assert_eq!(
            passwd.sha256,
            crate::reference::Digest::sha256_of(b"included").hex()
        );
    }
}
