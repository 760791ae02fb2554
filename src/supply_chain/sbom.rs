//! The SBOM of an image in SPDX 2.3 JSON or CycloneDX 1.5 JSON: the crates compiled into its
//! binary, and everything else our layers put in the image ([`Contents`]): each file with its
//! digests, the host's Debian packages those files came from (with `pkg:deb` purls), and the base
//! image by digest.
//!
//! Written with our own serde values rather than a format crate: `spdx-rs` has had no release
//! since 2023, `serde-spdx` and `cyclonedx-bom` bring large generated models (and, for the
//! latter, XML and validation stacks) for the few dozen fields we fill. The output is checked
//! against the fields each spec requires in the tests below.

use bytes::Bytes;
use serde_json::{Value, json};

use super::deps::{Component, Role, Source};
use super::{BuildFacts, Subject};
use crate::dpkg::{OsRelease, Package, percent};
use crate::image::contents::{BaseRecord, ContentFile, Contents, FileOrigin, HostPackages};
use crate::image::{canonical_json, rfc3339};

/// `SPDXRef-…` ids allow letters, digits, `.` and `-`.
fn spdx_id(key: &str) -> String {
    format!("SPDXRef-Package-{}", spdx_clean(key))
}

fn spdx_clean(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn spdx_package(c: &Component, purpose: &str) -> Value {
    let mut p = json!({
        "SPDXID": spdx_id(&c.key),
        "name": c.name,
        "versionInfo": c.version,
        "downloadLocation": c.download_location().unwrap_or_else(|| "NOASSERTION".into()),
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": c.license.clone().unwrap_or_else(|| "NOASSERTION".into()),
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": purpose,
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": c.purl(),
        }],
    });
    if let Some(sum) = &c.checksum {
        p["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sum }]);
    }
    if let Some(repo) = &c.repository {
        p["homepage"] = json!(repo);
    }
    if let Source::Git { commit, .. } = &c.source {
        p["sourceInfo"] = json!(format!("git commit {commit}"));
    }
    p
}

/// SPDX 2.3 JSON. The namespace is derived from the image digest, so the same image always
/// gets the same document.
pub fn spdx(
    facts: &BuildFacts,
    subject: &Subject,
    contents: Option<&Contents>,
) -> Result<Bytes, serde_json::Error> {
    let graph = &facts.graph;
    let mut packages = vec![spdx_package(&graph.root, "APPLICATION")];
    packages.extend(graph.components.iter().map(|c| spdx_package(c, "LIBRARY")));

    let root_id = spdx_id(&graph.root.key);
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root_id,
    })];
    for (from, tos) in &graph.edges {
        for (to, role) in tos {
            relationships.push(match role {
                Role::Runtime => json!({
                    "spdxElementId": spdx_id(from),
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": spdx_id(to),
                }),
                // SPDX reads "A BUILD_DEPENDENCY_OF B": the arrow points the other way.
                Role::Build => json!({
                    "spdxElementId": spdx_id(to),
                    "relationshipType": "BUILD_DEPENDENCY_OF",
                    "relatedSpdxElement": spdx_id(from),
                }),
            });
        }
    }
    let mut files = Vec::new();
    let mut comment = format!(
        "Crates compiled into binary `{}` of {}@{} for {}, image {}@{}",
        facts.bin, facts.package, facts.version, facts.target, subject.name, subject.digest
    );
    if let Some(contents) = contents {
        let os = host_os(contents);
        for p in &contents.packages {
            packages.push(spdx_deb_package(p, &os));
            if runtime_package(contents, p) {
                relationships.push(json!({
                    "spdxElementId": root_id,
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": spdx_deb_id(p),
                }));
            }
        }
        for f in &contents.files {
            files.push(spdx_file(f));
            relationships.push(match &f.package {
                Some(key) => json!({
                    "spdxElementId": spdx_deb_id_of(key),
                    "relationshipType": "CONTAINS",
                    "relatedSpdxElement": spdx_file_id(f),
                }),
                None => json!({
                    "spdxElementId": "SPDXRef-DOCUMENT",
                    "relationshipType": "DESCRIBES",
                    "relatedSpdxElement": spdx_file_id(f),
                }),
            });
        }
        if let Some(base) = &contents.base {
            packages.push(json!({
                "SPDXID": "SPDXRef-BaseImage",
                "name": base.reference,
                "versionInfo": base.digest.to_string(),
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "primaryPackagePurpose": "CONTAINER",
                "checksums": [{ "algorithm": "SHA256", "checksumValue": base.digest.hex() }],
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": base_purl(base),
                }],
                "comment": "The base image: its own files are its own, and not listed here.",
            }));
            relationships.push(json!({
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": "SPDXRef-BaseImage",
            }));
        }
        comment.push_str(&contents_note(contents));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{} ({})", facts.package, facts.version, facts.target),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/cargo-adapt-push/{}/{}-{}/{}",
            facts.target,
            facts.package,
            facts.version,
            subject.digest.hex()
        ),
        "comment": comment,
        "creationInfo": {
            "created": rfc3339(facts.epoch),
            "creators": [format!("Tool: cargo-adapt-push-{}", facts.tool_version)],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !files.is_empty() {
        doc["files"] = Value::Array(files);
    }
    canonical_json(&doc)
}

