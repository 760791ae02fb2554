//! Writing a layer: the tar, streamed through the diff_id's hasher, the parallel compressor and
//! the digest's hasher into a temporary file of the layer cache, then stored there; or, when
//! `stat` says the inputs are unchanged, the layer the cache already has.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::host_file::{append_host_file, changed_again, changed_while_read};
use super::{CacheFile, Entry, Layer, LayerBuilder, LayerFile, LayerSlot, Origin, Source};
use crate::image::compress::{ParallelCompressor, default_threads};
use crate::image::early_upload::{EarlyUploadStream, EarlyUploadTee};
use crate::image::input_cache::{Fingerprint, Recorded};
use crate::reference::Digest;
use crate::spec::Codec;

impl LayerBuilder {
    /// The layer from `slot` when its inputs are unchanged to `stat`; otherwise streams the tar
    /// through the compressor into the slot's cache. `progress` hears of every uncompressed byte;
    /// `open_stream` is asked for an [`EarlyUploadStream`] to copy the compressed bytes to only
    /// once they are known to be new: they differ from the blob this slot wrote last time (see
    /// [`EarlyUploadTee`]). The layer keeps this builder, to be written again if its cache file
    /// turns out damaged.
    pub fn finish_with_cache(
        self,
        slot: &LayerSlot,
        codec: Codec,
        progress: &(dyn Fn(u64) + Sync),
        open_stream: &mut dyn FnMut() -> Option<Box<dyn EarlyUploadStream>>,
    ) -> io::Result<Layer> {
        make(&Arc::new(self), slot, codec, progress, open_stream)
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

    /// Writes the uncompressed tar to `out`; returns it with the regular files written.
    fn write_tar<W: Write>(&self, out: W) -> io::Result<(W, Vec<LayerFile>)> {
        let mut tar = tar::Builder::new(out);
        let mut files = Vec::new();
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
                    let (sha256, sha1, size, host_path) = match source {
                        Source::Bytes(b) => {
                            header.set_size(b.len() as u64);
                            tar.append_data(&mut header, path, &b[..])?;
                            (
                                hex::encode(Sha256::digest(b)),
                                hex::encode(sha1::Sha1::digest(b)),
                                b.len() as u64,
                                None,
                            )
                        }
                        Source::Host(p) => {
                            let (sha256, sha1, size) =
                                append_host_file(&mut tar, &mut header, path, p)?;
                            (sha256, sha1, size, Some(p.clone()))
                        }
                    };
                    files.push(LayerFile {
                        path: format!("/{path}"),
                        sha256,
                        sha1,
                        size,
                        host_path,
                    });
                }
            }
        }
        Ok((tar.into_inner()?, files))
    }
}

/// [`LayerBuilder::finish_with_cache`], with the builder shared with the layer it makes.
pub(super) fn make(
    builder: &Arc<LayerBuilder>,
    slot: &LayerSlot,
    codec: Codec,
    progress: &(dyn Fn(u64) + Sync),
    open_stream: &mut dyn FnMut() -> Option<Box<dyn EarlyUploadStream>>,
) -> io::Result<Layer> {
    let (fingerprint, mut racy) = builder.fingerprint(codec)?;
    let file = |path: PathBuf, digest: &Digest, held: File| {
        CacheFile::new(path, digest, builder, slot, codec, held)
    };
    if let Some((recorded, diff_id, digest, path, held)) = slot.unchanged(&fingerprint) {
        return Ok(Layer {
            diff_id,
            size: recorded.size,
            file: file(path, &digest, held),
            digest,
            description: builder.description.clone(),
            origin: Origin::Unchanged,
            codec,
            files: recorded.files,
        });
    }
    // A file that changed while it was read makes a layer that is neither its old nor its
    // new content: that attempt is thrown away (a stream it opened is dropped unfinished, so
    // its upload is abandoned) and the layer is written once more; a second change fails.
    let WrittenBlob {
        file: scratch,
        diff_id,
        digest,
        stream,
        files,
    } = match write_blob(builder, slot, codec, progress, open_stream) {
        Err(e) if changed_while_read(&e).is_some() => {
            // What `stat` said before the first read is not what was read.
            racy = true;
            write_blob(builder, slot, codec, progress, open_stream).map_err(changed_again)?
        }
        other => other?,
    };
    let size = scratch.as_file().metadata()?.len();
    let (path, held) = slot.store(
        scratch,
        &Recorded {
            fingerprint: (!racy).then_some(fingerprint),
            diff_id: diff_id.to_string(),
            digest: digest.to_string(),
            size,
            files: files.clone(),
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
        files,
    };
    if let Some(stream) = stream {
        stream.finish(&layer);
    }
    Ok(layer)
}

/// Streams the tar through the compressor into a new temporary file of the cache's blobs.
fn write_blob(
    builder: &LayerBuilder,
    slot: &LayerSlot,
    codec: Codec,
    progress: &(dyn Fn(u64) + Sync),
    open_stream: &mut dyn FnMut() -> Option<Box<dyn EarlyUploadStream>>,
) -> io::Result<WrittenBlob> {
    let scratch = slot.cache.temp_blob()?;
    let (diff_id, digest, stream, files) = {
        let file = EarlyUploadTee::new(
            BufWriter::with_capacity(256 * 1024, scratch.as_file()),
            slot.previous_blob(),
            open_stream,
        );
        let compressor =
            ParallelCompressor::with_codec(HashingWriter::new(file), codec, default_threads())?;
        let (tar, files) = builder.write_tar(Counting {
            inner: HashingWriter::new(compressor),
            progress,
        })?;
        let (compressor, diff_id) = tar.inner.finish();
        let (mut file, digest) = compressor.finish()?.finish();
        // Flushes the buffered cache file (the tee passes flush through).
        file.flush()?;
        (diff_id, digest, file.into_stream(), files)
    };
    Ok(WrittenBlob {
        file: scratch,
        diff_id,
        digest,
        stream,
        files,
    })
}

/// A layer's compressed bytes in a scratch file of the blobs directory, not yet stored.
struct WrittenBlob {
    file: tempfile::NamedTempFile,
    diff_id: Digest,
    digest: Digest,
    /// The early upload's stream, if the bytes turned out new (see [`EarlyUploadTee`]).
    stream: Option<Box<dyn EarlyUploadStream>>,
    files: Vec<LayerFile>,
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
    use super::super::LayerBuilder;
    use super::super::test_support::unpack;
    use crate::reference::Digest;
    use bytes::Bytes;

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
}
