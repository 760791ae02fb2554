//! The documents attached to an image, read back from a real registry: the SBOM lists the real
//! dependencies, the provenance names the git commit and the build, `verify` finds both (and
//! fails without them), and bad SBOM and platform settings name the key and the file.

use super::*;

#[test]
fn sbom_lists_the_real_dependencies_and_is_found_through_the_fallback_tag() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_with_dependencies(dir.path(), "depsapp", &registry.addr());

    let json = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    let sbom = image["sbom"]["digest"]
        .as_str()
        .expect("JSON names the SBOM");
    assert_eq!(image["sbom"]["artifact_type"], "application/spdx+json");
    assert_eq!(
        image["sbom"]["pull_ref"],
        format!("{}/depsapp@{sbom}", registry.addr())
    );

    // This registry has no referrers API: the tool had to use the fallback tag.
    let (status, _, _) = http_get(
        &registry.addr(),
        &format!("/v2/depsapp/referrers/{digest}"),
        OCI_INDEX,
    );
    assert_eq!(status, 404, "distribution 2.8 has no referrers API");
    let referrers = fallback_referrers(&registry, "depsapp", digest);
    let entry = referrers
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .expect("the fallback index lists the SBOM");
    assert_eq!(entry["digest"], sbom);

    let doc = referred_document(&registry, "depsapp", sbom, digest);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(digest.trim_start_matches("sha256:")),
        "the namespace is derived from the image digest"
    );
    let packages = doc["packages"].as_array().unwrap();
    let named = |n: &str| packages.iter().find(|p| p["name"] == n);
    let itoa = named("itoa").expect("the normal dependency is listed");
    assert!(
        itoa["versionInfo"].as_str().unwrap().starts_with("1."),
        "{itoa}"
    );
    assert_eq!(itoa["checksums"][0]["algorithm"], "SHA256");
    assert_eq!(
        itoa["checksums"][0]["checksumValue"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(
        itoa["licenseDeclared"].as_str().unwrap().contains("MIT"),
        "{itoa}"
    );
    assert!(
        itoa["downloadLocation"]
            .as_str()
            .unwrap()
            .starts_with("https://crates.io/")
    );
    assert!(
        named("hex").is_none(),
        "a dev-dependency is not in the SBOM"
    );
    let fnv = named("fnv").expect("the build-dependency is listed");
    let fnv_id = fnv["SPDXID"].as_str().unwrap();
    let relationships = doc["relationships"].as_array().unwrap();
    assert!(
        relationships
            .iter()
            .any(|r| r["spdxElementId"] == fnv_id && r["relationshipType"] == "BUILD_DEPENDENCY_OF"),
        "the build-dependency is marked as one"
    );
    assert!(relationships.iter().any(|r| {
        r["relationshipType"] == "DEPENDS_ON" && r["relatedSpdxElement"] == itoa["SPDXID"]
    }));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args),
        &format!("git {args:?}"),
    );
    String::from_utf8_lossy(&out).trim().to_string()
}

