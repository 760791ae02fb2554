//! Which supply-chain documents go with a target's image: `--sbom` over `sbom`, `--provenance`
//! over `provenance`.

use super::Request;
use crate::config::{ClusterConfig, ConfigError};
use crate::spec::{SbomFormat, SupplyChainSpec};

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
