//! Reading the `-f` inputs: files, directories of `.yaml`/`.yml` files, stdin. Each is read
//! whole (the placeholders are replaced in its text after the pushes), so each is bounded by
//! [`MAX_INPUT`]: a stream that never ends (`-f /dev/zero`) is an error, not an exhausted machine.
//! Reading also notices when stdout is one of the inputs, before anything is pushed.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ResolveError;

/// The most bytes one input may have. Kubernetes keeps each object under ~1.5 MiB (etcd's
/// limit), so a manifest this large is a mistake or a stream that never ends.
pub const MAX_INPUT: u64 = 256 << 20;

/// One YAML input: its name for messages, where it came from, and its text.
pub struct Input {
    pub name: String,
    /// The file (given with `-f`, or found in a directory given); `None` for stdin.
    pub path: Option<PathBuf>,
    pub text: String,
    /// The file as it was read, for `--in-place` to notice it changed in the meantime.
    pub identity: Option<Identity>,
}

#[cfg(test)]
impl Input {
    /// Text as if read from stdin, named `m.yaml` (for the scanning and writing tests).
    pub fn from_text(text: &str) -> Input {
        Input {
            name: "m.yaml".into(),
            path: None,
            text: text.into(),
            identity: None,
        }
    }
}

/// What `fstat` says about an open file: which file it is, and its size and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub regular: bool,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
            regular: meta.is_file(),
        }
    }

    pub fn same_file(&self, other: &Identity) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// The file stdout writes to, when it is a regular file (`> out.yaml`, `>> out.yaml`); a pipe
/// or a terminal cannot be an input.
pub fn stdout_file() -> Option<Identity> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let identity = Identity::of(&File::from(fd).metadata().ok()?);
    identity.regular.then_some(identity)
}

/// Reads every `-f` argument in order: files, directories' `.yaml`/`.yml` files (sorted by
/// name), `-` for stdin. Fails before reading further when an input is the file stdout writes
/// to (`stdout`).
pub fn read_inputs(
    paths: &[PathBuf],
    stdout: Option<Identity>,
) -> Result<Vec<Input>, ResolveError> {
    let fail = |path: &Path, reason: String| ResolveError::Input {
        path: path.display().to_string(),
        reason,
    };
    let mut inputs = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == "-" {
            if stdin_read {
                return Err(fail(path, "stdin can be read only once".into()));
            }
            stdin_read = true;
            inputs.push(read_stdin(stdout)?);
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| fail(path, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(fail(
                    path,
                    "the directory has no .yaml or .yml files".into(),
                ));
            }
            for file in files {
                inputs.push(read_file(&file, stdout)?);
            }
        } else {
            inputs.push(read_file(path, stdout)?);
        }
    }
    Ok(inputs)
}

