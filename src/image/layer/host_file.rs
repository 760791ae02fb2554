//! A host file's bytes into a layer: opened without blocking, refused unless it is a regular
//! file, and seen when it changes while it is read (the layer is then written again).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::image::exact::ExactReader;

/// Appends a host file's bytes as one tar entry. The file is opened without blocking (a FIFO
/// put in its place since it was listed must not hang the build) and must still be a regular
/// file. If its size, mtime or ctime moved while it was read, the entry may hold old and new
/// bytes alike: that is a [`ChangedWhileRead`] error, and the caller throws the tar away.
/// Returns the sha256 and sha1 of the bytes appended, and their number.
pub(super) fn append_host_file<W: Write>(
    tar: &mut tar::Builder<W>,
    header: &mut tar::Header,
    path: &str,
    host: &Path,
) -> io::Result<(String, String, u64)> {
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
    let mut reader = HashingReader {
        inner: ExactReader::new(&file, size, host),
        sha256: Sha256::new(),
        sha1: Sha1::new(),
    };
    let appended = tar.append_data(header, path, &mut reader);
    let after = file.metadata().map_err(|e| at(host, e))?;
    if stat_moved(&before, &after) {
        return Err(io::Error::other(ChangedWhileRead(host.to_path_buf())));
    }
    appended?;
    Ok((
        hex::encode(reader.sha256.finalize()),
        hex::encode(reader.sha1.finalize()),
        size,
    ))
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    sha256: Sha256,
    sha1: Sha1,
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
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
pub(super) fn changed_again(e: io::Error) -> io::Error {
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
pub(super) fn changed_while_read(e: &io::Error) -> Option<&Path> {
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
pub(super) fn regular_file(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
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
pub(super) fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{set_mtime, setup, unpack};
    use super::super::{Layer, LayerBuilder, LayerSlot};
    use crate::spec::Codec;
    use std::io::{self, Read};
    use std::path::Path;
    use std::time::Duration;

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
        slot: &LayerSlot,
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
        b.finish_with_cache(slot, Codec::Gzip, &progress, &mut || None)
    }

    #[test]
    fn a_file_rewritten_while_it_is_read_is_read_again_never_mixed() {
        let (_dir, slot, file) = setup();
        big_file(&file, b'a', 1_700_000_000);
        let new = vec![b'b'; 4 << 20];
        let changed = std::sync::atomic::AtomicBool::new(false);
        // Once the first MiB is read, the whole file is rewritten: the old code went on
        // reading and made a layer half `a`, half `b`.
        let layer = build_while(&slot, &file, &|written| {
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
        let (_dir, slot, file) = setup();
        big_file(&file, b'a', 1_700_000_000);
        let shorter = vec![b'c'; 1 << 20];
        let changed = std::sync::atomic::AtomicBool::new(false);
        let layer = build_while(&slot, &file, &|written| {
            if written > 2 << 20 && !changed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                rewrite_in_place(&file, &shorter, 1_700_000_100);
            }
        })
        .unwrap();
        assert!(content_of(&layer, "data/f") == shorter);
    }

    #[test]
    fn a_file_that_keeps_changing_while_it_is_read_is_an_error_naming_it() {
        let (_dir, slot, file) = setup();
        big_file(&file, b'a', 1_700_000_000);
        // Every MiB read, the file is rewritten with other bytes and another mtime.
        let rewrites = std::sync::atomic::AtomicU64::new(0);
        let result = build_while(&slot, &file, &|written| {
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
