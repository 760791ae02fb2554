//! An image as the publishers see it: manifest bytes, a config blob and layer blobs, each blob
//! in memory, in a file of the layer cache, or still in another repository. How it was made is
//! not recorded here.

pub mod base_fs;
pub mod compress;
pub mod contents;
pub mod early_upload;
pub(crate) mod exact;
pub mod input_cache;
pub mod layer;
pub mod scratch;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use oci_spec::image::{
    Config, Descriptor, History, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType,
};

use crate::reference::{Digest, Registry, Repository};
use layer::Layer;

pub use crate::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX,
    OCI_MANIFEST,
};

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobSource {
    Bytes(Bytes),
    /// A compressed layer in the on-disk layer cache, read in pieces when uploaded; whoever
    /// reads it checks its digest, and has it written again if it is damaged.
    File(layer::CacheFile),
    /// Still in a registry (a base image's layer): mount it or stream it across.
    Registry {
        registry: Registry,
        repository: Repository,
    },
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub source: BlobSource,
    /// For progress output: "binary greeter", "base layer 2/3".
    pub description: String,
}

/// A complete single-platform image, ready to publish.
#[derive(Debug, Clone)]
pub struct Image {
    /// The exact manifest bytes; the digest is computed over these.
    pub manifest: Bytes,
    pub manifest_media_type: String,
    pub digest: Digest,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// What the image holds besides the binary (for the SBOM; publishers ignore it).
    pub contents: contents::Contents,
}

/// A base layer's media type in our manifest's family (gzip'd tars only; others kept).
fn layer_media_type(media_type: &str, docker_family: bool) -> String {
    match media_type {
        layer::OCI_LAYER_GZIP if docker_family => DOCKER_LAYER_GZIP.to_string(),
        DOCKER_LAYER_GZIP if !docker_family => layer::OCI_LAYER_GZIP.to_string(),
        other => other.to_string(),
    }
}

impl Image {
    /// The same image with Docker schema 2 media types (for registries that refuse OCI): same
    /// config and layer bytes, so only the manifest (and its digest) changes. `None` if it
    /// already is one, or a layer has a type Docker schema 2 cannot name.
    pub fn as_docker_schema2(&self) -> Option<Image> {
        if self.manifest_media_type != OCI_MANIFEST {
            return None;
        }
        let mut manifest: serde_json::Value = serde_json::from_slice(&self.manifest).ok()?;
        let object = manifest.as_object_mut()?;
        object.insert("mediaType".into(), DOCKER_MANIFEST.into());
        // Schema 2 has no annotations.
        object.remove("annotations");
        object
            .get_mut("config")?
            .as_object_mut()?
            .insert("mediaType".into(), DOCKER_CONFIG.into());
        let mut layers = self.layers.clone();
        for (value, blob) in object
            .get_mut("layers")?
            .as_array_mut()?
            .iter_mut()
            .zip(&mut layers)
        {
            let docker = match blob.media_type.as_str() {
                layer::OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => DOCKER_LAYER_GZIP,
                _ => return None,
            };
            blob.media_type = docker.to_string();
            value
                .as_object_mut()?
                .insert("mediaType".into(), docker.into());
        }
        let bytes = canonical_json(&manifest).ok()?;
        let mut config = self.config.clone();
        config.media_type = DOCKER_CONFIG.to_string();
        Some(Image {
            digest: Digest::sha256_of(&bytes),
            manifest: bytes,
            manifest_media_type: DOCKER_MANIFEST.to_string(),
            config,
            layers,
            contents: self.contents.clone(),
        })
    }

    /// Config first, then layers: every blob the manifest needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// A base image fetched from a registry: its manifest and config, layers left where they are.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub registry: Registry,
    pub repository: Repository,
    pub manifest: ImageManifest,
    /// The digest of `manifest`'s bytes (the platform's, when the base is an index).
    pub digest: Digest,
    /// Docker schema 2 or OCI; our manifest keeps the same family.
    pub manifest_media_type: String,
    pub config: ImageConfiguration,
}

