//! Reproducible layers: sorted entries, uid/gid 0, fixed modes and mtimes, one gzip setting.
//!
//! A layer is streamed, never held in memory: tar entries go through a hashing writer (the
//! diff_id) into the parallel compressor, whose output is hashed (the digest) on its way to a
//! file in the on-disk cache. The finished [`Layer`] is a descriptor and the path of that file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
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

/// Gets a copy of a layer's compressed bytes while they are written to the layer cache: the
/// early upload of a layer that starts before its compression ends. Dropped without `finish`
/// when the layer could not be made.
pub trait EarlyUploadStream: Send {
    /// The next compressed bytes. False: the stream takes no more (its upload failed) and is not
    /// given more; the layer is still written to the cache.
    fn write(&mut self, bytes: &[u8]) -> bool;
    /// The layer is in the cache (whether or not the stream took every byte).
    fn finish(self: Box<Self>, layer: &Layer);
}

/// Writes to `inner`, and copies what was written to an early upload's stream once the bytes are
/// known to be new.
///
/// The slot's inputs changed on `stat`, but a touched file, a fresh checkout or a restored cache
/// changes that too while the content stays the same. Output is deterministic, so the same
/// content gives byte for byte the blob this slot wrote last time: while the new bytes equal
/// that blob's, nothing is streamed (an unchanged layer is then checked with HEAD, never sent
/// again). At the first difference the stream is opened and given the matching prefix, read
/// back from the old blob, then everything after it. Without an old blob (a fresh layer cache)
/// the content may well be in the registry already, so nothing is streamed either.
struct EarlyUploadTee<'t, W> {
    inner: W,
    state: TeeState,
    open: &'t mut dyn FnMut() -> Option<Box<dyn EarlyUploadStream>>,
    /// Reused for reading the old blob while comparing.
    compare: Vec<u8>,
}

enum TeeState {
    /// Every byte so far equals the old blob's; `matched` of them.
    Matching {
        previous: File,
        matched: u64,
    },
    Streaming(Box<dyn EarlyUploadStream>),
    /// The stream took no more (its upload gave up); it still hears of the finished layer.
    Refused(Box<dyn EarlyUploadStream>),
    /// Not streamed: no old blob, or no stream given.
    Off,
}

impl<'t, W: Write> EarlyUploadTee<'t, W> {
    fn new(
        inner: W,
        previous: Option<PathBuf>,
        open: &'t mut dyn FnMut() -> Option<Box<dyn EarlyUploadStream>>,
    ) -> Self {
        let state = match previous.and_then(|p| File::open(p).ok()) {
            Some(previous) => TeeState::Matching {
                previous,
                matched: 0,
            },
            None => TeeState::Off,
        };
        EarlyUploadTee {
            inner,
            state,
            open,
            compare: Vec::new(),
        }
    }

    /// The stream, if the bytes turned out new (whether or not it took them all).
    fn into_stream(self) -> Option<Box<dyn EarlyUploadStream>> {
        match self.state {
            TeeState::Streaming(stream) | TeeState::Refused(stream) => Some(stream),
            TeeState::Matching { .. } | TeeState::Off => None,
        }
    }

    fn give(mut stream: Box<dyn EarlyUploadStream>, bytes: &[u8]) -> TeeState {
        if stream.write(bytes) {
            TeeState::Streaming(stream)
        } else {
            TeeState::Refused(stream)
        }
    }

    /// Whether `bytes` continue the old blob exactly.
    fn still_matching(compare: &mut Vec<u8>, previous: &mut File, bytes: &[u8]) -> bool {
        compare.resize(bytes.len(), 0);
        previous.read_exact(compare).is_ok() && compare[..] == *bytes
    }

    /// The new bytes part from the old blob's: opens the stream and gives it the common prefix.
    fn diverged(&mut self, previous: &mut File, matched: u64) -> TeeState {
        let Some(mut stream) = (self.open)() else {
            return TeeState::Off;
        };
        if previous.seek(SeekFrom::Start(0)).is_err() {
            return TeeState::Refused(stream);
        }
        let mut prefix = previous.take(matched);
        let mut piece = vec![0; 256 * 1024];
        loop {
            match prefix.read(&mut piece) {
                Ok(0) => return TeeState::Streaming(stream),
                Ok(n) if stream.write(&piece[..n]) => {}
                // The stream gave up, or the old blob cannot be read back: the stream is short
                // of bytes, so the upload's digest check fails and it falls back.
                Ok(_) | Err(_) => return TeeState::Refused(stream),
            }
        }
    }
}

