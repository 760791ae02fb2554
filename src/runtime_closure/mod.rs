//! Finds the runtime closure of an ELF executable: the program interpreter and
//! every shared library it loads, so that the executable can run in a
//! `FROM scratch` image with no base image.
//!
//! The search mimics glibc's loader (`ld.so`) reading the files with `object`;
//! nothing is executed. The host environment (`LD_LIBRARY_PATH`,
//! `LD_PRELOAD`) is ignored: it will not exist in the image.

use std::fs;
use std::path::{Path, PathBuf};

use object::LittleEndian;
use object::elf;
use object::read::elf::FileHeader as _;

mod elf_file;
mod ld_so_conf;
mod search;
#[cfg(test)]
mod test_support;

pub use elf_file::{defined_versions, missing_versions};
pub use search::{Requirements, library_search_dirs, requirements};

use elf_file::{parse_dynamic_info, parse_header};
use ld_so_conf::{LD_SO_CONF, ld_so_conf_dirs};
use search::{Resolver, default_library_dirs, multiarch_triplet};

/// One file the binary needs at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFile {
    /// Absolute path inside the image where the loader will look for it (e.g. "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6").
    pub image_path: PathBuf,
    /// The real file on the host to copy the bytes from (symlinks fully resolved).
    pub host_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: the binary runs on its own (includes static-pie).
    Static,
    /// Loaded by `interpreter` (the `PT_INTERP` path, as written in the binary).
    Dynamic { interpreter: PathBuf },
}

#[derive(Debug, Clone)]
pub struct RuntimeClosure {
    pub linkage: Linkage,
    /// Sorted by `image_path`, no duplicates, empty when `Static`.
    pub files: Vec<RuntimeFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not an ELF file", path.display())]
    NotElf { path: PathBuf },
    #[error("{} is a malformed ELF file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{} is not supported: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    #[error(
        "shared library {library} needed by {} was not found (searched: {})",
        needed_by.display(),
        display_paths(searched)
    )]
    LibraryNotFound {
        /// The `DT_NEEDED` name.
        library: String,
        /// The executable or library whose `DT_NEEDED` names it.
        needed_by: PathBuf,
        /// Directories searched in order, or the path itself for a name containing '/'.
        searched: Vec<PathBuf>,
    },
}

/// Finds the files `binary` needs at run time on this host.
///
/// Libraries found through `DT_RPATH`/`DT_RUNPATH` (including `$ORIGIN`
/// entries, expanded against the binary's canonical host directory) are
/// placed at their host path. If a `RUNPATH` uses `$ORIGIN`, the caller must
/// put the binary in the image at its own canonical host path too, or the
/// loader will not find them.
///
/// Libraries that the host finds only through `/etc/ld.so.conf` are placed
/// in the interpreter's directory instead: the image has no `ld.so.cache`, so
/// the loader there only searches its built-in directories, which always
/// include the one it lives in.
///
/// Not modelled: `$LIB`/`$PLATFORM` expansion and glibc-hwcaps
/// subdirectories (the baseline library found instead runs everywhere).
#[cfg(test)]
pub fn runtime_closure(binary: &Path) -> Result<RuntimeClosure, ClosureError> {
    closure_with_ld_so_conf(binary, None, Path::new(LD_SO_CONF))
}

/// Like `runtime_closure` (above), for a binary that will sit at `binary_image_path` in the image:
/// libraries found through `$ORIGIN` go where `$ORIGIN` will point there (next to
/// `binary_image_path`), not at their host paths.
pub fn runtime_closure_for(
    binary: &Path,
    binary_image_path: &Path,
) -> Result<RuntimeClosure, ClosureError> {
    closure_with_ld_so_conf(binary, Some(binary_image_path), Path::new(LD_SO_CONF))
}

