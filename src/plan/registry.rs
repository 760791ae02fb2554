//! The registry's two addresses: `--registry`/`--registry-external`/`--registry-internal`
//! over `registry`, or asked of the cluster.

use super::Request;
use super::facts::Facts;
use crate::cluster;
use crate::config::{ClusterConfig, ConfigError, Origin, RegistrySetting, Sourced};
use crate::reference::{Registry, RegistryLocation};

/// CLI flags over config: `--registry` sets both sides, `--registry-external/-internal` one side.
pub(super) fn registry_split(
    request: &Request,
    config: &ClusterConfig,
    origin: &Origin,
    facts: &dyn Facts,
) -> Result<(RegistryLocation, RegistryLocation), ConfigError> {
    let (mut external, mut internal) = match (&request.registry, &config.registry) {
        (Some(r), _) => same_on_both_sides(parse_flag("--registry (or ADAPT_PUSH_REGISTRY)", r)?),
        (None, _) if request.registry_from_cluster => from_cluster_flag(request, facts)?,
        (None, Some(setting)) => from_setting(request, setting, facts)?,
        (None, None) => (None, None),
    };
    if let Some(e) = &request.registry_external {
        external = Some(parse_flag(
            "--registry-external (or ADAPT_PUSH_REGISTRY_EXTERNAL)",
            e,
        )?);
    }
    if let Some(i) = &request.registry_internal {
        internal = Some(parse_flag(
            "--registry-internal (or ADAPT_PUSH_REGISTRY_INTERNAL)",
            i,
        )?);
    }
    complete_split(request, origin, external, internal)
}

/// One side or both, as far as the flags and the config say.
type Sides = (Option<RegistryLocation>, Option<RegistryLocation>);

fn same_on_both_sides(location: RegistryLocation) -> Sides {
    (Some(location.clone()), Some(location))
}

/// A registry address given on the command line; the error names the flag.
fn parse_flag(flag: &str, value: &str) -> Result<RegistryLocation, ConfigError> {
    RegistryLocation::parse_destination(value)
        .map_err(|e| ConfigError::plain(format!("{flag}: {}", e.0), None))
}

/// `--registry-from-cluster`: both sides from the current (or named) kube context's ConfigMap.
fn from_cluster_flag(request: &Request, facts: &dyn Facts) -> Result<Sides, ConfigError> {
    let source = cluster::Source::Cluster {
        context: request.kube_context.clone(),
    };
    let hosting = facts
        .local_registry_hosting(&source)
        .map_err(|e| ConfigError::plain(format!("--registry-from-cluster: {e}"), Some(e.help())))?;
    let side = |value: &str| {
        parse_flag(
            &format!("--registry-from-cluster: the cluster's {}", cluster::KEY),
            value,
        )
    };
    Ok((
        Some(side(&hosting.external)?),
        Some(side(&hosting.internal)?),
    ))
}

/// `registry` in the config: one address, a split pair, or `local-registry-hosting`.
fn from_setting(
    request: &Request,
    setting: &Sourced<RegistrySetting>,
    facts: &dyn Facts,
) -> Result<Sides, ConfigError> {
    let parse_side = |side: &str, value: &str| {
        RegistryLocation::parse_destination(value).map_err(|e| {
            let mut s = setting.clone();
            if side != "registry" {
                s.key.push(side.to_string());
            }
            s.error(e.0, None)
        })
    };
    match &setting.value {
        RegistrySetting::Same(s) => Ok(same_on_both_sides(parse_side("registry", s)?)),
        RegistrySetting::Split { external, internal } => Ok((
            Some(parse_side("external", external)?),
            Some(parse_side("internal", internal)?),
        )),
        RegistrySetting::LocalRegistryHosting(from) => {
            from_local_registry_hosting(request, setting, from, facts)
        }
    }
}

/// `registry = { local-registry-hosting = "cluster" | FILE }`: both sides from the ConfigMap.
fn from_local_registry_hosting(
    request: &Request,
    setting: &Sourced<RegistrySetting>,
    from: &str,
    facts: &dyn Facts,
) -> Result<Sides, ConfigError> {
    let source = if from == "cluster" {
        cluster::Source::Cluster {
            context: request.kube_context.clone(),
        }
    } else {
        cluster::Source::File(setting.origin.resolve(from))
    };
    let hosting = facts
        .local_registry_hosting(&source)
        .map_err(|e| setting.error(e.to_string(), Some(e.help())))?;
    let side = |value: &str| {
        RegistryLocation::parse_destination(value).map_err(|e| {
            setting.error(
                format!("the address {}'s {} gives: {}", from, cluster::KEY, e.0),
                None,
            )
        })
    };
    Ok((
        Some(side(&hosting.external)?),
        Some(side(&hosting.internal)?),
    ))
}