impl<W: Write> Write for EarlyUploadTee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = &buf[..n];
        self.state = match std::mem::replace(&mut self.state, TeeState::Off) {
            TeeState::Matching {
                mut previous,
                matched,
            } => {
                if Self::still_matching(&mut self.compare, &mut previous, written) {
                    TeeState::Matching {
                        previous,
                        matched: matched + n as u64,
                    }
                } else {
                    match self.diverged(&mut previous, matched) {
                        TeeState::Streaming(stream) => Self::give(stream, written),
                        other => other,
                    }
                }
            }
            TeeState::Streaming(stream) => Self::give(stream, written),
            other => other,
        };
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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

    /// Records what a stream was given; refuses more after `take` bytes.
    struct Recording {
        got: std::sync::Arc<std::sync::Mutex<(Vec<u8>, Option<Digest>)>>,
        take: usize,
    }

    impl EarlyUploadStream for Recording {
        fn write(&mut self, bytes: &[u8]) -> bool {
            let mut got = self.got.lock().unwrap();
            if got.0.len() >= self.take {
                return false;
            }
            got.0.extend_from_slice(bytes);
            true
        }

        fn finish(self: Box<Self>, layer: &Layer) {
            self.got.lock().unwrap().1 = Some(layer.digest.clone());
        }
    }

    #[test]
    fn a_stream_gets_the_cache_files_bytes_only_when_they_differ_from_the_slots_last_blob() {
        let (_dir, cache, file) = setup();
        let mut content = sample_text(3 << 20);
        std::fs::write(&file, &content).unwrap();
        set_mtime(&file, 1_700_000_000);
        let _later = pretend_later(Duration::from_secs(60));
        let streamed = |take: usize| {
            let got = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), None)));
            let mut b = LayerBuilder::new("t", 0);
            b.add_host_path("/data/f", &file).unwrap();
            let recording = Recording {
                got: got.clone(),
                take,
            };
            let mut stream = Some(Box::new(recording) as Box<dyn EarlyUploadStream>);
            let mut asked = false;
            let layer = b
                .finish_with_cache(&cache, Codec::Gzip, &|_| {}, &mut || {
                    asked = true;
                    stream.take()
                })
                .unwrap();
            let got = got.lock().unwrap().clone();
            (layer, asked, got)
        };
        // A fresh layer cache: the registry may have these bytes already, nothing is streamed.
        let (first, asked, _) = streamed(usize::MAX);
        assert_eq!(first.origin, Origin::Written);
        assert!(!asked);

        // Unchanged: the cache answers, no stream is asked for.
        let (again, asked, _) = streamed(usize::MAX);
        assert_eq!(again.origin, Origin::Unchanged);
        assert!(!asked);

        // Touched, same content: read again, but the bytes equal the last blob's, so no stream.
        set_mtime(&file, 1_700_000_100);
        let (touched, asked, _) = streamed(usize::MAX);
        assert_eq!(touched.origin, Origin::Written);
        assert_eq!(touched.digest, first.digest);
        assert!(!asked);

        // Changed near the end: the stream gets every byte of the new blob, the common prefix
        // (read back from the old blob) included, and hears of the finished layer.
        let at = content.len() - 1000;
        content[at] ^= 0xff;
        std::fs::write(&file, &content).unwrap();
        set_mtime(&file, 1_700_000_200);
        let (changed, asked, (bytes, finished)) = streamed(usize::MAX);
        assert!(asked);
        assert_ne!(changed.digest, first.digest);
        assert_eq!(bytes, std::fs::read(changed.file.path()).unwrap());
        assert_eq!(finished, Some(changed.digest.clone()));

        // A stream that stops taking is still told of the finished layer, which is whole.
        content[at] ^= 0xff;
        std::fs::write(&file, &content).unwrap();
        set_mtime(&file, 1_700_000_300);
        let (third, asked, (bytes, finished)) = streamed(1);
        assert!(asked);
        assert!(!bytes.is_empty() && (bytes.len() as u64) < third.size);
        assert_eq!(third.digest, first.digest);
        assert_eq!(finished, Some(third.digest));
    }

    fn sample_text(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| b"adapt-push tap "[i % 15] ^ (i / 7919) as u8)
            .collect()
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
