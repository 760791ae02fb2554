//! What is compiled into one binary: the resolved dependency graph of its package for one Rust
//! target and one feature selection, from `cargo metadata --filter-platform`, with the checksums
//! of Cargo.lock. Dev-dependencies are left out; build-dependencies (and what only they pull in)
//! are kept but marked, since they run at build time and are not linked into the binary.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use cargo_metadata::{DependencyKind, Metadata, PackageId};
use serde::Deserialize;

/// Where a crate's source came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    CratesIo,
    /// Another registry (its index URL).
    Registry(String),
    Git {
        url: String,
        commit: String,
    },
    /// A local path (a workspace member or a `path =` dependency).
    Path,
}

impl Source {
    /// Cargo's source id (`registry+https://…`, `git+https://…?rev=x#commit`), or none for paths.
    fn parse(repr: Option<&str>) -> Source {
        let Some(repr) = repr else {
            return Source::Path;
        };
        if let Some(index) = repr
            .strip_prefix("registry+")
            .or_else(|| repr.strip_prefix("sparse+"))
        {
            let crates_io = index == "https://github.com/rust-lang/crates.io-index"
                || index == "https://index.crates.io/";
            return if crates_io || repr.starts_with("sparse+https://index.crates.io") {
                Source::CratesIo
            } else {
                Source::Registry(index.to_string())
            };
        }
        if let Some(git) = repr.strip_prefix("git+") {
            let (url, commit) = git.split_once('#').unwrap_or((git, ""));
            let url = url.split_once('?').map_or(url, |(u, _)| u);
            return Source::Git {
                url: url.to_string(),
                commit: commit.to_string(),
            };
        }
        if repr.starts_with("path+") {
            return Source::Path;
        }
        Source::Registry(repr.to_string())
    }
}

/// How a crate takes part in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reached through normal dependencies: compiled into the binary (or a proc-macro it uses).
    Runtime,
    /// Reached only through a build-dependency: runs during the build, not shipped.
    Build,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// A stable key within the graph: `name@version` (with the source when names repeat).
    pub key: String,
    pub name: String,
    pub version: String,
    pub source: Source,
    /// The license expression from Cargo.toml, `/` read as `OR` (the old cargo syntax).
    pub license: Option<String>,
    /// sha256 of the `.crate` file, from Cargo.lock (registry crates only).
    pub checksum: Option<String>,
    pub repository: Option<String>,
    pub role: Role,
}

impl Component {
    /// Package URL (purl) of the crate.
    pub fn purl(&self) -> String {
        let base = format!("pkg:cargo/{}@{}", self.name, self.version);
        match &self.source {
            Source::CratesIo | Source::Path => base,
            Source::Registry(index) => format!("{base}?repository_url={}", percent(index)),
            Source::Git { url, commit } => {
                format!("{base}?vcs_url={}", percent(&format!("git+{url}@{commit}")))
            }
        }
    }

    /// Where the source can be downloaded, when it can.
    pub fn download_location(&self) -> Option<String> {
        match &self.source {
            Source::CratesIo => Some(format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                self.name, self.version
            )),
            Source::Git { url, commit } => Some(format!("git+{url}@{commit}")),
            Source::Registry(_) | Source::Path => None,
        }
    }
}

/// The binary's package and everything it depends on, for one target and feature set.
#[derive(Debug, Clone)]
pub struct DependencyGraph {
    pub root: Component,
    /// Every dependency, sorted by name then version (the root is not among them).
    pub components: Vec<Component>,
    /// `from key` → `(to key, role of the edge)`, sorted.
    pub edges: BTreeMap<String, BTreeSet<(String, Role)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("cargo metadata has no resolved dependency graph (was it run with --no-deps?)")]
    NoResolve,
    #[error("package `{0}` is not in cargo metadata's output")]
    NoRoot(String),
}

/// Reads the graph from full `cargo metadata` output (run with `--filter-platform` and the
/// build's feature flags), starting at the package `name@version`.
pub fn resolve(
    metadata: &Metadata,
    root_name: &str,
    root_version: &str,
    lock: &LockChecksums,
) -> Result<DependencyGraph, GraphError> {
    let resolve = metadata.resolve.as_ref().ok_or(GraphError::NoResolve)?;
    let no_root = || GraphError::NoRoot(format!("{root_name}@{root_version}"));
    let root_id = find_root(metadata, root_name, root_version).ok_or_else(no_root)?;
    let reached = Reached::walk(resolve, root_id);
    let describe = Describe::new(metadata, lock, &reached);
    let root = describe
        .component(root_id, Role::Runtime)
        .ok_or_else(no_root)?;
    let mut components: Vec<Component> = reached
        .role
        .iter()
        .filter(|(id, _)| **id != root_id)
        .filter_map(|(id, r)| describe.component(id, *r))
        .collect();
    components.sort_by(|a, b| (&a.name, &a.version, &a.key).cmp(&(&b.name, &b.version, &b.key)));
    Ok(DependencyGraph {
        root,
        components,
        edges: describe.edge_map(&reached.edges),
    })
}

