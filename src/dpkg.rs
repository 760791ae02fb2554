//! The host's Debian package database, read to say which package each host file copied into an
//! image came from: `info/*.list` (the files of each package) and `status` (name, version,
//! architecture, source of each installed package), plus `/etc/os-release` (the distribution).
//!
//! Paths are matched by the file's canonical path on both sides: dpkg lists a file under the path
//! its package shipped it at (`/lib/x86_64-linux-gnu/libc.so.6`), which on a merged-`/usr` host
//! is a symlinked directory away from where the file is found (`/usr/lib/x86_64-linux-gnu/...`).
//!
//! What is attributed is exactly what dpkg says. A cross sysroot's libraries
//! (`/usr/aarch64-linux-gnu/lib/libc.so.6`) belong to a cross package such as
//! `libc6-arm64-cross` (Architecture: all), and are named so: scanners then match that package
//! (whose versions follow glibc's Debian versions) rather than `libc6:arm64`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Where dpkg keeps its database on a Debian-family host.
pub const ADMIN_DIR: &str = "/var/lib/dpkg";
/// The distribution's identity.
pub const OS_RELEASE: &str = "/etc/os-release";

/// Upper bounds on what is read, so a damaged database cannot exhaust memory.
const MAX_LIST_BYTES: u64 = 64 << 20;
const MAX_STATUS_BYTES: u64 = 256 << 20;
const MAX_OS_RELEASE_BYTES: u64 = 64 << 10;

/// One installed package, as `status` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package's name (`Source:`, else the package's own name).
    pub source: String,
    /// The source package's version when `Source:` gives one (`openssl (3.0.2-1)`).
    pub source_version: Option<String>,
    /// The package's stanza from `status`, without the host's own state (`Conffiles`,
    /// `Config-Version`): what the image's `status.d/<package>` holds.
    pub stanza: String,
}

impl Package {
    /// `name:arch` for a package whose architecture is not `all`: dpkg's own name for it, and
    /// unique across a multi-arch host.
    pub fn key(&self) -> String {
        if self.architecture == "all" {
            self.name.clone()
        } else {
            format!("{}:{}", self.name, self.architecture)
        }
    }

    /// The package URL, as the purl spec's `deb` type and Syft write it:
    /// `pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12`.
    pub fn purl(&self, os: &OsRelease) -> String {
        let namespace = os.id.as_deref().unwrap_or("debian");
        let mut purl = format!(
            "pkg:deb/{}/{}@{}?arch={}",
            percent(namespace),
            percent(&self.name),
            percent(&self.version),
            percent(&self.architecture)
        );
        if let Some(distro) = os.distro() {
            purl.push_str(&format!("&distro={}", percent(&distro)));
        }
        purl
    }
}

/// Percent-encodes everything but the purl spec's unreserved characters.
pub fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The fields of `/etc/os-release` an image's copy carries, in the order written.
pub const OS_RELEASE_FIELDS: &[&str] = &[
    "PRETTY_NAME",
    "NAME",
    "VERSION_ID",
    "VERSION",
    "VERSION_CODENAME",
    "ID",
    "ID_LIKE",
    "HOME_URL",
    "SUPPORT_URL",
    "BUG_REPORT_URL",
];

/// The distribution, from `os-release`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    /// Every `KEY=value` read, unquoted.
    pub fields: BTreeMap<String, String>,
}

impl OsRelease {
    /// Parses `os-release(5)`: `KEY=value` lines, values optionally quoted; comments and
    /// malformed lines are skipped.
    pub fn parse(text: &str) -> OsRelease {
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| value.to_string());
            fields.insert(key.trim().to_string(), value);
        }
        OsRelease {
            id: fields.get("ID").cloned(),
            version_id: fields.get("VERSION_ID").cloned(),
            fields,
        }
    }

    /// The host's, when it has one.
    pub fn read(path: &Path) -> Option<OsRelease> {
        let mut text = String::new();
        std::fs::File::open(path)
            .ok()?
            .take(MAX_OS_RELEASE_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        Some(OsRelease::parse(&text))
    }

    /// `debian-12`: the purl's `distro` qualifier.
    pub fn distro(&self) -> Option<String> {
        Some(format!(
            "{}-{}",
            self.id.as_ref()?,
            self.version_id.as_ref()?
        ))
    }

    /// The image's `/etc/os-release`: the host's identifying fields, quoted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for key in OS_RELEASE_FIELDS {
            if let Some(value) = self.fields.get(*key) {
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('$', "\\$")
                    .replace('`', "\\`");
                out.push_str(&format!("{key}=\"{escaped}\"\n"));
            }
        }
        out
    }
}

