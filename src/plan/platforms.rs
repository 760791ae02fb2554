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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{Workspace, member, said};
    use super::*;

    fn platforms(
        cluster: Value,
        flags: &[&str],
        builder: BuilderKind,
    ) -> Result<Vec<String>, String> {
        let ws = Workspace::single(member("app", cluster));
        let request = Request {
            platforms: flags.iter().map(|p| p.to_string()).collect(),
            ..Request::default()
        };
        plan_platforms(&request, &ws.config("app"), builder)
            .map(|list| list.iter().map(Platform::to_string).collect())
            .map_err(|e| said(&e))
    }

    #[test]
    fn the_flag_replaces_the_setting_and_each_platform_comes_once_in_order() {
        let oci = BuilderKind::Oci;
        let set = || json!({ "platforms": ["linux/arm64", "linux/amd64", "linux/arm64/v8", "linux/arm64"] });
        assert_eq!(
            platforms(set(), &[], oci).unwrap(),
            ["linux/arm64", "linux/amd64"]
        );
        assert_eq!(
            platforms(set(), &["linux/amd64"], oci).unwrap(),
            ["linux/amd64"]
        );
        // None asked: the host's, decided later.
        assert!(platforms(json!({}), &[], oci).unwrap().is_empty());

        let said = platforms(json!({}), &["linux/sparc"], oci).unwrap_err();
        assert!(
            said.starts_with("--platform: `linux/sparc` is not a platform we build for; known: "),
            "{said}"
        );
        let said = platforms(json!({ "platforms": ["linux/sparc"] }), &[], oci).unwrap_err();
        assert!(
            said.contains(
                "[package.metadata.cluster] `platforms`: `linux/sparc` is not a platform"
            ),
            "{said}"
        );
    }

    #[test]
    fn the_engine_builder_builds_one_platform_only() {
        let said = platforms(
            json!({ "platforms": ["linux/amd64"] }),
            &[],
            BuilderKind::Docker,
        )
        .unwrap_err();
        assert_eq!(
            said,
            "`platforms` / `--platform` need the daemonless builder; the engine builder has `platform` (one) | help: use --builder oci, or set `platform = \"linux/arm64\"` for the engine"
        );
        assert!(
            platforms(json!({}), &[], BuilderKind::Docker)
                .unwrap()
                .is_empty()
        );
    }
}
