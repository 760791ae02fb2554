//! Reproducible layers: sorted entries, uid/gid 0, fixed modes and mtimes, one gzip setting.
//!
//! A layer is streamed, never held in memory: tar entries go through a hashing writer (the
//! diff_id) into the parallel compressor, whose output is hashed (the digest) on its way to a
//! file in the on-disk cache. The finished [`Layer`] is a descriptor and the path of that file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::base_fs::{BaseFs, Kind};
use super::compress::{ParallelGzip, default_threads};
use super::exact::ExactReader;
pub use super::input_cache::LayerCache;
use super::input_cache::{Fingerprint, Recorded};
use crate::reference::Digest;
use crate::spec::Codec;

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

    /// Writes the tar into a scratch cache (tests only), one slot per call; slots are reused
    /// across runs, so the directory keeps only the latest run's blobs.
    #[cfg(test)]
    pub fn finish(self) -> io::Result<Layer> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SLOT: AtomicUsize = AtomicUsize::new(0);
        let cache = LayerCache {
            dir: std::env::temp_dir().join("adapt-push-unit-test-layers"),
            slot: format!("test-{}", SLOT.fetch_add(1, Ordering::Relaxed)),
        };
        self.finish_with_cache(&cache, Codec::Gzip, &|_| {}, &mut || None)
    }

    /// The layer from `cache` when its inputs are unchanged to `stat`; otherwise streams the tar
    /// through the compressor into the cache. `progress` hears of every uncompressed byte; `tap`
    /// is asked for a [`LayerTap`] to copy the compressed bytes to only once they are known to
    /// be new: they differ from the blob this slot wrote last time (see [`Tapped`]). The layer
    /// keeps this builder, to be written again if its cache file turns out damaged.
    pub fn finish_with_cache(
        self,
        cache: &LayerCache,
        codec: Codec,
        progress: &(dyn Fn(u64) + Sync),
        tap: &mut dyn FnMut() -> Option<Box<dyn LayerTap>>,
    ) -> io::Result<Layer> {
        make(&Arc::new(self), cache, codec, progress, tap)
    }
    /// What `stat` says of every input, with everything else that decides the tar's bytes.
    fn fingerprint(&self, codec: Codec) -> io::Result<(String, bool)> {
        let mut fp = Fingerprint::new();
        fp.add(codec.name().as_bytes());
        fp.add(&self.mtime.to_le_bytes());
        for (path, entry) in &self.entries {
            fp.add(path.as_bytes());
            match entry {
                // Modes and owners can come from a base (merge_onto): they decide the bytes too.
                Entry::Dir { mode, uid, gid } => {
                    fp.add(b"dir");
                    fp.add(&mode.to_le_bytes());
                    fp.add(&uid.to_le_bytes());
                    fp.add(&gid.to_le_bytes());
                }
                Entry::Symlink { target } => {
                    use std::os::unix::ffi::OsStrExt;
                    fp.add(b"symlink");
                    fp.add(target.as_os_str().as_bytes());
                }
                Entry::File { source, mode } => {
                    fp.add(b"file");
                    fp.add(&mode.to_le_bytes());
                    match source {
                        Source::Host(p) => fp.add_file(p).map_err(|e| {
                            io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                        })?,
                        Source::Bytes(b) => fp.add(b),
                    }
                }
            }
        }
        Ok(fp.finish())
    }

    /// Writes the uncompressed tar to `out`.
    fn write_tar<W: Write>(&self, out: W) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
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
                        Source::Host(p) => append_host_file(&mut tar, &mut header, path, p)?,
                    }
                }
            }
        }
        tar.into_inner()
    }
}

