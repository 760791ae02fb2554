//! Reading ELF files: the header, `PT_INTERP` and the dynamic section, and the symbol
//! versions needed and defined (`.gnu.version_r`, `.gnu.version_d`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::{ClosureError, malformed, unsupported, utf8};

use object::LittleEndian;
use object::elf;
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _};

/// Size of `Elf64_Ehdr`: enough to tell whether a candidate library fits.
pub(super) const ELF64_HEADER_LEN: u64 = size_of::<elf::FileHeader64<LittleEndian>>() as u64;

/// The parts of an ELF file that decide what the loader loads for it.
#[derive(Debug, Default)]
pub(super) struct DynamicInfo {
    pub(super) interpreter: Option<String>,
    pub(super) needed: Vec<String>,
    pub(super) soname: Option<String>,
    /// `DT_RPATH` entries; empty when `DT_RUNPATH` exists, as glibc then ignores them.
    pub(super) rpath: Vec<String>,
    pub(super) runpath: Option<Vec<String>>,
    /// `DF_1_NODEFLIB`: dependencies are not searched in the cache or default dirs.
    pub(super) no_default_dirs: bool,
}

/// Checks the identification bytes and returns the 64-bit little-endian header.
pub(super) fn parse_header<'data>(
    path: &Path,
    bytes: &'data [u8],
) -> Result<&'data elf::FileHeader64<LittleEndian>, ClosureError> {
    // e_ident: 4 magic bytes, then EI_CLASS and EI_DATA.
    if bytes.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(ClosureError::NotElf {
            path: path.to_owned(),
        });
    }
    match bytes.get(4).copied().map(elf::FileClass) {
        Some(elf::ELFCLASS64) => {}
        Some(elf::ELFCLASS32) => return Err(unsupported(path, "32-bit ELF".to_owned())),
        _ => return Err(malformed(path, "invalid ELF class".to_owned())),
    }
    match bytes.get(5).copied().map(elf::DataEncoding) {
        Some(elf::ELFDATA2LSB) => {}
        Some(elf::ELFDATA2MSB) => return Err(unsupported(path, "big-endian ELF".to_owned())),
        _ => return Err(malformed(path, "invalid ELF data encoding".to_owned())),
    }
    elf::FileHeader64::<LittleEndian>::parse(bytes)
        .map_err(|error| malformed(path, error.to_string()))
}

/// Reads `PT_INTERP` and the `PT_DYNAMIC` entries through the program headers,
/// as the loader does (section headers may be stripped).
pub(super) fn parse_dynamic_info(path: &Path, bytes: &[u8]) -> Result<DynamicInfo, ClosureError> {
    let header = parse_header(path, bytes)?;
    let segments = header
        .program_headers(LittleEndian, bytes)
        .map_err(|error| malformed(path, error.to_string()))?;
    let mut info = DynamicInfo {
        interpreter: interpreter(path, bytes, segments)?,
        ..DynamicInfo::default()
    };
    let Some(entries) = dynamic_entries(path, bytes, segments)? else {
        return Ok(info);
    };
    let entries = DynamicEntries::read(entries);
    info.no_default_dirs = entries.no_default_dirs;
    if !entries.has_strings() {
        return Ok(info);
    }
    let strtab = string_table(path, bytes, segments, &entries)?;
    entries.read_strings(path, strtab, &mut info)?;
    Ok(info)
}

type Segments = [elf::ProgramHeader64<LittleEndian>];

/// `PT_INTERP`: the loader the kernel starts for this file.
fn interpreter(
    path: &Path,
    bytes: &[u8],
    segments: &Segments,
) -> Result<Option<String>, ClosureError> {
    for segment in segments {
        let interpreter = segment
            .interpreter(LittleEndian, bytes)
            .map_err(|error| malformed(path, error.to_string()))?;
        if let Some(interpreter) = interpreter {
            return Ok(Some(utf8(path, interpreter, "interpreter path")?));
        }
    }
    Ok(None)
}

