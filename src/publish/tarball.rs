//! `--tarball FILE`: an OCI image layout in a tar, plus the `manifest.json` that `docker load`
//! reads (as go-containerregistry's tarball and crane do), so Docker 20.10 and newer engines load
//! it. Entries are sorted with fixed owner, mode and time, so the same images give the same file.

use std::path::Path;

use miette::{Diagnostic, Result};
use serde_json::json;

use super::layout::{index_entries, merged_index};
use super::local::{LocalImage, write_atomically};

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("--tarball {path}: {reason}")]
pub struct TarballError {
    path: String,
    reason: String,
}

/// Which tags `manifest.json` lists: the first (a `--tarball`), or all (what `--load` loads).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tags {
    First,
    All,
}

/// The archive's bytes.
pub fn archive(images: &[LocalImage], tags: Tags) -> std::io::Result<Vec<u8>> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for image in images {
        for (digest, bytes) in image.blobs() {
            if seen.insert(digest.to_string()) {
                files.push((format!("blobs/sha256/{}", digest.hex()), bytes.to_vec()));
            }
        }
    }
    let docker_manifest: Vec<_> = images
        .iter()
        .map(|image| {
            let references = image.references();
            let repo_tags = match tags {
                Tags::First => references.into_iter().take(1).collect(),
                Tags::All => references,
            };
            json!({
                "Config": format!("blobs/sha256/{}", image.config.0.digest.hex()),
                "RepoTags": repo_tags,
                "Layers": image.layers.iter()
                    .map(|(b, _)| format!("blobs/sha256/{}", b.digest.hex()))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&docker_manifest)?,
    ));
    files.push((
        "index.json".into(),
        serde_json::to_vec(&merged_index(None, index_entries(images)))?,
    ));
    files.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    for (path, bytes) in &files {
        let mut header = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut header, path, bytes.as_slice())?;
    }
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

pub fn write_tarball(path: &Path, images: &[LocalImage]) -> Result<()> {
    let fail = |reason: String| TarballError {
        path: path.display().to_string(),
        reason,
    };
    let bytes = archive(images, Tags::First).map_err(|e| fail(e.to_string()))?;
    write_atomically(path, &bytes).map_err(|e| fail(e.to_string()))?;
    Ok(())
}
