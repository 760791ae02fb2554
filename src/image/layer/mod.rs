//! Reproducible layers: sorted entries, uid/gid 0, fixed modes and mtimes, one gzip setting.
//!
//! A layer is streamed, never held in memory: tar entries go through a hashing writer (the
//! diff_id) into the parallel compressor, whose output is hashed (the digest) on its way to a
//! file in the on-disk cache. The finished [`Layer`] is a descriptor and the path of that file.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use super::input_cache::LayerCache;
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

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

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
    use super::test_support::{build, entries, set_mtime, setup, unpack};
    use super::*;
    use crate::image::input_cache::pretend_later;
    use std::time::Duration;

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

    #[test]
    fn unchanged_inputs_are_recognised_by_stat_alone() {
        let (_dir, cache, file) = setup();
        // The fingerprint is taken as if a minute had passed: nothing is racy.
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&cache, &file);
        assert_eq!(first.origin, Origin::Written);
        let second = build(&cache, &file);
        assert_eq!(second.origin, Origin::Unchanged);
        assert_eq!(
            (
                &second.digest,
                &second.diff_id,
                second.size,
                second.file.path()
            ),
            (&first.digest, &first.diff_id, first.size, first.file.path())
        );
    }

    #[test]
    fn a_file_rewritten_with_the_same_size_and_mtime_is_read_again() {
        let (_dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&cache, &file);
        // Same second, same nanosecond, same size: only the content (and ctime) differ.
        std::fs::write(&file, "bbbb").unwrap();
        set_mtime(&file, 1_700_000_000);
        let second = build(&cache, &file);
        assert_eq!(second.origin, Origin::Written);
        assert_ne!(second.digest, first.digest);
        assert!(unpack(&second).windows(4).any(|w| w == b"bbbb"));
    }

    #[test]
    fn a_file_replaced_through_a_rename_is_read_again() {
        let (dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&cache, &file);
        let replacement = dir.path().join("f.new");
        std::fs::write(&replacement, "cccc").unwrap();
        set_mtime(&replacement, 1_700_000_000);
        std::fs::rename(&replacement, &file).unwrap();
        let second = build(&cache, &file);
        assert_eq!(second.origin, Origin::Written);
        assert_ne!(second.digest, first.digest);
        assert!(unpack(&second).windows(4).any(|w| w == b"cccc"));
    }

    #[test]
    fn a_touched_but_unchanged_file_is_read_once_and_gives_the_same_layer() {
        let (_dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&cache, &file);
        set_mtime(&file, 1_700_000_100);
        let touched = build(&cache, &file);
        assert_eq!(touched.origin, Origin::Written);
        assert_eq!(touched.digest, first.digest);
        let again = build(&cache, &file);
        assert_eq!(again.origin, Origin::Unchanged);
        assert_eq!(again.digest, first.digest);
    }

    #[test]
    fn inputs_changed_just_now_are_not_trusted_to_stat() {
        let (_dir, cache, file) = setup();
        // Fingerprints taken now: the file's ctime is within the racy window.
        let first = build(&cache, &file);
        let second = build(&cache, &file);
        assert_eq!(second.origin, Origin::Written);
        assert_eq!(second.digest, first.digest);
        let _later = pretend_later(Duration::from_secs(60));
        assert_eq!(build(&cache, &file).origin, Origin::Written);
        assert_eq!(build(&cache, &file).origin, Origin::Unchanged);
    }

    #[test]
    fn a_damaged_blob_is_written_again_and_the_cache_keeps_only_what_is_in_use() {
        let (_dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&cache, &file);
        std::fs::write(first.file.path(), b"junk").unwrap();
        let again = build(&cache, &file);
        assert_eq!(again.origin, Origin::Written);
        assert_eq!(again.digest, first.digest);
        assert_eq!(
            again.digest,
            Digest::sha256_of(&std::fs::read(again.file.path()).unwrap())
        );
        let old = again.file.path().to_path_buf();
        drop(first);
        // A new version replaces the old one in the slot; the old blob stays while it is held
        // in use (`again`, as a run uploading it would)...
        std::fs::write(&file, "changed").unwrap();
        let other = build(&cache, &file);
        assert_ne!(other.digest, again.digest);
        assert!(other.file.path().exists() && old.exists());
        // ...and goes at once when nobody holds it.
        drop(again);
        std::fs::write(&file, "changed again").unwrap();
        let newest = build(&cache, &file);
        assert!(newest.file.path().exists() && other.file.path().exists() && !old.exists());
        let other_digest = other.digest.clone();
        drop((other, newest));
        std::fs::write(&file, "changed").unwrap();
        let back = build(&cache, &file);
        assert_eq!(back.digest, other_digest);
        // The slot's latest layer, nothing else: the README's promise.
        let blobs: Vec<_> = std::fs::read_dir(LayerCache::blobs_dir(&cache.dir))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(blobs, [back.file.path().file_name().unwrap()]);
    }

    /// Two runs of one package share a layer cache (a second terminal, CI jobs on one target
    /// directory): a run replacing the slot's layer must not delete the blob the other found
    /// unchanged and is about to upload; once that run is done, it goes.
    #[test]
    fn a_blob_another_run_uses_is_not_collected_until_it_is_done() {
        let (_dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&cache, &file));
        // Run A finds the layer unchanged: it will upload it.
        let a = build(&cache, &file);
        assert_eq!(a.origin, Origin::Unchanged);
        // Run B, meanwhile, builds a changed input into the same slot.
        std::fs::write(&file, "bbbb-changed").unwrap();
        let b = build(&cache, &file);
        assert_ne!(b.digest, a.digest);
        assert!(
            a.file.path().exists(),
            "the blob run A is uploading was removed"
        );
        let used = a.file.path().to_path_buf();
        drop(a);
        std::fs::write(&file, "cccc-changed").unwrap();
        drop(build(&cache, &file));
        assert!(!used.exists(), "a blob nobody uses nor refers to was kept");
    }

    /// Temporary files of a killed run are removed when the cache is pruned; one a live writer
    /// holds is not.
    #[test]
    fn temporary_files_nobody_writes_are_removed() {
        let (_dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&cache, &file));
        let blobs = LayerCache::blobs_dir(&cache.dir);
        // As a killed run leaves them: no lock held (an older version's too).
        let left = blobs.join(".layer-left");
        std::fs::write(&left, vec![0; 4096]).unwrap();
        let record_left = cache.dir.join(".app-app-includes.json.12345");
        std::fs::write(&record_left, "{").unwrap();
        let live = cache.temp_blob().unwrap();
        // The next layer stored prunes (and the next run's first lookup does).
        std::fs::write(&file, "changed").unwrap();
        drop(build(&cache, &file));
        assert!(!left.exists() && !record_left.exists());
        assert!(
            live.path().exists(),
            "a temporary file being written was removed"
        );
    }
}
