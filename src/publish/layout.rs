//! `--oci-layout DIR`: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`).
//! An existing layout is added to: blobs already there are kept, and an index entry is replaced
//! only when it carries the same `org.opencontainers.image.ref.name`. Runs writing one layout at
//! once take turns on `DIR/.adapt-push.lock`.

use std::path::Path;

use miette::{Diagnostic, Result};
use serde_json::{Value, json};

use super::local::{
    LocalImage, healing, sweep_temp_files, write_atomically, write_atomically_with,
};
use crate::file_lock;
use crate::image::OCI_INDEX;
use crate::shell::Shell;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's name for the image, read by `ctr import` and newer `docker load`.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("--oci-layout {dir}: {reason}")]
#[diagnostic(help("give a new or empty directory, or an existing OCI image layout"))]
pub struct LayoutError {
    dir: String,
    reason: String,
}

/// Index entries for `images`: one per tag, named by the full reference `name:tag`.
pub fn index_entries(images: &[LocalImage]) -> Vec<Value> {
    let mut entries = Vec::new();
    for image in images {
        for reference in image.references() {
            entries.push(json!({
                "mediaType": image.manifest_media_type,
                "digest": image.manifest.digest.as_str(),
                "size": image.manifest.size,
                "annotations": { REF_NAME: reference, CONTAINERD_NAME: reference },
            }));
        }
    }
    entries
}

/// `index.json` with `entries` added to `existing` (entries of the same name replaced).
pub fn merged_index(existing: Option<Value>, entries: Vec<Value>) -> Value {
    let mut manifests: Vec<Value> = existing
        .as_ref()
        .and_then(|v| v.get("manifests"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let name = |v: &Value| {
        v.get("annotations")
            .and_then(|a| a.get(REF_NAME))
            .and_then(|n| n.as_str())
            .map(String::from)
    };
    for entry in entries {
        let new_name = name(&entry);
        manifests.retain(|m| new_name.is_none() || name(m) != new_name);
        manifests.push(entry);
    }
    let mut index = existing.unwrap_or_else(|| json!({}));
    index["schemaVersion"] = json!(2);
    index["mediaType"] = json!(OCI_INDEX);
    index["manifests"] = Value::Array(manifests);
    index
}

/// Writes `images` into the layout `dir`. Runs writing one layout take turns (a lock file in
/// it): each reads `index.json` and writes it back with its entries added, so none is lost.
/// A wait for another run's lock, and a damaged layer written again, are told to `shell`.
pub fn write_layout(dir: &Path, images: &[LocalImage], shell: &Shell) -> Result<()> {
    let fail = |reason: String| LayoutError {
        dir: dir.display().to_string(),
        reason,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(fail("exists and is not a directory".into()).into());
    }
    let marker = dir.join("oci-layout");
    let index_path = dir.join("index.json");
    // Refused before anything is made in it. A lock file alone says a run is starting a layout.
    if !dir.join(file_lock::LOCK_FILE).exists() && holds_other_files(dir, &marker, &index_path) {
        return Err(fail("is not empty and not an OCI image layout".into()).into());
    }
    let _lock = file_lock::lock_dir(dir, &|text| shell.status("Waiting", text))
        .map_err(|e| fail(e.to_string()))?;
    let existing = if index_path.is_file() {
        let text =
            std::fs::read(&index_path).map_err(|e| fail(format!("cannot read index.json: {e}")))?;
        Some(
            serde_json::from_slice::<Value>(&text)
                .ok()
                .filter(|v| v.get("manifests").is_some_and(Value::is_array))
                .ok_or_else(|| fail("index.json is not an OCI image index".into()))?,
        )
    } else {
        if holds_other_files(dir, &marker, &index_path) {
            return Err(fail("is not empty and not an OCI image layout".into()).into());
        }
        None
    };
    // The marker first: a run killed before index.json still leaves a layout to add to.
    write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| fail(format!("cannot write oci-layout: {e}")))?;
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .map_err(|e| fail(format!("cannot create {}: {e}", blobs.display())))?;
    sweep_temp_files(dir);
    sweep_temp_files(&blobs);
    for image in images {
        for blob in image.blobs() {
            let path = blobs.join(blob.digest.hex());
            if path.metadata().is_ok_and(|m| m.len() == blob.size) {
                continue;
            }
            // Copied in pieces: a layer is never read whole into memory.
            healing(
                || {
                    write_atomically_with(&path, |file| {
                        std::io::copy(&mut blob.open()?, file).map(|_| ())
                    })
                },
                |e| fail(format!("cannot write {}: {e}", path.display())).into(),
                shell,
            )?;
        }
    }
    let index = merged_index(existing, index_entries(images));
    let text = serde_json::to_vec_pretty(&index).map_err(|e| fail(e.to_string()))?;
    write_atomically(&index_path, &text)
        .map_err(|e| fail(format!("cannot write index.json: {e}")))?;
    Ok(())
}

/// Whether `dir` has files but is no layout (no `oci-layout`, no `index.json`); our lock file
/// does not count.
fn holds_other_files(dir: &Path, marker: &Path, index: &Path) -> bool {
    let others = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name() != file_lock::LOCK_FILE)
    });
    others && !marker.is_file() && !index.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_the_same_name_are_replaced_and_others_kept() {
        let old = json!({"schemaVersion": 2, "manifests": [
            {"digest": "sha256:a", "annotations": {REF_NAME: "x:1"}},
            {"digest": "sha256:b", "annotations": {REF_NAME: "y:1"}},
        ]});
        let merged = merged_index(
            Some(old),
            vec![json!({"digest": "sha256:c", "annotations": {REF_NAME: "x:1"}})],
        );
        let digests: Vec<&str> = merged["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, vec!["sha256:b", "sha256:c"]);
        assert_eq!(merged["mediaType"], OCI_INDEX);
    }
}
