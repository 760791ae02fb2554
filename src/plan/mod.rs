//! CLI + cargo metadata → a validated plan: which binary, which image, where it goes.
//! Everything a user can get wrong is checked here, before anything is built or pushed.

mod builder;
mod facts;
mod include;
mod platforms;
mod registry;
mod select;
mod supply_chain;
mod tags;
mod target;
#[cfg(test)]
mod testing;

use std::path::{Path, PathBuf};

use cargo_metadata::Metadata;

use crate::config::{ClusterConfig, ConfigError, Origin};
use crate::spec::{BuildSpec, Destination, MediaTypes, RegistryOptions};
pub use facts::{Facts, HostFacts};
use select::select_packages;
use target::plan_targets;

/// Everything needed to build and push: one target per image (per binary of each package).
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// How the user chose them: the run's `cargo build` repeats it.
    pub selection: Selection,
}

/// How the packages and binaries were chosen. The run's one `cargo build` per platform repeats
/// it, so that it is the build the user would run themselves, and reuses one they ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// `--workspace`: `cargo build --workspace` (features unified over every member). Else `-p`
    /// for each package of the plan (the ones named, or the one whose manifest was found).
    pub workspace: bool,
    /// Binaries named (`--bin`): `--bin` for each of the plan's. Else every binary of the
    /// packages, as `cargo build` builds them.
    pub bins: bool,
}

impl Selection {
    fn of(request: &Request) -> Selection {
        Selection {
            workspace: request.workspace,
            bins: !request.bins.is_empty(),
        }
    }
}

/// One image to build and push.
#[derive(Debug, Clone)]
pub struct Target {
    /// What to build: all a builder sees.
    pub build: BuildSpec,
    /// Where it goes: all a publisher sees.
    pub destination: Destination,
    pub registry_options: RegistryOptions,
    /// Which supply-chain documents to attach to the pushed image.
    pub supply_chain: crate::spec::SupplyChainSpec,
    /// `platforms` / `--platform`; empty: the host's platform, one image, no index.
    pub platforms: Vec<crate::platform::Platform>,
    /// What the user should hear about the settings that is not an error (the run prints it).
    pub warnings: Vec<String>,
}

/// What the command line asks of the plan, in plain terms: `cli` fills it from its arguments
/// (`resolve` narrows it to one package and binary per reference).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--workspace`: every member.
    pub workspace: bool,
    /// `-p`: package names or specs.
    pub packages: Vec<String>,
    /// `--bin`, repeatable: these binaries of the chosen packages (cargo's rule).
    pub bins: Vec<String>,
    pub builder: Option<BuilderChoice>,
    pub media_types: Option<MediaTypes>,
    /// `--registry`, `--registry-external`, `--registry-internal`.
    pub registry: Option<String>,
    pub registry_external: Option<String>,
    pub registry_internal: Option<String>,
    /// `--registry-from-cluster`, asking the cluster of `kube_context`.
    pub registry_from_cluster: bool,
    pub kube_context: Option<String>,
    /// No registry is pushed to (`--no-push`, or only registry-less destinations).
    pub registry_less: bool,
    pub ca_cert: Option<PathBuf>,
    pub retry_attempts: Option<u32>,
    pub retry_timeout: Option<u64>,
    /// `--tag`: replaces `tags`.
    pub tags: Vec<String>,
    pub sbom: Option<crate::spec::SbomFormat>,
    pub provenance: Option<bool>,
    pub platforms: Vec<String>,
}

/// Which builder was asked for (`--builder`, `builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderChoice {
    /// The engine builder when the package has a Dockerfile, else the daemonless one.
    Auto,
    Oci,
    Docker,
}

