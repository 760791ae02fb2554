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