#[test]
fn provenance_names_the_git_commit_and_the_build() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "prov",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );
    std::fs::write(dir.path().join(".gitignore"), "/target\nCargo.lock\n").unwrap();
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "fixture"]);
    let commit = git(dir.path(), &["rev-parse", "HEAD"]);

    let json = adapt_push(&manifest)
        .args(["--format", "json", "--sbom", "none"])
        .run()
        .json();
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    assert!(image.get("sbom").is_none());
    let provenance = image["provenance"]["digest"].as_str().unwrap();
    assert_eq!(
        image["provenance"]["artifact_type"],
        "application/vnd.in-toto+json"
    );
    let statement = referred_document(&registry, "prov", provenance, digest);
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let definition = &statement["predicate"]["buildDefinition"];
    let source = definition["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"]["gitCommit"].is_string())
        .expect("the git commit is a resolved dependency");
    assert_eq!(source["digest"]["gitCommit"], commit.as_str());
    assert_eq!(source["annotations"]["dirty"], false, "the tree is clean");
    assert_eq!(definition["externalParameters"]["profile"], "release");
    assert_eq!(definition["externalParameters"]["package"], "prov");
    assert!(
        definition["externalParameters"]["target"]
            .as_str()
            .unwrap()
            .ends_with("-linux-gnu")
    );
    let rustc = statement["predicate"]["runDetails"]["builder"]["version"]["rustc"]
        .as_str()
        .unwrap();
    assert!(rustc.starts_with("rustc 1."), "{rustc}");

    // A change not committed: the next provenance says the tree was dirty.
    std::fs::write(dir.path().join("src/main.rs"), "fn main() { }\n").unwrap();
    let json = adapt_push(&manifest)
        .args(["--format", "json", "--sbom", "none"])
        .run()
        .json();
    let image = &json["images"][0];
    let statement = referred_document(
        &registry,
        "prov",
        image["provenance"]["digest"].as_str().unwrap(),
        image["digest"].as_str().unwrap(),
    );
    let source = &statement["predicate"]["buildDefinition"]["resolvedDependencies"][0];
    assert_eq!(source["digest"]["gitCommit"], commit.as_str());
    assert_eq!(source["annotations"]["dirty"], true);
}

#[test]
fn verify_finds_the_documents_and_fails_without_them() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "ver",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );
    let json = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let image = &json["images"][0];
    let push_ref = image["push_ref"].as_str().unwrap();

    let out = verify(push_ref).run();
    out.assert_ok();
    let text = &out.stdout;
    assert!(text.contains(&format!("verified {push_ref}")), "{text}");
    assert!(
        text.contains(image["sbom"]["digest"].as_str().unwrap()),
        "{text}"
    );
    let out = verify(push_ref).args(["--format", "json"]).run();
    out.assert_ok();
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["images"][0]["referrers_via"], "the referrers tag");
    assert_eq!(
        report["images"][0]["provenance"],
        image["provenance"]["digest"]
    );
    // By tag too.
    verify(&format!("{}/ver:latest", registry.addr()))
        .run()
        .assert_ok();

    // A different image without documents fails, and says what is missing.
    std::fs::write(
        dir.path().join("src/main.rs"),
        "fn main() { println!(); }\n",
    )
    .unwrap();
    let bare = adapt_push(&manifest)
        .args([
            "--format",
            "json",
            "--sbom",
            "none",
            "--provenance",
            "false",
            "--tag",
            "bare",
        ])
        .run()
        .json();
    let bare_ref = bare["images"][0]["push_ref"].as_str().unwrap();
    let out = verify(bare_ref).run();
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let text = &out.stdout;
    assert!(text.contains("no SBOM is attached"), "{text}");
    assert!(text.contains("no provenance is attached"), "{text}");
    assert!(text.contains("verification FAILED"), "{text}");

    // Nothing there at all: an error naming the image, exit code 2.
    let missing = format!("{}/ver@sha256:{}", registry.addr(), "0".repeat(64));
    let out = verify(&missing).run();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn bad_sbom_and_platform_settings_name_the_key_and_the_file() {
    let registry = TestRegistry::start();
    for (setting, expected) in [
        ("sbom = \"xml\"", vec!["sbom", "spdx", "cyclonedx"]),
        ("provenance = \"yes\"", vec!["provenance"]),
        (
            "platforms = [\"windows/amd64\"]",
            vec!["platforms", "linux/arm64"],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_crate(
            dir.path(),
            "bad",
            &format!(
                "\n[package.metadata.cluster]\nregistry = \"{}\"\n{setting}\n",
                registry.addr()
            ),
            EMPTY_MAIN,
        );
        let out = adapt_push(&manifest)
            .args(["--format", "json", "--dry-run"])
            .run();
        assert!(!out.status.success(), "{setting} was accepted");
        let err = &out.stderr;
        assert!(err.contains("Cargo.toml"), "{setting}: {err}");
        for fragment in expected {
            assert!(
                err.contains(fragment),
                "{setting}: no `{fragment}` in {err}"
            );
        }
        assert!(out.stdout.is_empty());
    }
}