/// Which package each of some host files belongs to.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// By the host path asked about (as given), the key ([`Package::key`]) of its package.
    pub owners: BTreeMap<PathBuf, String>,
    /// The packages named in `owners`, by key.
    pub packages: BTreeMap<String, Package>,
}

/// Finds the packages that own `files` (host paths) in the dpkg database at `admin_dir`.
/// `Ok(None)`: there is no dpkg database there (not a Debian-family host). Files no package lists
/// are left out of the answer.
pub fn attribute(admin_dir: &Path, files: &[PathBuf]) -> io::Result<Option<Attribution>> {
    let info = admin_dir.join("info");
    let status_path = admin_dir.join("status");
    if !info.is_dir() || !status_path.is_file() {
        return Ok(None);
    }
    // What is looked for: each file's canonical path, grouped by file name so that most list
    // lines are ruled out without touching the file system.
    let mut wanted: HashMap<PathBuf, Vec<&PathBuf>> = HashMap::new();
    let mut names: BTreeSet<Vec<u8>> = BTreeSet::new();
    for file in files {
        let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        if let Some(name) = canonical.file_name() {
            names.insert(name.as_encoded_bytes().to_vec());
        }
        wanted.entry(canonical).or_default().push(file);
    }
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut dirs = CanonicalDirs::default();
    let mut read = 0u64;
    let mut lists: Vec<_> = std::fs::read_dir(&info)
        .map_err(|e| at(&info, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "list"))
        .collect();
    lists.sort();
    for list in lists {
        let Some(owner) = list.file_stem().and_then(|s| s.to_str()).map(String::from) else {
            continue;
        };
        let mut text = Vec::new();
        std::fs::File::open(&list)
            .and_then(|f| f.take(MAX_LIST_BYTES - read).read_to_end(&mut text))
            .map_err(|e| at(&list, e))?;
        read += text.len() as u64;
        if read >= MAX_LIST_BYTES {
            return Err(io::Error::other(format!(
                "{}: the package file lists are larger than {} MiB together; not reading further",
                info.display(),
                MAX_LIST_BYTES >> 20
            )));
        }
        for line in text.split(|&b| b == b'\n') {
            let Some(slash) = line.iter().rposition(|&b| b == b'/') else {
                continue;
            };
            if !names.contains(&line[slash + 1..]) {
                continue;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let listed = Path::new(line);
            let (Some(parent), Some(name)) = (listed.parent(), listed.file_name()) else {
                continue;
            };
            let Some(dir) = dirs.get(parent) else {
                continue;
            };
            if let Some(asked) = wanted.get(&dir.join(name)) {
                for file in asked {
                    // Several packages may list one path (diversions aside, rare): the first
                    // in name order is kept, so the answer does not depend on read_dir's order.
                    owners
                        .entry((*file).clone())
                        .or_insert_with(|| owner.clone());
                }
            }
        }
    }
    let status = read_bounded(&status_path, MAX_STATUS_BYTES)?;
    let installed = parse_status(&status);
    let mut attribution = Attribution::default();
    for (file, list_name) in owners {
        // A list named `libc6:amd64` is that package of that architecture; an unqualified
        // name is the only package of that name.
        let (name, arch) = match list_name.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (list_name.as_str(), None),
        };
        let Some(package) = installed
            .iter()
            .find(|p| p.name == name && arch.is_none_or(|a| p.architecture == a))
        else {
            continue;
        };
        attribution.owners.insert(file, package.key());
        attribution
            .packages
            .entry(package.key())
            .or_insert_with(|| package.clone());
    }
    Ok(Some(attribution))
}