/// [`LayerBuilder::finish_with_cache`], with the builder shared with the layer it makes.
fn make(
    builder: &Arc<LayerBuilder>,
    cache: &LayerCache,
    codec: Codec,
    progress: &(dyn Fn(u64) + Sync),
    tap: &mut dyn FnMut() -> Option<Box<dyn LayerTap>>,
) -> io::Result<Layer> {
    let (fingerprint, mut racy) = builder.fingerprint(codec)?;
    let file = |path: PathBuf, digest: &Digest, held: File| {
        CacheFile(Arc::new(CacheFileInner {
            path,
            digest: digest.clone(),
            builder: builder.clone(),
            cache: cache.clone(),
            codec,
            held: Mutex::new(held),
            remade: Mutex::new(None),
        }))
    };
    if let Some((recorded, diff_id, digest, path, held)) = cache.unchanged(&fingerprint) {
        return Ok(Layer {
            diff_id,
            size: recorded.size,
            file: file(path, &digest, held),
            digest,
            description: builder.description.clone(),
            origin: Origin::Unchanged,
            codec,
        });
    }
    // A file that changed while it was read makes a layer that is neither its old nor its
    // new content: that attempt is thrown away (a tap it opened is dropped unfinished, so
    // its upload is abandoned) and the layer is written once more; a second change fails.
    let WrittenBlob {
        file: scratch,
        diff_id,
        digest,
        tap,
    } = match write_blob(builder, cache, codec, progress, tap) {
        Err(e) if changed_while_read(&e).is_some() => {
            // What `stat` said before the first read is not what was read.
            racy = true;
            write_blob(builder, cache, codec, progress, tap).map_err(changed_again)?
        }
        other => other?,
    };
    let size = scratch.as_file().metadata()?.len();
    let (path, held) = cache.store(
        scratch,
        &Recorded {
            fingerprint: (!racy).then_some(fingerprint),
            diff_id: diff_id.to_string(),
            digest: digest.to_string(),
            size,
        },
        &digest,
    )?;
    let layer = Layer {
        diff_id,
        size,
        file: file(path, &digest, held),
        digest,
        description: builder.description.clone(),
        origin: Origin::Written,
        codec,
    };
    if let Some(tap) = tap {
        tap.finish(&layer);
    }
    Ok(layer)
}

/// Streams the tar through the compressor into a new temporary file of the cache's blobs.
fn write_blob(
    builder: &LayerBuilder,
    cache: &LayerCache,
    codec: Codec,
    progress: &(dyn Fn(u64) + Sync),
    tap: &mut dyn FnMut() -> Option<Box<dyn LayerTap>>,
) -> io::Result<WrittenBlob> {
    let scratch = cache.temp_blob()?;
    let (diff_id, digest, tap) = {
        let file = Tapped::new(
            BufWriter::with_capacity(256 * 1024, scratch.as_file()),
            cache.previous_blob(),
            tap,
        );
        let gzip = ParallelGzip::with_codec(HashingWriter::new(file), codec, default_threads())?;
        let tar = builder.write_tar(Counting {
            inner: HashingWriter::new(gzip),
            progress,
        })?;
        let (gzip, diff_id) = tar.inner.finish();
        let (mut file, digest) = gzip.finish()?.finish();
        file.inner.flush()?;
        (diff_id, digest, file.into_tap())
    };
    Ok(WrittenBlob {
        file: scratch,
        diff_id,
        digest,
        tap,
    })
}

/// A layer's file in the layer cache, as an image's blob. While any clone is alive the file is
/// held in use (a shared lock), so no run's pruning removes it; and a reader that finds it
/// damaged (its content does not match its digest) has it written again: [`CacheFile::remake`].
#[derive(Clone)]
pub struct CacheFile(Arc<CacheFileInner>);

struct CacheFileInner {
    path: PathBuf,
    digest: Digest,
    /// How the layer was made, to make it again.
    builder: Arc<LayerBuilder>,
    cache: LayerCache,
    codec: Codec,
    /// The blob, open: holds it in use. After a remake, the new one.
    held: Mutex<File>,
    /// What remaking gave, once it was done.
    remade: Mutex<Option<Result<(), String>>>,
}

impl std::fmt::Debug for CacheFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CacheFile").field(&self.0.path).finish()
    }
}

impl CacheFile {
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The layer cache the file is in.
    pub fn cache_dir(&self) -> &Path {
        &self.0.cache.dir
    }

    /// What the layer holds ("binary greeter").
    pub fn description(&self) -> &str {
        &self.0.builder.description
    }

