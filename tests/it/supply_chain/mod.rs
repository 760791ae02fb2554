//! SBOM and provenance attached as OCI 1.1 referrers, read back from a real registry
//! (Debian's docker-registry, distribution 2.8: no referrers API, so through the fallback tag).

mod documents;
mod os_files;
mod referrers;

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const MAIN: &str = r#"fn main() {
    let mut buf = itoa::Buffer::new();
    if std::env::args().any(|a| a == "--once") {
        println!("answer {}", buf.format(42));
    }
}
"#;

/// A crate with one normal dependency (itoa), one dev-dependency (hex) and one
/// build-dependency (fnv): all tiny, and in the cargo cache of this machine.
fn crate_with_dependencies(dir: &Path, name: &str, registry: &str) -> std::path::PathBuf {
    let manifest = write_crate(
        dir,
        name,
        &format!(
            "\n[dependencies]\nitoa = \"1\"\n\n[dev-dependencies]\nhex = \"0.4\"\n\n\
             [build-dependencies]\nfnv = \"1\"\n\n[package.metadata.cluster]\nregistry = \"{registry}\"\n"
        ),
        MAIN,
    );
    std::fs::write(
        dir.join("build.rs"),
        "fn main() { let _ = fnv::FnvHashMap::<u8, u8>::default(); }\n",
    )
    .unwrap();
    manifest
}

/// The referrers of `digest` as the fallback tag lists them.
fn fallback_referrers(registry: &TestRegistry, repo: &str, digest: &str) -> Vec<Value> {
    let tag = digest.replacen(':', "-", 1);
    let index = get_json(registry, &format!("/v2/{repo}/manifests/{tag}"), OCI_INDEX);
    assert_eq!(index["mediaType"], OCI_INDEX);
    index["manifests"].as_array().cloned().unwrap_or_default()
}

/// The document a referrer manifest carries, after checking the manifest names `subject`.
fn referred_document(registry: &TestRegistry, repo: &str, referrer: &str, subject: &str) -> Value {
    let manifest = get_json(
        registry,
        &format!("/v2/{repo}/manifests/{referrer}"),
        MANIFEST_ACCEPT,
    );
    assert_eq!(manifest["subject"]["digest"], subject, "{manifest}");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(manifest["artifactType"], manifest["layers"][0]["mediaType"]);
    let blob = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    get_json(registry, &format!("/v2/{repo}/blobs/{blob}"), "")
}

/// `cargo adapt-push verify REFERENCE`, for the caller to add arguments to and run.
fn verify(reference: &str) -> Command {
    let mut cmd = tool();
    cmd.args(["adapt-push", "verify", reference]);
    cmd
}