/// Both sides, or an error: an external alone is also the internal one; without a registry
/// (only with a registry-less destination) the image is named as Docker names an unqualified one.
fn complete_split(
    request: &Request,
    origin: &Origin,
    external: Option<RegistryLocation>,
    internal: Option<RegistryLocation>,
) -> Result<(RegistryLocation, RegistryLocation), ConfigError> {
    match (external, internal) {
        (Some(e), Some(i)) => Ok((e, i)),
        (Some(e), None) => Ok((e.clone(), e)),
        (None, Some(_)) => Err(ConfigError::plain(
            "--registry-internal is set but there is no external address to push through",
            Some("set --registry-external, or `registry` in [package.metadata.cluster]".into()),
        )),
        // Nothing goes to a registry: the image is named as Docker names an unqualified one.
        (None, None) if request.registry_less => {
            let hub = RegistryLocation {
                registry: Registry::docker_hub(),
                namespace: None,
            };
            Ok((hub.clone(), hub))
        }
        (None, None) => Err(ConfigError::at(
            origin,
            &[],
            "no registry to push to",
            Some(
                "add registry = { external = \"localhost:5001\", internal = \"registry:5000\" } (or registry = \"host:port\") to [package.metadata.cluster], or pass --registry"
                    .into(),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{FakeFacts, Workspace, member};
    use super::*;
    use crate::cluster::{ClusterError, Hosting, Source};

    /// (push name, pull name) of `app` with these settings, flags and facts.
    fn names(
        cluster: Value,
        request: Request,
        facts: &FakeFacts,
    ) -> Result<(String, String), String> {
        names_in(&Workspace::single(member("app", cluster)), request, facts)
    }

    fn names_in(
        ws: &Workspace,
        request: Request,
        facts: &FakeFacts,
    ) -> Result<(String, String), String> {
        let target = ws.target(&request, facts)?;
        Ok((
            target.destination.push_name(),
            target.destination.pull_name(),
        ))
    }

    /// A package whose `registry` is the ConfigMap file cm.yaml beside its Cargo.toml.
    fn with_configmap_file() -> (Workspace, Source) {
        let ws = Workspace::single(member(
            "app",
            json!({ "registry": { "local-registry-hosting": "cm.yaml" } }),
        ));
        let source = Source::File(ws.root.join("cm.yaml"));
        (ws, source)
    }

    fn pair(push: &str, pull: &str) -> Result<(String, String), String> {
        Ok((push.to_string(), pull.to_string()))
    }

    fn hosting(external: &str, internal: &str) -> Result<Hosting, ClusterError> {
        Ok(Hosting {
            external: external.into(),
            internal: internal.into(),
        })
    }

    #[test]
    fn a_string_is_both_sides_and_a_table_splits_them() {
        let facts = FakeFacts::default();
        assert_eq!(
            names(
                json!({ "registry": "localhost:5000/team" }),
                Request::default(),
                &facts
            ),
            pair("localhost:5000/team/app", "localhost:5000/team/app")
        );
        let split = json!({ "registry": { "external": "localhost:5001", "internal": "registry:5000/mirror" } });
        assert_eq!(
            names(split, Request::default(), &facts),
            pair("localhost:5001/app", "registry:5000/mirror/app")
        );
        let bad_side = json!({ "registry": { "external": "localhost:5001", "internal": "registry:5000/Team" } });
        let said = names(bad_side, Request::default(), &facts).unwrap_err();
        assert!(
            said.contains("[package.metadata.cluster] `registry.internal`: "),
            "{said}"
        );
    }

    #[test]
    fn flags_replace_the_settings_one_side_at_a_time() {
        let facts = FakeFacts::default();
        let split =
            || json!({ "registry": { "external": "localhost:5001", "internal": "registry:5000" } });
        let internal = Request {
            registry_internal: Some("cluster.local:5000".into()),
            ..Request::default()
        };
        assert_eq!(
            names(split(), internal.clone(), &facts),
            pair("localhost:5001/app", "cluster.local:5000/app")
        );
        let external = Request {
            registry_external: Some("127.0.0.1:5002".into()),
            ..Request::default()
        };
        assert_eq!(
            names(split(), external.clone(), &facts),
            pair("127.0.0.1:5002/app", "registry:5000/app")
        );
        let both = Request {
            registry: Some("flag.example:5000".into()),
            ..Request::default()
        };
        assert_eq!(
            names(split(), both, &facts),
            pair("flag.example:5000/app", "flag.example:5000/app")
        );
        // Without settings, an external address alone is also the internal one; an internal
        // one alone has nothing to push through.
        assert_eq!(
            names(json!({}), external, &facts),
            pair("127.0.0.1:5002/app", "127.0.0.1:5002/app")
        );
        assert_eq!(
            names(json!({}), internal, &facts).unwrap_err(),
            "--registry-internal is set but there is no external address to push through | help: set --registry-external, or `registry` in [package.metadata.cluster]"
        );
        let bad = Request {
            registry: Some("localhost:5000/Team".into()),
            ..Request::default()
        };
        let said = names(split(), bad, &facts).unwrap_err();
        assert!(
            said.starts_with("--registry (or ADAPT_PUSH_REGISTRY): "),
            "{said}"
        );
    }

    #[test]
    fn without_a_registry_only_a_run_that_pushes_nowhere_is_planned() {
        let ws = Workspace::single(member("app", json!({})));
        let said = ws
            .target(&Request::default(), &FakeFacts::default())
            .unwrap_err();
        assert!(
            said.contains(
                "[package.metadata.cluster]: no registry to push to | help: add registry = "
            ),
            "{said}"
        );
        let registry_less = Request {
            registry_less: true,
            ..Request::default()
        };
        let target = ws.target(&registry_less, &FakeFacts::default()).unwrap();
        assert_eq!(target.destination.external, Registry::docker_hub());
        assert_eq!(target.destination.internal, Registry::docker_hub());
    }

    #[test]
    fn local_registry_hosting_is_asked_of_the_run_s_facts() {
        let (ws, configmap) = with_configmap_file();
        let facts = FakeFacts::default().with_hosting(
            configmap.clone(),
            hosting("localhost:5001", "kind-registry:5000"),
        );
        assert_eq!(
            names_in(&ws, Request::default(), &facts),
            pair("localhost:5001/app", "kind-registry:5000/app")
        );
        assert_eq!(*facts.asked.borrow(), [configmap]);

        // "cluster" and --registry-from-cluster ask the cluster of --kube-context; the flag is
        // over the setting, and --registry over the flag.
        let kind_dev = Source::Cluster {
            context: Some("kind-dev".into()),
        };
        let facts = FakeFacts::default()
            .with_hosting(kind_dev.clone(), hosting("localhost:5003", "dev:5000"));
        let in_context = Request {
            kube_context: Some("kind-dev".into()),
            ..Request::default()
        };
        assert_eq!(
            names(
                json!({ "registry": { "local-registry-hosting": "cluster" } }),
                in_context.clone(),
                &facts
            ),
            pair("localhost:5003/app", "dev:5000/app")
        );
        let from_cluster = Request {
            registry_from_cluster: true,
            ..in_context
        };
        assert_eq!(
            names(
                json!({ "registry": "localhost:5000" }),
                from_cluster.clone(),
                &facts
            ),
            pair("localhost:5003/app", "dev:5000/app")
        );
        assert_eq!(*facts.asked.borrow(), [kind_dev.clone(), kind_dev.clone()]);
        let over_it = Request {
            registry: Some("localhost:5000".into()),
            ..from_cluster.clone()
        };
        assert_eq!(
            names(json!({}), over_it, &facts),
            pair("localhost:5000/app", "localhost:5000/app")
        );
        assert_eq!(
            facts.asked.borrow().len(),
            2,
            "--registry: the cluster is not asked"
        );

        let bad_address =
            FakeFacts::default().with_hosting(kind_dev, hosting("localhost:5003/Team", "dev:5000"));
        let said = names(json!({}), from_cluster, &bad_address).unwrap_err();
        assert!(
            said.starts_with("--registry-from-cluster: the cluster's localRegistryHosting.v1: "),
            "{said}"
        );
    }

    #[test]
    fn a_cluster_without_a_registry_is_blamed_on_the_setting_or_the_flag() {
        let missing = || ClusterError::Missing {
            context: "kind-dev".into(),
            server: "https://127.0.0.1:6443".into(),
        };
        let cluster = Source::Cluster { context: None };
        let facts = FakeFacts::default().with_hosting(cluster, Err(missing()));
        let said = names(
            json!({ "registry": { "local-registry-hosting": "cluster" } }),
            Request::default(),
            &facts,
        )
        .unwrap_err();
        assert!(
            said.contains(&format!(
                "[package.metadata.cluster] `registry.local-registry-hosting`: {}",
                missing()
            )) && said.ends_with(&format!("help: {}", missing().help())),
            "{said}"
        );
        let from_cluster = Request {
            registry_from_cluster: true,
            ..Request::default()
        };
        assert_eq!(
            names(json!({}), from_cluster, &facts).unwrap_err(),
            format!(
                "--registry-from-cluster: {} | help: {}",
                missing(),
                missing().help()
            )
        );

        let (ws, configmap) = with_configmap_file();
        let facts = FakeFacts::default()
            .with_hosting(configmap, hosting("localhost:5001", "Kind Registry"));
        let said = names_in(&ws, Request::default(), &facts).unwrap_err();
        assert!(
            said.contains("`registry.local-registry-hosting`: the address cm.yaml's localRegistryHosting.v1 gives: "),
            "{said}"
        );
    }
}
