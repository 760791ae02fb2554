//! Registry-less destinations (`--tarball`, `--oci-layout`, `--load`): an image with every blob
//! at hand, named as the cluster would pull it. The manifest bytes are the very ones a registry
//! push sends, so the digest is the same whatever the destination.
//!
//! No layer is held whole in memory: cached layers stay files in the layer cache, a base image's
//! layers are streamed into a temporary directory, and writers copy them in pieces.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use miette::{IntoDiagnostic, Result, WrapErr};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::file_lock;
use crate::image::layer::CacheFile;
use crate::image::{Blob, BlobSource, Image};
use crate::reference::Digest;
use crate::registry::pool::Clients;
use crate::shell::Shell;
use crate::spec::Destination;

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum BlobData {
    /// Small blobs: the manifest, the config, generated files.
    Memory(Bytes),
    /// A layer in the layer cache: its digest is checked as it is read.
    Cache(CacheFile),
    /// A base layer downloaded (and checked) for this run.
    File(PathBuf),
}

/// One blob of a local image.
#[derive(Debug, Clone)]
pub struct LocalBlob {
    pub digest: Digest,
    pub size: u64,
    pub data: BlobData,
}

impl LocalBlob {
    fn in_memory(digest: Digest, bytes: Bytes) -> LocalBlob {
        LocalBlob {
            digest,
            size: bytes.len() as u64,
            data: BlobData::Memory(bytes),
        }
    }

    /// A reader of exactly `size` bytes: a file that is shorter or longer fails rather than
    /// writing an archive whose headers lie. A layer cache file is hashed as it is read, and
    /// its last read fails with [`DamagedBlob`] if it does not hold the blob.
    pub fn open(&self) -> std::io::Result<ExactReader<'_, Box<dyn Read + '_>>> {
        let (inner, check): (Box<dyn Read + '_>, _) = match &self.data {
            BlobData::Memory(bytes) => (Box::new(bytes.as_ref()), None),
            BlobData::File(path) => (Box::new(self.open_file(path)?), None),
            BlobData::Cache(file) => (
                Box::new(self.open_file(file.path())?),
                Some((Sha256::new(), file.clone())),
            ),
        };
        Ok(ExactReader {
            inner,
            remaining: self.size,
            digest: &self.digest,
            check,
        })
    }

    fn open_file(&self, path: &Path) -> std::io::Result<std::fs::File> {
        let file = std::fs::File::open(path).map_err(|e| with_path(e, path))?;
        let len = file.metadata().map_err(|e| with_path(e, path))?.len();
        if len != self.size {
            return Err(std::io::Error::other(format!(
                "{} has {len} bytes, but blob {} has {}",
                path.display(),
                self.digest,
                self.size
            )));
        }
        Ok(file)
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads exactly as many bytes as announced: ending early is an error, and extra bytes are not
/// read. With a check, the bytes are hashed, and the read that ends the blob fails if they are
/// not the blob.
pub struct ExactReader<'a, R> {
    inner: R,
    remaining: u64,
    digest: &'a Digest,
    check: Option<(Sha256, CacheFile)>,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("a blob ended {} bytes early", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        if let Some((hasher, _)) = &mut self.check {
            hasher.update(&buf[..n]);
        }
        if self.remaining == 0
            && let Some((hasher, file)) = self.check.take()
        {
            let actual = Digest::from_sha256_bytes(&hasher.finalize());
            if self.digest.as_str().starts_with("sha256:") && actual != *self.digest {
                return Err(std::io::Error::other(DamagedBlob {
                    file,
                    expected: self.digest.clone(),
                    actual,
                }));
            }
        }
        Ok(n)
    }
}

/// A layer cache file that does not hold the blob it is named for (changed or damaged on disk).
#[derive(Debug, thiserror::Error)]
#[error("{} holds content with digest {actual}, not {expected}", file.path().display())]
pub struct DamagedBlob {
    pub file: CacheFile,
    pub expected: Digest,
    pub actual: Digest,
}

impl DamagedBlob {
    /// The damaged blob behind `error`, however deep a writer wrapped it.
    fn behind(error: &std::io::Error) -> Option<&DamagedBlob> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = next {
            if let Some(damaged) = e.downcast_ref::<DamagedBlob>() {
                return Some(damaged);
            }
            // An io::Error's `source` skips the error it wraps: look inside it first.
            next = match e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => Some(inner),
                None => e.source(),
            };
        }
        None
    }
}

