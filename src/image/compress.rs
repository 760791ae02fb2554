//! Parallel, deterministic compression: the uncompressed stream is cut into fixed-size blocks,
//! each block is compressed on its own by a pool of threads (pigz's independent-block mode), and
//! the results are written in input order: one gzip member, or (zstd) one frame per block, which
//! a zstd reader reads as one stream.
//!
//! The bytes depend only on the input, [`BLOCK_SIZE`] and [`GZIP_LEVEL`]: a block is always
//! compressed from a fresh deflate state, whichever thread takes it, and every block but the last
//! ends with a sync flush (an empty stored block, byte aligned), so the blocks concatenate into
//! one valid deflate stream. The digest of a layer is therefore the same on 1 core or 64.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::spec::Codec;

/// Uncompressed bytes per independently compressed block. Changing it changes every digest.
pub const BLOCK_SIZE: usize = 512 * 1024;

/// Deflate level of every layer, chosen by measurement with this build's deflate (zlib-rs), in
/// 512 KiB blocks on one core of this project's machine (`measure_levels` below):
///
/// | level | 13 MiB release binary | 32 MiB base64 text |
/// | --- | --- | --- |
/// | 1 | 217 MB/s, 0.485 | 109 MB/s, 0.999 |
/// | 2 | 131 MB/s, 0.404 | 68 MB/s, 0.757 |
/// | 6 | 76 MB/s, 0.377 | 56 MB/s, 0.757 |
///
/// Level 1 is zlib-ng's "quick" strategy (static Huffman codes only): it barely compresses text.
/// Level 2 keeps the ratio within 7% of level 6 at 1.7 times the speed, and matches what C zlib's
/// level 1 (go-containerregistry's default, BestSpeed) gives. Changing it changes every digest.
pub const GZIP_LEVEL: u32 = 2;

/// zstd level for `compression = "zstd"`: zstd's default, which is faster than deflate level 2 and
/// smaller than level 6 on release binaries. Changing it changes every zstd digest.
pub const ZSTD_LEVEL: i32 = 3;

/// gzip header: no name, mtime 0, no extra flags, OS "unknown", so no host detail leaks in.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    codec: Codec,
    data: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// A writer that compresses what it is given (gzip or zstd) on `threads` threads and writes the
/// result (one gzip member, or one zstd frame per block) to `inner`. Call
/// [`finish`](Self::finish): dropping it without leaves the output incomplete.
pub struct ParallelCompressor<W: Write> {
    codec: Codec,
    /// Taken out by `finish`.
    inner: Option<W>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    /// Blocks handed out, oldest first: written to `inner` in this order.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
    crc: crc32fast::Hasher,
    total: u64,
}

