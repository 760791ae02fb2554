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
