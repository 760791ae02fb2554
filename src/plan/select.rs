//! Which packages and which binary: `-p`, `--workspace`, the manifest found, `--bin`/`bin`.

use std::path::Path;

use cargo_metadata::{Metadata, Package, TargetKind};

use super::Request;
use crate::config::{ClusterConfig, ConfigError, Origin};

/// `-p` names packages; otherwise the package whose Cargo.toml was found (cargo's rule).
pub(super) fn select_packages<'m>(
    request: &Request,
    metadata: &'m Metadata,
    manifest: &Path,
) -> Result<Vec<&'m Package>, ConfigError> {
    if request.workspace {
        return workspace_members(metadata);
    }
    if !request.packages.is_empty() {
        return named_packages(request, metadata);
    }
    let members = metadata.workspace_packages();
    let canonical = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    let here = members.iter().find(|p| {
        p.manifest_path
            .as_std_path()
            .canonicalize()
            .is_ok_and(|m| m == canonical)
    });
    match here {
        Some(p) => Ok(vec![*p]),
        None => Err(virtual_manifest(&members, manifest)),
    }
}

/// `-p NAME[@VERSION]`, each a workspace member, each once.
fn named_packages<'m>(
    request: &Request,
    metadata: &'m Metadata,
) -> Result<Vec<&'m Package>, ConfigError> {
    let members = metadata.workspace_packages();
    let mut chosen: Vec<&Package> = Vec::new();
    for spec in &request.packages {
        let (name, version) = match spec.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (spec.as_str(), None),
        };
        match members.iter().find(|p| p.name.as_str() == name) {
            Some(p) if version.is_some_and(|v| v != p.version.to_string()) => {
                return Err(ConfigError::plain(
                    format!(
                        "-p {spec}: the workspace has `{name}` at version {}",
                        p.version
                    ),
                    None,
                ));
            }
            Some(p) if chosen.iter().any(|c| c.id == p.id) => {}
            Some(p) => chosen.push(*p),
            None => {
                let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
                return Err(ConfigError::plain(
                    format!(
                        "package `{name}` is not a member of the workspace at {}",
                        metadata.workspace_root
                    ),
                    Some(format!("members: {}", names.join(", "))),
                ));
            }
        }
    }
    if chosen.len() > 1 && request.bin.is_some() {
        return Err(ConfigError::plain(
            "--bin names one binary, but several packages were chosen with -p",
            Some("push one package at a time with --bin, or set `bin` in each package's [package.metadata.cluster]".into()),
        ));
    }
    Ok(chosen)
}

/// A virtual workspace root: make the user choose, showing the packages that are set up.
fn virtual_manifest(members: &[&Package], manifest: &Path) -> ConfigError {
    let with_settings: Vec<&str> = members
        .iter()
        .filter(|p| p.metadata.get("cluster").is_some())
        .map(|p| p.name.as_str())
        .collect();
    let help = if with_settings.is_empty() {
        format!(
            "no member has [package.metadata.cluster] yet; members: {}",
            members
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "packages with [package.metadata.cluster]: {}; run e.g. `cargo adapt-push -p {}`",
            with_settings.join(", "),
            with_settings[0]
        )
    };
    ConfigError::plain(
        format!(
            "{} is a virtual workspace manifest: choose a package with -p, or run from inside a member's directory",
            manifest.display()
        ),
        Some(help),
    )
}

/// `--workspace`: members with cluster settings (their own, or the workspace's) and a binary
/// target, in the workspace's order.
pub(super) fn workspace_members(metadata: &Metadata) -> Result<Vec<&Package>, ConfigError> {
    let inherited = metadata.workspace_metadata.get("cluster").is_some();
    let members = metadata.workspace_packages();
    let mut chosen: Vec<&Package> = members
        .iter()
        .filter(|p| inherited || p.metadata.get("cluster").is_some())
        .filter(|p| p.targets.iter().any(|t| t.kind.contains(&TargetKind::Bin)))
        .copied()
        .collect();
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    if chosen.is_empty() {
        return Err(ConfigError::plain(
            format!(
                "--workspace: no member of the workspace at {} has cluster settings and a binary target",
                metadata.workspace_root
            ),
            Some("add [package.metadata.cluster] to the members to push, or [workspace.metadata.cluster] to the workspace root".into()),
        ));
    }
    Ok(chosen)
}

pub(super) fn select_bin(
    request: &Request,
    package: &Package,
    config: &ClusterConfig,
    origin: &Origin,
) -> Result<String, ConfigError> {
    let bins: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect();
    if bins.is_empty() {
        return Err(ConfigError::at(
            origin,
            &[],
            format!(
                "package `{}` has no binary target to put in an image",
                package.name
            ),
            Some("add src/main.rs or a [[bin]] target".into()),
        ));
    }
    let requested = match (&request.bin, &config.bin) {
        (Some(b), _) => Some((b.clone(), None)),
        (None, Some(b)) => Some((b.value.clone(), Some(b))),
        (None, None) => None,
    };
    match requested {
        Some((name, sourced)) => {
            if bins.contains(&name.as_str()) {
                Ok(name)
            } else {
                let message = format!(
                    "package `{}` has no binary named `{name}`; it has: {}",
                    package.name,
                    bins.join(", ")
                );
                Err(match sourced {
                    Some(s) => s.error(message, None),
                    None => ConfigError::plain(format!("--bin: {message}"), None),
                })
            }
        }
        None if bins.len() == 1 => Ok(bins[0].to_string()),
        None => match &package.default_run {
            Some(d) => Ok(d.clone()),
            None => Err(ConfigError::at(
                origin,
                &[],
                format!(
                    "package `{}` has several binaries ({}); say which one goes in the image",
                    package.name,
                    bins.join(", ")
                ),
                Some(format!(
                    "set bin = \"{}\" in [package.metadata.cluster], or pass --bin",
                    bins[0]
                )),
            )),
        },
    }
}
