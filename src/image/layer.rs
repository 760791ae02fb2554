//! Reproducible layers: sorted entries, uid/gid 0, fixed modes and mtimes, one gzip setting.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use super::base_fs::{BaseFs, Kind};
use super::exact::ExactReader;
use crate::reference::Digest;

/// The gzip level every layer uses. One setting everywhere, or digests drift between machines.
const GZIP_LEVEL: u32 = 6;

pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A finished, compressed layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// sha256 of the uncompressed tar: what the image config's `rootfs.diff_ids` lists.
    pub diff_id: Digest,
    /// sha256 of the compressed bytes: what the manifest lists and the registry stores.
    pub digest: Digest,
    pub bytes: Bytes,
    /// What the layer holds, for progress output ("runtime libraries", "binary greeter").
    pub description: String,
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

    /// Adds a host file at `image_path`, keeping only whether it is executable.
    pub fn add_host_file(&mut self, image_path: &str, host_path: &Path) -> io::Result<()> {
        let meta = std::fs::metadata(host_path)?;
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

    /// Makes the layer merge with `base` the way `COPY` does: a destination below a base
    /// symlink lands at the link's target (`/bin/x` with `/bin -> usr/bin` is `/usr/bin/x`); no
    /// entry replaces a directory or a directory symlink the base has. Directories the base has
    /// are written with the base's own mode and owner: an extractor creates a parent missing from
    /// a layer with 0755, and that upper directory would hide the base's (`/tmp` 1777).
    pub fn merge_onto(&mut self, base: &BaseFs) {
        let entries = std::mem::take(&mut self.entries);
        for (path, entry) in entries {
            let is_dir = matches!(entry, Entry::Dir { .. });
            // A directory of ours follows a base link at its own name too; a file or link of
            // ours replaces a base link at its name (as COPY does), but not one above it.
            let resolved = base.resolve(&path, is_dir).unwrap_or_else(|| path.clone());
            if base.is_dir(&resolved) && !is_dir {
                // A file over a base directory would hide the directory: keep the directory.
                continue;
            }
            self.entries.insert(resolved, entry);
        }
        // Every parent, as the base has it, or ours when the base lacks it.
        let paths: Vec<String> = self.entries.keys().cloned().collect();
        for path in paths {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                parent = p;
                self.entries
                    .entry(parent.to_string())
                    .or_insert(DEFAULT_DIR);
            }
        }
        for (path, entry) in self.entries.iter_mut() {
            if let (Entry::Dir { .. }, Some(node)) = (&entry, base.get(path))
                && node.kind == Kind::Dir
            {
                *entry = Entry::Dir {
                    mode: node.mode,
                    uid: node.uid,
                    gid: node.gid,
                };
            }
        }
    }

    /// Adds a host file or a whole directory tree (walked sorted; symlinks kept as links).
    pub fn add_host_path(&mut self, image_path: &str, host_path: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(host_path)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(host_path)?;
            self.insert(image_path, Entry::Symlink { target });
        } else if meta.is_dir() {
            self.insert(image_path, DEFAULT_DIR);
            let mut children: Vec<_> = std::fs::read_dir(host_path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
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

    /// Writes the tar, compresses it, and hashes both forms.
    #[cfg(test)]
    pub fn finish(self) -> io::Result<Layer> {
        self.finish_with_cache(None)
    }

    /// Like [`finish`](Self::finish), but an unchanged layer (same uncompressed tar) is taken
    /// from `cache` instead of being compressed again.
    pub fn finish_with_cache(self, cache: Option<&LayerCache>) -> io::Result<Layer> {
        let (tar, diff_id) = self.write_tar()?;
        if let Some(cache) = cache
            && let Some((bytes, digest)) = cache.get(&diff_id)
        {
            return Ok(Layer {
                diff_id,
                digest,
                bytes,
                description: self.description,
            });
        }
        let compressed = HashingWriter::new(Vec::with_capacity(tar.len() / 2));
        let mut gzip = GzBuilder::new()
            .mtime(0)
            .write(compressed, Compression::new(GZIP_LEVEL));
        gzip.write_all(&tar)?;
        let (bytes, digest) = gzip.finish()?.finish();
        let bytes = Bytes::from(bytes);
        if let Some(cache) = cache {
            cache.put(&diff_id, &digest, &bytes);
        }
        Ok(Layer {
            diff_id,
            digest,
            bytes,
            description: self.description,
        })
    }

    /// The uncompressed tar and its sha256 (the diff_id).
    fn write_tar(&self) -> io::Result<(Vec<u8>, Digest)> {
        let mut tar = tar::Builder::new(HashingWriter::new(Vec::new()));
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(self.mtime);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Dir { mode, uid, gid } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(*uid);
                    header.set_gid(*gid);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), io::empty())?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)?;
                }
                Entry::File { source, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    match source {
                        Source::Bytes(b) => {
                            header.set_size(b.len() as u64);
                            tar.append_data(&mut header, path, &b[..])?;
                        }
                        Source::Host(p) => {
                            let file = std::fs::File::open(p).map_err(|e| {
                                io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                            })?;
                            let size = file.metadata()?.len();
                            header.set_size(size);
                            // The header's size is final: a file that changes meanwhile must not
                            // corrupt the archive.
                            tar.append_data(&mut header, path, ExactReader::new(file, size, p))?;
                        }
                    }
                }
            }
        }
        Ok(tar.into_inner()?.finish())
    }
}