/// What our config says about the process, besides the layers.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub user: Option<String>,
    /// Seconds since the epoch for `created`.
    pub epoch: u64,
    /// GOARCH-style architecture of the binary: "amd64", "arm64".
    pub architecture: String,
    /// Manifest media types; `None`: OCI, or the base image's family.
    pub family: Option<Family>,
}

/// Which media types the manifest, config and layers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Oci,
    /// Docker image manifest v2, schema 2.
    Docker,
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("the base image's {what} could not be read: {source}")]
    Base {
        what: &'static str,
        source: oci_spec::OciSpecError,
    },
    #[error("could not write the image {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("the base image has {layers} layers but its config lists {diff_ids} diff_ids")]
    Inconsistent { layers: usize, diff_ids: usize },
    #[error(
        "zstd layers need an OCI image, but the base image is a Docker schema 2 image, which has no zstd layer type; use `compression = \"gzip\"` or an OCI base image"
    )]
    ZstdOnDockerBase,
}

/// The media types of one image: manifest, config and (gzip'd) layers.
struct MediaTypeSet {
    docker: bool,
    manifest: &'static str,
    config: &'static str,
    layer_gzip: &'static str,
}

impl MediaTypeSet {
    /// The family asked for, or else the base image's (OCI on scratch).
    fn choose(base: Option<&BaseImage>, run: &RunConfig) -> MediaTypeSet {
        let docker = match run.family {
            Some(f) => f == Family::Docker,
            None => base.is_some_and(|b| b.manifest_media_type == DOCKER_MANIFEST),
        };
        if docker {
            MediaTypeSet {
                docker,
                manifest: DOCKER_MANIFEST,
                config: DOCKER_CONFIG,
                layer_gzip: DOCKER_LAYER_GZIP,
            }
        } else {
            MediaTypeSet {
                docker,
                manifest: OCI_MANIFEST,
                config: OCI_CONFIG,
                layer_gzip: layer::OCI_LAYER_GZIP,
            }
        }
    }
}

/// Puts our layers on top of the base (or on nothing) and writes config and manifest.
pub fn assemble(
    base: Option<&BaseImage>,
    layers: Vec<Layer>,
    run: &RunConfig,
) -> Result<Image, AssembleError> {
    let types = MediaTypeSet::choose(base, run);
    let created = rfc3339(run.epoch);
    let mut config = starting_config(base, run, &created);
    let mut blobs = match base {
        Some(b) => base_layer_blobs(b, types.docker)?,
        None => Vec::new(),
    };
    if types.docker && layers.iter().any(|l| l.codec == crate::spec::Codec::Zstd) {
        return Err(AssembleError::ZstdOnDockerBase);
    }
    add_our_layers(
        &mut config,
        &mut blobs,
        &layers,
        base.is_none(),
        &types,
        &created,
    );
    config.set_config(Some(process_config(&config, run)));
    let config_blob = config_blob(&config, types.config)?;
    let manifest_bytes = manifest_bytes(&config_blob, &blobs, run, &types)?;
    Ok(Image {
        digest: Digest::sha256_of(&manifest_bytes),
        manifest: manifest_bytes,
        manifest_media_type: types.manifest.to_string(),
        config: config_blob,
        layers: blobs,
        contents: contents::Contents::default(),
    })
}

/// The base's config (or an empty Linux one) for our architecture and creation time.
fn starting_config(base: Option<&BaseImage>, run: &RunConfig, created: &str) -> ImageConfiguration {
    let mut config = match base {
        Some(b) => b.config.clone(),
        None => {
            let mut c = ImageConfiguration::default();
            c.set_os(oci_spec::image::Os::Linux);
            c
        }
    };
    config.set_architecture(oci_spec::image::Arch::from(run.architecture.as_str()));
    config.set_created(Some(created.to_string()));
    config.set_author(None);
    config
}