/// The distribution the host packages came from (for their purls).
fn host_os(contents: &Contents) -> OsRelease {
    match &contents.host_packages {
        HostPackages::Dpkg { os } => os.clone(),
        _ => OsRelease::default(),
    }
}

/// Whether the binary loads a file of `p` (its loader or a library): a run-time dependency.
fn runtime_package(contents: &Contents, p: &Package) -> bool {
    let key = p.key();
    contents.files.iter().any(|f| {
        f.package.as_deref() == Some(key.as_str())
            && matches!(
                f.origin,
                FileOrigin::Loader { .. } | FileOrigin::Library { .. }
            )
    })
}

/// What the document says about the files that are not crates.
fn contents_note(contents: &Contents) -> String {
    let mut note = String::new();
    match &contents.host_packages {
        HostPackages::Dpkg { os } => note.push_str(&format!(
            ". Files copied from the build host are attributed to its dpkg packages ({})",
            os.fields
                .get("PRETTY_NAME")
                .cloned()
                .or_else(|| os.distro())
                .unwrap_or_else(|| "distribution unknown: no /etc/os-release".into())
        )),
        HostPackages::Unavailable { reason } => note.push_str(&format!(". {reason}")),
        HostPackages::NotNeeded => {}
    }
    if let Some(base) = &contents.base {
        note.push_str(&format!(
            ". Built on the base image {} (manifest {}), whose own files are not listed",
            base.reference, base.digest
        ));
    }
    note
}

fn spdx_deb_id(p: &Package) -> String {
    spdx_deb_id_of(&p.key())
}

fn spdx_deb_id_of(key: &str) -> String {
    format!("SPDXRef-DebPackage-{}", spdx_clean(key))
}

/// A file's id: from its path's digest, so it is stable and unique whatever the path holds.
fn spdx_file_id(f: &ContentFile) -> String {
    format!(
        "SPDXRef-File-{}",
        crate::reference::Digest::sha256_of(f.path.as_bytes()).hex()
    )
}

fn spdx_deb_package(p: &Package, os: &OsRelease) -> Value {
    let source = match &p.source_version {
        Some(v) => format!("{} {v}", p.source),
        None => p.source.clone(),
    };
    json!({
        "SPDXID": spdx_deb_id(p),
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "LIBRARY",
        "sourceInfo": format!("built from the Debian source package {source}"),
        "comment": format!("dpkg package {} installed on the build host, architecture {}", p.key(), p.architecture),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": p.purl(os),
        }],
    })
}

fn spdx_file(f: &ContentFile) -> Value {
    json!({
        "SPDXID": spdx_file_id(f),
        "fileName": f.path,
        "checksums": [
            { "algorithm": "SHA1", "checksumValue": f.sha1 },
            { "algorithm": "SHA256", "checksumValue": f.sha256 },
        ],
        "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": origin_text(&f.origin),
    })
}