    /// Evicts the file, found damaged by a reader, and writes the layer again from its inputs,
    /// once however many readers ask (they wait for it). True: written again just now (the
    /// caller says so); false: it already was. Fails when the layer cannot be written, or its
    /// inputs changed since the image was built (the image names the digest it had).
    pub fn remake(&self) -> io::Result<bool> {
        let mut remade = self
            .0
            .remade
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(result) = &*remade {
            return result.clone().map(|()| false).map_err(io::Error::other);
        }
        let result = self.remake_now();
        *remade = Some(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        result.map(|()| true)
    }

    fn remake_now(&self) -> io::Result<()> {
        let inner = &self.0;
        inner.cache.evict(&inner.digest)?;
        let layer = make(
            &inner.builder,
            &inner.cache,
            inner.codec,
            &|_| {},
            &mut || None,
        )?;
        if layer.digest != inner.digest {
            return Err(io::Error::other(format!(
                "{}: its inputs changed since the image was built (the layer is now {}, the image names {}); run the push again",
                self.description(),
                layer.digest,
                inner.digest
            )));
        }
        // Holds the new file through the same lock as the layer just made.
        let new = layer
            .file
            .0
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_clone()?;
        *inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }
}

/// A layer's compressed bytes in a scratch file of the blobs directory, not yet stored.
struct WrittenBlob {
    file: tempfile::NamedTempFile,
    diff_id: Digest,
    digest: Digest,
    /// The tap, if the bytes turned out new (see [`Tapped`]).
    tap: Option<Box<dyn LayerTap>>,
}

/// Appends a host file's bytes as one tar entry. The file is opened without blocking (a FIFO
/// put in its place since it was listed must not hang the build) and must still be a regular
/// file. If its size, mtime or ctime moved while it was read, the entry may hold old and new
/// bytes alike: that is a [`ChangedWhileRead`] error, and the caller throws the tar away.
fn append_host_file<W: Write>(
    tar: &mut tar::Builder<W>,
    header: &mut tar::Header,
    path: &str,
    host: &Path,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Checked by path first: opening a socket fails with a bare "No such device or address".
    regular_file(host, &std::fs::metadata(host).map_err(|e| at(host, e))?)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(host)
        .map_err(|e| at(host, e))?;
    let before = file.metadata().map_err(|e| at(host, e))?;
    regular_file(host, &before)?;
    let size = before.len();
    header.set_size(size);
    // The header's size is final: a file that changes meanwhile must not corrupt the archive
    // (one that shrank fails here, one that grew is cut; both are then seen as changed).
    let appended = tar.append_data(header, path, ExactReader::new(&file, size, host));
    let after = file.metadata().map_err(|e| at(host, e))?;
    if stat_moved(&before, &after) {
        return Err(io::Error::other(ChangedWhileRead(host.to_path_buf())));
    }
    appended
}

/// Size, mtime or ctime differ: the file was written to (or its times set) in between.
fn stat_moved(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &std::fs::Metadata| {
        (
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    };
    stamp(before) != stamp(after)
}

/// A host file that changed while it was read into a layer.
#[derive(Debug)]
struct ChangedWhileRead(PathBuf);

impl std::fmt::Display for ChangedWhileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} changed while it was read", self.0.display())
    }
}

impl std::error::Error for ChangedWhileRead {}

/// The error of a second attempt: a file that changed again is given up on.
fn changed_again(e: io::Error) -> io::Error {
    match changed_while_read(&e) {
        Some(path) => io::Error::other(format!(
            "{} changed while it was read, and again when it was read once more (its size or \
             times moved): stop whatever writes it during the build, or include a copy that \
             stays put",
            path.display()
        )),
        None => e,
    }
}

/// The file, if `e` says it changed while it was read.
fn changed_while_read(e: &io::Error) -> Option<&Path> {
    e.get_ref()?
        .downcast_ref::<ChangedWhileRead>()
        .map(|c| c.0.as_path())
}

/// What a layer cannot carry, in words: FIFOs, sockets and devices (`None` for anything else).
pub(crate) fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        None
    }
}

/// An error naming `path` unless `meta` is a regular file's.
fn regular_file(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = special_kind(meta.file_type()).unwrap_or("a directory");
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {kind}: an image holds only regular files, directories and symlinks",
            path.display()
        ),
    ))
}