/// The base image's layers, left in its repository, with media types of our family.
fn base_layer_blobs(base: &BaseImage, docker_family: bool) -> Result<Vec<Blob>, AssembleError> {
    let count = base.manifest.layers().len();
    let diff_ids = base.config.rootfs().diff_ids().len();
    if diff_ids != count {
        return Err(AssembleError::Inconsistent {
            layers: count,
            diff_ids,
        });
    }
    let mut blobs = Vec::with_capacity(count);
    for (i, d) in base.manifest.layers().iter().enumerate() {
        blobs.push(Blob {
            digest: Digest::parse(d.digest().as_ref()).map_err(|e| AssembleError::Base {
                what: "manifest",
                source: oci_spec::OciSpecError::Other(e.0),
            })?,
            size: d.size(),
            media_type: layer_media_type(d.media_type().as_ref(), docker_family),
            source: BlobSource::Registry {
                registry: base.registry.clone(),
                repository: base.repository.clone(),
            },
            description: format!("base layer {}/{count}", i + 1),
        });
    }
    Ok(blobs)
}

/// Our layers on top: a diff_id (and a history entry, when the base keeps history) in the
/// config, a blob in the manifest.
fn add_our_layers(
    config: &mut ImageConfiguration,
    blobs: &mut Vec<Blob>,
    layers: &[Layer],
    on_scratch: bool,
    types: &MediaTypeSet,
    created: &str,
) {
    let had_history = config.history().as_ref().is_some_and(|h| !h.is_empty());
    for l in layers {
        config
            .rootfs_mut()
            .diff_ids_mut()
            .push(l.diff_id.to_string());
        if had_history || on_scratch {
            let mut h = History::default();
            h.set_created(Some(created.to_string()));
            h.set_created_by(Some(format!("cargo adapt-push: {}", l.description)));
            config.history_mut().get_or_insert_with(Vec::new).push(h);
        }
        blobs.push(Blob {
            digest: l.digest.clone(),
            size: l.size,
            media_type: match l.codec {
                crate::spec::Codec::Gzip => types.layer_gzip.to_string(),
                crate::spec::Codec::Zstd => layer::OCI_LAYER_ZSTD.to_string(),
            },
            source: BlobSource::File(l.file.clone()),
            description: l.description.clone(),
        });
    }
}

