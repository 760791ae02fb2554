//! `--tarball FILE`: an OCI image layout in a tar, plus the `manifest.json` that `docker load`
//! reads (as go-containerregistry's tarball and crane do), so Docker 20.10 and newer engines load
//! it. Entries are sorted with fixed owner, mode and time, so the same images give the same file.

use std::io::Write;
use std::path::Path;

use miette::{Diagnostic, Result};
use serde_json::json;

use super::layout::{index_entries, merged_index};
use super::local::{LocalBlob, LocalImage, healing, sweep_beside, write_atomically_with};
use crate::shell::Shell;

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

/// Writes the archive to `out`, each blob read in pieces from where it is.
pub fn write_archive<W: Write>(out: W, images: &[LocalImage], tags: Tags) -> std::io::Result<W> {
    let mut files: Vec<(String, Entry)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for image in images {
        for blob in image.blobs() {
            if seen.insert(blob.digest.to_string()) {
                files.push((
                    format!("blobs/sha256/{}", blob.digest.hex()),
                    Entry::Blob(blob),
                ));
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
                "Config": format!("blobs/sha256/{}", image.config.digest.hex()),
                "RepoTags": repo_tags,
                "Layers": image.layers.iter()
                    .map(|b| format!("blobs/sha256/{}", b.digest.hex()))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    files.push((
        "manifest.json".into(),
        Entry::Small(serde_json::to_vec(&docker_manifest)?),
    ));
    files.push((
        "index.json".into(),
        Entry::Small(serde_json::to_vec(&merged_index(
            None,
            index_entries(images),
        ))?),
    ));
    files.push((
        "oci-layout".into(),
        Entry::Small(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    ));
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    for (path, entry) in &files {
        match entry {
            Entry::Small(bytes) => {
                let mut header = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())?;
            }
            Entry::Blob(blob) => {
                let mut header = header(tar::EntryType::Regular, 0o644, blob.size);
                tar.append_data(&mut header, path, blob.open()?)?;
            }
        }
    }
    tar.into_inner()
}

/// A file of the archive: a blob of an image, or a small file made here.
enum Entry<'a> {
    Blob(&'a LocalBlob),
    Small(Vec<u8>),
}

/// Writes the archive into a new temporary file (for `--load`), read back in pieces.
pub fn archive_file(images: &[LocalImage], tags: Tags) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("adapt-push-load-")
        .suffix(".tar")
        .tempfile()?;
    write_buffered(file.as_file_mut(), images, tags)?;
    Ok(file)
}

fn write_buffered(
    file: &mut std::fs::File,
    images: &[LocalImage],
    tags: Tags,
) -> std::io::Result<()> {
    let writer = write_archive(std::io::BufWriter::new(file), images, tags)?;
    writer.into_inner().map_err(|e| e.into_error())?.flush()
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

pub fn write_tarball(path: &Path, images: &[LocalImage], shell: &Shell) -> Result<()> {
    let fail = |reason: String| TarballError {
        path: path.display().to_string(),
        reason,
    };
    sweep_beside(path);
    healing(
        || write_atomically_with(path, |file| write_buffered(file, images, Tags::First)),
        |e| fail(e.to_string()).into(),
        shell,
    )
}
