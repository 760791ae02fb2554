//! The early upload, as the builder and the layer writer see it: the builder announces each
//! layer it writes to an [`EarlyUpload`] (the publisher's, which sends the layer to the registry
//! while later layers are still compressing), and the writer copies a new layer's compressed
//! bytes to an [`EarlyUploadStream`] as they come ([`EarlyUploadTee`]), so a large layer is
//! uploaded while it is compressed. Who listens, and where the bytes go, is not known here.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::layer::Layer;

/// The early upload as the builder sees it: told of each of our layers as soon as it is written
/// to the layer cache, while later ones may still be compressing, and given a new large layer's
/// bytes while they are compressed, so whoever publishes the image can start sending it. The
/// builder does not know who listens.
pub trait EarlyUpload: Send + Sync {
    /// A layer being compressed turned out new (its bytes differ from the blob it had last
    /// time): where to stream its compressed bytes, the common prefix first, if anywhere. The
    /// cache file is written the same either way. `file_bytes`: what its files hold, uncompressed.
    fn compressing(&self, description: &str, file_bytes: u64)
    -> Option<Box<dyn EarlyUploadStream>>;
    /// The layer is in the layer cache. `streamed`: its bytes also went to the stream
    /// `compressing` gave for it, which was told of the finished layer.
    fn finished(&self, layer: &Layer, streamed: bool);
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
pub(super) struct EarlyUploadTee<'t, W> {
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
    pub(super) fn new(
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
    pub(super) fn into_stream(self) -> Option<Box<dyn EarlyUploadStream>> {
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
    use super::*;
    use crate::image::input_cache::pretend_later;
    use crate::image::layer::test_support::{set_mtime, setup};
    use crate::image::layer::{LayerBuilder, Origin};
    use crate::reference::Digest;
    use crate::spec::Codec;
    use std::time::Duration;

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
        let (_dir, slot, file) = setup();
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
                .finish_with_cache(&slot, Codec::Gzip, &|_| {}, &mut || {
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
}