/// The process settings: our entrypoint, no CMD, the base's environment with ours on top (and
/// a PATH), user and labels.
fn process_config(config: &ImageConfiguration, run: &RunConfig) -> Config {
    let mut process = config.config().clone().unwrap_or_default();
    process.set_entrypoint(Some(run.entrypoint.clone()));
    // A base image's CMD would become arguments to our binary: drop it, as ko does.
    process.set_cmd(None);
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    for (name, value) in &run.env {
        env.retain(|e| e.split('=').next() != Some(name.as_str()));
        env.push(format!("{name}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    process.set_env(Some(env));
    if let Some(u) = &run.user {
        process.set_user(Some(u.clone()));
    }
    let mut labels: HashMap<String, String> = process.labels().clone().unwrap_or_default();
    labels.extend(run.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    process.set_labels((!labels.is_empty()).then_some(labels));
    process
}

fn config_blob(config: &ImageConfiguration, media_type: &str) -> Result<Blob, AssembleError> {
    let bytes = canonical_json(config).map_err(|source| AssembleError::Encode {
        what: "config",
        source,
    })?;
    Ok(Blob {
        digest: Digest::sha256_of(&bytes),
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
        source: BlobSource::Bytes(bytes),
        description: "config".into(),
    })
}

/// The manifest's exact bytes (annotations only in the OCI family: schema 2 has none).
fn manifest_bytes(
    config: &Blob,
    layers: &[Blob],
    run: &RunConfig,
    types: &MediaTypeSet,
) -> Result<Bytes, AssembleError> {
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(types.manifest))
        .config(descriptor(config))
        .layers(layers.iter().map(descriptor).collect::<Vec<_>>())
        .build()
        .map_err(|source| AssembleError::Base {
            what: "manifest",
            source,
        })?;
    if !types.docker && !run.annotations.is_empty() {
        manifest.set_annotations(Some(
            run.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    canonical_json(&manifest).map_err(|source| AssembleError::Encode {
        what: "manifest",
        source,
    })
}

fn descriptor(blob: &Blob) -> Descriptor {
    let digest: oci_spec::image::Digest = blob
        .digest
        .as_str()
        .parse()
        .unwrap_or_else(|_| unreachable!("Digest is validated on construction"));
    Descriptor::new(MediaType::from(blob.media_type.as_str()), blob.size, digest)
}

/// JSON with object keys sorted, so maps (labels, annotations) serialize the same every run.
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Bytes, serde_json::Error> {
    // serde_json's Map is a BTreeMap (no preserve_order feature), so this sorts every object.
    let value = serde_json::to_value(value)?;
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}

/// `1970-01-01T00:00:00Z` for an epoch second count (UTC, no leap seconds).
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use layer::LayerBuilder;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    fn sample_layer(content: &'static [u8]) -> Layer {
        let mut b = LayerBuilder::new("binary app", 0);
        b.add_bytes("/app", Bytes::from_static(content), 0o755);
        b.finish().unwrap()
    }

    #[test]
    fn scratch_image_is_consistent_and_reproducible() {
        let run = RunConfig {
            entrypoint: vec!["/app".into()],
            env: vec![("RUST_LOG".into(), "info".into())],
            labels: [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
            .into(),
            annotations: [(
                "org.opencontainers.image.version".to_string(),
                "1.0.0".to_string(),
            )]
            .into(),
            user: Some("65532".into()),
            epoch: 0,
            architecture: "amd64".into(),
            family: None,
        };
        let a = assemble(None, vec![sample_layer(b"x")], &run).unwrap();
        let b = assemble(None, vec![sample_layer(b"x")], &run).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.digest, Digest::sha256_of(&a.manifest));

        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(manifest["config"]["digest"], a.config.digest.as_str());
        assert_eq!(manifest["layers"][0]["digest"], a.layers[0].digest.as_str());
        let BlobSource::Bytes(config_bytes) = &a.config.source else {
            panic!()
        };
        let config: serde_json::Value = serde_json::from_slice(config_bytes).unwrap();
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["config"]["Entrypoint"][0], "/app");
        assert_eq!(config["config"]["User"], "65532");
        assert!(
            config["config"]["Env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "RUST_LOG=info")
        );
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            sample_layer(b"x").diff_id.as_str()
        );

        let c = assemble(None, vec![sample_layer(b"y")], &run).unwrap();
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn docker_schema2_form_keeps_the_blobs_and_changes_only_media_types() {
        let run = RunConfig {
            entrypoint: vec!["/app".into()],
            annotations: [("a".to_string(), "b".to_string())].into(),
            architecture: "amd64".into(),
            ..RunConfig::default()
        };
        let oci = assemble(None, vec![sample_layer(b"x")], &run).unwrap();
        let docker = oci.as_docker_schema2().unwrap();
        assert_eq!(docker.manifest_media_type, DOCKER_MANIFEST);
        assert_eq!(docker.digest, Digest::sha256_of(&docker.manifest));
        assert_ne!(docker.digest, oci.digest);
        assert_eq!(docker.config.digest, oci.config.digest);
        let m: serde_json::Value = serde_json::from_slice(&docker.manifest).unwrap();
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(m["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(m["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
        assert_eq!(m["layers"][0]["digest"], oci.layers[0].digest.as_str());
        assert!(m.get("annotations").is_none());
        // Asked for directly, the docker family gives the same manifest.
        let direct = assemble(
            None,
            vec![sample_layer(b"x")],
            &RunConfig {
                family: Some(Family::Docker),
                ..run
            },
        )
        .unwrap();
        assert_eq!(direct.digest, docker.digest);
        assert!(docker.as_docker_schema2().is_none());
    }
}
