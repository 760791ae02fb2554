//! For the plan's unit tests: a workspace written to a temporary directory (its Cargo.toml files
//! exist, so errors point into them and relative paths resolve), the `cargo metadata` cargo
//! would give for it, made in memory, and facts (git, cluster, `SOURCE_DATE_EPOCH`) the test
//! chooses.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, Package};
use miette::Diagnostic;
use serde_json::{Value, json};

use super::facts::{Facts, GitInfo};
use super::{Plan, Request, Target, make_plan};
use crate::cluster::{self, ClusterError, Hosting};
use crate::config::{ClusterConfig, ConfigError, Origin};

/// A package of a test workspace.
pub(super) struct Member {
    name: &'static str,
    version: &'static str,
    /// Binary targets; none: a library.
    bins: Vec<&'static str>,
    default_run: Option<&'static str>,
    /// `[package.metadata.cluster]`; `Null`: none.
    cluster: Value,
    /// Fields of `[package]` besides name and version (description, license, ...).
    extra: Value,
}

/// A package with one binary of its own name and `cluster` as its settings.
pub(super) fn member(name: &'static str, cluster: Value) -> Member {
    Member {
        name,
        version: "0.1.0",
        bins: vec![name],
        default_run: None,
        cluster,
        extra: json!({}),
    }
}

impl Member {
    pub(super) fn bins(mut self, bins: &[&'static str]) -> Member {
        self.bins = bins.to_vec();
        self
    }

    pub(super) fn version(mut self, version: &'static str) -> Member {
        self.version = version;
        self
    }

    pub(super) fn default_run(mut self, bin: &'static str) -> Member {
        self.default_run = Some(bin);
        self
    }

    /// More `[package]` fields, e.g. `{"description": "..."}`.
    pub(super) fn package_fields(mut self, fields: Value) -> Member {
        self.extra = fields;
        self
    }
}

/// A workspace on disk and its metadata; removed when dropped.
pub(super) struct Workspace {
    _dir: tempfile::TempDir,
    pub(super) root: PathBuf,
    pub(super) metadata: Metadata,
    /// Where cargo is started: the single package's Cargo.toml, or the virtual root's.
    pub(super) manifest: PathBuf,
}

impl Workspace {
    /// One package that is its own workspace.
    pub(super) fn single(member: Member) -> Workspace {
        Workspace::write(None, vec![member])
    }

    /// A virtual workspace (members in directories of their names) whose root has `cluster`
    /// as `[workspace.metadata.cluster]` (`Null`: none); cargo is started at the root.
    pub(super) fn members(cluster: Value, members: Vec<Member>) -> Workspace {
        Workspace::write(Some(cluster), members)
    }

    fn write(workspace_cluster: Option<Value>, members: Vec<Member>) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mut packages = Vec::new();
        for m in &members {
            let package_dir = match workspace_cluster {
                Some(_) => root.join(m.name),
                None => root.clone(),
            };
            std::fs::create_dir_all(&package_dir).unwrap();
            let mut package = json!({ "name": m.name, "version": m.version });
            for (k, v) in m.extra.as_object().unwrap() {
                package[k] = v.clone();
            }
            if !m.cluster.is_null() {
                package["metadata"] = json!({ "cluster": m.cluster });
            }
            let manifest = package_dir.join("Cargo.toml");
            write_toml(&manifest, &json!({ "package": package }));
            packages.push(package_json(m, &manifest));
        }
        let manifest = match &workspace_cluster {
            Some(cluster) => {
                let mut workspace = json!({
                    "members": members.iter().map(|m| m.name).collect::<Vec<_>>()
                });
                if !cluster.is_null() {
                    workspace["metadata"] = json!({ "cluster": cluster });
                }
                let manifest = root.join("Cargo.toml");
                write_toml(&manifest, &json!({ "workspace": workspace }));
                manifest
            }
            None => root.join("Cargo.toml"),
        };
        let workspace_metadata = match &workspace_cluster {
            Some(cluster) if !cluster.is_null() => json!({ "cluster": cluster }),
            _ => Value::Null,
        };
        let metadata: Metadata = serde_json::from_value(json!({
            "workspace_members": packages.iter().map(|p| p["id"].clone()).collect::<Vec<_>>(),
            "packages": packages,
            "resolve": null,
            "workspace_root": root,
            "target_directory": root.join("target"),
            "metadata": workspace_metadata,
            "version": 1,
        }))
        .unwrap();
        Workspace {
            _dir: dir,
            root,
            metadata,
            manifest,
        }
    }

