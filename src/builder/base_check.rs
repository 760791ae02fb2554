//! Reads a base image's filesystem listing and checks, before anything is pushed, that the base
//! can start the binary: its loader and libraries are there, and its C library is new enough.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use miette::{Diagnostic, IntoDiagnostic, Result, WrapErr};
use sha2::{Digest as _, Sha256};

use crate::image::BaseImage;
use crate::image::base_fs::{self, BaseFs, Kind, LayerListing};
use crate::reference::Digest;
use crate::registry::pool::Clients;
use crate::runtime_closure::{self, Requirements};
use crate::shell::Shell;

/// Largest library read out of a base layer for its version definitions.
const MAX_LIBRARY_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("the base image {reference} cannot start {binary}: {}", missing.join("; "))]
#[diagnostic(help(
    "build a static binary (RUSTFLAGS=\"-C target-feature=+crt-static\"), which needs nothing from the base; or choose a base with {wanted}; or set `base = \"scratch\"` to ship the host's loader and libraries with the binary. `check-base = false` turns this check off for bases it cannot judge"
))]
pub struct BaseCheckError {
    pub reference: String,
    pub binary: PathBuf,
    pub missing: Vec<String>,
    pub wanted: String,
}

/// Stacks the base's layers' listings, reading each layer's tar headers once per machine.
/// `None` (with a warning) when a layer is not a tar we can read (zstd, foreign layers): the
/// image is then assembled without merging or checking, as before.
pub async fn load(
    base: &BaseImage,
    clients: &Clients,
    cache_dir: &Path,
    shell: &Shell,
) -> Result<Option<BaseFs>> {
    let mut fs = BaseFs::default();
    for (index, layer) in base.manifest.layers().iter().enumerate() {
        let media_type = layer.media_type().to_string();
        if !(media_type.ends_with(".tar.gzip")
            || media_type.ends_with(".tar+gzip")
            || media_type.ends_with(".tar")
            || media_type.ends_with("diff.tar"))
        {
            shell.warn(&format!(
                "base layer {}/{} is {media_type}, which cannot be read here: our layers are not merged with the base's folders and the base is not checked",
                index + 1,
                base.manifest.layers().len()
            ));
            return Ok(None);
        }
        let digest = Digest::parse(layer.digest().as_ref()).into_diagnostic()?;
        let listing = match LayerListing::cached(cache_dir, &digest) {
            Some(l) => l,
            None => {
                shell.detail(&format!(
                    "reading the file list of base layer {}/{}",
                    index + 1,
                    base.manifest.layers().len()
                ));
                let file = download(base, clients, &digest, layer.size()).await?;
                let listing = tokio::task::spawn_blocking(move || {
                    LayerListing::read(std::io::BufReader::new(file.as_file()))
                })
                .await
                .into_diagnostic()?
                .into_diagnostic()
                .wrap_err_with(|| format!("reading base layer {digest}"))?;
                listing.store(cache_dir, &digest);
                listing
            }
        };
        fs.apply(index, &listing);
    }
    Ok(Some(fs))
}

/// Streams a base layer into a temporary file (never whole in memory), checking size and digest.
async fn download(
    base: &BaseImage,
    clients: &Clients,
    digest: &Digest,
    size: u64,
) -> Result<tempfile::NamedTempFile> {
    let client = clients.get(&base.registry).await?;
    let response = client.get_blob(&base.repository, digest).await?;
    let mut file = tempfile::NamedTempFile::new().into_diagnostic()?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .into_diagnostic()
            .wrap_err_with(|| format!("downloading base layer {digest}"))?;
        written += chunk.len() as u64;
        if written > size {
            miette::bail!("base layer {digest} is larger than the {size} bytes its manifest says");
        }
        hasher.update(&chunk);
        file.write_all(&chunk).into_diagnostic()?;
    }
    let actual = Digest::from_sha256_bytes(&hasher.finalize());
    if digest.as_str().starts_with("sha256:") && actual != *digest {
        miette::bail!("base layer {digest} arrived as {actual}");
    }
    // Read from the start: the writes left the cursor at the end.
    file.as_file_mut().rewind().into_diagnostic()?;
    Ok(file)
}

