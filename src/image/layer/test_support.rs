//! What the layer tests share: a scratch layer cache, a layer of one host file, and reading a
//! finished layer back.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Layer, LayerBuilder, LayerCache, LayerSlot};
use crate::spec::Codec;

impl LayerBuilder {
    /// Writes the tar into a scratch cache (tests only), one slot per call; slots are reused
    /// across runs, so the directory keeps only the latest run's blobs.
    pub(crate) fn finish(self) -> io::Result<Layer> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Test builds only, and no run state: a counter that gives each call a slot name of
        // its own in the tests' scratch cache (a run of the tests reuses the last run's names).
        static SLOT: AtomicUsize = AtomicUsize::new(0);
        let slot = LayerCache::new(
            std::env::temp_dir().join("adapt-push-unit-test-layers"),
            crate::shell::Shell::capture(crate::shell::Verbosity::Normal),
        )
        .slot(format!("test-{}", SLOT.fetch_add(1, Ordering::Relaxed)));
        self.finish_with_cache(&slot, Codec::Gzip, &|_| {}, &mut || None)
    }
}

pub(crate) fn unpack(layer: &Layer) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(layer.file.path()).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    raw
}

pub(crate) fn entries(layer: &Layer) -> Vec<(String, u32, u64, u64)> {
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

/// A layer holding one host file, `data/f`, built against `cache`.
pub(crate) fn build(slot: &LayerSlot, file: &Path) -> Layer {
    let mut b = LayerBuilder::new("t", 0);
    b.add_host_path("/data/f", file).unwrap();
    b.finish_with_cache(slot, Codec::Gzip, &|_| {}, &mut || None)
        .unwrap()
}

pub(crate) fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

pub(crate) fn setup() -> (tempfile::TempDir, LayerSlot, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let slot = LayerCache::new(
        dir.path().join("cache"),
        crate::shell::Shell::capture(crate::shell::Verbosity::Normal),
    )
    .slot("app-app-includes");
    let file = dir.path().join("f");
    std::fs::write(&file, "aaaa").unwrap();
    set_mtime(&file, 1_700_000_000);
    (dir, slot, file)
}
