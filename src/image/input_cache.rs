//! The on-disk layer cache: compressed layers stored by digest, and for each layer slot (a
//! package's runtime, includes or binary layer) a record of what its inputs looked like to
//! `stat` the last time, so an unchanged layer is recognised without reading a byte of it.
//!
//! Layout under `target/adapt-push/layers`:
//! - `blobs/sha256/<hex>`: compressed layers, the files the registry upload reads;
//! - `<slot>.json`: the slot's latest layer (diff_id, digest, size) and its input fingerprint;
//! - `.adapt-push.lock`: the lock runs (and threads) take turns on to look up, store and prune.
//!
//! The cache keeps each slot's latest blob, and any other blob only while a run holds it in use
//! (a shared lock: see `file_lock`); a killed run's temporary files go as soon as the next run
//! prunes. A blob is trusted by its size when looked up; whoever reads it for a destination
//! checks its digest, and a damaged one is evicted and the layer written again
//! (`layer::CacheFile::remake`).
//!
//! The fingerprint hashes, for every entry, its image path and mode and, for host files, the
//! path, size, mtime and ctime with nanoseconds, inode, device and mode. ctime cannot be set from
//! user space, so a rewrite that restores size and mtime is still seen, and so is a file replaced
//! through a rename (another inode). As in git's "racy" rule, a fingerprint is not recorded when
//! any input changed within [`RACY_WINDOW`] of the moment it was taken: a file written in the same
//! clock tick as the read could change again without its timestamps moving. Such layers are
//! read and hashed again next time.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::file_lock::{self, DirLock};
use crate::reference::Digest;
use crate::shell::Shell;

/// Inputs changed more recently than this before the fingerprint are not trusted to it.
/// Generous against coarse file system timestamps (FAT: 2 s).
pub const RACY_WINDOW: Duration = Duration::from_secs(3);

/// Bumped whenever the layer bytes for the same inputs would change (tar or compression format).
const FORMAT: &str =
    "adapt-push layer v4: gnu tar, parallel gzip 512KiB blocks level 2, stored when incompressible";

/// The layer cache directory, as one image build uses it: compressed layers from earlier runs,
/// by slot and by digest. Clones share whether this build pruned the directory yet; that is
/// the build's state, not the process's, so the next build (in this process or another) prunes
/// again.
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub dir: PathBuf,
    /// Set by the first lookup of the build, which prunes (see `prune_once`).
    pruned: Arc<AtomicBool>,
    /// Told when another run holds the cache's lock and this one waits for it.
    shell: Shell,
}

/// One slot of the layer cache: the latest layer of one kind of one package and platform (its
/// runtime, includes or binary layer), and what its inputs looked like to `stat`.
#[derive(Debug, Clone)]
pub struct LayerSlot {
    pub cache: LayerCache,
    /// Stable name for what this layer is, e.g. "greeter-greeter-runtime".
    pub name: String,
}

/// What the cache remembers of a slot's latest layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded {
    /// None when the inputs were too fresh to trust their stat (see the module doc).
    pub fingerprint: Option<String>,
    pub diff_id: String,
    pub digest: String,
    pub size: u64,
    /// The layer's regular files and their digests (an older record without them is not
    /// reused: the SBOM needs them).
    pub files: Vec<crate::image::layer::LayerFile>,
}

impl LayerCache {
    /// The cache at `dir`, for one build: its first lookup prunes the directory; a wait for its
    /// lock is told to `shell`.
    pub fn new(dir: PathBuf, shell: Shell) -> LayerCache {
        LayerCache {
            dir,
            pruned: Arc::new(AtomicBool::new(false)),
            shell,
        }
    }

    /// The slot `name` of this cache.
    pub fn slot(&self, name: impl Into<String>) -> LayerSlot {
        LayerSlot {
            cache: self.clone(),
            name: name.into(),
        }
    }

    pub fn blobs_dir(dir: &Path) -> PathBuf {
        dir.join("blobs").join("sha256")
    }

    pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
        Self::blobs_dir(dir).join(digest.hex())
    }

    /// The cache's lock: lookups, stores and pruning take turns, across runs and threads.
    fn lock(&self) -> std::io::Result<DirLock> {
        file_lock::lock_dir(&self.dir, &|text| self.shell.status("Waiting", text))
    }

    /// A new temporary file beside the blobs for a layer being written, locked by this run
    /// while it is open (a run that is killed leaves it for the next one to remove).
    pub fn temp_blob(&self) -> std::io::Result<tempfile::NamedTempFile> {
        let blobs = Self::blobs_dir(&self.dir);
        std::fs::create_dir_all(&blobs)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", blobs.display())))?;
        file_lock::temp_file(&blobs, ".layer-", "")
    }

    /// Removes the blob `digest`, found damaged: the next lookup misses, and the layer is
    /// written again.
    pub fn evict(&self, digest: &Digest) -> std::io::Result<()> {
        let _lock = self.lock()?;
        match std::fs::remove_file(Self::blob_path(&self.dir, digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Prunes once per build (the first lookup through this handle or a clone of it), so a
    /// build whose layers are all unchanged still removes what killed runs left.
    fn prune_once(&self) {
        if !self.pruned.swap(true, Ordering::Relaxed) {
            self.collect_garbage();
        }
    }

    /// With the cache locked: keeps each slot's latest blob and the blobs some run holds in use
    /// (it found them unchanged and is uploading or writing them), and removes everything else:
    /// blobs no slot refers to any more, temporary files nobody writes (a killed run's), damaged
    /// records, and files of the older cache layout.
    fn collect_garbage(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut referenced = std::collections::HashSet::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == file_lock::LOCK_FILE || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if name.starts_with('.') {
                // A record's temporary file; its writer, if alive, holds it.
                file_lock::remove_if_unused(&e.path());
            } else if name.ends_with(".gz") {
                // The layout before blobs/: `<slot>.<diff_id>.<digest>.gz`.
                let _ = std::fs::remove_file(e.path());
            } else if name.ends_with(".json") {
                let record = std::fs::read(e.path())
                    .ok()
                    .and_then(|t| serde_json::from_slice::<Recorded>(&t).ok());
                match record {
                    Some(r) => {
                        referenced.insert(r.digest.trim_start_matches("sha256:").to_string());
                    }
                    // Records are replaced whole under the lock: one that does not read is
                    // damaged, and only costs its slot a rewrite.
                    None => {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let Ok(blobs) = std::fs::read_dir(Self::blobs_dir(&self.dir)) else {
            return;
        };
        for b in blobs.flatten() {
            let name = b.file_name().to_string_lossy().into_owned();
            // Temporary files (`.layer-*`) are held by their writers; blobs by the runs using
            // them.
            if (name.starts_with('.') || !referenced.contains(&name))
                && b.file_type().is_ok_and(|t| t.is_file())
            {
                file_lock::remove_if_unused(&b.path());
            }
        }
    }
}

impl LayerSlot {
    fn record_path(&self) -> PathBuf {
        self.cache.dir.join(format!("{}.json", self.name))
    }

    /// The slot's layer, when its inputs have the same fingerprint and its blob is there with
    /// the recorded size; the blob comes open and held in use, so no run's pruning removes it
    /// while this one needs it. Its content is checked by whoever reads it for a destination.
    pub fn unchanged(
        &self,
        fingerprint: &str,
    ) -> Option<(Recorded, Digest, Digest, PathBuf, File)> {
        let _lock = self.cache.lock().ok()?;
        self.cache.prune_once();
        let recorded = self.recorded()?;
        if recorded.fingerprint.as_deref() != Some(fingerprint) {
            return None;
        }
        let (diff_id, digest) = (
            Digest::parse(&recorded.diff_id).ok()?,
            Digest::parse(&recorded.digest).ok()?,
        );
        let path = LayerCache::blob_path(&self.cache.dir, &digest);
        let file = File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() != recorded.size {
            return None;
        }
        file_lock::hold_shared(&file).ok()?;
        Some((recorded, diff_id, digest, path, file))
    }

    /// The blob this slot's last layer wrote, if it is still there: what a rewrite of the
    /// same inputs most likely produces again.
    pub fn previous_blob(&self) -> Option<PathBuf> {
        let recorded = self.recorded()?;
        let path = LayerCache::blob_path(&self.cache.dir, &Digest::parse(&recorded.digest).ok()?);
        path.is_file().then_some(path)
    }

    fn recorded(&self) -> Option<Recorded> {
        let text = std::fs::read(self.record_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Moves a freshly written blob to its place under `blobs/`, records it as the slot's layer,
    /// and prunes (see [`LayerCache::collect_garbage`]). Returns the blob's path
    /// and the blob, open and held in use.
    pub fn store(
        &self,
        blob: tempfile::NamedTempFile,
        recorded: &Recorded,
        digest: &Digest,
    ) -> std::io::Result<(PathBuf, File)> {
        let _lock = self.cache.lock()?;
        let path = LayerCache::blob_path(&self.cache.dir, digest);
        let file = blob.persist(&path).map_err(|e| e.error)?;
        file_lock::hold_shared(&file)?;
        self.record(recorded);
        self.cache.collect_garbage();
        Ok((path, file))
    }

    /// Records the slot's layer. Best effort: a cache that cannot be written only costs time.
    fn record(&self, recorded: &Recorded) {
        let Ok(text) = serde_json::to_vec(recorded) else {
            return;
        };
        // A temporary file that was not persisted is removed when dropped: nothing to undo.
        let _ = file_lock::temp_file(&self.cache.dir, &format!(".{}.json.", self.name), ".tmp")
            .and_then(|mut tmp| {
                use std::io::Write;
                tmp.write_all(&text)?;
                tmp.persist(self.record_path()).map_err(|e| e.error)
            });
    }
}

/// Hashes what `stat` says about a layer's inputs, in entry order.
pub struct Fingerprint {
    hasher: Sha256,
    taken_at: SystemTime,
    racy: bool,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprint {
    pub fn new() -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT.as_bytes());
        #[cfg(not(test))]
        let taken_at = SystemTime::now();
        #[cfg(test)]
        let taken_at = SystemTime::now() + LATER.with(|l| l.get());
        Fingerprint {
            hasher,
            taken_at,
            racy: false,
        }
    }

    /// Anything that decides the layer's bytes besides host files (paths, modes, link targets,
    /// the mtime stamped on entries). Length-prefixed so fields cannot run into each other.
    pub fn add(&mut self, field: &[u8]) {
        self.hasher.update((field.len() as u64).to_le_bytes());
        self.hasher.update(field);
    }

    /// A host file whose bytes go into the layer.
    pub fn add_file(&mut self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let meta = std::fs::metadata(path)?;
        self.add(path.as_os_str().as_bytes());
        for n in [
            meta.len(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
            meta.ino(),
            meta.dev(),
            u64::from(meta.mode()),
        ] {
            self.hasher.update(n.to_le_bytes());
        }
        let changed = [
            (meta.mtime(), meta.mtime_nsec()),
            (meta.ctime(), meta.ctime_nsec()),
        ]
        .into_iter()
        .map(|(s, ns)| {
            SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
        })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
        if changed + RACY_WINDOW > self.taken_at {
            self.racy = true;
        }
        Ok(())
    }

    /// The fingerprint, and whether an input is too fresh to be recognised by it later.
    pub fn finish(self) -> (String, bool) {
        (hex::encode(self.hasher.finalize()), self.racy)
    }
}

// Test builds only, and no run state: this thread's clock offset for fingerprints, set by
// `pretend_later` and reset when its guard drops.
#[cfg(test)]
thread_local! {
    static LATER: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Tests: fingerprints on this thread are taken as if `by` had passed, until the guard drops, so
/// files the test just wrote are past the racy window without the test sleeping.
#[cfg(test)]
pub fn pretend_later(by: Duration) -> impl Drop {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LATER.with(|l| l.set(Duration::ZERO));
        }
    }
    LATER.with(|l| l.set(by));
    Reset
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layer::Origin;
    use crate::image::layer::test_support::{build, set_mtime, setup, unpack};

    #[test]
    fn unchanged_inputs_are_recognised_by_stat_alone() {
        let (_dir, slot, file) = setup();
        // The fingerprint is taken as if a minute had passed: nothing is racy.
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&slot, &file);
        assert_eq!(first.origin, Origin::Written);
        let second = build(&slot, &file);
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
        // The files' digests (for the SBOM) come back with the cached layer, unread.
        let content = std::fs::read(&file).unwrap();
        let expected = vec![crate::image::layer::LayerFile {
            path: "/data/f".into(),
            sha256: Digest::sha256_of(&content).hex().to_string(),
            // sha1sum of "aaaa".
            sha1: "70c881d4a26984ddce795f6f71817c9cf4480e79".into(),
            size: content.len() as u64,
            host_path: Some(file.clone()),
        }];
        assert_eq!(first.files, expected);
        assert_eq!(second.files, expected);
    }

    #[test]
    fn a_file_rewritten_with_the_same_size_and_mtime_is_read_again() {
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&slot, &file);
        // Same second, same nanosecond, same size: only the content (and ctime) differ.
        std::fs::write(&file, "bbbb").unwrap();
        set_mtime(&file, 1_700_000_000);
        let second = build(&slot, &file);
        assert_eq!(second.origin, Origin::Written);
        assert_ne!(second.digest, first.digest);
        assert!(unpack(&second).windows(4).any(|w| w == b"bbbb"));
    }

    #[test]
    fn a_file_replaced_through_a_rename_is_read_again() {
        let (dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&slot, &file);
        let replacement = dir.path().join("f.new");
        std::fs::write(&replacement, "cccc").unwrap();
        set_mtime(&replacement, 1_700_000_000);
        std::fs::rename(&replacement, &file).unwrap();
        let second = build(&slot, &file);
        assert_eq!(second.origin, Origin::Written);
        assert_ne!(second.digest, first.digest);
        assert!(unpack(&second).windows(4).any(|w| w == b"cccc"));
    }

    #[test]
    fn a_touched_but_unchanged_file_is_read_once_and_gives_the_same_layer() {
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&slot, &file);
        set_mtime(&file, 1_700_000_100);
        let touched = build(&slot, &file);
        assert_eq!(touched.origin, Origin::Written);
        assert_eq!(touched.digest, first.digest);
        let again = build(&slot, &file);
        assert_eq!(again.origin, Origin::Unchanged);
        assert_eq!(again.digest, first.digest);
    }

    #[test]
    fn inputs_changed_just_now_are_not_trusted_to_stat() {
        let (_dir, slot, file) = setup();
        // Fingerprints taken now: the file's ctime is within the racy window.
        let first = build(&slot, &file);
        let second = build(&slot, &file);
        assert_eq!(second.origin, Origin::Written);
        assert_eq!(second.digest, first.digest);
        let _later = pretend_later(Duration::from_secs(60));
        assert_eq!(build(&slot, &file).origin, Origin::Written);
        assert_eq!(build(&slot, &file).origin, Origin::Unchanged);
    }

    #[test]
    fn a_damaged_blob_is_written_again_and_the_cache_keeps_only_what_is_in_use() {
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        let first = build(&slot, &file);
        std::fs::write(first.file.path(), b"junk").unwrap();
        let again = build(&slot, &file);
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
        let other = build(&slot, &file);
        assert_ne!(other.digest, again.digest);
        assert!(other.file.path().exists() && old.exists());
        // ...and goes at once when nobody holds it.
        drop(again);
        std::fs::write(&file, "changed again").unwrap();
        let newest = build(&slot, &file);
        assert!(newest.file.path().exists() && other.file.path().exists() && !old.exists());
        let other_digest = other.digest.clone();
        drop((other, newest));
        std::fs::write(&file, "changed").unwrap();
        let back = build(&slot, &file);
        assert_eq!(back.digest, other_digest);
        // The slot's latest layer, nothing else: the README's promise.
        let blobs: Vec<_> = std::fs::read_dir(LayerCache::blobs_dir(&slot.cache.dir))
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
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&slot, &file));
        // Run A finds the layer unchanged: it will upload it.
        let a = build(&slot, &file);
        assert_eq!(a.origin, Origin::Unchanged);
        // Run B, meanwhile, builds a changed input into the same slot.
        std::fs::write(&file, "bbbb-changed").unwrap();
        let b = build(&slot, &file);
        assert_ne!(b.digest, a.digest);
        assert!(
            a.file.path().exists(),
            "the blob run A is uploading was removed"
        );
        let used = a.file.path().to_path_buf();
        drop(a);
        std::fs::write(&file, "cccc-changed").unwrap();
        drop(build(&slot, &file));
        assert!(!used.exists(), "a blob nobody uses nor refers to was kept");
    }

    /// Pruning is the state of one build, not of the process: the first lookup of each build
    /// prunes (a second build in the same process too), later lookups of the same build do not.
    #[test]
    fn each_build_prunes_the_cache_at_its_first_lookup() {
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&slot, &file));
        // As a killed run leaves it: no lock held.
        let left = LayerCache::blobs_dir(&slot.cache.dir).join(".layer-left");
        std::fs::write(&left, b"partial").unwrap();
        let again = build(&slot, &file);
        assert_eq!(again.origin, Origin::Unchanged);
        assert!(left.exists(), "this build pruned twice");
        let next_build = LayerCache::new(
            slot.cache.dir.clone(),
            crate::shell::Shell::capture(crate::shell::Verbosity::Normal),
        )
        .slot(slot.name.clone());
        let next = build(&next_build, &file);
        assert_eq!(next.origin, Origin::Unchanged);
        assert!(
            !left.exists(),
            "the next build in this process did not prune"
        );
    }

    /// Temporary files of a killed run are removed when the cache is pruned; one a live writer
    /// holds is not.
    #[test]
    fn temporary_files_nobody_writes_are_removed() {
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&slot, &file));
        let blobs = LayerCache::blobs_dir(&slot.cache.dir);
        // As a killed run leaves them: no lock held (an older version's too).
        let left = blobs.join(".layer-left");
        std::fs::write(&left, vec![0; 4096]).unwrap();
        let record_left = slot.cache.dir.join(".app-app-includes.json.12345");
        std::fs::write(&record_left, "{").unwrap();
        let live = slot.cache.temp_blob().unwrap();
        // The next layer stored prunes (and the next run's first lookup does).
        std::fs::write(&file, "changed").unwrap();
        drop(build(&slot, &file));
        assert!(!left.exists() && !record_left.exists());
        assert!(
            live.path().exists(),
            "a temporary file being written was removed"
        );
    }
}