/// Threads to compress on: every core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<W: Write> ParallelCompressor<W> {
    #[cfg(test)]
    pub fn with_threads(inner: W, threads: usize) -> io::Result<Self> {
        Self::with_codec(inner, Codec::Gzip, threads)
    }

    /// Compresses with `codec` on `threads` threads (the bytes do not depend on `threads`).
    pub fn with_codec(mut inner: W, codec: Codec, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        if codec == Codec::Gzip {
            inner.write_all(&GZIP_HEADER)?;
        }
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let worker = std::thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take a job, not while compressing it.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let block = match job.codec {
                            Codec::Gzip => deflate_block(&job.data, job.last),
                            Codec::Zstd => zstd::bulk::compress(&job.data, ZSTD_LEVEL),
                        };
                        let _ = job.reply.send(block);
                    }
                })?;
            workers.push(worker);
        }
        Ok(ParallelCompressor {
            codec,
            inner: Some(inner),
            buf: Vec::with_capacity(BLOCK_SIZE),
            jobs: Some(jobs),
            pending: VecDeque::new(),
            // Enough blocks in flight to keep every thread busy, few enough to bound memory
            // (at most about 3 × threads × BLOCK_SIZE).
            max_pending: threads * 2,
            workers,
            crc: crc32fast::Hasher::new(),
            total: 0,
        })
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK_SIZE));
        let (reply, result) = sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(closed)?;
        let codec = self.codec;
        jobs.send(Job {
            codec,
            data,
            last,
            reply,
        })
        .map_err(|_| closed())?;
        self.pending.push_back(result);
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let block = result.recv().map_err(|_| closed())??;
            self.inner.as_mut().ok_or_else(closed)?.write_all(&block)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // A zstd stream needs at least one frame; an empty last block adds nothing otherwise.
        if self.codec == Codec::Gzip || !self.buf.is_empty() || self.total == 0 {
            self.submit(true)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.stop_workers();
        if self.codec == Codec::Zstd {
            let mut inner = self.inner.take().ok_or_else(closed)?;
            inner.flush()?;
            return Ok(inner);
        }
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let mut inner = self.inner.take().ok_or_else(closed)?;
        inner.write_all(&crc.to_le_bytes())?;
        // ISIZE is the length modulo 2^32, as RFC 1952 says.
        inner.write_all(&(self.total as u32).to_le_bytes())?;
        inner.flush()?;
        Ok(inner)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Drop for ParallelCompressor<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

impl<W: Write> Write for ParallelCompressor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full block is handed out only once more data arrives: until `finish`, any block
        // might be the last one, which ends the stream differently.
        if self.buf.len() == BLOCK_SIZE {
            self.submit(false)?;
        }
        let n = data.len().min(BLOCK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn closed() -> io::Error {
    io::Error::other("the compression threads stopped")
}

/// Samples of a block tried before compressing all of it: 4 × 4 KiB spread over the block.
const SAMPLE: usize = 4096;
const SAMPLES: usize = 4;

/// One block's deflate data, decided by its content alone: stored as is when samples of it do not
/// compress (already compressed or random data, where deflating would only cost time), deflated
/// otherwise.
fn deflate_block(data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    if looks_incompressible(data)? {
        Ok(stored_blocks(data, last))
    } else {
        deflate(data, last)
    }
}

fn looks_incompressible(data: &[u8]) -> io::Result<bool> {
    if data.len() < SAMPLE * SAMPLES {
        return Ok(false);
    }
    let step = data.len() / SAMPLES;
    let mut sizes = 0;
    for i in 0..SAMPLES {
        sizes += deflate(&data[i * step..i * step + SAMPLE], true)?.len();
    }
    // Less than 3% saved on the samples: not worth compressing.
    Ok(sizes * 100 >= SAMPLE * SAMPLES * 97)
}

/// Deflate "stored" blocks (RFC 1951 3.2.4): the data as is, in pieces of at most 65,535 bytes,
/// the last one carrying the final-block bit when `last`. Byte aligned, like a sync flush.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 5);
    let mut pieces = data.chunks(65_535).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
    }
    while let Some(piece) = pieces.next() {
        let final_bit = last && pieces.peek().is_none();
        let len = piece.len() as u16;
        out.push(u8::from(final_bit));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Raw deflate of one block from a fresh state: a sync flush ends every block but the last,
/// which carries the final-block bit.
fn deflate(data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    deflate_at(data, last, GZIP_LEVEL)
}

fn deflate_at(data: &[u8], last: bool, level: u32) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 100 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = compress.total_in() as usize == data.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            // zlib's rule: a flush is complete once it returns with output space to spare.
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Part text-like, part noise: both kinds of deflate block appear.
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                if (i / 100_000) % 2 == 0 {
                    b"cargo adapt-push layer "[i % 23]
                } else {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize, piece: usize) -> Vec<u8> {
        let mut w = ParallelCompressor::with_threads(Vec::new(), threads).unwrap();
        for chunk in data.chunks(piece) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn same_bytes_whatever_the_thread_count_and_write_sizes() {
        let data = sample(3 * BLOCK_SIZE + 12_345);
        let one = gzip(&data, 1, 1 << 20);
        assert_eq!(one, gzip(&data, 2, 4096));
        assert_eq!(one, gzip(&data, 8, 777_777));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // A standard gzip tool reads it too (one member; CRC and size checked).
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(&one[..])
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(multi, data);
    }

    #[test]
    fn incompressible_blocks_are_stored_and_still_valid_gzip() {
        let mut state = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..2 * BLOCK_SIZE + 70_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let z = gzip(&noise, 2, 100_000);
        assert_eq!(z, gzip(&noise, 1, 4096));
        // Stored: the data plus 5 bytes per 64 KiB piece, header and trailer.
        assert!(
            z.len() < noise.len() + noise.len() / 65_535 * 5 + 64,
            "{}",
            z.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, noise);
        // Text still compresses.
        let text = b"cargo adapt-push ".repeat(100_000);
        assert!(gzip(&text, 2, 65_536).len() < text.len() / 20);
    }

    /// Not a test: the measurement behind [`GZIP_LEVEL`]. Run with
    /// `ADAPT_PUSH_MEASURE=<file> cargo test --release measure_levels -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_levels() {
        let Some(path) = std::env::var_os("ADAPT_PUSH_MEASURE") else {
            return;
        };
        let data = std::fs::read(path).unwrap();
        for level in [1, 2, 3, 4, 6, 9] {
            let mut best = f64::MAX;
            let mut size = 0;
            for _ in 0..3 {
                let start = std::time::Instant::now();
                size = data
                    .chunks(BLOCK_SIZE)
                    .map(|b| deflate_at(b, false, level).unwrap().len())
                    .sum::<usize>();
                best = best.min(start.elapsed().as_secs_f64());
            }
            println!(
                "| {level} | {:.0} MB/s | {:.3} |",
                data.len() as f64 / best / 1e6,
                size as f64 / data.len() as f64
            );
        }
    }

    #[test]
    fn zstd_is_the_same_whatever_the_thread_count_and_reads_back() {
        for len in [0, 100, BLOCK_SIZE, 3 * BLOCK_SIZE + 12_345] {
            let data = sample(len);
            let z = |threads, piece: usize| {
                let mut w =
                    ParallelCompressor::with_codec(Vec::new(), Codec::Zstd, threads).unwrap();
                for chunk in data.chunks(piece.max(1)) {
                    w.write_all(chunk).unwrap();
                }
                w.finish().unwrap()
            };
            let one = z(1, 1 << 20);
            assert_eq!(one, z(2, 4096), "len {len}");
            assert_eq!(one, z(8, 777_777), "len {len}");
            assert_eq!(
                zstd::stream::decode_all(&one[..]).unwrap(),
                data,
                "len {len}"
            );
        }
    }

    #[test]
    fn edge_sizes_round_trip() {
        for len in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            2 * BLOCK_SIZE,
        ] {
            let data = sample(len);
            let z = gzip(&data, 2, 65_536);
            assert_eq!(z, gzip(&data, 8, 1000), "len {len}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }
}
