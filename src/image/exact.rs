//! A reader that yields exactly the size a tar header announced for a host file.
//!
//! A tar entry's size is written before its content; a file that changes size in between would
//! make the archive lie (too short: later entries are read as this one's data; too long: the
//! extra bytes are taken as the next header). [`ExactReader`] makes both cases safe: a file that
//! shrank is an error naming it, one that grew is cut at the announced size.

use std::io::{self, Read};
use std::path::Path;

/// Reads exactly `size` bytes from `inner`, or fails naming `path` if it ends sooner.
pub(crate) struct ExactReader<'a, R> {
    inner: R,
    remaining: u64,
    path: &'a Path,
}

impl<'a, R: Read> ExactReader<'a, R> {
    /// `size` is what the tar header says; `path` names the file in the error.
    pub(crate) fn new(inner: R, size: u64, path: &'a Path) -> Self {
        ExactReader {
            inner,
            remaining: size,
            path,
        }
    }
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was being read ({} bytes short of its size)",
                    self.path.display(),
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes() {
        let path = Path::new("/f");
        let mut out = Vec::new();
        ExactReader::new(&b"hello world"[..], 5, path)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(
            out, b"hello",
            "a file that grew is cut at its announced size"
        );

        out.clear();
        ExactReader::new(&b"hello"[..], 5, path)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");

        let e = ExactReader::new(&b"hi"[..], 5, path)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("/f shrank"), "{e}");
    }

    #[test]
    fn in_a_tar_the_header_size_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grew");
        std::fs::write(&path, "0123456789").unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        let file = std::fs::File::open(&path).unwrap();
        tar.append_data(&mut header, "grew", ExactReader::new(file, 4, &path))
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        tar.append_data(&mut header, "next", &b"ok"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            seen.push((entry.path().unwrap().display().to_string(), content));
        }
        assert_eq!(
            seen,
            [("grew".into(), "0123".into()), ("next".into(), "ok".into())]
        );
    }
}
