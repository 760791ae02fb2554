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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{Workspace, member, said};
    use super::*;

    fn names(chosen: &[&Package]) -> Vec<String> {
        chosen.iter().map(|p| p.name.to_string()).collect()
    }

    fn select(ws: &Workspace, request: &Request, manifest: &Path) -> Result<Vec<String>, String> {
        select_packages(request, &ws.metadata, manifest)
            .map(|chosen| names(&chosen))
            .map_err(|e| said(&e))
    }

    fn packages(specs: &[&str]) -> Request {
        Request {
            packages: specs.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        }
    }

    #[test]
    fn the_package_is_the_found_manifest_s_and_a_virtual_root_makes_the_user_choose() {
        let ws = Workspace::members(
            json!(null),
            vec![member("api", json!({})), member("tool", json!(null))],
        );
        let from_member = select(&ws, &Request::default(), &ws.dir("tool").join("Cargo.toml"));
        assert_eq!(from_member.unwrap(), ["tool"]);
        let said = select(&ws, &Request::default(), &ws.manifest).unwrap_err();
        assert_eq!(
            said,
            format!(
                "{} is a virtual workspace manifest: choose a package with -p, or run from inside a member's directory | help: packages with [package.metadata.cluster]: api; run e.g. `cargo adapt-push -p api`",
                ws.manifest.display()
            )
        );

        let bare = Workspace::members(
            json!(null),
            vec![member("api", json!(null)), member("tool", json!(null))],
        );
        let said = select(&bare, &Request::default(), &bare.manifest).unwrap_err();
        assert!(
            said.ends_with(
                "help: no member has [package.metadata.cluster] yet; members: api, tool"
            ),
            "{said}"
        );
    }

    #[test]
    fn dash_p_takes_members_once_at_the_version_asked() {
        let ws = Workspace::members(
            json!(null),
            vec![
                member("api", json!({})).version("1.2.3"),
                member("tool", json!({})),
            ],
        );
        let manifest = &ws.manifest;
        assert_eq!(
            select(&ws, &packages(&["tool", "api@1.2.3", "tool"]), manifest).unwrap(),
            ["tool", "api"]
        );
        assert_eq!(
            select(&ws, &packages(&["api@1.2.4"]), manifest).unwrap_err(),
            "-p api@1.2.4: the workspace has `api` at version 1.2.3"
        );
        assert_eq!(
            select(&ws, &packages(&["serde"]), manifest).unwrap_err(),
            format!(
                "package `serde` is not a member of the workspace at {} | help: members: api, tool",
                ws.root.display()
            )
        );
        let one_bin_for_two = Request {
            bin: Some("api".into()),
            ..packages(&["api", "tool"])
        };
        assert!(
            select(&ws, &one_bin_for_two, manifest)
                .unwrap_err()
                .starts_with("--bin names one binary, but several packages were chosen with -p")
        );
        // The same package twice is one package: --bin is fine.
        let twice = Request {
            bin: Some("api".into()),
            ..packages(&["api", "api@1.2.3"])
        };
        assert_eq!(select(&ws, &twice, manifest).unwrap(), ["api"]);
    }

    #[test]
    fn workspace_takes_members_with_settings_and_a_binary_by_name() {
        let members = || {
            vec![
                member("zeta", json!({})),
                member("alpha", json!({})),
                member("shared", json!({})).bins(&[]),
                member("plain", json!(null)),
            ]
        };
        let request = Request {
            workspace: true,
            // --workspace wins over -p.
            packages: vec!["plain".into()],
            ..Request::default()
        };
        let ws = Workspace::members(json!(null), members());
        assert_eq!(
            select(&ws, &request, &ws.manifest).unwrap(),
            ["alpha", "zeta"]
        );
        // Workspace settings are every member's: `plain` is in, the library still is not.
        let inherited = Workspace::members(json!({ "registry": "localhost:5000" }), members());
        assert_eq!(
            select(&inherited, &request, &inherited.manifest).unwrap(),
            ["alpha", "plain", "zeta"]
        );
        let none = Workspace::members(json!(null), vec![member("plain", json!(null))]);
        let said = select(&none, &request, &none.manifest).unwrap_err();
        assert!(
            said.starts_with(&format!(
                "--workspace: no member of the workspace at {} has cluster settings and a binary target",
                none.root.display()
            )),
            "{said}"
        );
    }

    fn bin(ws: &Workspace, bin: Option<&str>) -> Result<String, String> {
        let request = Request {
            bin: bin.map(String::from),
            ..Request::default()
        };
        let name = ws.metadata.packages[0].name.to_string();
        select_bin(
            &request,
            ws.package(&name),
            &ws.config(&name),
            &ws.origin(&name),
        )
        .map_err(|e| said(&e))
    }

    #[test]
    fn the_binary_is_the_flag_s_the_setting_s_default_run_or_the_only_one() {
        let only = Workspace::single(member("app", json!({})));
        assert_eq!(bin(&only, None).unwrap(), "app");

        let several = Workspace::single(member("app", json!({})).bins(&["server", "cli"]));
        let said = bin(&several, None).unwrap_err();
        assert!(
            said.contains(
                "package `app` has several binaries (server, cli); say which one goes in the image"
            ) && said.ends_with(
                "help: set bin = \"server\" in [package.metadata.cluster], or pass --bin"
            ),
            "{said}"
        );
        assert_eq!(bin(&several, Some("cli")).unwrap(), "cli");
        assert_eq!(
            bin(&several, Some("gui")).unwrap_err(),
            "--bin: package `app` has no binary named `gui`; it has: server, cli"
        );

        let defaulted = Workspace::single(
            member("app", json!({}))
                .bins(&["server", "cli"])
                .default_run("cli"),
        );
        assert_eq!(bin(&defaulted, None).unwrap(), "cli");

        // `bin` is over default-run, --bin over `bin`; a wrong `bin` points at the key.
        let set = Workspace::single(
            member("app", json!({ "bin": "server" }))
                .bins(&["server", "cli"])
                .default_run("cli"),
        );
        assert_eq!(bin(&set, None).unwrap(), "server");
        assert_eq!(bin(&set, Some("cli")).unwrap(), "cli");
        let wrong = Workspace::single(member("app", json!({ "bin": "gui" })).bins(&["server"]));
        let said = bin(&wrong, None).unwrap_err();
        assert!(
            said.contains("[package.metadata.cluster] `bin`: package `app` has no binary named `gui`; it has: server"),
            "{said}"
        );

        let library = Workspace::single(member("app", json!({})).bins(&[]));
        let said = bin(&library, None).unwrap_err();
        assert!(
            said.contains("package `app` has no binary target to put in an image")
                && said.ends_with("help: add src/main.rs or a [[bin]] target"),
            "{said}"
        );
    }
}
