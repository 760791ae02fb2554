//! Reproducible layers: sorted entries, uid/gid 0, fixed modes and mtimes, fixed compression
//! settings (gzip or zstd).
//!
//! A layer is streamed, never held in memory: tar entries go through a hashing writer (the
//! diff_id) into the parallel compressor, whose output is hashed (the digest) on its way to a
//! file in the on-disk cache. The finished [`Layer`] is a descriptor and the path of that file.
//!
//! Here, the entries a [`LayerBuilder`] collects; `merge` places them onto a base image's files
//! as `COPY` does; `write` streams the tar into the layer cache
//! ([`LayerBuilder::finish_with_cache`]); `host_file` reads a host file into the tar;
//! `cache_file` is the finished layer's file ([`CacheFile`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use super::input_cache::{LayerCache, LayerSlot};
use crate::reference::Digest;
use crate::spec::Codec;

mod cache_file;
mod host_file;
mod merge;
#[cfg(test)]
pub(crate) mod test_support;
mod write;

pub use cache_file::CacheFile;
pub(crate) use host_file::special_kind;
use host_file::{at, regular_file};

pub use crate::media_type::{OCI_LAYER_GZIP, OCI_LAYER_ZSTD};

/// A finished, compressed layer, in the on-disk cache.
#[derive(Debug, Clone)]
pub struct Layer {
    /// sha256 of the uncompressed tar: what the image config's `rootfs.diff_ids` lists.
    pub diff_id: Digest,
    /// sha256 of the compressed bytes: what the manifest lists and the registry stores.
    pub digest: Digest,
    /// Length of the compressed bytes.
    pub size: u64,
    /// What the layer holds, for progress output ("runtime libraries", "binary greeter").
    pub description: String,
    /// How this run got the layer.
    pub origin: Origin,
    pub codec: Codec,
    /// The compressed bytes, in the cache's `blobs/sha256/`; uploads read them from here.
    pub file: CacheFile,
    /// Its regular files, sorted by path, with the digests of the bytes the tar holds (for the
    /// SBOM: hashed as they were written, or remembered with the cached layer).
    pub files: Vec<LayerFile>,
}

/// One regular file of a layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerFile {
    /// Absolute path in the image (`/etc/passwd`).
    pub path: String,
    /// sha256 of its content, 64 lowercase hex digits.
    pub sha256: String,
    /// sha1 of its content, 40 lowercase hex digits (SPDX requires it of every file).
    pub sha1: String,
    pub size: u64,
    /// The host file it was read from; `None` for generated content.
    pub host_path: Option<PathBuf>,
}

/// How a layer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Its inputs' stat matched the cache's record: nothing was read.
    Unchanged,
    /// Its inputs were read, tarred and compressed.
    Written,
}

#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32, uid: u64, gid: u64 },
    File { source: Source, mode: u32 },
    Symlink { target: PathBuf },
}

/// Directories we create: 0755, root's.
const DEFAULT_DIR: Entry = Entry::Dir {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

#[derive(Debug, Clone)]
enum Source {
    Host(PathBuf),
    Bytes(Bytes),
}

/// Collects entries by image path, then writes them in sorted order.
#[derive(Debug)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
    mtime: u64,
    description: String,
}