fn closure_with_ld_so_conf(
    binary: &Path,
    binary_image_path: Option<&Path>,
    conf: &Path,
) -> Result<RuntimeClosure, ClosureError> {
    let bytes = read_file(binary)?;
    let header = parse_header(binary, &bytes)?;
    let file_type = header.e_type(LittleEndian);
    if file_type != elf::ET_EXEC && file_type != elf::ET_DYN {
        return Err(unsupported(
            binary,
            format!("not an executable (e_type {})", file_type.0),
        ));
    }
    let info = parse_dynamic_info(binary, &bytes)?;
    let Some(interpreter) = info.interpreter.clone() else {
        // Needs nothing from the host, whatever the machine.
        return Ok(RuntimeClosure {
            linkage: Linkage::Static,
            files: Vec::new(),
        });
    };
    let machine = header.e_machine(LittleEndian);
    let Some(triplet) = multiarch_triplet(machine) else {
        return Err(unsupported(
            binary,
            format!("unsupported machine (e_machine {})", machine.0),
        ));
    };

    let mut resolver = Resolver::new(
        binary,
        binary_image_path,
        info,
        &interpreter,
        machine,
        ld_so_conf_dirs(conf),
        default_library_dirs(triplet),
    )?;
    resolver.load_dependencies()?;
    Ok(RuntimeClosure {
        linkage: Linkage::Dynamic {
            interpreter: PathBuf::from(interpreter),
        },
        files: resolver.into_files(),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ClosureError> {
    fs::read(path).map_err(|source| ClosureError::Io {
        path: path.to_owned(),
        source,
    })
}

fn canonicalize(path: &Path) -> Result<PathBuf, ClosureError> {
    fs::canonicalize(path).map_err(|source| ClosureError::Io {
        path: path.to_owned(),
        source,
    })
}

fn utf8(path: &Path, bytes: &[u8], what: &str) -> Result<String, ClosureError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(path, format!("{what} is not UTF-8")))
}

fn malformed(path: &Path, reason: String) -> ClosureError {
    ClosureError::Malformed {
        path: path.to_owned(),
        reason,
    }
}

fn unsupported(path: &Path, reason: String) -> ClosureError {
    ClosureError::Unsupported {
        path: path.to_owned(),
        reason,
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".to_owned();
    }
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::test_support::{
        assert_sorted_unique_regular_files, canonical_tempdir, cc, image_paths, system_ls,
        write_file,
    };
    use super::*;

    #[test]
    fn ls_needs_interpreter_and_libc() {
        let closure = runtime_closure(&system_ls()).expect("closure of ls");
        assert_eq!(
            closure.linkage,
            Linkage::Dynamic {
                interpreter: PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            }
        );
        assert_sorted_unique_regular_files(&closure);
        let paths = image_paths(&closure);
        assert!(
            paths.contains(&"/lib64/ld-linux-x86-64.so.2".to_owned()),
            "{paths:?}"
        );
        let libc = closure
            .files
            .iter()
            .find(|file| file.image_path.ends_with("libc.so.6"))
            .expect("libc.so.6 in the closure");
        // Placed where the image's loader searches, not where /lib's symlink points.
        assert!(
            libc.image_path == Path::new("/lib/x86_64-linux-gnu/libc.so.6")
                || libc.image_path == Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            "{libc:?}"
        );
        // libc's DT_NEEDED on ld-linux-x86-64.so.2 is satisfied by the interpreter.
        let loader_copies = paths
            .iter()
            .filter(|path| path.ends_with("ld-linux-x86-64.so.2"))
            .count();
        assert_eq!(loader_copies, 1, "{paths:?}");
    }

    #[test]
    fn busybox_static_is_static() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.is_file() {
            eprintln!("skipped: /bin/busybox is not installed");
            return;
        }
        let closure = runtime_closure(busybox).expect("closure of busybox");
        assert_eq!(closure.linkage, Linkage::Static);
        assert!(closure.files.is_empty());
    }

    #[test]
    fn foreign_machine_is_unsupported() {
        let mut ls = fs::read(system_ls()).expect("read ls");
        let dir = tempfile::tempdir().expect("tempdir");
        // e_machine is the little-endian u16 at offset 18.
        ls[18..20].copy_from_slice(&elf::EM_RISCV.0.to_le_bytes());
        let riscv = write_file(dir.path(), "riscv", &ls);
        let error = runtime_closure(&riscv).expect_err("riscv");
        assert!(matches!(error, ClosureError::Unsupported { .. }), "{error}");

        // aarch64 is supported, but not with this host's x86-64 interpreter.
        ls[18..20].copy_from_slice(&elf::EM_AARCH64.0.to_le_bytes());
        let aarch64 = write_file(dir.path(), "aarch64", &ls);
        let error = runtime_closure(&aarch64).expect_err("aarch64");
        assert!(matches!(error, ClosureError::Unsupported { .. }), "{error}");
    }

    #[test]
    fn static_and_static_pie_executables_are_static() {
        let (_dir, root) = canonical_tempdir();
        let source = write_file(&root, "main.c", b"int main(void) { return 0; }\n");
        for flag in ["-static", "-static-pie"] {
            let output = root.join(format!("main{flag}"));
            if cc(&[
                flag.into(),
                format!("-o{}", output.display()),
                source.display().to_string(),
            ])
            .is_none()
            {
                continue;
            }
            let closure = runtime_closure(&output).expect("closure");
            assert_eq!(closure.linkage, Linkage::Static, "{flag}");
            assert!(closure.files.is_empty(), "{flag}");
        }
    }
}