/// Runs `write`; when it failed reading a damaged layer cache file, has that layer written again
/// (see [`super::remake_damaged`]; `shell` hears of it) and runs `write` again, at most once
/// for each layer. Other failures go through `fail`.
pub fn healing<T>(
    mut write: impl FnMut() -> std::io::Result<T>,
    fail: impl Fn(std::io::Error) -> miette::Report,
    shell: &Shell,
) -> Result<T> {
    let mut remade: Vec<Digest> = Vec::new();
    loop {
        let error = match write() {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        let Some(damaged) = DamagedBlob::behind(&error) else {
            return Err(fail(error));
        };
        if remade.contains(&damaged.expected) {
            return Err(fail(error));
        }
        remade.push(damaged.expected.clone());
        super::remake_damaged(&damaged.file, &damaged.to_string(), shell)?;
    }
}

/// An image whose blobs are all at hand, with the names it goes by.
pub struct LocalImage {
    /// `internal/repository`: the pull reference's repository, without tag or digest.
    pub name: String,
    pub tags: Vec<String>,
    /// The manifest as a blob: its digest is the image's digest.
    pub manifest: LocalBlob,
    pub manifest_media_type: String,
    pub config: LocalBlob,
    pub layers: Vec<LocalBlob>,
    /// Where downloaded base layers are; removed when the last image using it goes.
    _downloads: Option<Arc<tempfile::TempDir>>,
}

impl LocalImage {
    /// `name:tag` for every tag.
    pub fn references(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| format!("{}:{t}", self.name))
            .collect()
    }

    /// Manifest, config and layers: every blob of a layout.
    pub fn blobs(&self) -> impl Iterator<Item = &LocalBlob> {
        std::iter::once(&self.manifest)
            .chain(std::iter::once(&self.config))
            .chain(self.layers.iter())
    }
}

/// Fetches what is still in a registry (a base image's layers) into files, so the image can be
/// written out.
pub async fn materialize(
    image: &Image,
    destination: &Destination,
    clients: &Clients,
) -> Result<LocalImage> {
    let mut downloads: Option<Arc<tempfile::TempDir>> = None;
    let mut layers = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        layers.push(local_blob(layer, clients, &mut downloads).await?);
    }
    let config = local_blob(&image.config, clients, &mut downloads).await?;
    Ok(LocalImage {
        name: destination.pull_name(),
        tags: destination.tags.iter().map(|t| t.to_string()).collect(),
        manifest: LocalBlob::in_memory(image.digest.clone(), image.manifest.clone()),
        manifest_media_type: image.manifest_media_type.clone(),
        config,
        layers,
        _downloads: downloads,
    })
}

async fn local_blob(
    blob: &Blob,
    clients: &Clients,
    downloads: &mut Option<Arc<tempfile::TempDir>>,
) -> Result<LocalBlob> {
    let data = match &blob.source {
        BlobSource::Bytes(b) => BlobData::Memory(b.clone()),
        BlobSource::File(file) => BlobData::Cache(file.clone()),
        BlobSource::Registry {
            registry,
            repository,
        } => {
            let dir = match downloads {
                Some(dir) => dir.clone(),
                None => {
                    let dir = Arc::new(
                        tempfile::Builder::new()
                            .prefix("adapt-push-base-")
                            .tempdir()
                            .into_diagnostic()
                            .wrap_err("creating a temporary directory for base image layers")?,
                    );
                    *downloads = Some(dir.clone());
                    dir
                }
            };
            let path = dir.path().join(blob.digest.hex());
            let fetched = async {
                let client = clients.get(registry).await?;
                let response = client.get_blob(repository, &blob.digest).await?;
                download(response, blob, &path).await
            };
            fetched.await.wrap_err_with(|| {
                format!(
                    "fetching {} from {registry}/{repository} to write it out",
                    blob.description
                )
            })?;
            BlobData::File(path)
        }
    };
    Ok(LocalBlob {
        digest: blob.digest.clone(),
        size: blob.size,
        data,
    })
}