/// Compressed layers from earlier runs, by diff_id, so unchanged layers are not gzipped again.
/// Files are named `<slot>.<diff_id hex>.<digest hex>.gz`; one file is kept per slot (a package's
/// runtime, includes or binary layer), so the cache never grows past the latest push.
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub dir: PathBuf,
    /// Stable name for what this layer is, e.g. "greeter-runtime".
    pub slot: String,
}

impl LayerCache {
    fn get(&self, diff_id: &Digest) -> Option<(Bytes, Digest)> {
        let prefix = format!("{}.{}.", self.slot, diff_id.hex());
        let entry = std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let expected = name.strip_prefix(&prefix)?.strip_suffix(".gz")?.to_string();
        let bytes = std::fs::read(entry.path()).ok()?;
        let digest = Digest::sha256_of(&bytes);
        // A truncated or altered file is ignored and rewritten.
        (digest.hex() == expected).then(|| (Bytes::from(bytes), digest))
    }

    /// Best effort: a cache that cannot be written only costs time.
    fn put(&self, diff_id: &Digest, digest: &Digest, bytes: &[u8]) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let name = format!("{}.{}.{}.gz", self.slot, diff_id.hex(), digest.hex());
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}.", self.slot))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // Write then rename, so a reader never sees half a file.
        let tmp = self.dir.join(format!(".{name}.{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok()
            && std::fs::rename(&tmp, self.dir.join(&name)).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
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

/// Passes bytes through while hashing them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (W, Digest) {
        (
            self.inner,
            Digest::from_sha256_bytes(&self.hasher.finalize()),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(layer: &Layer) -> Vec<(String, u32, u64, u64)> {
        let gz = flate2::read::GzDecoder::new(&layer.bytes[..]);
        let mut archive = tar::Archive::new(gz);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

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
    fn cache_returns_the_same_layer_and_ignores_damaged_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache {
            dir: dir.path().to_path_buf(),
            slot: "app-runtime".into(),
        };
        let build = |content: &'static [u8]| {
            let mut b = LayerBuilder::new("t", 0);
            b.add_bytes("/x", Bytes::from_static(content), 0o644);
            b.finish_with_cache(Some(&cache)).unwrap()
        };
        let fresh = build(b"hello");
        let cached = build(b"hello");
        assert_eq!(fresh.digest, cached.digest);
        assert_eq!(fresh.bytes, cached.bytes);
        // Damage the file: the layer is compressed again and still correct.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&file, b"junk").unwrap();
        let again = build(b"hello");
        assert_eq!(again.digest, fresh.digest);
        assert_eq!(again.digest, Digest::sha256_of(&again.bytes));
        // A new version replaces the old one in its slot.
        let other = build(b"changed");
        assert_ne!(other.digest, fresh.digest);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn same_input_same_digests_and_diff_id_is_uncompressed_hash() {
        let build = || {
            let mut b = LayerBuilder::new("t", 0);
            b.add_bytes("/x", Bytes::from_static(b"hello"), 0o644);
            b.finish().unwrap()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&a.bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(a.diff_id, Digest::sha256_of(&raw));
        assert_eq!(a.digest, Digest::sha256_of(&a.bytes));
        assert_ne!(a.digest, a.diff_id);
    }

    #[test]
    fn merge_onto_a_usr_merged_base_keeps_its_links_and_directories() {
        use crate::image::base_fs::{BaseFs, Kind, LayerListing, Node};
        let n = |kind: Kind, mode: u32| Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            layer: 0,
        };
        let mut base = BaseFs::default();
        base.apply(
            0,
            &LayerListing {
                entries: vec![
                    ("usr".into(), n(Kind::Dir, 0o750)),
                    ("usr/bin".into(), n(Kind::Dir, 0o755)),
                    ("bin".into(), n(Kind::Symlink("usr/bin".into()), 0o777)),
                    ("tmp".into(), n(Kind::Dir, 0o1777)),
                ],
                ..LayerListing::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        let mut b = LayerBuilder::new("t", 0);
        b.add_bytes("/bin/healthcheck", Bytes::from_static(b"#!"), 0o755);
        b.add_host_path("/tmp/seed", dir.path()).unwrap();
        b.add_bytes("/srv/new/file", Bytes::from_static(b"x"), 0o644);
        b.merge_onto(&base);
        let layer = b.finish().unwrap();
        let listed: Vec<(String, u32)> = entries(&layer).into_iter().map(|e| (e.0, e.1)).collect();
        // No entry at /bin (the base's link stays); parents the base has keep its modes.
        assert_eq!(
            listed,
            [
                ("srv/".to_string(), 0o755),
                ("srv/new/".to_string(), 0o755),
                ("srv/new/file".to_string(), 0o644),
                ("tmp/".to_string(), 0o1777),
                ("tmp/seed/".to_string(), 0o755),
                ("tmp/seed/a.txt".to_string(), 0o644),
                ("usr/".to_string(), 0o750),
                ("usr/bin/".to_string(), 0o755),
                ("usr/bin/healthcheck".to_string(), 0o755),
            ]
        );
    }
}