/// Where a file came from, in words.
fn origin_text(origin: &FileOrigin) -> String {
    match origin.host_path() {
        Some(host) => format!("{}: copied from {}", origin.kind(), host.display()),
        None => format!("{}: written by cargo-adapt-push", origin.kind()),
    }
}

/// `pkg:oci/<name>@<digest>?repository_url=<registry>/<repository>`, as the purl spec's `oci`
/// type names an image.
fn base_purl(base: &BaseRecord) -> String {
    let name = base
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&base.repository);
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        percent(&name.to_ascii_lowercase()),
        percent(base.digest.as_str()),
        percent(&base.repository)
    )
}

fn cyclonedx_component(c: &Component, kind: &str) -> Value {
    let mut v = json!({
        "type": kind,
        "bom-ref": c.key,
        "name": c.name,
        "version": c.version,
        "purl": c.purl(),
        // `excluded`: present at build time only, not in the shipped binary.
        "scope": match c.role { Role::Runtime => "required", Role::Build => "excluded" },
    });
    if let Some(license) = &c.license {
        v["licenses"] = json!([{ "expression": license }]);
    }
    if let Some(sum) = &c.checksum {
        v["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
    }
    let mut refs = Vec::new();
    if let Some(loc) = c.download_location() {
        refs.push(json!({ "type": "distribution", "url": loc }));
    }
    if let Some(repo) = &c.repository {
        refs.push(json!({ "type": "vcs", "url": repo }));
    }
    if !refs.is_empty() {
        v["externalReferences"] = Value::Array(refs);
    }
    v
}

/// `urn:uuid:` made from the image digest (a version-5-shaped UUID), so it is stable per image.
fn serial_number(subject: &Subject) -> String {
    let hex = subject.digest.hex();
    let h = |r: std::ops::Range<usize>| hex.get(r).unwrap_or("0");
    format!(
        "urn:uuid:{}-{}-5{}-8{}-{}",
        h(0..8),
        h(8..12),
        h(13..16),
        h(17..20),
        h(20..32)
    )
}

/// CycloneDX 1.5 JSON.
pub fn cyclonedx(
    facts: &BuildFacts,
    subject: &Subject,
    contents: Option<&Contents>,
) -> Result<Bytes, serde_json::Error> {
    let graph = &facts.graph;
    let mut dependencies: Vec<Value> = Vec::new();
    let all = std::iter::once(&graph.root).chain(graph.components.iter());
    for c in all {
        let mut on: Vec<String> = graph
            .edges
            .get(&c.key)
            .map(|tos| tos.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        if c.key == graph.root.key
            && let Some(contents) = contents
        {
            on.extend(
                contents
                    .packages
                    .iter()
                    .filter(|p| runtime_package(contents, p))
                    .map(cyclonedx_deb_ref),
            );
        }
        dependencies.push(json!({ "ref": c.key, "dependsOn": on }));
    }
    let mut components: Vec<Value> = graph
        .components
        .iter()
        .map(|c| cyclonedx_component(c, "library"))
        .collect();
    let mut properties = vec![
        json!({ "name": "cargo-adapt-push:target", "value": facts.target }),
        json!({ "name": "cargo-adapt-push:image", "value": format!("{}@{}", subject.name, subject.digest) }),
    ];
    if let Some(contents) = contents {
        let os = host_os(contents);
        for p in &contents.packages {
            let key = p.key();
            let files: Vec<Value> = contents
                .files
                .iter()
                .filter(|f| f.package.as_deref() == Some(key.as_str()))
                .map(cyclonedx_file)
                .collect();
            let mut c = json!({
                "type": "library",
                "bom-ref": cyclonedx_deb_ref(p),
                "name": p.name,
                "version": p.version,
                "purl": p.purl(&os),
                "scope": "required",
                "properties": [
                    { "name": "cargo-adapt-push:dpkg:architecture", "value": p.architecture },
                    { "name": "cargo-adapt-push:dpkg:source", "value": p.source },
                ],
            });
            if let Some(v) = &p.source_version {
                c["properties"]
                    .as_array_mut()
                    .expect("an array")
                    .push(json!({ "name": "cargo-adapt-push:dpkg:source-version", "value": v }));
            }
            if !files.is_empty() {
                c["components"] = Value::Array(files);
            }
            dependencies.push(json!({ "ref": cyclonedx_deb_ref(p), "dependsOn": [] }));
            components.push(c);
        }
        components.extend(
            contents
                .files
                .iter()
                .filter(|f| f.package.is_none())
                .map(cyclonedx_file),
        );
        if let Some(base) = &contents.base {
            components.push(json!({
                "type": "container",
                "bom-ref": "base-image",
                "name": base.repository,
                "version": base.digest.to_string(),
                "purl": base_purl(base),
                "hashes": [{ "alg": "SHA-256", "content": base.digest.hex() }],
                "description": format!("the base image {}: its own files are its own, and not listed here", base.reference),
            }));
        }
        let note = contents_note(contents);
        if !note.is_empty() {
            properties.push(json!({
                "name": "cargo-adapt-push:contents",
                "value": note.trim_start_matches(". "),
            }));
        }
    }
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial_number(subject),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(facts.epoch),
            "tools": { "components": [{
                "type": "application",
                "name": "cargo-adapt-push",
                "version": facts.tool_version,
            }]},
            "component": cyclonedx_component(&graph.root, "application"),
            "properties": properties,
        },
        "components": components,
        "dependencies": dependencies,
    });
    canonical_json(&doc)
}

