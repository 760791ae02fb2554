//! How the image was made: an in-toto Statement v1 whose predicate is SLSA provenance v1.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{BuildFacts, Subject};
use crate::image::{canonical_json, rfc3339};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// Names the meaning of `externalParameters` below.
pub const BUILD_TYPE: &str = "https://cargo-adapt-push.invalid/build-types/cargo-build/v1";
pub const BUILDER_ID: &str = "https://cargo-adapt-push.invalid/builder/local";

/// The statement, with the image as its only subject.
pub fn statement(facts: &BuildFacts, subject: &Subject) -> Result<Bytes, serde_json::Error> {
    let mut resolved = Vec::new();
    if let Some(git) = &facts.git {
        let uri = match &git.remote {
            Some(remote) => format!("git+{remote}@{}", git.commit),
            None => format!("git+file:{}@{}", facts.package, git.commit),
        };
        resolved.push(json!({
            "uri": uri,
            "digest": { "gitCommit": git.commit },
            "annotations": { "dirty": git.dirty },
        }));
    }
    if let Some(lock) = &facts.cargo_lock {
        resolved.push(json!({
            "name": "Cargo.lock",
            "digest": { "sha256": lock.hex() },
        }));
    }
    let features: Value = json!({
        "features": facts.features,
        "all_features": facts.all_features,
        "no_default_features": facts.no_default_features,
    });
    let doc = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": subject.name,
            "digest": { "sha256": subject.digest.hex() },
        }],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "package": facts.package,
                    "version": facts.version,
                    "bin": facts.bin,
                    "target": facts.target,
                    "profile": facts.profile,
                    "features": features,
                },
                "internalParameters": {
                    "rustc": facts.rustc,
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {
                        "cargo-adapt-push": facts.tool_version,
                        "rustc": facts.rustc,
                    },
                },
                "metadata": {
                    // Reproducible builds stamp SOURCE_DATE_EPOCH; so does this.
                    "startedOn": rfc3339(facts.epoch),
                },
            },
        },
    });
    canonical_json(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supply_chain::facts::GitState;
    use crate::supply_chain::sbom::tests::{sample_facts, sample_subject};

    #[test]
    fn names_the_subject_commit_and_toolchain() {
        let mut facts = sample_facts();
        facts.git = Some(GitState {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            dirty: true,
            remote: None,
        });
        let v: Value =
            serde_json::from_slice(&statement(&facts, &sample_subject()).unwrap()).unwrap();
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["predicateType"], SLSA_PROVENANCE_V1);
        assert_eq!(
            v["subject"][0]["digest"]["sha256"],
            sample_subject().digest.hex()
        );
        let dep = &v["predicate"]["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(
            dep["digest"]["gitCommit"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(dep["annotations"]["dirty"], true);
        assert_eq!(
            v["predicate"]["runDetails"]["builder"]["version"]["rustc"],
            "rustc 1.95.0"
        );
    }
}
