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