fn cyclonedx_deb_ref(p: &Package) -> String {
    format!("deb:{}", p.key())
}

fn cyclonedx_file(f: &ContentFile) -> Value {
    let mut properties =
        vec![json!({ "name": "cargo-adapt-push:origin", "value": f.origin.kind() })];
    if let Some(host) = f.origin.host_path() {
        properties.push(json!({
            "name": "cargo-adapt-push:host-path",
            "value": host.to_string_lossy(),
        }));
    }
    json!({
        "type": "file",
        "bom-ref": format!("file:{}", f.path),
        "name": f.path,
        "hashes": [
            { "alg": "SHA-1", "content": f.sha1 },
            { "alg": "SHA-256", "content": f.sha256 },
        ],
        "properties": properties,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::supply_chain::deps::DependencyGraph;
    use std::collections::{BTreeMap, BTreeSet};

    fn comp(name: &str, role: Role, source: Source) -> Component {
        Component {
            key: format!("{name}@1.0.0"),
            name: name.into(),
            version: "1.0.0".into(),
            source,
            license: Some("MIT OR Apache-2.0".into()),
            checksum: Some("a".repeat(64)),
            repository: None,
            role,
        }
    }

    pub(crate) fn sample_facts() -> BuildFacts {
        let root = comp("app", Role::Runtime, Source::Path);
        let mut edges = BTreeMap::new();
        edges.insert(
            "app@1.0.0".to_string(),
            BTreeSet::from([
                ("itoa@1.0.0".to_string(), Role::Runtime),
                ("cc@1.0.0".to_string(), Role::Build),
            ]),
        );
        BuildFacts {
            package: "app".into(),
            version: "1.0.0".into(),
            bin: "app".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            profile: "release".into(),
            features: vec![],
            all_features: false,
            no_default_features: false,
            rustc: "rustc 1.95.0".into(),
            tool_version: "0.1.0",
            git: None,
            cargo_lock: None,
            graph: DependencyGraph {
                root,
                components: vec![
                    comp("cc", Role::Build, Source::CratesIo),
                    comp("itoa", Role::Runtime, Source::CratesIo),
                ],
                edges,
            },
            epoch: 0,
        }
    }

    pub(crate) fn sample_subject() -> Subject {
        Subject {
            name: "localhost:5000/app".into(),
            digest: crate::reference::Digest::sha256_of(b"image"),
        }
    }

    #[test]
    fn spdx_has_the_required_fields_and_is_deterministic() {
        let a = spdx(&sample_facts(), &sample_subject(), None).unwrap();
        assert_eq!(a, spdx(&sample_facts(), &sample_subject(), None).unwrap());
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        assert!(
            v["documentNamespace"]
                .as_str()
                .unwrap()
                .ends_with(&sample_subject().digest.hex().to_string())
        );
        let packages = v["packages"].as_array().unwrap();
        assert_eq!(packages.len(), 3);
        let itoa = packages.iter().find(|p| p["name"] == "itoa").unwrap();
        assert_eq!(itoa["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(itoa["licenseDeclared"], "MIT OR Apache-2.0");
        let rels = v["relationships"].as_array().unwrap();
        assert!(rels.iter().any(|r| r["relationshipType"] == "DESCRIBES"));
        assert!(
            rels.iter()
                .any(|r| r["relationshipType"] == "BUILD_DEPENDENCY_OF"
                    && r["spdxElementId"] == "SPDXRef-Package-cc-1.0.0")
        );
    }

    #[test]
    fn cyclonedx_marks_build_dependencies_excluded() {
        let v: Value =
            serde_json::from_slice(&cyclonedx(&sample_facts(), &sample_subject(), None).unwrap())
                .unwrap();
        assert_eq!(v["bomFormat"], "CycloneDX");
        assert_eq!(v["specVersion"], "1.5");
        assert!(v["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
        assert_eq!(v["serialNumber"].as_str().unwrap().len(), 45);
        let cc = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "cc")
            .unwrap();
        assert_eq!(cc["scope"], "excluded");
        assert_eq!(v["metadata"]["component"]["name"], "app");
    }

    fn sample_contents(host_packages: HostPackages) -> Contents {
        let libssl = crate::dpkg::parse_status(
            "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\n\
             Source: openssl (3.0.15-1~deb12u1)\nVersion: 3.0.15-1~deb12u1\n",
        )
        .remove(0);
        let file = |path: &str, origin: FileOrigin, package: Option<&str>| ContentFile {
            path: path.into(),
            sha256: "b".repeat(64),
            sha1: "c".repeat(40),
            size: 3,
            origin,
            package: package.map(String::from),
        };
        Contents {
            base: None,
            files: vec![
                file("/etc/passwd", FileOrigin::System, None),
                file(
                    "/srv/index.html",
                    FileOrigin::Included {
                        host_path: "/w/static/index.html".into(),
                    },
                    None,
                ),
                file(
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                    FileOrigin::Library {
                        host_path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    },
                    Some("libssl3:amd64"),
                ),
            ],
            packages: vec![libssl],
            host_packages,
        }
    }

    fn debian() -> HostPackages {
        HostPackages::Dpkg {
            os: OsRelease::parse("ID=debian\nVERSION_ID=12\nPRETTY_NAME=\"Debian 12\"\n"),
        }
    }

    #[test]
    fn spdx_lists_files_with_sha1_and_sha256_and_host_packages_with_deb_purls() {
        let contents = sample_contents(debian());
        let v: Value = serde_json::from_slice(
            &spdx(&sample_facts(), &sample_subject(), Some(&contents)).unwrap(),
        )
        .unwrap();
        let files = v["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        for f in files {
            // SPDX 2.3 requires a file's SHA1.
            assert_eq!(f["checksums"][0]["algorithm"], "SHA1");
            assert_eq!(f["checksums"][1]["algorithm"], "SHA256");
            assert!(f["SPDXID"].as_str().unwrap().starts_with("SPDXRef-File-"));
        }
        let ssl = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "libssl3")
            .unwrap();
        assert_eq!(
            ssl["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12"
        );
        assert_eq!(ssl["versionInfo"], "3.0.15-1~deb12u1");
        // Every relationship names elements of the document.
        let mut ids: BTreeSet<String> = ["SPDXRef-DOCUMENT".to_string()].into();
        for e in v["packages"].as_array().unwrap().iter().chain(files) {
            assert!(ids.insert(e["SPDXID"].as_str().unwrap().to_string()), "{e}");
        }
        let rels = v["relationships"].as_array().unwrap();
        for r in rels {
            assert!(ids.contains(r["spdxElementId"].as_str().unwrap()), "{r}");
            assert!(
                ids.contains(r["relatedSpdxElement"].as_str().unwrap()),
                "{r}"
            );
        }
        let lib_file = files
            .iter()
            .find(|f| f["fileName"] == "/usr/lib/x86_64-linux-gnu/libssl.so.3")
            .unwrap();
        assert!(rels.iter().any(|r| r["relationshipType"] == "CONTAINS"
            && r["spdxElementId"] == ssl["SPDXID"]
            && r["relatedSpdxElement"] == lib_file["SPDXID"]));
        assert!(rels.iter().any(|r| r["relationshipType"] == "DEPENDS_ON"
            && r["spdxElementId"] == "SPDXRef-Package-app-1.0.0"
            && r["relatedSpdxElement"] == ssl["SPDXID"]));
    }

    #[test]
    fn without_dpkg_the_files_are_listed_and_the_gap_is_said() {
        let contents = sample_contents(HostPackages::Unavailable {
            reason: "this host has no dpkg database".into(),
        });
        let contents = Contents {
            packages: vec![],
            files: contents
                .files
                .into_iter()
                .map(|f| ContentFile { package: None, ..f })
                .collect(),
            ..contents
        };
        let v: Value = serde_json::from_slice(
            &spdx(&sample_facts(), &sample_subject(), Some(&contents)).unwrap(),
        )
        .unwrap();
        assert_eq!(v["files"].as_array().unwrap().len(), 3);
        assert!(
            v["comment"].as_str().unwrap().contains("no dpkg database"),
            "{}",
            v["comment"]
        );
        let c: Value = serde_json::from_slice(
            &cyclonedx(&sample_facts(), &sample_subject(), Some(&contents)).unwrap(),
        )
        .unwrap();
        let note = c["metadata"]["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cargo-adapt-push:contents")
            .unwrap();
        assert!(note["value"].as_str().unwrap().contains("no dpkg database"));
        assert_eq!(
            c["components"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["type"] == "file")
                .count(),
            3
        );
    }

    #[test]
    fn cyclonedx_nests_a_packages_files_and_every_reference_resolves() {
        let mut contents = sample_contents(debian());
        contents.base = Some(crate::image::contents::BaseRecord {
            reference: "localhost:5000/base:1".into(),
            repository: "localhost:5000/base".into(),
            digest: crate::reference::Digest::sha256_of(b"base"),
        });
        let v: Value = serde_json::from_slice(
            &cyclonedx(&sample_facts(), &sample_subject(), Some(&contents)).unwrap(),
        )
        .unwrap();
        let components = v["components"].as_array().unwrap();
        let ssl = components.iter().find(|c| c["name"] == "libssl3").unwrap();
        assert_eq!(ssl["components"][0]["type"], "file");
        assert_eq!(ssl["components"][0]["hashes"][1]["alg"], "SHA-256");
        assert_eq!(
            ssl["purl"],
            "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12"
        );
        let base = components
            .iter()
            .find(|c| c["type"] == "container")
            .unwrap();
        assert!(
            base["purl"]
                .as_str()
                .unwrap()
                .starts_with("pkg:oci/base@sha256%3A")
        );
        // bom-refs are unique, and dependencies name only those.
        let mut refs = BTreeSet::new();
        fn walk<'a>(cs: &'a [Value], refs: &mut BTreeSet<&'a str>) {
            for c in cs {
                assert!(refs.insert(c["bom-ref"].as_str().unwrap()), "{c}");
                if let Some(inner) = c["components"].as_array() {
                    walk(inner, refs);
                }
            }
        }
        refs.insert(v["metadata"]["component"]["bom-ref"].as_str().unwrap());
        walk(components, &mut refs);
        for d in v["dependencies"].as_array().unwrap() {
            assert!(refs.contains(d["ref"].as_str().unwrap()), "{d}");
            for on in d["dependsOn"].as_array().unwrap() {
                assert!(refs.contains(on.as_str().unwrap()), "{d}");
            }
        }
        let root = v["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["ref"] == "app@1.0.0")
            .unwrap();
        assert!(
            root["dependsOn"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == "deb:libssl3:amd64")
        );
    }
}