/// Reads single files out of the base's layers, downloading each layer at most once.
struct LayerFiles<'a> {
    base: &'a BaseImage,
    clients: &'a Clients,
    downloaded: HashMap<usize, tempfile::NamedTempFile>,
}

impl LayerFiles<'_> {
    async fn read(&mut self, layer: usize, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let Some(descriptor) = self.base.manifest.layers().get(layer) else {
            return Ok(None);
        };
        if !self.downloaded.contains_key(&layer) {
            let digest = Digest::parse(descriptor.digest().as_ref()).into_diagnostic()?;
            let file = download(self.base, self.clients, &digest, descriptor.size()).await?;
            self.downloaded.insert(layer, file);
        }
        let Some(file) = self.downloaded.get(&layer) else {
            return Ok(None);
        };
        let handle = file.reopen().into_diagnostic()?;
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            base_fs::read_file_from_layer(std::io::BufReader::new(handle), &path, limit)
        })
        .await
        .into_diagnostic()?
        .into_diagnostic()
    }
}

/// Directories named by the base's `/etc/ld.so.conf` (and the files it includes): what its
/// `ld.so.cache` was made from. Read only when a library is not in the default directories.
async fn ld_so_conf_dirs(fs: &BaseFs, files: &mut LayerFiles<'_>) -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    let mut queue: VecDeque<String> = VecDeque::from(["etc/ld.so.conf".to_string()]);
    let mut seen = HashSet::new();
    while let Some(conf) = queue.pop_front() {
        // Bounded: a base could include itself or thousands of files.
        if !seen.insert(conf.clone()) || seen.len() > 64 {
            continue;
        }
        let Some((path, node)) = fs.file(&conf) else {
            continue;
        };
        let Some(bytes) = files.read(node.layer, &path, 1 << 20).await? else {
            continue;
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(patterns) = line.strip_prefix("include ") {
                for pattern in patterns.split_whitespace() {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_string()
                    } else {
                        format!("/etc/{pattern}")
                    };
                    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", &pattern));
                    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
                    let exact = !name.contains('*');
                    for entry in fs.list_dir(dir) {
                        let file = entry.rsplit('/').next().unwrap_or("");
                        let matches = if exact {
                            file == name
                        } else {
                            file.starts_with(prefix) && file.ends_with(suffix)
                        };
                        if matches {
                            queue.push_back(entry);
                        }
                    }
                }
            } else if !line.starts_with("hwcap") {
                dirs.extend(
                    line.split([' ', '\t', ':', ','])
                        .filter(|d| d.starts_with('/'))
                        .map(|d| d.trim_end_matches('/').to_string()),
                );
            }
        }
    }
    Ok(dirs)
}

/// Fails when the base lacks the binary's loader or a library, or its libraries define older
/// symbol versions than the binary needs.
pub async fn check(
    binary: &Path,
    reference: &str,
    base: &BaseImage,
    fs: &BaseFs,
    clients: &Clients,
    shell: &Shell,
) -> Result<()> {
    let needs = runtime_closure::requirements(binary).into_diagnostic()?;
    let Some(interpreter) = &needs.interpreter else {
        return Ok(()); // static: needs nothing from the base
    };
    let mut files = LayerFiles {
        base,
        clients,
        downloaded: HashMap::new(),
    };
    let mut missing = Vec::new();
    // The loader is often also a DT_NEEDED entry: name it once.
    let mut skip = None;
    if fs.file(interpreter).is_none() {
        missing.push(format!("it has no program interpreter {interpreter}"));
        skip = Some(interpreter.rsplit('/').next().unwrap_or(interpreter));
    }
    let dirs = search_dirs(&needs, fs, &mut files).await?;
    let found = find_libraries(&needs, fs, &dirs, skip, &mut missing);
    let newest = check_symbol_versions(&needs, &found, &mut files, &mut missing).await?;
    if missing.is_empty() {
        shell.detail(&format!(
            "the base has {interpreter} and {} libraries the binary needs",
            found.len()
        ));
        return Ok(());
    }
    Err(BaseCheckError {
        reference: reference.to_string(),
        binary: binary.to_path_buf(),
        missing,
        wanted: newest.map_or_else(
            || "the C library the binary needs".to_string(),
            |newest| format!("glibc {newest} or newer"),
        ),
    }
    .into())
}