/// The package the binary comes from: a workspace member first, then any package.
fn find_root<'a>(metadata: &'a Metadata, name: &str, version: &str) -> Option<&'a PackageId> {
    metadata
        .workspace_packages()
        .into_iter()
        .chain(metadata.packages.iter())
        .find(|p| p.name.as_str() == name && p.version.to_string() == version)
        .map(|p| &p.id)
}

/// The crates reached from the root, each with its role, and the edges between them.
struct Reached<'a> {
    role: HashMap<&'a PackageId, Role>,
    edges: Vec<(&'a PackageId, &'a PackageId, Role)>,
}

impl<'a> Reached<'a> {
    /// Breadth-first from the root. A crate reached as Runtime anywhere is Runtime; one reached
    /// only below a build-dependency is Build. Runtime is visited first, so it wins.
    fn walk(resolve: &'a cargo_metadata::Resolve, root_id: &'a PackageId) -> Reached<'a> {
        let nodes: HashMap<&PackageId, &cargo_metadata::Node> =
            resolve.nodes.iter().map(|n| (&n.id, n)).collect();
        let mut reached = Reached {
            role: HashMap::from([(root_id, Role::Runtime)]),
            edges: Vec::new(),
        };
        let mut queue: VecDeque<(&PackageId, Role)> = VecDeque::from([(root_id, Role::Runtime)]);
        while let Some((id, here)) = queue.pop_front() {
            if reached.role.get(id) != Some(&here) {
                continue; // upgraded to Runtime since it was queued as Build
            }
            let Some(node) = nodes.get(id) else { continue };
            for dep in &node.deps {
                let Some(edge) = edge_role(dep, here) else {
                    continue; // dev-only
                };
                reached.edges.push((id, &dep.pkg, edge));
                if reached.upgrade(&dep.pkg, edge) {
                    if edge == Role::Runtime {
                        queue.push_front((&dep.pkg, edge));
                    } else {
                        queue.push_back((&dep.pkg, edge));
                    }
                }
            }
        }
        reached
    }

    /// Records `id` as reached by an edge of role `edge`; true when that is news (first seen,
    /// or Build upgraded to Runtime), so it must be visited (again).
    fn upgrade(&mut self, id: &'a PackageId, edge: Role) -> bool {
        let better = match self.role.get(id) {
            None => true,
            Some(Role::Build) => edge == Role::Runtime,
            Some(Role::Runtime) => false,
        };
        if better {
            self.role.insert(id, edge);
        }
        better
    }
}

/// The role a dependency edge gives: the parent's for a normal dependency, Build for a
/// build-dependency, none for a dev-only one.
fn edge_role(dep: &cargo_metadata::NodeDep, here: Role) -> Option<Role> {
    let kinds: Vec<DependencyKind> = dep.dep_kinds.iter().map(|k| k.kind).collect();
    if kinds.contains(&DependencyKind::Normal) {
        Some(here)
    } else if kinds.contains(&DependencyKind::Build) {
        Some(Role::Build)
    } else {
        None
    }
}

/// Turns reached package ids into components and keys.
struct Describe<'a> {
    packages: HashMap<&'a PackageId, &'a cargo_metadata::Package>,
    /// How many reached packages share a name and version.
    count: HashMap<(&'a str, String), usize>,
    lock: &'a LockChecksums,
}

impl<'a> Describe<'a> {
    fn new(metadata: &'a Metadata, lock: &'a LockChecksums, reached: &Reached<'a>) -> Self {
        let packages: HashMap<&PackageId, &cargo_metadata::Package> =
            metadata.packages.iter().map(|p| (&p.id, p)).collect();
        let mut count: HashMap<(&str, String), usize> = HashMap::new();
        for id in reached.role.keys() {
            if let Some(p) = packages.get(id) {
                *count
                    .entry((p.name.as_str(), p.version.to_string()))
                    .or_default() += 1;
            }
        }
        Describe {
            packages,
            count,
            lock,
        }
    }