/// `e`, with the path it concerns.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
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

/// Gets a copy of a layer's compressed bytes while they are written to the layer cache (an
/// upload that starts before the compression ends). Dropped without `finish` when the layer
/// could not be made.
pub trait LayerTap: Send {
    /// The next compressed bytes. False: the tap takes no more (its upload failed) and is not
    /// given more; the layer is still written to the cache.
    fn write(&mut self, bytes: &[u8]) -> bool;
    /// The layer is in the cache (whether or not the tap took every byte).
    fn finish(self: Box<Self>, layer: &Layer);
}

/// Writes to `inner`, and copies what was written to a tap once the bytes are known to be new.
///
/// The slot's inputs changed on `stat`, but a touched file, a fresh checkout or a restored cache
/// changes that too while the content stays the same. Output is deterministic, so the same
/// content gives byte for byte the blob this slot wrote last time: while the new bytes equal
/// that blob's, nothing is streamed (an unchanged layer is then checked with HEAD, never sent
/// again). At the first difference the tap is opened and given the matching prefix, read back
/// from the old blob, then everything after it. Without an old blob (a fresh layer cache) the
/// content may well be in the registry already, so nothing is streamed either.
struct Tapped<'t, W> {
    inner: W,
    state: TapState,
    open: &'t mut dyn FnMut() -> Option<Box<dyn LayerTap>>,
    /// Reused for reading the old blob while comparing.
    compare: Vec<u8>,
}

enum TapState {
    /// Every byte so far equals the old blob's; `matched` of them.
    Matching {
        previous: File,
        matched: u64,
    },
    Streaming(Box<dyn LayerTap>),
    /// The tap took no more (its upload gave up); it still hears of the finished layer.
    Refused(Box<dyn LayerTap>),
    /// Not streamed: no old blob, or no tap given.
    Off,
}

impl<'t, W: Write> Tapped<'t, W> {
    fn new(
        inner: W,
        previous: Option<PathBuf>,
        open: &'t mut dyn FnMut() -> Option<Box<dyn LayerTap>>,
    ) -> Self {
        let state = match previous.and_then(|p| File::open(p).ok()) {
            Some(previous) => TapState::Matching {
                previous,
                matched: 0,
            },
            None => TapState::Off,
        };
        Tapped {
            inner,
            state,
            open,
            compare: Vec::new(),
        }
    }

    /// The tap, if the bytes turned out new (whether or not it took them all).
    fn into_tap(self) -> Option<Box<dyn LayerTap>> {
        match self.state {
            TapState::Streaming(tap) | TapState::Refused(tap) => Some(tap),
            TapState::Matching { .. } | TapState::Off => None,
        }
    }

    fn give(mut tap: Box<dyn LayerTap>, bytes: &[u8]) -> TapState {
        if tap.write(bytes) {
            TapState::Streaming(tap)
        } else {
            TapState::Refused(tap)
        }
    }

    /// Whether `bytes` continue the old blob exactly.
    fn still_matching(compare: &mut Vec<u8>, previous: &mut File, bytes: &[u8]) -> bool {
        compare.resize(bytes.len(), 0);
        previous.read_exact(compare).is_ok() && compare[..] == *bytes
    }

    /// The new bytes part from the old blob's: opens the tap and gives it the common prefix.
    fn diverged(&mut self, previous: &mut File, matched: u64) -> TapState {
        let Some(mut tap) = (self.open)() else {
            return TapState::Off;
        };
        if previous.seek(SeekFrom::Start(0)).is_err() {
            return TapState::Refused(tap);
        }
        let mut prefix = previous.take(matched);
        let mut piece = vec![0; 256 * 1024];
        loop {
            match prefix.read(&mut piece) {
                Ok(0) => return TapState::Streaming(tap),
                Ok(n) if tap.write(&piece[..n]) => {}
                // The tap gave up, or the old blob cannot be read back: the stream is short
                // of bytes, so the upload's digest check fails and it falls back.
                Ok(_) | Err(_) => return TapState::Refused(tap),
            }
        }
    }
}