/// Reads one file (through a symlink, like `cat`).
pub fn read_file(path: &Path, stdout: Option<Identity>) -> Result<Input, ResolveError> {
    let name = path.display().to_string();
    let fail = |reason: String| ResolveError::Input {
        path: name.clone(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let identity = Identity::of(&file.metadata().map_err(|e| fail(e.to_string()))?);
    check_not_stdout(&name, &identity, stdout)?;
    let text = read_bounded(file, &identity, &name)?;
    Ok(Input {
        name,
        path: Some(path.to_path_buf()),
        text,
        identity: Some(identity),
    })
}

fn read_stdin(stdout: Option<Identity>) -> Result<Input, ResolveError> {
    use std::os::fd::AsFd;
    let name = "<stdin>".to_string();
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| ResolveError::Input {
            path: "-".into(),
            reason: format!("reading stdin: {e}"),
        })?;
    let stdin = File::from(fd);
    let identity = stdin.metadata().ok().map(|m| Identity::of(&m));
    if let Some(identity) = &identity {
        check_not_stdout(&name, identity, stdout)?;
    }
    let text = match &identity {
        Some(identity) => read_bounded(stdin, identity, &name)?,
        None => read_bounded(stdin, &unknown_size(), &name)?,
    };
    Ok(Input {
        name,
        path: None,
        text,
        identity: None,
    })
}

fn unknown_size() -> Identity {
    Identity {
        dev: 0,
        ino: 0,
        len: 0,
        modified: None,
        regular: false,
    }
}

/// `resolve -f a.yaml > a.yaml`: the shell emptied a.yaml before we started, and the next
/// `kubectl apply` would apply nothing; `>> a.yaml` would append the output to the input while
/// it is read. Either way, stop before anything is pushed.
fn check_not_stdout(
    name: &str,
    input: &Identity,
    stdout: Option<Identity>,
) -> Result<(), ResolveError> {
    let Some(stdout) = stdout else {
        return Ok(());
    };
    if !input.same_file(&stdout) {
        return Ok(());
    }
    let (reason, recover) = if input.len == 0 {
        (
            format!(
                "stdout is {name}, which is also an input: the shell emptied it for `>` before resolve started, so the YAML it held is gone"
            ),
            format!(
                "if {name} held manifests, get them back from version control (e.g. `git checkout -- {name}`); "
            ),
        )
    } else {
        (
            format!(
                "stdout is {name}, which is also an input: the output would be written into the file while it is read"
            ),
            String::new(),
        )
    };
    Err(ResolveError::StdoutIsInput {
        reason,
        help: format!(
            "{recover}to rewrite the inputs themselves, give the same -f to `cargo adapt-push resolve --in-place` without redirecting stdout; otherwise redirect stdout to a file that is not an input"
        ),
    })
}

/// Reads at most [`MAX_INPUT`] bytes, and checks they are UTF-8 (naming the line of the first
/// bad byte).
fn read_bounded(file: File, identity: &Identity, name: &str) -> Result<String, ResolveError> {
    let too_big = || ResolveError::TooLarge {
        path: name.into(),
        limit_mib: MAX_INPUT >> 20,
    };
    if identity.regular && identity.len > MAX_INPUT {
        return Err(too_big());
    }
    // A regular file's size is known: one allocation of that size. Anything else (a pipe,
    // a device) grows as it is read, up to the limit.
    let mut bytes = Vec::with_capacity(if identity.regular {
        identity.len as usize + 1
    } else {
        0
    });
    file.take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ResolveError::Input {
            path: name.into(),
            reason: e.to_string(),
        })?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(too_big());
    }
    utf8(bytes, name)
}

/// The text of `bytes`, or an error naming the line and column of the first byte that is not
/// UTF-8.
fn utf8(bytes: Vec<u8>, name: &str) -> Result<String, ResolveError> {
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line_start = bytes[..bad]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        ResolveError::Encoding {
            file: name.into(),
            line: bytes[..bad].iter().filter(|&&b| b == b'\n').count() + 1,
            column: bad - line_start + 1,
            byte: bytes[bad],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_named_by_line_and_column() {
        let err = utf8(b"a: 1\nb: caf\xe9\nc: 3\n".to_vec(), "m.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.yaml:2:7: not UTF-8 text (byte 0xe9)",
            "{err}"
        );
        let err = utf8(b"\xff".to_vec(), "m.yaml").unwrap_err();
        assert!(err.to_string().starts_with("m.yaml:1:1:"), "{err}");
        assert_eq!(utf8("ü\n".as_bytes().to_vec(), "m.yaml").unwrap(), "ü\n");
    }

    #[test]
    fn an_input_that_does_not_end_is_cut_at_the_limit() {
        let file = File::open("/dev/zero").unwrap();
        let identity = Identity::of(&file.metadata().unwrap());
        let err = read_bounded(file, &identity, "/dev/zero").unwrap_err();
        assert!(
            err.to_string()
                .contains("-f /dev/zero: larger than 256 MiB"),
            "{err}"
        );
    }

    #[test]
    fn the_file_stdout_writes_to_is_refused_as_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "a: adapt://api\n").unwrap();
        let meta = |p: &Path| Identity::of(&std::fs::metadata(p).unwrap());
        let other = dir.path().join("b.yaml");
        std::fs::write(&other, "").unwrap();
        assert!(read_file(&path, Some(meta(&other))).is_ok());
        let err = read_file(&path, Some(meta(&path))).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("written into the file"), "{err}");
        // Through a symlink, it is the same file.
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_file(&link, Some(meta(&path))).is_err());
        // Emptied by the shell: the message says the manifests are gone and how to get them back.
        std::fs::write(&path, "").unwrap();
        let err = read_file(&path, Some(meta(&path))).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("emptied"), "{err}");
    }
}
