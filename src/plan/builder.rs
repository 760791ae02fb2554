//! Which builder (`--builder`/`builder`, `auto`: a Dockerfile means the engine), and the
//! engine builder's settings.

use std::path::Path;

use super::{BuilderChoice, Request};
use crate::config::{ClusterConfig, ConfigError};
use crate::spec::{BuilderKind, DockerSpec};

pub(super) fn choose_builder(
    request: &Request,
    config: &ClusterConfig,
    package_dir: &Path,
) -> Result<BuilderKind, ConfigError> {
    let choice = match (request.builder, &config.builder) {
        (Some(b), _) => b,
        (None, Some(b)) => match b.value.as_str() {
            "auto" => BuilderChoice::Auto,
            "oci" => BuilderChoice::Oci,
            "docker" => BuilderChoice::Docker,
            other => {
                return Err(b.error(
                    format!("unknown builder `{other}`"),
                    Some("use \"auto\", \"oci\" or \"docker\"".into()),
                ));
            }
        },
        (None, None) => BuilderChoice::Auto,
    };
    Ok(match choice {
        BuilderChoice::Oci => BuilderKind::Oci,
        BuilderChoice::Docker => BuilderKind::Docker,
        BuilderChoice::Auto => {
            let has_dockerfile = match &config.dockerfile {
                Some(d) => d.origin.resolve(&d.value).is_file(),
                None => package_dir.join("Dockerfile").is_file(),
            };
            if has_dockerfile {
                BuilderKind::Docker
            } else {
                BuilderKind::Oci
            }
        }
    })
}

pub(super) fn docker_spec(
    config: &ClusterConfig,
    package_dir: &Path,
) -> Result<DockerSpec, ConfigError> {
    let dockerfile = match &config.dockerfile {
        Some(d) => {
            let path = d.origin.resolve(&d.value);
            if !path.is_file() {
                return Err(d.error(
                    format!("the Dockerfile {} does not exist", path.display()),
                    None,
                ));
            }
            Some(path)
        }
        None => Some(package_dir.join("Dockerfile")).filter(|p| p.is_file()),
    };
    let context = match &config.context {
        Some(c) => {
            let path = c.origin.resolve(&c.value);
            if !path.is_dir() {
                return Err(c.error(
                    format!("the build context {} is not a directory", path.display()),
                    None,
                ));
            }
            path
        }
        None => package_dir.to_path_buf(),
    };
    if let Some(p) = &config.platform
        && !p.value.starts_with("linux/")
    {
        return Err(p.error(
            format!("platform `{}` is not a Linux platform", p.value),
            Some("use e.g. \"linux/amd64\"".into()),
        ));
    }
    Ok(DockerSpec {
        dockerfile,
        context,
        build_args: config
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        target: config.target.as_ref().map(|t| t.value.clone()),
        pull: config.pull.as_ref().is_some_and(|p| p.value),
        platform: config.platform.as_ref().map(|p| p.value.clone()),
        buildkit: config.buildkit.as_ref().and_then(|b| b.value),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{Workspace, member, said};
    use super::*;

    fn builder(ws: &Workspace, flag: Option<BuilderChoice>) -> Result<BuilderKind, String> {
        let request = Request {
            builder: flag,
            ..Request::default()
        };
        choose_builder(&request, &ws.config("app"), &ws.root).map_err(|e| said(&e))
    }

    fn app(cluster: Value) -> Workspace {
        Workspace::single(member("app", cluster))
    }

    #[test]
    fn auto_means_the_engine_when_there_is_a_dockerfile() {
        let ws = app(json!({}));
        assert_eq!(builder(&ws, None), Ok(BuilderKind::Oci));
        std::fs::write(ws.root.join("Dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(builder(&ws, None), Ok(BuilderKind::Docker));
        assert_eq!(builder(&ws, Some(BuilderChoice::Oci)), Ok(BuilderKind::Oci));

        // `dockerfile` names the one that counts, relative to the Cargo.toml.
        let named = app(json!({ "dockerfile": "docker/app.Dockerfile" }));
        assert_eq!(builder(&named, None), Ok(BuilderKind::Oci));
        std::fs::create_dir(named.root.join("docker")).unwrap();
        std::fs::write(named.root.join("docker/app.Dockerfile"), "FROM scratch\n").unwrap();
        assert_eq!(builder(&named, None), Ok(BuilderKind::Docker));

        let set = app(json!({ "builder": "docker" }));
        assert_eq!(builder(&set, None), Ok(BuilderKind::Docker));
        assert_eq!(
            builder(&set, Some(BuilderChoice::Auto)),
            Ok(BuilderKind::Oci)
        );
        let said = builder(&app(json!({ "builder": "kaniko" })), None).unwrap_err();
        assert!(
            said.contains(
                "`builder`: unknown builder `kaniko` | help: use \"auto\", \"oci\" or \"docker\""
            ),
            "{said}"
        );
    }

    #[test]
    fn the_engine_settings_are_checked_and_passed_on() {
        let ws = app(json!({
            "dockerfile": "build/Dockerfile",
            "context": "..",
            "build-args": { "PROFILE": "release" },
            "target": "runtime",
            "pull": true,
            "platform": "linux/arm64",
            "buildkit": "auto",
        }));
        let spec = |ws: &Workspace| docker_spec(&ws.config("app"), &ws.root).map_err(|e| said(&e));
        let missing = spec(&ws).unwrap_err();
        assert!(
            missing.contains(&format!(
                "`dockerfile`: the Dockerfile {} does not exist",
                ws.root.join("build/Dockerfile").display()
            )),
            "{missing}"
        );
        std::fs::create_dir(ws.root.join("build")).unwrap();
        std::fs::write(ws.root.join("build/Dockerfile"), "FROM scratch\n").unwrap();
        let spec = spec(&ws).unwrap();
        assert_eq!(spec.dockerfile, Some(ws.root.join("build/Dockerfile")));
        assert_eq!(spec.context, ws.root.join(".."));
        assert_eq!(spec.build_args["PROFILE"], "release");
        assert_eq!(spec.target.as_deref(), Some("runtime"));
        assert!(spec.pull);
        assert_eq!(spec.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(spec.buildkit, None);

        // Without settings: the package's directory, its Dockerfile if any, no pull.
        let plain = app(json!({ "buildkit": false }));
        let spec = docker_spec(&plain.config("app"), &plain.root).unwrap();
        assert_eq!((spec.dockerfile, spec.context), (None, plain.root.clone()));
        assert!(!spec.pull);
        assert_eq!(spec.buildkit, Some(false));

        for (cluster, fragment) in [
            (
                json!({ "context": "missing" }),
                "`context`: the build context ",
            ),
            (
                json!({ "platform": "windows/amd64" }),
                "`platform`: platform `windows/amd64` is not a Linux platform",
            ),
        ] {
            let ws = app(cluster);
            let e = docker_spec(&ws.config("app"), &ws.root).unwrap_err();
            assert!(said(&e).contains(fragment), "{}", said(&e));
        }
    }
}
