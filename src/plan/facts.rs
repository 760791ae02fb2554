//! What planning needs to know beyond `cargo metadata` and the Cargo.toml files: the git commit
//! of a package's source, a cluster's `local-registry-hosting` ConfigMap, `SOURCE_DATE_EPOCH`.
//! The plan asks a [`Facts`] for them and never looks them up itself, so a test can give it
//! any git state, cluster or environment; [`HostFacts`] reads them from this machine.

use std::path::Path;

use crate::cluster::{self, ClusterError, Hosting};

/// The world outside the manifests, as planning sees it.
pub trait Facts {
    /// The commit the source in `dir` is at.
    fn git(&self, dir: &Path) -> GitInfo;
    /// The registry addresses a `local-registry-hosting` ConfigMap gives.
    fn local_registry_hosting(&self, source: &cluster::Source) -> Result<Hosting, ClusterError>;
    /// `SOURCE_DATE_EPOCH` as set, unparsed (`None`: unset).
    fn source_date_epoch(&self) -> Option<String>;
}

/// The commit the package's source is at, for `{git_sha}` tags and the revision annotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitInfo {
    pub sha: Option<String>,
    /// Why there is no sha, when git said something other than "not a repository".
    pub problem: Option<String>,
}

/// Facts read from this machine: git, the process environment, the kubeconfig's cluster or a
/// ConfigMap file. One per run: it keeps what it read of each ConfigMap source, so a run asks
/// a cluster once however many packages name it, and a second run asks again.
#[derive(Default)]
pub struct HostFacts {
    lookups: cluster::Lookups,
}

impl Facts for HostFacts {
    fn git(&self, dir: &Path) -> GitInfo {
        read_git(dir)
    }

    fn local_registry_hosting(&self, source: &cluster::Source) -> Result<Hosting, ClusterError> {
        self.lookups.get(source)
    }

    fn source_date_epoch(&self) -> Option<String> {
        std::env::var("SOURCE_DATE_EPOCH").ok()
    }
}

/// `git rev-parse HEAD` in `dir`.
fn read_git(dir: &Path) -> GitInfo {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let sha = String::from_utf8_lossy(&o.stdout).trim().to_string();
            GitInfo {
                sha: (!sha.is_empty()).then_some(sha),
                problem: None,
            }
        }
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
            let problem = (!stderr.is_empty() && !stderr.contains("not a git repository"))
                .then(|| format!("git says: {stderr}"));
            GitInfo { sha: None, problem }
        }
        Err(e) => GitInfo {
            sha: None,
            problem: Some(format!("git could not be run: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_a_configmap_once_and_the_next_run_reads_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cm.yaml");
        let source = cluster::Source::File(file.clone());
        let external = |facts: &HostFacts| facts.local_registry_hosting(&source).unwrap().external;
        std::fs::write(&file, "host: localhost:5001\n").unwrap();
        let first_run = HostFacts::default();
        assert_eq!(external(&first_run), "localhost:5001");
        std::fs::write(&file, "host: localhost:5002\n").unwrap();
        // Every package of a run sees what the run read first.
        assert_eq!(external(&first_run), "localhost:5001");
        assert_eq!(external(&HostFacts::default()), "localhost:5002");
    }
}
