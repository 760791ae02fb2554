//! What a target makes besides its image: the platforms (`--platform`/`platforms`) and the
//! supply-chain documents (`--sbom`/`sbom`, `--provenance`/`provenance`).

use super::Request;
use crate::config::{ClusterConfig, ConfigError};
use crate::platform::Platform;
use crate::spec::BuilderKind;
use crate::spec::{SbomFormat, SupplyChainSpec};

/// `--platform` over `platforms` in the cluster table; duplicates dropped, order kept.
pub(super) fn plan_platforms(
    request: &Request,
    config: &ClusterConfig,
    builder: BuilderKind,
) -> Result<Vec<Platform>, ConfigError> {
    let mut platforms: Vec<Platform> = Vec::new();
    let mut add = |p: Platform| {
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    };
    if !request.platforms.is_empty() {
        for text in &request.platforms {
            add(Platform::parse(text)
                .map_err(|m| ConfigError::plain(format!("--platform: {m}"), None))?);
        }
    } else if let Some(setting) = &config.platforms {
        for text in &setting.value {
            add(Platform::parse(text).map_err(|m| setting.error(m, None))?);
        }
    }
    if builder == BuilderKind::Docker && !platforms.is_empty() {
        return Err(ConfigError::plain(
            "`platforms` / `--platform` need the daemonless builder; the engine builder has `platform` (one)",
            Some("use --builder oci, or set `platform = \"linux/arm64\"` for the engine".into()),
        ));
    }
    Ok(platforms)
}

/// `--sbom` / `--provenance` over `sbom` / `provenance` in the cluster table.
pub(super) fn plan_supply_chain(
    request: &Request,
    config: &ClusterConfig,
) -> Result<SupplyChainSpec, ConfigError> {
    let sbom = match (request.sbom, &config.sbom) {
        (Some(format), _) => format,
        (None, Some(setting)) => SbomFormat::parse(&setting.value).ok_or_else(|| {
            setting.error(
                format!("`sbom = \"{}\"` is not a format we write", setting.value),
                Some(
                    "use \"spdx\" (SPDX 2.3 JSON), \"cyclonedx\" (CycloneDX 1.5 JSON) or \"none\""
                        .into(),
                ),
            )
        })?,
        (None, None) => SbomFormat::default(),
    };
    let provenance = request
        .provenance
        .or(config.provenance.as_ref().map(|p| p.value))
        .unwrap_or(true);
    Ok(SupplyChainSpec { sbom, provenance })
}