impl<W: Write> Write for Tapped<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = &buf[..n];
        self.state = match std::mem::replace(&mut self.state, TapState::Off) {
            TapState::Matching {
                mut previous,
                matched,
            } => {
                if Self::still_matching(&mut self.compare, &mut previous, written) {
                    TapState::Matching {
                        previous,
                        matched: matched + n as u64,
                    }
                } else {
                    match self.diverged(&mut previous, matched) {
                        TapState::Streaming(tap) => Self::give(tap, written),
                        other => other,
                    }
                }
            }
            TapState::Streaming(tap) => Self::give(tap, written),
            other => other,
        };
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes bytes through while telling `progress` how many went by.
struct Counting<'a, W> {
    inner: W,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
    use crate::image::input_cache::pretend_later;
    use std::io::Read;
    use std::time::{Duration, SystemTime};

    fn unpack(layer: &Layer) -> Vec<u8> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(layer.file.path()).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        raw
    }

    fn entries(layer: &Layer) -> Vec<(String, u32, u64, u64)> {
        let raw = unpack(layer);
        let mut archive = tar::Archive::new(&raw[..]);
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
    fn same_input_same_digests_and_diff_id_is_uncompressed_hash() {
        let build = || {
            let mut b = LayerBuilder::new("t", 0);
            b.add_bytes("/x", Bytes::from_static(b"hello"), 0o644);
            b.finish().unwrap()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_eq!(a.diff_id, Digest::sha256_of(&unpack(&a)));
        let compressed = std::fs::read(a.file.path()).unwrap();
        assert_eq!(a.digest, Digest::sha256_of(&compressed));
        assert_eq!(a.size, compressed.len() as u64);
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
    /// Records what a tap was given; refuses more after `take` bytes.
    struct Recording {
        got: std::sync::Arc<std::sync::Mutex<(Vec<u8>, Option<Digest>)>>,
        take: usize,
    }

    impl LayerTap for Recording {
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
    fn a_tap_gets_the_cache_files_bytes_only_when_they_differ_from_the_slots_last_blob() {
        let (_dir, cache, file) = setup();
        let mut content = sample_text(3 << 20);
        std::fs::write(&file, &content).unwrap();
        set_mtime(&file, 1_700_000_000);
        let _later = pretend_later(Duration::from_secs(60));
        let tapped = |take: usize| {
            let got = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), None)));
            let mut b = LayerBuilder::new("t", 0);
            b.add_host_path("/data/f", &file).unwrap();
            let recording = Recording {
                got: got.clone(),
                take,
            };
            let mut tap = Some(Box::new(recording) as Box<dyn LayerTap>);
            let mut asked = false;
            let layer = b
                .finish_with_cache(&cache, Codec::Gzip, &|_| {}, &mut || {
                    asked = true;
                    tap.take()
                })
                .unwrap();
            let got = got.lock().unwrap().clone();
            (layer, asked, got)
        };
        // A fresh layer cache: the registry may have these bytes already, nothing is streamed.
        let (first, asked, _) = tapped(usize::MAX);
        assert_eq!(first.origin, Origin::Written);
        assert!(!asked);

        // Unchanged: the cache answers, no tap is asked for.
        let (again, asked, _) = tapped(usize::MAX);
        assert_eq!(again.origin, Origin::Unchanged);
        assert!(!asked);

        // Touched, same content: read again, but the bytes equal the last blob's, so no tap.
        set_mtime(&file, 1_700_000_100);
        let (touched, asked, _) = tapped(usize::MAX);
        assert_eq!(touched.origin, Origin::Written);
        assert_eq!(touched.digest, first.digest);
        assert!(!asked);

        // Changed near the end: the tap gets every byte of the new blob, the common prefix
        // (read back from the old blob) included, and hears of the finished layer.
        let at = content.len() - 1000;
        content[at] ^= 0xff;
        std::fs::write(&file, &content).unwrap();
        set_mtime(&file, 1_700_000_200);
        let (changed, asked, (bytes, finished)) = tapped(usize::MAX);
        assert!(asked);
        assert_ne!(changed.digest, first.digest);
        assert_eq!(bytes, std::fs::read(changed.file.path()).unwrap());
        assert_eq!(finished, Some(changed.digest.clone()));

        // A tap that stops taking is still told of the finished layer, which is whole.
        content[at] ^= 0xff;
        std::fs::write(&file, &content).unwrap();
        set_mtime(&file, 1_700_000_300);
        let (third, asked, (bytes, finished)) = tapped(1);
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

    /// A layer holding one host file, `data/f`, built against `cache`.
    fn build(cache: &LayerCache, file: &Path) -> Layer {
        let mut b = LayerBuilder::new("t", 0);
        b.add_host_path("/data/f", file).unwrap();
        b.finish_with_cache(cache, Codec::Gzip, &|_| {}, &mut || None)
            .unwrap()
    }

    fn set_mtime(path: &Path, secs: u64) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    fn setup() -> (tempfile::TempDir, LayerCache, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache {
            dir: dir.path().join("cache"),
            slot: "app-app-includes".into(),
        };
        let file = dir.path().join("f");
        std::fs::write(&file, "aaaa").unwrap();
        set_mtime(&file, 1_700_000_000);
        (dir, cache, file)
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

    /// A reader that finds a cache file damaged (same size, other bytes: what the size check
    /// at lookup cannot see) has the layer written again, once however often it asks.
    #[test]
    fn a_damaged_cache_file_is_written_again_once_from_the_same_inputs() {
        let (_dir, cache, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&cache, &file));
        let layer = build(&cache, &file);
        assert_eq!(layer.origin, Origin::Unchanged);
        let mut bytes = std::fs::read(layer.file.path()).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(layer.file.path(), &bytes).unwrap();
        assert_ne!(layer.digest, Digest::sha256_of(&bytes));
        assert!(layer.file.remake().unwrap(), "written again");
        assert!(!layer.file.remake().unwrap(), "only once");
        assert_eq!(
            layer.digest,
            Digest::sha256_of(&std::fs::read(layer.file.path()).unwrap())
        );
        // Inputs changed since the image was built: the image's digest cannot be made again.
        let other = build(&cache, &file);
        std::fs::write(other.file.path(), b"xxxx").unwrap();
        std::fs::write(&file, "changed").unwrap();
        let error = other.file.remake().unwrap_err().to_string();
        assert!(error.contains("inputs changed"), "{error}");
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
    }

    /// The bytes of `name` in the layer's tar.
    fn content_of(layer: &Layer, name: &str) -> Vec<u8> {
        let raw = unpack(layer);
        let mut archive = tar::Archive::new(&raw[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some(name) {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                return content;
            }
        }
        panic!("{name} is not in the layer");
    }

    #[test]
    fn fifos_sockets_and_devices_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let with = |name: &str| {
            let sub = dir.path().join(format!("with-{name}"));
            std::fs::create_dir(&sub).unwrap();
            std::fs::write(sub.join("a.txt"), "a").unwrap();
            sub
        };
        let fifo = with("fifo").join("pipe");
        mkfifo(&fifo);
        let socket = with("socket").join("sock");
        let _listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (dir, file, kind) in [
            (fifo.parent().unwrap(), fifo.as_path(), "a FIFO"),
            (socket.parent().unwrap(), socket.as_path(), "a socket"),
            // Named directly (a device node cannot be made here without privileges).
            (
                Path::new("/dev/zero"),
                Path::new("/dev/zero"),
                "a character device",
            ),
        ] {
            let e = LayerBuilder::new("t", 0)
                .add_host_path("/srv", dir)
                .unwrap_err();
            let said = e.to_string();
            assert!(
                said.contains(&file.display().to_string()) && said.contains(kind),
                "{said}"
            );
        }
    }

    #[test]
    fn a_file_replaced_by_a_fifo_before_it_is_read_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "listed as a file").unwrap();
        let mut b = LayerBuilder::new("t", 0);
        b.add_host_path("/f", &file).unwrap();
        std::fs::remove_file(&file).unwrap();
        mkfifo(&file);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(b.finish().map(|_| ()).map_err(|e| e.to_string()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("opening the FIFO blocked the layer (no writer will ever come)");
        let said = result.unwrap_err();
        assert!(
            said.contains(&file.display().to_string()) && said.contains("a FIFO"),
            "{said}"
        );
    }

    /// A 4 MiB file of `fill` with a fixed mtime, in `setup`'s directory.
    fn big_file(file: &Path, fill: u8, mtime: u64) -> Vec<u8> {
        let content = vec![fill; 4 << 20];
        std::fs::write(file, &content).unwrap();
        set_mtime(file, mtime);
        content
    }

    /// Rewrites `file` in place (same inode, as an editor saving over it or a build writing
    /// into it does) with `content`, and moves its mtime to `mtime`.
    fn rewrite_in_place(file: &Path, content: &[u8], mtime: u64) {
        use std::io::Write as _;
        let mut f = std::fs::File::options().write(true).open(file).unwrap();
        f.write_all(content).unwrap();
        f.set_len(content.len() as u64).unwrap();
        drop(f);
        set_mtime(file, mtime);
    }

    /// Builds the layer of `file` at /data/f; `during` runs on the reading thread each time
    /// the tar has grown, with the bytes written so far (so while the file is being read).
    fn build_while(
        cache: &LayerCache,
        file: &Path,
        during: &(dyn Fn(u64) + Sync),
    ) -> io::Result<Layer> {
        let written = std::sync::atomic::AtomicU64::new(0);
        let progress = |n: u64| {
            let before = written.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            during(before + n);
        };
        let mut b = LayerBuilder::new("t", 0);
        b.add_host_path("/data/f", file).unwrap();
        b.finish_with_cache(cache, Codec::Gzip, &progress, &mut || None)
    }

    #[test]
    fn a_file_rewritten_while_it_is_read_is_read_again_never_mixed() {
        let (_dir, cache, file) = setup();
        big_file(&file, b'a', 1_700_000_000);
        let new = vec![b'b'; 4 << 20];
        let changed = std::sync::atomic::AtomicBool::new(false);
        // Once the first MiB is read, the whole file is rewritten: the old code went on
        // reading and made a layer half `a`, half `b`.
        let layer = build_while(&cache, &file, &|written| {
            if written > 1 << 20 && !changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                rewrite_in_place(&file, &new, 1_700_000_100);
            }
        })
        .unwrap();
        assert!(changed.into_inner());
        assert!(content_of(&layer, "data/f") == new, "a mixed layer");
    }

    #[test]
    fn a_file_that_shrinks_while_it_is_read_is_read_again() {
        let (_dir, cache, file) = setup();
        big_file(&file, b'a', 1_700_000_000);
        let shorter = vec![b'c'; 1 << 20];
        let changed = std::sync::atomic::AtomicBool::new(false);
        let layer = build_while(&cache, &file, &|written| {
            if written > 2 << 20 && !changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                rewrite_in_place(&file, &shorter, 1_700_000_100);
            }
        })
        .unwrap();
        assert!(content_of(&layer, "data/f") == shorter);
    }

    #[test]
    fn a_file_that_keeps_changing_while_it_is_read_is_an_error_naming_it() {
        let (_dir, cache, file) = setup();
        big_file(&file, b'a', 1_700_000_000);
        // Every MiB read, the file is rewritten with other bytes and another mtime.
        let rewrites = std::sync::atomic::AtomicU64::new(0);
        let result = build_while(&cache, &file, &|written| {
            let due = written >> 20;
            let done = rewrites.load(std::sync::atomic::Ordering::SeqCst);
            if due > done {
                rewrites.store(due, std::sync::atomic::Ordering::SeqCst);
                let fill = b'd' + (due % 20) as u8;
                rewrite_in_place(&file, &vec![fill; 4 << 20], 1_700_000_000 + due);
            }
        });
        let said = result.unwrap_err().to_string();
        assert!(
            said.contains(&file.display().to_string())
                && said.contains("changed while it was read"),
            "{said}"
        );
        // Read twice (the first attempt, and once more), then given up.
        let read = rewrites.into_inner();
        assert!((5..=9).contains(&read), "{read} MiB read");
    }
}
