//! The registry's two addresses: `--registry`/`--registry-external`/`--registry-internal`
//! over `registry`, or asked of the cluster.

use super::Request;
use crate::cluster;
use crate::config::{ClusterConfig, ConfigError, Origin, RegistrySetting};
use crate::reference::{Registry, RegistryLocation};

/// CLI flags over config: `--registry` sets both sides, `--registry-external/-internal` one side.
pub(super) fn registry_split(
    request: &Request,
    config: &ClusterConfig,
    origin: &Origin,
) -> Result<(RegistryLocation, RegistryLocation), ConfigError> {
    let parse_flag = |flag: &str, value: &str| {
        RegistryLocation::parse_destination(value)
            .map_err(|e| ConfigError::plain(format!("{flag}: {}", e.0), None))
    };
    let (mut external, mut internal) = match (&request.registry, &config.registry) {
        (Some(r), _) => {
            let loc = parse_flag("--registry (or ADAPT_PUSH_REGISTRY)", r)?;
            (Some(loc.clone()), Some(loc))
        }
        (None, _) if request.registry_from_cluster => {
            let source = cluster::Source::Cluster {
                context: request.kube_context.clone(),
            };
            let hosting = cluster::Lookups::global().get(&source).map_err(|e| {
                ConfigError::plain(format!("--registry-from-cluster: {e}"), Some(e.help()))
            })?;
            let side = |value: &str| {
                parse_flag(
                    &format!("--registry-from-cluster: the cluster's {}", cluster::KEY),
                    value,
                )
            };
            (
                Some(side(&hosting.external)?),
                Some(side(&hosting.internal)?),
            )
        }
        (None, Some(setting))
            if matches!(setting.value, RegistrySetting::LocalRegistryHosting(_)) =>
        {
            let RegistrySetting::LocalRegistryHosting(from) = &setting.value else {
                unreachable!("matched above")
            };
            let source = if from == "cluster" {
                cluster::Source::Cluster {
                    context: request.kube_context.clone(),
                }
            } else {
                cluster::Source::File(setting.origin.resolve(from))
            };
            let hosting = cluster::Lookups::global()
                .get(&source)
                .map_err(|e| setting.error(e.to_string(), Some(e.help())))?;
            let side = |value: &str| {
                RegistryLocation::parse_destination(value).map_err(|e| {
                    setting.error(
                        format!("the address {}'s {} gives: {}", from, cluster::KEY, e.0),
                        None,
                    )
                })
            };
            (
                Some(side(&hosting.external)?),
                Some(side(&hosting.internal)?),
            )
        }
        (None, Some(setting)) => {
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
                RegistrySetting::Same(s) => {
                    let loc = parse_side("registry", s)?;
                    (Some(loc.clone()), Some(loc))
                }
                RegistrySetting::Split { external, internal } => (
                    Some(parse_side("external", external)?),
                    Some(parse_side("internal", internal)?),
                ),
                RegistrySetting::LocalRegistryHosting(_) => (None, None),
            }
        }
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
