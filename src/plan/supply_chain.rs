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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{Workspace, member, said};
    use super::*;

    fn plan(
        cluster: Value,
        sbom: Option<SbomFormat>,
        provenance: Option<bool>,
    ) -> Result<SupplyChainSpec, String> {
        let ws = Workspace::single(member("app", cluster));
        let request = Request {
            sbom,
            provenance,
            ..Request::default()
        };
        plan_supply_chain(&request, &ws.config("app")).map_err(|e| said(&e))
    }

    fn spec(sbom: SbomFormat, provenance: bool) -> Result<SupplyChainSpec, String> {
        Ok(SupplyChainSpec { sbom, provenance })
    }

    #[test]
    fn spdx_and_provenance_unless_the_settings_or_the_flags_say_otherwise() {
        assert_eq!(plan(json!({}), None, None), spec(SbomFormat::Spdx, true));
        let set = || json!({ "sbom": "cyclonedx", "provenance": false });
        assert_eq!(plan(set(), None, None), spec(SbomFormat::Cyclonedx, false));
        assert_eq!(
            plan(set(), Some(SbomFormat::None), Some(true)),
            spec(SbomFormat::None, true)
        );
        assert_eq!(
            plan(json!({ "sbom": "none" }), None, None),
            spec(SbomFormat::None, true)
        );
    }

    #[test]
    fn an_unknown_sbom_format_names_the_ones_there_are() {
        let said = plan(json!({ "sbom": "swid" }), None, None).unwrap_err();
        assert!(
            said.contains("`sbom`: `sbom = \"swid\"` is not a format we write | help: use \"spdx\" (SPDX 2.3 JSON), \"cyclonedx\" (CycloneDX 1.5 JSON) or \"none\""),
            "{said}"
        );
        // The flag is over a wrong setting: it is not read.
        assert_eq!(
            plan(json!({ "sbom": "swid" }), Some(SbomFormat::Spdx), None),
            spec(SbomFormat::Spdx, true)
        );
    }
}