/// The entries of the first `PT_DYNAMIC` segment, if there is one.
fn dynamic_entries<'data>(
    path: &Path,
    bytes: &'data [u8],
    segments: &Segments,
) -> Result<Option<&'data [elf::Dyn64<LittleEndian>]>, ClosureError> {
    for segment in segments {
        let entries = segment
            .dynamic(LittleEndian, bytes)
            .map_err(|error| malformed(path, error.to_string()))?;
        if entries.is_some() {
            return Ok(entries);
        }
    }
    Ok(None)
}

/// The dynamic entries that matter here. String-valued entries hold offsets into DT_STRTAB,
/// which may come later, so they are read as offsets first.
#[derive(Default)]
struct DynamicEntries {
    needed: Vec<u64>,
    soname: Option<u64>,
    rpath: Option<u64>,
    runpath: Option<u64>,
    strtab_address: Option<u64>,
    strtab_size: Option<u64>,
    no_default_dirs: bool,
}

impl DynamicEntries {
    fn read(entries: &[elf::Dyn64<LittleEndian>]) -> DynamicEntries {
        let endian = LittleEndian;
        let mut read = DynamicEntries::default();
        for entry in entries {
            let value = entry.d_val(endian);
            match entry.d_tag(endian) {
                elf::DT_NULL => break,
                elf::DT_NEEDED => read.needed.push(value),
                elf::DT_SONAME => read.soname = Some(value),
                elf::DT_RPATH => read.rpath = Some(value),
                elf::DT_RUNPATH => read.runpath = Some(value),
                elf::DT_STRTAB => read.strtab_address = Some(value),
                elf::DT_STRSZ => read.strtab_size = Some(value),
                elf::DT_FLAGS_1 => {
                    read.no_default_dirs = value & elf::DF_1_NODEFLIB.0 != 0;
                }
                _ => {}
            }
        }
        read
    }

    fn has_strings(&self) -> bool {
        !self.needed.is_empty()
            || self.soname.is_some()
            || self.rpath.is_some()
            || self.runpath.is_some()
    }

    /// DT_NEEDED, DT_SONAME, DT_RUNPATH and (without a DT_RUNPATH) DT_RPATH, from the table.
    fn read_strings(
        self,
        path: &Path,
        strtab: &[u8],
        info: &mut DynamicInfo,
    ) -> Result<(), ClosureError> {
        let string = |offset: u64, what: &str| string_at(path, strtab, offset, what);
        for offset in self.needed {
            info.needed.push(string(offset, "DT_NEEDED")?);
        }
        info.soname = self
            .soname
            .map(|offset| string(offset, "DT_SONAME"))
            .transpose()?;
        info.runpath = self
            .runpath
            .map(|offset| string(offset, "DT_RUNPATH").map(|list| split_path_list(&list)))
            .transpose()?;
        // glibc ignores DT_RPATH when DT_RUNPATH is present.
        if let (None, Some(offset)) = (&info.runpath, self.rpath) {
            info.rpath = split_path_list(&string(offset, "DT_RPATH")?);
        }
        Ok(())
    }
}

/// DT_STRTAB's bytes, found through the loaded segment that holds its address.
fn string_table<'data>(
    path: &Path,
    bytes: &'data [u8],
    segments: &Segments,
    entries: &DynamicEntries,
) -> Result<&'data [u8], ClosureError> {
    let (Some(address), Some(size)) = (entries.strtab_address, entries.strtab_size) else {
        return Err(malformed(path, "missing DT_STRTAB or DT_STRSZ".to_owned()));
    };
    segments
        .iter()
        .filter(|segment| segment.p_type(LittleEndian) == elf::PT_LOAD)
        .find_map(|segment| {
            segment
                .data_range(LittleEndian, bytes, address, size)
                .ok()
                .flatten()
        })
        .ok_or_else(|| malformed(path, "DT_STRTAB is outside the loaded segments".to_owned()))
}

