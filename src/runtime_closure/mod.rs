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
    use super::elf_file::needed_versions;
    use super::ld_so_conf::wildcard_matches;
    use super::search::Requirements;
    use super::search::{expand_origin, normalize_lexically};
    use super::*;
    use object::read::elf::ProgramHeader as _;
    use std::collections::HashSet;
    use std::process::Command;

    fn system_ls() -> PathBuf {
        ["/usr/bin/ls", "/bin/ls"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .expect("ls is installed")
    }

    fn host_libc() -> (PathBuf, HashSet<String>) {
        let path = PathBuf::from(format!(
            "/lib/{}/libc.so.6",
            multiarch_triplet(elf::EM_X86_64).unwrap()
        ));
        let bytes = fs::read(&path).expect("the host's libc");
        let defined = defined_versions(&path, &bytes).unwrap();
        (path, defined)
    }

    #[test]
    fn glibc_versions_of_real_files() {
        let (libc, defined) = host_libc();
        // glibc defines every version since the first of its architecture.
        assert!(defined.contains("GLIBC_2.2.5"), "{libc:?}: {defined:?}");
        assert!(defined.contains("GLIBC_2.34"), "{defined:?}");
        assert!(!defined.iter().any(|v| v == "libc.so.6"), "{defined:?}");

        let ls = system_ls();
        let needs = requirements(&ls).unwrap();
        let from_libc = needs.versions.get("libc.so.6").expect("ls uses libc");
        assert!(
            from_libc.iter().all(|v| v.starts_with("GLIBC_")),
            "{from_libc:?}"
        );
        // The host's libc runs the host's ls.
        assert_eq!(missing_versions(from_libc, &defined), Vec::<String>::new());
        // An older libc, without the newest version ls needs, is caught.
        let newest = from_libc
            .iter()
            .max_by_key(|v| {
                v.trim_start_matches("GLIBC_")
                    .split('.')
                    .map(|p| p.parse::<u32>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
            .unwrap()
            .clone();
        let mut older = defined.clone();
        older.remove(&newest);
        assert_eq!(missing_versions(from_libc, &older), vec![newest]);
        assert!(needs.interpreter.is_some());
        assert!(needs.needed.contains(&"libc.so.6".to_string()));
        // A library defines versions but needs none of its own from libc itself.
        let libc_needs = needed_versions(&libc, &fs::read(&libc).unwrap()).unwrap();
        assert!(!libc_needs.contains_key("libc.so.6"), "{libc_needs:?}");
    }

    #[test]
    fn search_dirs_put_rpath_first_and_skip_origin() {
        let needs = Requirements {
            search_path: vec!["/opt/lib".into(), "$ORIGIN/../lib".into()],
            triplet: Some("x86_64-linux-gnu"),
            ..Requirements::default()
        };
        let dirs = library_search_dirs(&needs, &["/usr/local/lib".to_string()]);
        assert_eq!(dirs[0], "/opt/lib");
        assert_eq!(dirs[1], "/usr/local/lib");
        assert_eq!(dirs[2], "/lib/x86_64-linux-gnu");
        assert!(!dirs.iter().any(|d| d.contains('$')));
    }

    fn write_file(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).expect("write test file");
        path
    }

    fn image_paths(closure: &RuntimeClosure) -> Vec<String> {
        closure
            .files
            .iter()
            .map(|file| file.image_path.display().to_string())
            .collect()
    }

    fn assert_sorted_unique_regular_files(closure: &RuntimeClosure) {
        for pair in closure.files.windows(2) {
            assert!(
                pair[0].image_path < pair[1].image_path,
                "not sorted or duplicated: {pair:?}"
            );
        }
        for file in &closure.files {
            assert!(file.image_path.is_absolute(), "{file:?}");
            let metadata = fs::symlink_metadata(&file.host_path).expect("host file exists");
            assert!(metadata.is_file(), "not a regular file: {file:?}");
        }
    }

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
    fn transitive_dependencies_are_resolved_once() {
        // apt → libstdc++.so.6 → libm.so.6, and libgcc_s.so.1 is needed twice.
        let apt = Path::new("/usr/bin/apt");
        if !apt.is_file() {
            eprintln!("skipped: /usr/bin/apt is not installed");
            return;
        }
        let closure = runtime_closure(apt).expect("closure of apt");
        assert_sorted_unique_regular_files(&closure);
        let names: Vec<_> = closure
            .files
            .iter()
            .filter_map(|file| file.image_path.file_name()?.to_str())
            .collect();
        for needed in ["libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libc.so.6"] {
            assert_eq!(
                names.iter().filter(|name| **name == needed).count(),
                1,
                "{needed} in {names:?}"
            );
        }
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
    fn files_that_are_not_elf_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = write_file(dir.path(), "empty", b"");
        let script = write_file(dir.path(), "script.sh", b"#!/bin/sh\necho hi\n");
        for path in [empty, script] {
            let error = runtime_closure(&path).expect_err("not ELF");
            assert!(matches!(error, ClosureError::NotElf { .. }), "{error}");
        }

        let missing = dir.path().join("missing");
        let error = runtime_closure(&missing).expect_err("missing file");
        assert!(matches!(error, ClosureError::Io { .. }), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn garbage_after_elf_magic_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut garbage = elf::ELFMAG.to_vec();
        garbage.extend([2, 1, 1]);
        garbage.extend((0..200u32).map(|i| (i.wrapping_mul(37) ^ 0xa5) as u8));
        let cases: [(&str, &[u8]); 4] = [
            ("magic-only", &elf::ELFMAG),
            ("garbage", &garbage),
            ("32-bit", &[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]),
            ("big-endian", &[0x7f, b'E', b'L', b'F', 2, 2, 1, 0]),
        ];
        for (name, bytes) in cases {
            let path = write_file(dir.path(), name, bytes);
            let error = runtime_closure(&path).expect_err(name);
            assert!(
                matches!(
                    error,
                    ClosureError::Malformed { .. } | ClosureError::Unsupported { .. }
                ),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn truncated_or_corrupted_binaries_never_panic() {
        let ls = fs::read(system_ls()).expect("read ls");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mangled");
        let check = |bytes: &[u8]| {
            fs::write(&path, bytes).expect("write");
            // Either outcome is fine; only a panic fails the test.
            let _ = runtime_closure(&path);
        };

        for length in (0..128).chain((128..ls.len()).step_by(4093)) {
            check(&ls[..length]);
        }
        // Deterministic pseudo-random corruption of the first pages (headers,
        // .dynstr) and of the dynamic section itself.
        let header = parse_header(&path, &ls).expect("ls header");
        let (dynamic_offset, dynamic_size) = header
            .program_headers(LittleEndian, &ls[..])
            .expect("ls program headers")
            .iter()
            .find(|segment| segment.p_type(LittleEndian) == elf::PT_DYNAMIC)
            .expect("ls has PT_DYNAMIC")
            .file_range(LittleEndian);
        let regions = [(0, 8192), (dynamic_offset as usize, dynamic_size as usize)];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..400 {
            let (start, size) = regions[round % regions.len()];
            let mut mangled = ls.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let position = start + (seed >> 33) as usize % size;
                mangled[position] = (seed >> 20) as u8;
            }
            check(&mangled);
        }
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
    fn missing_library_names_library_needer_and_dirs() {
        let mut ls = fs::read(system_ls()).expect("read ls");
        // Same length, so the .dynstr offsets stay valid.
        let (original, replacement) = (&b"\0libselinux.so.1\0"[..], &b"\0libnothere.so.1\0"[..]);
        let Some(position) = ls
            .windows(original.len())
            .position(|window| window == original)
        else {
            eprintln!("skipped: ls does not need libselinux.so.1");
            return;
        };
        ls[position..position + replacement.len()].copy_from_slice(replacement);
        let dir = tempfile::tempdir().expect("tempdir");
        let patched = write_file(dir.path(), "ls-patched", &ls);

        let error = runtime_closure(&patched).expect_err("missing library");
        let ClosureError::LibraryNotFound {
            library,
            needed_by,
            searched,
        } = &error
        else {
            panic!("unexpected error: {error}");
        };
        assert_eq!(library, "libnothere.so.1");
        assert_eq!(needed_by, &fs::canonicalize(&patched).expect("canonical"));
        assert!(searched.contains(&PathBuf::from("/lib/x86_64-linux-gnu")));
        let message = error.to_string();
        assert!(message.contains("libnothere.so.1"), "{message}");
        assert!(message.contains("ls-patched"), "{message}");
        assert!(message.contains("/usr/lib/x86_64-linux-gnu"), "{message}");
    }

    /// Runs the C compiler; `None` (the test is skipped) if there is none or it fails.
    fn cc(args: &[String]) -> Option<()> {
        match Command::new("cc").args(args).output() {
            Ok(output) if output.status.success() => Some(()),
            Ok(output) => {
                eprintln!(
                    "skipped: cc {args:?} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                None
            }
            Err(error) => {
                eprintln!("skipped: cannot run cc: {error}");
                None
            }
        }
    }

    /// Builds `root/bin/main` → `root/lib/libfoo.so` → `root/lib/libbar.so`,
    /// where main finds libfoo through `-rpath $ORIGIN/../lib`.
    fn build_main_foo_bar(root: &Path, main_dtags: &str, foo_flags: &[&str]) -> Option<PathBuf> {
        let (bin, lib) = (root.join("bin"), root.join("lib"));
        fs::create_dir_all(&bin).ok()?;
        fs::create_dir_all(&lib).ok()?;
        write_file(&lib, "bar.c", b"int bar(void) { return 0; }\n");
        write_file(
            &lib,
            "foo.c",
            b"int bar(void);\nint foo(void) { return bar(); }\n",
        );
        write_file(
            &bin,
            "main.c",
            b"int foo(void);\nint main(void) { return foo(); }\n",
        );
        let (bin, lib) = (bin.display(), lib.display());

        cc(&[
            "-shared".into(),
            "-fPIC".into(),
            format!("-o{lib}/libbar.so"),
            format!("{lib}/bar.c"),
        ])?;
        let mut foo_args = vec![
            "-shared".into(),
            "-fPIC".into(),
            format!("-o{lib}/libfoo.so"),
            format!("{lib}/foo.c"),
            format!("-L{lib}"),
            "-lbar".into(),
        ];
        foo_args.extend(foo_flags.iter().map(|flag| flag.to_string()));
        cc(&foo_args)?;
        cc(&[
            format!("-o{bin}/main"),
            format!("{bin}/main.c"),
            format!("-L{lib}"),
            "-lfoo".into(),
            format!("-Wl,-rpath-link,{lib}"),
            format!("-Wl,{main_dtags},-rpath,$ORIGIN/../lib"),
        ])?;
        Some(root.join("bin/main"))
    }

    fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical tempdir");
        (dir, root)
    }

    #[test]
    fn runpath_origin_is_expanded_and_normalized() {
        let (_dir, root) = canonical_tempdir();
        let Some(main) = build_main_foo_bar(
            &root,
            "--enable-new-dtags",
            &["-Wl,--enable-new-dtags,-rpath,$ORIGIN"],
        ) else {
            return;
        };
        let closure = runtime_closure(&main).expect("closure");
        assert_sorted_unique_regular_files(&closure);
        let paths = image_paths(&closure);
        for library in ["libfoo.so", "libbar.so"] {
            let expected = root.join("lib").join(library).display().to_string();
            assert!(paths.contains(&expected), "{expected} in {paths:?}");
        }
        assert!(paths.iter().all(|path| !path.contains("..")), "{paths:?}");
    }

    #[test]
    fn origin_libraries_follow_the_binary_to_its_image_path() {
        let (_dir, root) = canonical_tempdir();
        let Some(main) = build_main_foo_bar(
            &root,
            "--enable-new-dtags",
            &["-Wl,--enable-new-dtags,-rpath,$ORIGIN"],
        ) else {
            return;
        };
        let closure =
            runtime_closure_for(&main, Path::new("/usr/local/bin/main")).expect("closure");
        let paths = image_paths(&closure);
        // main's RUNPATH is $ORIGIN/../lib: /usr/local/lib in the image; libfoo's own
        // RUNPATH ($ORIGIN) then finds libbar beside it.
        for library in ["/usr/local/lib/libfoo.so", "/usr/local/lib/libbar.so"] {
            assert!(
                paths.contains(&library.to_string()),
                "{library} in {paths:?}"
            );
        }
        let root_text = root.display().to_string();
        assert!(
            paths.iter().all(|p| !p.starts_with(&root_text)),
            "no host path leaks into the image: {paths:?}"
        );
    }

    #[test]
    fn runpath_does_not_apply_to_indirect_dependencies() {
        // glibc: libfoo has no RUNPATH of its own, and main's RUNPATH only
        // serves main's own DT_NEEDED, so libbar.so is not found.
        let (_dir, root) = canonical_tempdir();
        let Some(main) = build_main_foo_bar(&root, "--enable-new-dtags", &[]) else {
            return;
        };
        let error = runtime_closure(&main).expect_err("libbar.so unreachable");
        let ClosureError::LibraryNotFound {
            library, needed_by, ..
        } = &error
        else {
            panic!("unexpected error: {error}");
        };
        assert_eq!(library, "libbar.so");
        assert_eq!(needed_by, &root.join("bin/../lib/libfoo.so"));
    }

    #[test]
    fn rpath_of_the_loading_chain_applies_to_indirect_dependencies() {
        let (_dir, root) = canonical_tempdir();
        let Some(main) = build_main_foo_bar(&root, "--disable-new-dtags", &[]) else {
            return;
        };
        let closure = runtime_closure(&main).expect("closure");
        let paths = image_paths(&closure);
        let libbar = root.join("lib/libbar.so").display().to_string();
        assert!(paths.contains(&libbar), "{libbar} in {paths:?}");
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

    #[test]
    fn libraries_found_only_through_ld_so_conf_go_next_to_the_interpreter() {
        let (_dir, root) = canonical_tempdir();
        let lib = root.join("extra-lib");
        fs::create_dir(&lib).expect("mkdir");
        write_file(&lib, "foo.c", b"int foo(void) { return 0; }\n");
        write_file(
            &root,
            "main.c",
            b"int foo(void);\nint main(void) { return foo(); }\n",
        );
        let (lib_dir, root_dir) = (lib.display(), root.display());
        let built = cc(&[
            "-shared".into(),
            "-fPIC".into(),
            format!("-o{lib_dir}/libfoo.so"),
            format!("{lib_dir}/foo.c"),
        ])
        .and_then(|()| {
            cc(&[
                format!("-o{root_dir}/main"),
                format!("{root_dir}/main.c"),
                format!("-L{lib_dir}"),
                "-lfoo".into(),
            ])
        });
        if built.is_none() {
            return;
        }
        let conf = write_file(&root, "ld.so.conf", format!("{lib_dir}\n").as_bytes());

        let closure = closure_with_ld_so_conf(&root.join("main"), None, &conf).expect("closure");
        let libfoo = closure
            .files
            .iter()
            .find(|file| file.image_path.ends_with("libfoo.so"))
            .expect("libfoo.so in the closure");
        let interpreter_dir = fs::canonicalize("/lib64/ld-linux-x86-64.so.2")
            .expect("interpreter")
            .with_file_name("libfoo.so");
        assert_eq!(libfoo.image_path, interpreter_dir);
        assert_eq!(libfoo.host_path, lib.join("libfoo.so"));

        let error = closure_with_ld_so_conf(&root.join("main"), None, &root.join("absent.conf"))
            .expect_err("libfoo.so is not in a default dir");
        assert!(error.to_string().contains("libfoo.so"), "{error}");
    }

    #[test]
    fn ld_so_conf_includes_are_followed_in_order() {
        let (_dir, root) = canonical_tempdir();
        let conf_d = root.join("conf.d");
        fs::create_dir(&conf_d).expect("mkdir");
        let conf = write_file(
            &root,
            "ld.so.conf",
            b"# comment\ninclude conf.d/*.conf\n/opt/first # trailing\nhwcap 0 nosegneg\n\
              /opt/legacy=libc6\nrelative/dir\ninclude ld.so.conf\n",
        );
        write_file(&conf_d, "b.conf", b"/opt/b\n/opt/first\n");
        write_file(&conf_d, "a.conf", b"/opt/a/\n");
        write_file(&conf_d, ".hidden.conf", b"/opt/hidden\n");
        write_file(&conf_d, "c.txt", b"/opt/txt\n");

        let dirs = ld_so_conf_dirs(&conf);
        let expected: Vec<PathBuf> = ["/opt/a", "/opt/b", "/opt/first", "/opt/legacy"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, expected);
        assert!(ld_so_conf_dirs(&root.join("absent.conf")).is_empty());
    }

    #[test]
    fn wildcards_match_like_glob() {
        assert!(wildcard_matches("*.conf", "libc.conf"));
        assert!(!wildcard_matches("*.conf", "libc.con"));
        assert!(!wildcard_matches("*.conf", ".hidden.conf"));
        assert!(wildcard_matches("a*b*c", "aXXbYc"));
        assert!(wildcard_matches("*a", "aaa"));
        assert!(wildcard_matches("lib?.conf", "libx.conf"));
        assert!(!wildcard_matches("lib?.conf", "lib.conf"));
        assert!(wildcard_matches("exact", "exact"));
    }

    #[test]
    fn origin_is_expanded_only_as_a_whole_word() {
        let origin = Path::new("/opt/app/bin");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", origin),
            Path::new("/opt/app/bin/../lib")
        );
        assert_eq!(
            expand_origin("${ORIGIN}/lib", origin),
            Path::new("/opt/app/bin/lib")
        );
        assert_eq!(
            expand_origin("/x/$ORIGINAL", origin),
            Path::new("/x/$ORIGINAL")
        );
        assert_eq!(expand_origin("/x/$LIB", origin), Path::new("/x/$LIB"));
    }

    #[test]
    fn paths_are_normalized_lexically() {
        assert_eq!(
            normalize_lexically(Path::new("/opt/app/bin/../lib/./libfoo.so")),
            Path::new("/opt/app/lib/libfoo.so")
        );
        assert_eq!(normalize_lexically(Path::new("/../x")), Path::new("/x"));
    }
}
