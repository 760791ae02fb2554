//! The SBOM of a binary in SPDX 2.3 JSON or CycloneDX 1.5 JSON.
//!
//! Written with our own serde values rather than a format crate: `spdx-rs` has had no release
//! since 2023, `serde-spdx` and `cyclonedx-bom` bring large generated models (and, for the
//! latter, XML and validation stacks) for the few dozen fields we fill. The output is checked
//! against the fields each spec requires in the tests below.

use bytes::Bytes;
use serde_json::{Value, json};

use super::deps::{Component, Role, Source};
use super::{BuildFacts, Subject};
use crate::image::{canonical_json, rfc3339};

/// `SPDXRef-…` ids allow letters, digits, `.` and `-`.
fn spdx_id(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-Package-{clean}")
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
pub fn spdx(facts: &BuildFacts, subject: &Subject) -> Result<Bytes, serde_json::Error> {
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
    let doc = json!({
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
        "comment": format!(
            "Crates compiled into binary `{}` of {}@{} for {}, image {}@{}",
            facts.bin, facts.package, facts.version, facts.target, subject.name, subject.digest
        ),
        "creationInfo": {
            "created": rfc3339(facts.epoch),
            "creators": [format!("Tool: cargo-adapt-push-{}", facts.tool_version)],
        },
        "packages": packages,
        "relationships": relationships,
    });
    canonical_json(&doc)
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
pub fn cyclonedx(facts: &BuildFacts, subject: &Subject) -> Result<Bytes, serde_json::Error> {
    let graph = &facts.graph;
    let mut dependencies: Vec<Value> = Vec::new();
    let all = std::iter::once(&graph.root).chain(graph.components.iter());
    for c in all {
        let on: Vec<&str> = graph
            .edges
            .get(&c.key)
            .map(|tos| tos.iter().map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default();
        dependencies.push(json!({ "ref": c.key, "dependsOn": on }));
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
            "properties": [
                { "name": "cargo-adapt-push:target", "value": facts.target },
                { "name": "cargo-adapt-push:image", "value": format!("{}@{}", subject.name, subject.digest) },
            ],
        },
        "components": graph.components.iter().map(|c| cyclonedx_component(c, "library")).collect::<Vec<_>>(),
        "dependencies": dependencies,
    });
    canonical_json(&doc)
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
        let a = spdx(&sample_facts(), &sample_subject()).unwrap();
        assert_eq!(a, spdx(&sample_facts(), &sample_subject()).unwrap());
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
            serde_json::from_slice(&cyclonedx(&sample_facts(), &sample_subject()).unwrap())
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
}