impl LayerBuilder {
    /// `mtime` is stamped on every entry (SOURCE_DATE_EPOCH or 0).
    pub fn new(description: impl Into<String>, mtime: u64) -> LayerBuilder {
        LayerBuilder {
            entries: BTreeMap::new(),
            mtime,
            description: description.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Total size of the host files, as `stat` says now (for progress).
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File {
                    source: Source::Host(p),
                    ..
                } => std::fs::metadata(p).map_or(0, |m| m.len()),
                _ => 0,
            })
            .sum()
    }

    /// The host files listed so far: image path (absolute) and host path.
    pub fn host_files(&self) -> Vec<(String, PathBuf)> {
        self.entries
            .iter()
            .filter_map(|(path, e)| match e {
                Entry::File {
                    source: Source::Host(p),
                    ..
                } => Some((format!("/{path}"), p.clone())),
                _ => None,
            })
            .collect()
    }

    /// Adds a host file at `image_path`, keeping only whether it is executable. Anything but
    /// a regular file (a FIFO, a socket, a device) is an error naming it.
    pub fn add_host_file(&mut self, image_path: &str, host_path: &Path) -> io::Result<()> {
        let meta = std::fs::metadata(host_path).map_err(|e| at(host_path, e))?;
        regular_file(host_path, &meta)?;
        let mode = if is_executable(&meta) { 0o755 } else { 0o644 };
        self.insert(
            image_path,
            Entry::File {
                source: Source::Host(host_path.to_path_buf()),
                mode,
            },
        );
        Ok(())
    }

    /// Adds a host file with an explicit mode.
    pub fn add_host_file_mode(&mut self, image_path: &str, host_path: &Path, mode: u32) {
        self.insert(
            image_path,
            Entry::File {
                source: Source::Host(host_path.to_path_buf()),
                mode,
            },
        );
    }

    /// Adds a file with these contents (generated files: /etc/passwd).
    pub fn add_bytes(&mut self, image_path: &str, bytes: Bytes, mode: u32) {
        self.insert(
            image_path,
            Entry::File {
                source: Source::Bytes(bytes),
                mode,
            },
        );
    }

    /// Adds a directory with its own mode and owner (uid = gid): `/tmp` 1777.
    pub fn add_dir(&mut self, image_path: &str, mode: u32, owner: u64) {
        self.insert(
            image_path,
            Entry::Dir {
                mode,
                uid: owner,
                gid: owner,
            },
        );
    }

    pub fn add_symlink(&mut self, image_path: &str, target: &str) {
        self.insert(
            image_path,
            Entry::Symlink {
                target: PathBuf::from(target),
            },
        );
    }

    /// Adds a host file or a whole directory tree (walked sorted). Symlinks are kept as links,
    /// as `COPY` keeps them, never followed; FIFOs, sockets and devices are errors naming them.
    pub fn add_host_path(&mut self, image_path: &str, host_path: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(host_path).map_err(|e| at(host_path, e))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(host_path).map_err(|e| at(host_path, e))?;
            self.insert(image_path, Entry::Symlink { target });
        } else if meta.is_dir() {
            self.insert(image_path, DEFAULT_DIR);
            let mut children: Vec<_> = std::fs::read_dir(host_path)
                .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
                .map_err(|e| at(host_path, e))?;
            children.sort();
            for name in children {
                // Lossy names could merge two files into one entry: refuse them instead.
                let Some(utf8) = name.to_str() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: file names in an image must be UTF-8",
                            host_path.join(&name).display()
                        ),
                    ));
                };
                let child_image = format!("{}/{utf8}", image_path.trim_end_matches('/'));
                self.add_host_path(&child_image, &host_path.join(&name))?;
            }
        } else {
            self.add_host_file(image_path, host_path)?;
        }
        Ok(())
    }

    fn insert(&mut self, image_path: &str, entry: Entry) {
        let path = normalize(image_path);
        // Parent directories are explicit entries so every extractor creates them with our modes.
        let mut parent = String::new();
        for component in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            self.entries.entry(parent.clone()).or_insert(DEFAULT_DIR);
        }
        self.entries.insert(path, entry);
    }
}

fn normalize(image_path: &str) -> String {
    image_path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::test_support::entries;
    use super::*;

    #[test]
    fn sorted_with_parents_and_fixed_metadata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "a").unwrap();
        let mut builder = LayerBuilder::new("t", 1_700_000_000);
        builder.add_host_path("/srv/data", dir.path()).unwrap();
        builder.add_bytes("/app/bin", Bytes::from_static(b"\x7fELF"), 0o755);
        let layer = builder.finish().unwrap();
        let names: Vec<String> = entries(&layer).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "app/",
                "app/bin",
                "srv/",
                "srv/data/",
                "srv/data/b.txt",
                "srv/data/sub/",
                "srv/data/sub/a.txt"
            ]
        );
        for (name, mode, mtime, uid) in entries(&layer) {
            assert_eq!(mtime, 1_700_000_000, "{name}");
            assert_eq!(uid, 0, "{name}");
            let expected = if name.ends_with('/') || name == "app/bin" {
                0o755
            } else {
                0o644
            };
            assert_eq!(mode, expected, "{name}");
        }
    }
}