    /// Keys: name@version, plus the source when the same name and version come from two places.
    fn key_of(&self, id: &PackageId) -> String {
        let Some(p) = self.packages.get(id) else {
            return id.repr.clone();
        };
        let plain = format!("{}@{}", p.name, p.version);
        let same = self
            .count
            .get(&(p.name.as_str(), p.version.to_string()))
            .copied()
            .unwrap_or(0);
        if same > 1 {
            format!("{plain}+{}", short_hash(&id.repr))
        } else {
            plain
        }
    }

    fn component(&self, id: &PackageId, role: Role) -> Option<Component> {
        let p = self.packages.get(id)?;
        let source = Source::parse(p.source.as_ref().map(|s| s.repr.as_str()));
        let version = p.version.to_string();
        Some(Component {
            key: self.key_of(id),
            checksum: self.lock.get(p.name.as_str(), &version),
            name: p.name.to_string(),
            version,
            source,
            license: p.license.as_deref().map(normalize_license),
            repository: p.repository.clone(),
            role,
        })
    }

    fn edge_map(
        &self,
        edges: &[(&PackageId, &PackageId, Role)],
    ) -> BTreeMap<String, BTreeSet<(String, Role)>> {
        let mut edge_map: BTreeMap<String, BTreeSet<(String, Role)>> = BTreeMap::new();
        for (from, to, r) in edges {
            edge_map
                .entry(self.key_of(from))
                .or_default()
                .insert((self.key_of(to), *r));
        }
        edge_map
    }
}

/// `.crate` checksums by (name, version), from Cargo.lock.
#[derive(Debug, Default)]
pub struct LockChecksums(HashMap<(String, String), String>);

#[derive(Deserialize)]
struct LockFile {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    checksum: Option<String>,
}

impl LockChecksums {
    /// Reads Cargo.lock; a missing or unreadable file gives no checksums (the SBOM says so by
    /// leaving them out), not an error.
    pub fn read(path: &Path) -> LockChecksums {
        let Ok(text) = std::fs::read_to_string(path) else {
            return LockChecksums::default();
        };
        LockChecksums::parse(&text)
    }

    pub fn parse(text: &str) -> LockChecksums {
        let Ok(lock) = toml::from_str::<LockFile>(text) else {
            return LockChecksums::default();
        };
        LockChecksums(
            lock.package
                .into_iter()
                .filter_map(|p| Some(((p.name, p.version), p.checksum?)))
                .collect(),
        )
    }

    fn get(&self, name: &str, version: &str) -> Option<String> {
        self.0
            .get(&(name.to_string(), version.to_string()))
            .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .cloned()
    }
}

/// `MIT/Apache-2.0` (cargo's old syntax) → `MIT OR Apache-2.0`.
fn normalize_license(license: &str) -> String {
    if license.contains('/') {
        license
            .split('/')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" OR ")
    } else {
        license.trim().to_string()
    }
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..4])
}

/// Percent-encodes everything but unreserved characters (for purl qualifiers).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_read_from_cargo_ids() {
        assert_eq!(
            Source::parse(Some(
                "registry+https://github.com/rust-lang/crates.io-index"
            )),
            Source::CratesIo
        );
        assert_eq!(
            Source::parse(Some("sparse+https://index.crates.io/")),
            Source::CratesIo
        );
        assert_eq!(
            Source::parse(Some(
                "git+https://github.com/a/b?branch=main#0123456789abcdef"
            )),
            Source::Git {
                url: "https://github.com/a/b".into(),
                commit: "0123456789abcdef".into()
            }
        );
        assert_eq!(Source::parse(None), Source::Path);
    }

    #[test]
    fn lock_checksums_and_licenses() {
        let lock = LockChecksums::parse(
            "version = 4\n[[package]]\nname = \"itoa\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\nchecksum = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\n[[package]]\nname = \"me\"\nversion = \"0.1.0\"\n",
        );
        assert_eq!(lock.get("itoa", "1.0.0").map(|c| c.len()), Some(64));
        assert_eq!(lock.get("me", "0.1.0"), None);
        assert_eq!(normalize_license("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(normalize_license("MIT OR Apache-2.0"), "MIT OR Apache-2.0");
    }

    #[test]
    fn purls() {
        let c = Component {
            key: "b@1.0.0".into(),
            name: "b".into(),
            version: "1.0.0".into(),
            source: Source::Git {
                url: "https://h/x".into(),
                commit: "abc".into(),
            },
            license: None,
            checksum: None,
            repository: None,
            role: Role::Runtime,
        };
        assert_eq!(
            c.purl(),
            "pkg:cargo/b@1.0.0?vcs_url=git%2Bhttps%3A%2F%2Fh%2Fx%40abc"
        );
    }
}