/// The NUL-terminated string at `offset` in the string table.
fn string_at(path: &Path, strtab: &[u8], offset: u64, what: &str) -> Result<String, ClosureError> {
    let bytes = usize::try_from(offset)
        .ok()
        .and_then(|offset| strtab.get(offset..))
        .and_then(|rest| {
            rest.iter()
                .position(|&byte| byte == 0)
                .map(|end| &rest[..end])
        })
        .ok_or_else(|| malformed(path, format!("{what} string is outside DT_STRTAB")))?;
    utf8(path, bytes, what)
}

/// `.gnu.version_r`: version names needed from each library file.
pub fn needed_versions(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, Vec<String>>, ClosureError> {
    let endian = LittleEndian;
    let header = parse_header(path, bytes)?;
    let sections = header
        .sections(endian, bytes)
        .map_err(|e| malformed(path, e.to_string()))?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some((mut needs, link)) = sections
        .gnu_verneed(endian, bytes)
        .map_err(|e| malformed(path, e.to_string()))?
    else {
        return Ok(out);
    };
    let strings = sections
        .strings(endian, bytes, link)
        .map_err(|e| malformed(path, e.to_string()))?;
    while let Some((need, mut aux)) = needs.next().map_err(|e| malformed(path, e.to_string()))? {
        let file = need
            .file(endian, strings)
            .map_err(|e| malformed(path, e.to_string()))?;
        let file = utf8(path, file, "version file")?;
        while let Some(a) = aux.next().map_err(|e| malformed(path, e.to_string()))? {
            let name = a
                .name(endian, strings)
                .map_err(|e| malformed(path, e.to_string()))?;
            let name = utf8(path, name, "version name")?;
            let list = out.entry(file.clone()).or_default();
            if !list.contains(&name) {
                list.push(name);
            }
        }
    }
    for list in out.values_mut() {
        list.sort();
    }
    Ok(out)
}

/// `.gnu.version_d`: version names a library defines (`GLIBC_2.2.5` … for a libc).
pub fn defined_versions(path: &Path, bytes: &[u8]) -> Result<HashSet<String>, ClosureError> {
    let endian = LittleEndian;
    let header = parse_header(path, bytes)?;
    let sections = header
        .sections(endian, bytes)
        .map_err(|e| malformed(path, e.to_string()))?;
    let mut out = HashSet::new();
    let Some((mut defs, link)) = sections
        .gnu_verdef(endian, bytes)
        .map_err(|e| malformed(path, e.to_string()))?
    else {
        return Ok(out);
    };
    let strings = sections
        .strings(endian, bytes, link)
        .map_err(|e| malformed(path, e.to_string()))?;
    while let Some((def, mut aux)) = defs.next().map_err(|e| malformed(path, e.to_string()))? {
        // The base entry names the file itself (`libc.so.6`), not a version.
        if (def.vd_flags.get(endian) & elf::VER_FLG_BASE).0 != 0 {
            continue;
        }
        // The first aux entry is the version's own name; later ones name its parents.
        if let Some(a) = aux.next().map_err(|e| malformed(path, e.to_string()))? {
            let name = a
                .name(endian, strings)
                .map_err(|e| malformed(path, e.to_string()))?;
            out.insert(utf8(path, name, "version name")?);
        }
    }
    Ok(out)
}

/// Versions in `needed` that `defined` lacks, sorted.
pub fn missing_versions(needed: &[String], defined: &HashSet<String>) -> Vec<String> {
    let mut missing: Vec<String> = needed
        .iter()
        .filter(|v| !defined.contains(*v))
        .cloned()
        .collect();
    missing.sort();
    missing
}

pub(super) fn split_path_list(list: &str) -> Vec<String> {
    list.split(':')
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_closure::search::multiarch_triplet;
    use crate::runtime_closure::test_support::{system_ls, write_file};
    use crate::runtime_closure::{requirements, runtime_closure};
    use std::fs;
    use std::path::PathBuf;

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
}
