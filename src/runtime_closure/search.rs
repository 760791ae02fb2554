//! The loader's search order: `DT_NEEDED` names resolved breadth-first through RPATH/RUNPATH
//! (with `$ORIGIN`), ld.so.conf and the default directories, and where each library goes in
//! the image.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::elf_file::{
    DynamicInfo, ELF64_HEADER_LEN, needed_versions, parse_dynamic_info, parse_header,
};
use super::{ClosureError, RuntimeFile, canonicalize, read_file, unsupported};

use object::LittleEndian;
use object::elf;
use object::read::elf::FileHeader as _;

/// Names the kernel maps into every process (the vDSO): there is never a file.
pub(super) const KERNEL_PROVIDED: &[&str] =
    &["linux-vdso.so.1", "linux-vdso64.so.1", "linux-gate.so.1"];

/// Debian multiarch tuple of the machines we know library directories for.
pub(super) fn multiarch_triplet(machine: elf::Machine) -> Option<&'static str> {
    match machine {
        elf::EM_X86_64 => Some("x86_64-linux-gnu"),
        elf::EM_AARCH64 => Some("aarch64-linux-gnu"),
        _ => None,
    }
}

/// The loader's built-in search path, after `ld.so.cache`.
pub(super) fn default_library_dirs(triplet: &str) -> Vec<PathBuf> {
    [
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
        "/lib64".to_owned(),
        "/usr/lib64".to_owned(),
        "/lib".to_owned(),
        "/usr/lib".to_owned(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// An object in the load order: the executable first, then libraries breadth-first.
pub(super) struct LoadedObject {
    /// The path the loader opens it by (not canonicalized): `$ORIGIN` is its directory.
    pub(super) path: PathBuf,
    /// Where it sits in the image: `$ORIGIN` there, for placing what it finds through it.
    pub(super) image_path: PathBuf,
    pub(super) info: DynamicInfo,
    /// Index of the object whose `DT_NEEDED` first pulled this one in.
    pub(super) loaded_by: Option<usize>,
}

/// A directory to look for libraries in, and where a library found there goes in the image.
pub(super) struct SearchDir {
    pub(super) host_dir: PathBuf,
    pub(super) image_dir: PathBuf,
}

pub(super) struct FoundLibrary {
    /// Where it was found, as the loader would open it (symlinks unresolved).
    pub(super) host_path: PathBuf,
    pub(super) image_path: PathBuf,
}

pub(super) struct Resolver {
    pub(super) machine: elf::Machine,
    pub(super) ld_so_conf_dirs: Vec<PathBuf>,
    pub(super) default_dirs: Vec<PathBuf>,
    /// Image directory for libraries found only through ld.so.conf.
    pub(super) interpreter_dir: PathBuf,
    pub(super) objects: Vec<LoadedObject>,
    /// Names that already refer to a loaded object (`DT_NEEDED` names, sonames,
    /// the interpreter path): the loader reuses it instead of searching again.
    pub(super) loaded_names: HashSet<String>,
    /// Image path → canonical host path.
    pub(super) files: BTreeMap<PathBuf, PathBuf>,
}

impl Resolver {
    /// Starts with the executable and its interpreter loaded.
    pub(super) fn new(
        binary: &Path,
        binary_image_path: Option<&Path>,
        binary_info: DynamicInfo,
        interpreter: &str,
        machine: elf::Machine,
        ld_so_conf_dirs: Vec<PathBuf>,
        default_dirs: Vec<PathBuf>,
    ) -> Result<Self, ClosureError> {
        let interpreter_image_path = PathBuf::from(interpreter);
        if !interpreter_image_path.is_absolute() {
            return Err(unsupported(
                binary,
                format!("relative interpreter path {interpreter}"),
            ));
        }
        let interpreter_host_path = canonicalize(&interpreter_image_path)?;
        let interpreter_bytes = read_file(&interpreter_host_path)?;
        let interpreter_header = parse_header(&interpreter_host_path, &interpreter_bytes)?;
        if interpreter_header.e_machine(LittleEndian) != machine {
            return Err(unsupported(
                &interpreter_host_path,
                format!(
                    "interpreter is for another machine than {}",
                    binary.display()
                ),
            ));
        }
        let interpreter_info = parse_dynamic_info(&interpreter_host_path, &interpreter_bytes)?;

        // libc.so.6 needs "ld-linux-x86-64.so.2": the loader satisfies that by
        // the interpreter's soname, it never searches for a second copy.
        let mut loaded_names = HashSet::from([interpreter.to_owned()]);
        loaded_names.extend(interpreter_info.soname);
        loaded_names.extend(binary_info.soname.clone());

        let interpreter_dir = interpreter_host_path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let files = BTreeMap::from([(
            normalize_lexically(&interpreter_image_path),
            interpreter_host_path,
        )]);
        // Like /proc/self/exe, which glibc uses for the executable's $ORIGIN.
        let binary_path = canonicalize(binary)?;

        Ok(Resolver {
            machine,
            ld_so_conf_dirs,
            default_dirs,
            interpreter_dir,
            objects: vec![LoadedObject {
                image_path: binary_image_path
                    .map_or_else(|| binary_path.clone(), Path::to_path_buf),
                path: binary_path,
                info: binary_info,
                loaded_by: None,
            }],
            loaded_names,
            files,
        })
    }

    /// Loads `DT_NEEDED` entries breadth-first, each name once, like glibc.
    pub(super) fn load_dependencies(&mut self) -> Result<(), ClosureError> {
        let mut queue = VecDeque::from([0]);
        while let Some(index) = queue.pop_front() {
            let needed = self.objects[index].info.needed.clone();
            for name in needed {
                if KERNEL_PROVIDED.contains(&name.as_str()) || self.loaded_names.contains(&name) {
                    continue;
                }
                let found = self.find_library(index, &name)?;
                let bytes = read_file(&found.host_path)?;
                let info = parse_dynamic_info(&found.host_path, &bytes)?;
                let canonical_path = canonicalize(&found.host_path)?;

                self.loaded_names.insert(name);
                self.loaded_names.extend(info.soname.clone());
                self.files
                    .entry(found.image_path.clone())
                    .or_insert(canonical_path);
                self.objects.push(LoadedObject {
                    image_path: found.image_path,
                    path: found.host_path,
                    info,
                    loaded_by: Some(index),
                });
                queue.push_back(self.objects.len() - 1);
            }
        }
        Ok(())
    }

    pub(super) fn find_library(
        &self,
        needing: usize,
        name: &str,
    ) -> Result<FoundLibrary, ClosureError> {
        let needing_object = &self.objects[needing];
        let not_found = |searched| ClosureError::LibraryNotFound {
            library: name.to_owned(),
            needed_by: needing_object.path.clone(),
            searched,
        };

        if name.contains('/') {
            let path = expand_origin(name, origin_of(&needing_object.path));
            if path.is_absolute() && self.is_loadable(&path) {
                let image_path = expand_origin(name, origin_of(&needing_object.image_path));
                return Ok(FoundLibrary {
                    image_path: normalize_lexically(&image_path),
                    host_path: path,
                });
            }
            return Err(not_found(vec![path]));
        }

        let mut searched: Vec<PathBuf> = Vec::new();
        for dir in self.search_dirs(needing) {
            let candidate = dir.host_dir.join(name);
            if self.is_loadable(&candidate) {
                return Ok(FoundLibrary {
                    image_path: normalize_lexically(&dir.image_dir.join(name)),
                    host_path: candidate,
                });
            }
            if !searched.contains(&dir.host_dir) {
                searched.push(dir.host_dir);
            }
        }
        Err(not_found(searched))
    }

    /// glibc's order for a name without '/': `DT_RPATH` of the needing object and
    /// of the chain that loaded it (only if the needing object has no
    /// `DT_RUNPATH`), `DT_RUNPATH` of the needing object, ld.so.conf (standing in
    /// for ld.so.cache), the built-in directories.
    pub(super) fn search_dirs(&self, needing: usize) -> Vec<SearchDir> {
        let needing_object = &self.objects[needing];
        let mut dirs = Vec::new();
        let mut add_path_list = |entries: &[String], owner: &LoadedObject| {
            for entry in entries {
                let dir = expand_origin(entry, origin_of(&owner.path));
                // A relative entry depends on the working directory at run time.
                if dir.is_absolute() {
                    dirs.push(SearchDir {
                        host_dir: dir,
                        image_dir: expand_origin(entry, origin_of(&owner.image_path)),
                    });
                }
            }
        };

        if needing_object.info.runpath.is_none() {
            let mut chain = Some(needing);
            while let Some(index) = chain {
                let object = &self.objects[index];
                add_path_list(&object.info.rpath, object);
                chain = object.loaded_by;
            }
        }
        if let Some(runpath) = &needing_object.info.runpath {
            add_path_list(runpath, needing_object);
        }
        if !needing_object.info.no_default_dirs {
            for dir in &self.ld_so_conf_dirs {
                let image_dir = if self.default_dirs.contains(dir) {
                    dir.clone()
                } else {
                    self.interpreter_dir.clone()
                };
                dirs.push(SearchDir {
                    host_dir: dir.clone(),
                    image_dir,
                });
            }
            for dir in &self.default_dirs {
                dirs.push(SearchDir {
                    host_dir: dir.clone(),
                    image_dir: dir.clone(),
                });
            }
        }
        dirs
    }

    /// Whether the loader would accept this file: an ELF of the binary's class and
    /// machine. Anything else (missing, a directory, 32-bit, foreign) is skipped.
    pub(super) fn is_loadable(&self, path: &Path) -> bool {
        let mut header_bytes = Vec::new();
        let read = fs::File::open(path)
            .and_then(|file| file.take(ELF64_HEADER_LEN).read_to_end(&mut header_bytes));
        read.is_ok()
            && parse_header(path, &header_bytes)
                .is_ok_and(|header| header.e_machine(LittleEndian) == self.machine)
    }

    pub(super) fn into_files(self) -> Vec<RuntimeFile> {
        self.files
            .into_iter()
            .map(|(image_path, host_path)| RuntimeFile {
                image_path,
                host_path,
            })
            .collect()
    }
}

pub(super) fn origin_of(object_path: &Path) -> &Path {
    object_path.parent().unwrap_or(Path::new("/"))
}

/// Replaces `$ORIGIN` and `${ORIGIN}` with `origin`. Like glibc, `$ORIGINX` is
/// not `$ORIGIN` followed by "X", so it is left alone.
pub(super) fn expand_origin(entry: &str, origin: &Path) -> PathBuf {
    let mut expanded = OsString::new();
    let mut rest = entry;
    while let Some(dollar) = rest.find('$') {
        expanded.push(&rest[..dollar]);
        let after_dollar = &rest[dollar + 1..];
        if let Some(after) = after_dollar.strip_prefix("{ORIGIN}") {
            expanded.push(origin);
            rest = after;
        } else if let Some(after) = after_dollar
            .strip_prefix("ORIGIN")
            .filter(|after| !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        {
            expanded.push(origin);
            rest = after;
        } else {
            expanded.push("$");
            rest = after_dollar;
        }
    }
    expanded.push(rest);
    PathBuf::from(expanded)
}

/// Resolves "." and ".." without touching the file system: in the image the
/// directories are real directories we create, not the host's symlinks.
pub(super) fn normalize_lexically(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}

/// The loader's directories for a `DT_NEEDED` name without a '/', in order: the binary's
/// RUNPATH/RPATH (entries with `$ORIGIN` are skipped: they name the host), then `cache_dirs`
/// (what the image's `ld.so.cache` was made from, its `ld.so.conf`), then the default and
/// multiarch directories.
pub fn library_search_dirs(requirements: &Requirements, cache_dirs: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = requirements
        .search_path
        .iter()
        .filter(|d| d.starts_with('/') && !d.contains('$'))
        .cloned()
        .collect();
    dirs.extend(cache_dirs.iter().cloned());
    let triplet = requirements.triplet.unwrap_or("x86_64-linux-gnu");
    for d in default_library_dirs(triplet) {
        let d = d.to_string_lossy().into_owned();
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// What a dynamically linked executable asks of the system it runs on: checked against a base
/// image's filesystem before pushing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// `PT_INTERP`; `None` for a static executable.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` if present, else `DT_RPATH` (glibc ignores RPATH when RUNPATH exists).
    pub search_path: Vec<String>,
    /// Version names (`GLIBC_2.34`) needed per library file (`libc.so.6`), from `.gnu.version_r`.
    pub versions: BTreeMap<String, Vec<String>>,
    /// Multiarch triplet of the machine (`x86_64-linux-gnu`), for the default directories.
    pub triplet: Option<&'static str>,
}

/// Reads an executable's [`Requirements`].
pub fn requirements(binary: &Path) -> Result<Requirements, ClosureError> {
    let bytes = read_file(binary)?;
    let header = parse_header(binary, &bytes)?;
    let info = parse_dynamic_info(binary, &bytes)?;
    let search_path = match &info.runpath {
        Some(runpath) => runpath.clone(),
        None => info.rpath.clone(),
    };
    Ok(Requirements {
        interpreter: info.interpreter.clone(),
        needed: info.needed.clone(),
        search_path,
        versions: needed_versions(binary, &bytes)?,
        triplet: multiarch_triplet(header.e_machine(LittleEndian)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_closure::test_support::{
        assert_sorted_unique_regular_files, build_main_foo_bar, canonical_tempdir, cc, image_paths,
        system_ls, write_file,
    };
    use crate::runtime_closure::{closure_with_ld_so_conf, runtime_closure, runtime_closure_for};

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