/// How long a registry may send nothing while a blob downloads.
const STALL: Duration = Duration::from_secs(60);

/// Streams a blob's body into `path`, never past the descriptor's size, and checks its digest.
async fn download(mut response: reqwest::Response, blob: &Blob, path: &Path) -> Result<()> {
    if response.content_length().is_some_and(|n| n > blob.size) {
        miette::bail!(
            "the registry announced {} bytes for a blob the manifest says has {}",
            response.content_length().unwrap_or_default(),
            blob.size
        );
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .into_diagnostic()
        .wrap_err_with(|| format!("creating {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(STALL, response.chunk()).await {
            Err(_) => miette::bail!("the registry sent nothing for {}s", STALL.as_secs()),
            Ok(chunk) => chunk.into_diagnostic()?,
        };
        let Some(chunk) = chunk else { break };
        written += chunk.len() as u64;
        if written > blob.size {
            miette::bail!(
                "the registry sent more than the {} bytes the manifest gives this blob",
                blob.size
            );
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .into_diagnostic()
            .wrap_err_with(|| format!("writing {}", path.display()))?;
    }
    file.flush().await.into_diagnostic()?;
    if written != blob.size {
        miette::bail!(
            "the registry sent {written} bytes of a blob the manifest says has {}",
            blob.size
        );
    }
    let actual = Digest::from_sha256_bytes(&hasher.finalize());
    if blob.digest.as_str().starts_with("sha256:") && actual != blob.digest {
        miette::bail!(
            "the blob's content has digest {actual}, not {} as the manifest says",
            blob.digest
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a reader never
/// sees half a file and an interrupted run leaves the old one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |file| {
        use std::io::Write;
        file.write_all(bytes)
    })
}

/// How our temporary files beside an output end: [`sweep_temp_files`] knows them by it.
const TEMP_SUFFIX: &str = ".adapt-push-tmp";

/// Like [`write_atomically`], with the content written by `write` into the temporary file. The
/// file is a user's: created `0666` less the umask, or with the mode the file it replaces has;
/// and a symlink at `path` stays one, its target replaced. The temporary file,
/// `.<name>.<random>.adapt-push-tmp`, is locked while written: one a killed run left is removed
/// by [`sweep_temp_files`].
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (path, mut file) = temp_beside(path)?;
    if let Ok(existing) = std::fs::metadata(&path) {
        let mode = existing.permissions().mode() & 0o7777;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    write(file.as_file_mut())?;
    file.as_file().sync_all()?;
    file.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// Where a write to `path` lands (through symlinks, see [`through_symlinks`]), and a new
/// temporary file in that directory to be renamed over it: `.<name>.<random>.adapt-push-tmp`,
/// `0666` less the umask, locked while open, so that one a killed run left is removed by
/// [`sweep_temp_files`].
pub fn temp_beside(path: &Path) -> std::io::Result<(PathBuf, tempfile::NamedTempFile)> {
    let path = through_symlinks(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(64).collect())
        .unwrap_or_default();
    let file = file_lock::temp_file(dir, &format!(".{name}."), TEMP_SUFFIX)?;
    Ok((path, file))
}

/// Removes our temporary files in `dir` that no run is writing (left by runs that were killed).
pub fn sweep_temp_files(dir: &Path) {
    file_lock::sweep(dir, |name| {
        name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
    });
}

/// Removes our temporary files beside the file `path` (through symlinks) that no run is writing.
pub fn sweep_beside(path: &Path) {
    if let Ok(path) = through_symlinks(path) {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        sweep_temp_files(dir);
    }
}

/// Where a write to `path` lands: through symlinks (40 at most, as the kernel follows) to the
/// file they name, so that replacing it leaves the links in place.
fn through_symlinks(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path).map_err(|e| with_path(e, &path))?;
                // A relative target is relative to the link's directory.
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}
