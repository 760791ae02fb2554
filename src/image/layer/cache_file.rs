//! The file a finished layer is in, in the layer cache: held in use while the layer is, and
//! written again from the layer's inputs when a reader finds it damaged.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::write::make;
use super::{LayerBuilder, LayerSlot};
use crate::reference::Digest;
use crate::spec::Codec;

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
    slot: LayerSlot,
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
    /// The file at `path`, held open (`held`), with how its layer was made.
    pub(super) fn new(
        path: PathBuf,
        digest: &Digest,
        builder: &Arc<LayerBuilder>,
        slot: &LayerSlot,
        codec: Codec,
        held: File,
    ) -> CacheFile {
        CacheFile(Arc::new(CacheFileInner {
            path,
            digest: digest.clone(),
            builder: builder.clone(),
            slot: slot.clone(),
            codec,
            held: Mutex::new(held),
            remade: Mutex::new(None),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The layer cache the file is in.
    pub fn cache_dir(&self) -> &Path {
        &self.0.slot.cache.dir
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
        inner.slot.cache.evict(&inner.digest)?;
        let layer = make(
            &inner.builder,
            &inner.slot,
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

#[cfg(test)]
mod tests {
    use super::super::Origin;
    use super::super::test_support::{build, setup};
    use crate::image::input_cache::pretend_later;
    use crate::reference::Digest;
    use std::time::Duration;

    /// A reader that finds a cache file damaged (same size, other bytes: what the size check
    /// at lookup cannot see) has the layer written again, once however often it asks.
    #[test]
    fn a_damaged_cache_file_is_written_again_once_from_the_same_inputs() {
        let (_dir, slot, file) = setup();
        let _later = pretend_later(Duration::from_secs(60));
        drop(build(&slot, &file));
        let layer = build(&slot, &file);
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
        let other = build(&slot, &file);
        std::fs::write(other.file.path(), b"xxxx").unwrap();
        std::fs::write(&file, "changed").unwrap();
        let error = other.file.remake().unwrap_err().to_string();
        assert!(error.contains("inputs changed"), "{error}");
    }
}