/// The packages `status` says are installed (`Status: install ok installed`).
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let stanza = stanza.trim_matches('\n');
        if stanza.is_empty() {
            continue;
        }
        let fields = fields(stanza);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim().to_string())
        };
        let installed =
            get("Status").is_some_and(|s| s.split_whitespace().last() == Some("installed"));
        let (Some(name), Some(version), Some(architecture)) =
            (get("Package"), get("Version"), get("Architecture"))
        else {
            continue;
        };
        if !installed {
            continue;
        }
        let (source, source_version) = match get("Source") {
            Some(s) => match s.split_once(' ') {
                Some((n, v)) => (
                    n.to_string(),
                    v.trim()
                        .strip_prefix('(')
                        .and_then(|v| v.strip_suffix(')'))
                        .map(|v| v.trim().to_string()),
                ),
                None => (s, None),
            },
            None => (name.clone(), None),
        };
        let kept: Vec<&str> = stanza_lines(stanza)
            .into_iter()
            .filter(|(key, _)| {
                !key.eq_ignore_ascii_case("Conffiles")
                    && !key.eq_ignore_ascii_case("Config-Version")
            })
            .map(|(_, text)| text)
            .collect();
        packages.push(Package {
            name,
            version,
            architecture,
            source,
            source_version,
            stanza: format!("{}\n", kept.join("\n")),
        });
    }
    packages
}

/// Each field of a stanza with its full text (continuation lines included).
fn stanza_lines(stanza: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut start = 0;
    let mut key = "";
    let mut offset = 0;
    for line in stanza.split_inclusive('\n') {
        let continuation = line.starts_with(' ') || line.starts_with('\t');
        if !continuation {
            if offset > start {
                out.push((key, stanza[start..offset].trim_end_matches('\n')));
            }
            start = offset;
            key = line.split_once(':').map_or("", |(k, _)| k.trim());
        }
        offset += line.len();
    }
    if offset > start {
        out.push((key, stanza[start..offset].trim_end_matches('\n')));
    }
    out
}

/// The fields of a stanza, values with continuation lines joined.
fn fields(stanza: &str) -> Vec<(&str, String)> {
    stanza_lines(stanza)
        .into_iter()
        .map(|(key, text)| {
            let value = text.split_once(':').map_or("", |(_, v)| v);
            (key, value.to_string())
        })
        .collect()
}

/// Canonical directories, each resolved once.
#[derive(Default)]
struct CanonicalDirs(HashMap<PathBuf, Option<PathBuf>>);

impl CanonicalDirs {
    fn get(&mut self, dir: &Path) -> Option<&PathBuf> {
        self.0
            .entry(dir.to_path_buf())
            .or_insert_with(|| std::fs::canonicalize(dir).ok())
            .as_ref()
    }
}

fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut text))
        .map_err(|e| at(path, e))?;
    if text.len() as u64 > max {
        return Err(io::Error::other(format!(
            "{} is larger than {} MiB; not reading it",
            path.display(),
            max >> 20
        )));
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Conffiles:
 /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl (3.0.15-1~deb12u1)
Version: 3.0.15-1~deb12u1
Description: Secure Sockets Layer toolkit

Package: libc6
Status: install ok installed
Architecture: i386
Source: glibc
Version: 2.36-9+deb12u4

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libc6-arm64-cross
Status: install ok installed
Architecture: all
Source: cross-toolchain-base
Version: 2.36-8cross1
";

    /// A small host: `/lib` a symlink to `usr/lib` (merged /usr), a dpkg database listing files
    /// under `/lib`, one list named with its architecture.
    fn host(root: &Path) -> PathBuf {
        let admin = root.join("var/lib/dpkg");
        fs::create_dir_all(admin.join("info")).unwrap();
        fs::write(admin.join("status"), STATUS).unwrap();
        fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(root.join("usr/lib/i386-linux-gnu")).unwrap();
        fs::create_dir_all(root.join("usr/aarch64-linux-gnu/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        for f in [
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/i386-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libssl.so.3",
            "usr/aarch64-linux-gnu/lib/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libmine.so",
        ] {
            fs::write(root.join(f), f).unwrap();
        }
        let r = root.display();
        fs::write(
            admin.join("info/libc6:amd64.list"),
            format!("/.\n{r}/lib\n{r}/lib/x86_64-linux-gnu\n{r}/lib/x86_64-linux-gnu/libc.so.6\n"),
        )
        .unwrap();
        fs::write(
            admin.join("info/libc6:i386.list"),
            format!("/.\n{r}/lib/i386-linux-gnu/libc.so.6\n"),
        )
        .unwrap();
        fs::write(
            admin.join("info/libssl3:amd64.list"),
            format!("/.\n{r}/usr/lib/x86_64-linux-gnu/libssl.so.3\n"),
        )
        .unwrap();
        fs::write(
            admin.join("info/libc6-arm64-cross.list"),
            format!("/.\n{r}/usr/aarch64-linux-gnu/lib/libc.so.6\n"),
        )
        .unwrap();
        admin
    }

    #[test]
    fn files_are_attributed_across_merged_usr_and_architecture_qualified_lists() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let admin = host(&root);
        let files: Vec<PathBuf> = [
            // Found under /usr, listed under /lib.
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            // Found through the symlink, listed under /usr.
            "lib/x86_64-linux-gnu/libssl.so.3",
            "usr/lib/i386-linux-gnu/libc.so.6",
            "usr/aarch64-linux-gnu/lib/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libmine.so",
        ]
        .iter()
        .map(|f| root.join(f))
        .collect();
        let a = attribute(&admin, &files).unwrap().unwrap();
        let owner = |i: usize| a.owners.get(&files[i]).map(String::as_str);
        assert_eq!(owner(0), Some("libc6:amd64"));
        assert_eq!(owner(1), Some("libssl3:amd64"));
        assert_eq!(owner(2), Some("libc6:i386"));
        assert_eq!(
            owner(3),
            Some("libc6-arm64-cross"),
            "what dpkg says, not libc6:arm64"
        );
        assert_eq!(owner(4), None, "no package lists it");
        let ssl = &a.packages["libssl3:amd64"];
        assert_eq!(ssl.version, "3.0.15-1~deb12u1");
        assert_eq!(ssl.source, "openssl");
        assert_eq!(ssl.source_version.as_deref(), Some("3.0.15-1~deb12u1"));
        let libc = &a.packages["libc6:amd64"];
        assert_eq!(libc.source, "glibc");
        assert_eq!(libc.source_version, None);
        assert!(!libc.stanza.contains("Conffiles") && !libc.stanza.contains("d4e7a7b8"));
        assert!(
            libc.stanza
                .contains("Description: GNU C Library: Shared libraries\n Contains")
        );
        assert!(
            libc.stanza
                .starts_with("Package: libc6\nStatus: install ok installed\n")
        );
        assert_eq!(a.packages["libc6-arm64-cross"].architecture, "all");
    }

    #[test]
    fn no_database_is_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        assert!(attribute(dir.path(), &[]).unwrap().is_none());
    }

    #[test]
    fn packages_not_installed_are_not_owners() {
        let installed = parse_status(STATUS);
        assert!(installed.iter().all(|p| p.name != "gone"));
        assert_eq!(installed.len(), 4);
    }

    #[test]
    fn purls_follow_the_deb_type() {
        let os = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\n# c\nNAME='Debian GNU/Linux'\n");
        assert_eq!(os.fields["NAME"], "Debian GNU/Linux");
        let p = &parse_status(STATUS)[0];
        assert_eq!(
            p.purl(&os),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        let ubuntu = OsRelease::parse("ID=ubuntu\nVERSION_ID=\"24.04\"\n");
        let epoch = Package {
            version: "1:1.3.dfsg-3".into(),
            ..p.clone()
        };
        assert_eq!(
            epoch.purl(&ubuntu),
            "pkg:deb/ubuntu/libc6@1%3A1.3.dfsg-3?arch=amd64&distro=ubuntu-24.04"
        );
        assert_eq!(
            os.render(),
            "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=\"debian\"\n"
        );
    }
}