    /// The directory of the member `name`.
    pub(super) fn dir(&self, name: &str) -> PathBuf {
        self.package(name)
            .manifest_path
            .parent()
            .unwrap()
            .as_std_path()
            .to_path_buf()
    }

    pub(super) fn package(&self, name: &str) -> &Package {
        self.metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == name)
            .unwrap()
    }

    /// The member's own settings, as planning reads them.
    pub(super) fn config(&self, name: &str) -> ClusterConfig {
        let package = self.package(name);
        ClusterConfig::from_table(
            &package.metadata["cluster"],
            &Origin::package(package.manifest_path.as_std_path()),
        )
        .unwrap()
    }

    pub(super) fn origin(&self, name: &str) -> Origin {
        Origin::package(self.package(name).manifest_path.as_std_path())
    }

    pub(super) fn plan(&self, request: &Request, facts: &FakeFacts) -> Result<Plan, ConfigError> {
        make_plan(request, &self.metadata, &self.manifest, facts)
    }

    /// The one target a plan of this workspace has.
    pub(super) fn target(&self, request: &Request, facts: &FakeFacts) -> Result<Target, String> {
        let mut plan = self.plan(request, facts).map_err(|e| said(&e))?;
        assert_eq!(plan.targets.len(), 1);
        Ok(plan.targets.remove(0))
    }
}

/// The package's entry in `cargo metadata`.
fn package_json(m: &Member, manifest: &Path) -> Value {
    let dir = manifest.parent().unwrap();
    let targets: Vec<Value> = if m.bins.is_empty() {
        vec![json!({ "name": m.name, "kind": ["lib"], "src_path": dir.join("src/lib.rs") })]
    } else {
        m.bins
            .iter()
            .map(|b| json!({ "name": b, "kind": ["bin"], "src_path": dir.join(format!("src/bin/{b}.rs")) }))
            .collect()
    };
    let mut package = json!({
        "name": m.name,
        "version": m.version,
        "id": format!("path+file://{}#{}@{}", dir.display(), m.name, m.version),
        "dependencies": [],
        "targets": targets,
        "features": {},
        "manifest_path": manifest,
        "default_run": m.default_run,
        "metadata": if m.cluster.is_null() { Value::Null } else { json!({ "cluster": m.cluster }) },
    });
    for (k, v) in m.extra.as_object().unwrap() {
        package[k] = v.clone();
    }
    package
}

fn write_toml(path: &Path, value: &Value) {
    std::fs::write(path, toml::to_string(value).unwrap()).unwrap();
}

/// `manifest:LINE`, LINE the one that sets `key`: where an error about `key` points.
pub(super) fn at_key(manifest: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with(&format!("{key} =")))
        .unwrap();
    format!("{}:{}", manifest.display(), line + 1)
}

/// An error as the user reads it: the message, then the help.
pub(super) fn said(e: &ConfigError) -> String {
    match e.help() {
        Some(help) => format!("{} | help: {help}", e.message()),
        None => e.message().to_string(),
    }
}

/// Facts chosen by a test. A ConfigMap source it was not given is an error, as a missing
/// file would be.
#[derive(Default)]
pub(super) struct FakeFacts {
    pub(super) git: GitInfo,
    pub(super) source_date_epoch: Option<String>,
    pub(super) hosting: Vec<(cluster::Source, Result<Hosting, ClusterError>)>,
    /// The ConfigMap sources planning asked for, in order.
    pub(super) asked: RefCell<Vec<cluster::Source>>,
}

impl FakeFacts {
    /// At a git commit.
    pub(super) fn at_commit(sha: &str) -> FakeFacts {
        FakeFacts {
            git: GitInfo {
                sha: Some(sha.into()),
                problem: None,
            },
            ..FakeFacts::default()
        }
    }

    /// `source` gives `result`.
    pub(super) fn with_hosting(
        mut self,
        source: cluster::Source,
        result: Result<Hosting, ClusterError>,
    ) -> FakeFacts {
        self.hosting.push((source, result));
        self
    }
}

impl Facts for FakeFacts {
    fn git(&self, _dir: &Path) -> GitInfo {
        self.git.clone()
    }

    fn local_registry_hosting(&self, source: &cluster::Source) -> Result<Hosting, ClusterError> {
        self.asked.borrow_mut().push(source.clone());
        self.hosting
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| {
                Err(ClusterError::File {
                    path: format!("{source:?}"),
                    reason: "the test gave no such source".into(),
                })
            })
    }

    fn source_date_epoch(&self) -> Option<String> {
        self.source_date_epoch.clone()
    }
}