/// Where the loader looks: the default directories, and when a library is not there, also
/// where the base's loader cache (`/etc/ld.so.conf`) points.
async fn search_dirs(
    needs: &Requirements,
    fs: &BaseFs,
    files: &mut LayerFiles<'_>,
) -> Result<Vec<String>> {
    let dirs = runtime_closure::library_search_dirs(needs, &[]);
    let in_dirs = |lib: &str| {
        dirs.iter()
            .any(|d| fs.file(&format!("{d}/{lib}")).is_some())
    };
    if needs
        .needed
        .iter()
        .all(|lib| lib.contains('/') || in_dirs(lib))
    {
        return Ok(dirs);
    }
    let conf = ld_so_conf_dirs(fs, files).await?;
    Ok(runtime_closure::library_search_dirs(needs, &conf))
}

/// DT_NEEDED name → (path in the base, layer holding its bytes); what is not found goes to
/// `missing` (except `skip`, the loader already reported missing).
fn find_libraries<'n>(
    needs: &'n Requirements,
    fs: &BaseFs,
    dirs: &[String],
    skip: Option<&str>,
    missing: &mut Vec<String>,
) -> BTreeMap<&'n str, (String, usize)> {
    let mut found = BTreeMap::new();
    for lib in &needs.needed {
        let candidates: Vec<String> = if lib.contains('/') {
            vec![lib.clone()]
        } else {
            dirs.iter().map(|d| format!("{d}/{lib}")).collect()
        };
        match candidates.iter().find_map(|c| fs.file(c)) {
            Some((path, node)) => {
                let path = match &node.kind {
                    Kind::Hardlink(target) => target.clone(),
                    _ => path,
                };
                found.insert(lib.as_str(), (path, node.layer));
            }
            None if skip == Some(lib.as_str()) => {}
            None => missing.push(format!(
                "it has no {lib} (looked in {})",
                if lib.contains('/') {
                    lib.clone()
                } else {
                    dirs.join(", ")
                }
            )),
        }
    }
    found
}

/// Reads each found library that the binary needs symbol versions from and reports the versions
/// it lacks to `missing`; returns the newest glibc asked for when one lacks any.
async fn check_symbol_versions(
    needs: &Requirements,
    found: &BTreeMap<&str, (String, usize)>,
    files: &mut LayerFiles<'_>,
    missing: &mut Vec<String>,
) -> Result<Option<String>> {
    let mut newest_wanted = None;
    for (lib, versions) in &needs.versions {
        let Some((path, layer)) = found.get(lib.as_str()) else {
            continue;
        };
        let Some(bytes) = files.read(*layer, path, MAX_LIBRARY_BYTES).await? else {
            continue;
        };
        let defined =
            runtime_closure::defined_versions(Path::new(path), &bytes).into_diagnostic()?;
        let lacking = runtime_closure::missing_versions(versions, &defined);
        if !lacking.is_empty() {
            if let Some(newest) = newest_glibc(versions) {
                newest_wanted = Some(newest);
            }
            missing.push(format!(
                "its /{path} lacks the symbol versions {} ({lib} there is older than the one the binary was linked against)",
                lacking.join(", ")
            ));
        }
    }
    Ok(newest_wanted)
}

/// The highest `GLIBC_x.y` in a list, for the hint.
fn newest_glibc(versions: &[String]) -> Option<String> {
    versions
        .iter()
        .filter_map(|v| v.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            parts.map(|p| (p, v))
        })
        .max()
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_glibc_compares_numerically() {
        let v: Vec<String> = ["GLIBC_2.9", "GLIBC_2.34", "GLIBC_2.2.5", "GCC_3.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(newest_glibc(&v).as_deref(), Some("2.34"));
    }
}
