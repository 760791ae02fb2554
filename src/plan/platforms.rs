//! Which platforms a target is built for: `--platform` over `platforms`.

use super::Request;
use crate::config::{ClusterConfig, ConfigError};
use crate::platform::Platform;
use crate::spec::BuilderKind;

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