/// Builds the plan from the CLI and `cargo metadata`; what else it needs to know, it asks `facts`.
pub fn make_plan(
    request: &Request,
    metadata: &Metadata,
    manifest: &Path,
    facts: &dyn Facts,
) -> Result<Plan, ConfigError> {
    let packages = select_packages(request, metadata, manifest)?;
    let workspace_manifest = metadata
        .workspace_root
        .join("Cargo.toml")
        .into_std_path_buf();
    let workspace_config = ClusterConfig::from_table(
        &metadata.workspace_metadata["cluster"],
        &Origin::workspace(&workspace_manifest),
    )?;
    let epoch = source_date_epoch(facts.source_date_epoch())?;
    let several_packages = packages.len() > 1;
    let mut targets = Vec::new();
    for package in packages {
        let manifest_path = package.manifest_path.clone().into_std_path_buf();
        let package_config = ClusterConfig::from_table(
            &package.metadata["cluster"],
            &Origin::package(&manifest_path),
        )?;
        // `bin`/`bins` name a package's own binaries: a package that sets either ignores both
        // of the workspace's.
        let mut workspace_config = workspace_config.clone();
        if package_config.bin.is_some() || package_config.bins.is_some() {
            workspace_config.bin = None;
            workspace_config.bins = None;
        }
        let config = package_config.merged_over(workspace_config);
        let layer_cache = metadata
            .target_directory
            .join("adapt-push")
            .join("layers")
            .into_std_path_buf();
        targets.extend(plan_targets(
            request,
            package,
            &config,
            several_packages,
            epoch,
            layer_cache,
            metadata.workspace_root.as_std_path(),
            facts,
        )?);
    }
    Ok(Plan {
        targets,
        selection: Selection::of(request),
    })
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else the Unix epoch.
fn source_date_epoch(set: Option<String>) -> Result<u64, ConfigError> {
    match set {
        None => Ok(0),
        Some(s) if s.is_empty() => Ok(0),
        // Beyond year 9999 `created` could not be written as RFC 3339.
        Some(s) => s.trim().parse::<u64>().ok().filter(|n| *n <= 253_402_300_799).ok_or_else(|| {
            ConfigError::plain(
                format!("SOURCE_DATE_EPOCH=`{s}` is not a whole number of seconds since 1970 (up to year 9999)"),
                Some("unset it, or set it to e.g. `git log -1 --format=%ct`".into()),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{FakeFacts, Workspace, at_key, member, said};
    use super::*;
    use crate::spec::SbomFormat;

    #[test]
    fn workspace_defaults_sit_under_each_package_and_flags_over_both() {
        let ws = Workspace::members(
            json!({
                "registry": "ws.example:5000/team",
                "tags": ["ws"],
                "env": { "A": "ws", "B": "ws" },
                "sbom": "cyclonedx",
            }),
            vec![
                member("api", json!({ "tags": ["pkg"], "env": { "B": "pkg" } })),
                member("worker", json!({ "registry": "own.example:5000" })),
            ],
        );
        let request = Request {
            packages: vec!["api".into(), "worker".into()],
            ..Request::default()
        };
        let plan = ws.plan(&request, &FakeFacts::default()).unwrap();
        let [api, worker] = &plan.targets[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(api.destination.push_name(), "ws.example:5000/team/api");
        assert_eq!(api.destination.tags[0].as_str(), "pkg");
        assert_eq!(
            api.build.image.env,
            [("A".into(), "ws".into()), ("B".into(), "pkg".into())]
        );
        assert_eq!(api.supply_chain.sbom, SbomFormat::Cyclonedx);
        assert_eq!(api.build.manifest_path, ws.dir("api").join("Cargo.toml"));
        assert_eq!(worker.destination.push_name(), "own.example:5000/worker");
        assert_eq!(worker.destination.tags[0].as_str(), "ws");
        assert_eq!(worker.build.image.env.len(), 2);
        assert_eq!(
            worker.build.manifest_path,
            ws.dir("worker").join("Cargo.toml")
        );
        assert_eq!(
            worker.build.layer_cache,
            ws.root.join("target/adapt-push/layers")
        );

        // The command line is over both, for every package.
        let request = Request {
            tags: vec!["cli".into()],
            sbom: Some(SbomFormat::None),
            registry: Some("flag.example:5000".into()),
            ..request
        };
        for target in ws.plan(&request, &FakeFacts::default()).unwrap().targets {
            assert_eq!(target.destination.external.to_string(), "flag.example:5000");
            assert_eq!(target.destination.tags[0].as_str(), "cli");
            assert_eq!(target.supply_chain.sbom, SbomFormat::None);
        }
    }

    #[test]
    fn source_date_epoch_is_the_image_time_and_must_be_one() {
        let ws = Workspace::single(member("app", json!({ "registry": "localhost:5000" })));
        let epoch = |set: Option<&str>| {
            let facts = FakeFacts {
                source_date_epoch: set.map(String::from),
                ..FakeFacts::default()
            };
            ws.target(&Request::default(), &facts)
                .map(|t| t.build.image.epoch)
        };
        assert_eq!(epoch(None), Ok(0));
        assert_eq!(epoch(Some("")), Ok(0));
        assert_eq!(epoch(Some(" 1700000000\n")), Ok(1_700_000_000));
        assert_eq!(epoch(Some("253402300799")), Ok(253_402_300_799));
        for wrong in ["253402300800", "-1", "1.5", "yesterday"] {
            let said = epoch(Some(wrong)).unwrap_err();
            assert!(
                said.starts_with(&format!(
                    "SOURCE_DATE_EPOCH=`{wrong}` is not a whole number"
                )) && said.contains("help: unset it"),
                "{said}"
            );
        }
    }

    #[test]
    fn an_error_in_a_member_points_at_its_own_manifest() {
        let ws = Workspace::members(
            json!({ "registry": "localhost:5000" }),
            vec![
                member("api", json!({})),
                member("worker", json!({ "builder": "podman" })),
            ],
        );
        let request = Request {
            workspace: true,
            ..Request::default()
        };
        let e = ws.plan(&request, &FakeFacts::default()).unwrap_err();
        let manifest = ws.dir("worker").join("Cargo.toml");
        // The member's Cargo.toml, the line of `builder`, the key, what to write instead.
        assert!(
            said(&e).starts_with(&format!(
                "{}: [package.metadata.cluster] `builder`: unknown builder `podman`",
                at_key(&manifest, "builder")
            )) && said(&e).ends_with("help: use \"auto\", \"oci\" or \"docker\""),
            "{}",
            said(&e)
        );
    }
}
