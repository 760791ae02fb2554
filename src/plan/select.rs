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
    if chosen.len() > 1 && !request.bins.is_empty() {
        return with_requested_bins(&request.bins, chosen);
    }
    Ok(chosen)
}

/// `-p a -p b --bin x`, as cargo reads it: bin `x` of whichever chosen packages have it; a
/// package with none of the binaries is left out, a binary none of them has is an error.
fn with_requested_bins<'m>(
    bins: &[String],
    chosen: Vec<&'m Package>,
) -> Result<Vec<&'m Package>, ConfigError> {
    let has = |p: &Package, bin: &str| {
        p.targets
            .iter()
            .any(|t| t.kind.contains(&TargetKind::Bin) && t.name == bin)
    };
    if let Some(missing) = bins.iter().find(|b| !chosen.iter().any(|p| has(p, b))) {
        let names: Vec<&str> = chosen.iter().map(|p| p.name.as_str()).collect();
        return Err(ConfigError::plain(
            format!(
                "--bin {missing}: none of the packages chosen with -p ({}) has a binary named `{missing}`",
                names.join(", ")
            ),
            Some("`cargo metadata --no-deps` lists each package's targets".into()),
        ));
    }
    Ok(chosen
        .into_iter()
        .filter(|p| bins.iter().any(|b| has(p, b)))
        .collect())
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

/// The binaries that get an image: `--bin`s over `bins`/`bin`, else the only binary or
/// `default-run`. `several_packages`: the `--bin`s were checked across packages (cargo's rule),
/// so this package takes those it has.
pub(super) fn select_bins(
    request: &Request,
    package: &Package,
    config: &ClusterConfig,
    origin: &Origin,
    several_packages: bool,
) -> Result<Vec<String>, ConfigError> {
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
    let missing = |name: &str| {
        format!(
            "package `{}` has no binary named `{name}`; it has: {}",
            package.name,
            bins.join(", ")
        )
    };
    let mut chosen: Vec<String> = Vec::new();
    let mut choose = |name: &str| {
        if !chosen.iter().any(|c| c == name) {
            chosen.push(name.to_string());
        }
    };
    if !request.bins.is_empty() {
        for name in &request.bins {
            if bins.contains(&name.as_str()) {
                choose(name);
            } else if !several_packages {
                return Err(ConfigError::plain(
                    format!("--bin: {}", missing(name)),
                    None,
                ));
            }
        }
    } else if let Some(b) = &config.bin {
        if !bins.contains(&b.value.as_str()) {
            return Err(b.error(missing(&b.value), None));
        }
        choose(&b.value);
    } else if let Some(list) = &config.bins {
        if list.value.is_empty() {
            return Err(list.error(
                "`bins` is empty; it names the binaries that get an image",
                Some(format!("bins = [\"{}\"]", bins.join("\", \""))),
            ));
        }
        for name in &list.value {
            if !bins.contains(&name.as_str()) {
                return Err(list.error(missing(name), None));
            }
            choose(name);
        }
    } else if bins.len() == 1 {
        choose(bins[0]);
    } else if let Some(d) = &package.default_run {
        choose(d);
    } else {
        return Err(ConfigError::at(
            origin,
            &[],
            format!(
                "package `{}` has several binaries ({}); say which go in images",
                package.name,
                bins.join(", ")
            ),
            Some(format!(
                "set bin = \"{}\" or bins = [\"{}\"] in [package.metadata.cluster], or pass --bin (once per binary)",
                bins[0],
                bins.join("\", \"")
            )),
        ));
    }
    Ok(chosen)
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
        // cargo's rule: `--bin` takes the binary of whichever chosen package has it.
        let bins = |bins: &[&str], specs: &[&str]| Request {
            bins: bins.iter().map(|b| b.to_string()).collect(),
            ..packages(specs)
        };
        assert_eq!(
            select(&ws, &bins(&["tool"], &["api", "tool"]), manifest).unwrap(),
            ["tool"]
        );
        assert_eq!(
            select(&ws, &bins(&["tool", "api"], &["api", "tool"]), manifest).unwrap(),
            ["api", "tool"]
        );
        assert_eq!(
            select(&ws, &bins(&["api", "gui"], &["api", "tool"]), manifest).unwrap_err(),
            "--bin gui: none of the packages chosen with -p (api, tool) has a binary named `gui` | help: `cargo metadata --no-deps` lists each package's targets"
        );
        // The same package twice is one package: --bin is checked against it alone (later).
        let twice = bins(&["api"], &["api", "api@1.2.3"]);
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

    fn bins(ws: &Workspace, bins: &[&str]) -> Result<Vec<String>, String> {
        let request = Request {
            bins: bins.iter().map(|b| b.to_string()).collect(),
            ..Request::default()
        };
        let name = ws.metadata.packages[0].name.to_string();
        select_bins(
            &request,
            ws.package(&name),
            &ws.config(&name),
            &ws.origin(&name),
            false,
        )
        .map_err(|e| said(&e))
    }

    fn bin(ws: &Workspace, bin: Option<&str>) -> Result<String, String> {
        bins(ws, bin.as_slice()).map(|chosen| {
            assert_eq!(chosen.len(), 1, "{chosen:?}");
            chosen[0].clone()
        })
    }

    #[test]
    fn the_binary_is_the_flag_s_the_setting_s_default_run_or_the_only_one() {
        let only = Workspace::single(member("app", json!({})));
        assert_eq!(bin(&only, None).unwrap(), "app");

        let several = Workspace::single(member("app", json!({})).bins(&["server", "cli"]));
        let said = bin(&several, None).unwrap_err();
        assert!(
            said.contains(
                "package `app` has several binaries (server, cli); say which go in images"
            ) && said.ends_with(
                "help: set bin = \"server\" or bins = [\"server\", \"cli\"] in [package.metadata.cluster], or pass --bin (once per binary)"
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

    #[test]
    fn several_binaries_come_from_repeated_flags_or_bins_and_bins_is_checked() {
        let two = || member("app", json!({})).bins(&["server", "cli", "admin"]);
        let ws = Workspace::single(two());
        assert_eq!(
            bins(&ws, &["cli", "server", "cli"]).unwrap(),
            ["cli", "server"]
        );
        assert_eq!(
            bins(&ws, &["cli", "gui"]).unwrap_err(),
            "--bin: package `app` has no binary named `gui`; it has: server, cli, admin"
        );

        let set = Workspace::single(
            member("app", json!({ "bins": ["server", "cli"] })).bins(&["server", "cli", "admin"]),
        );
        assert_eq!(bins(&set, &[]).unwrap(), ["server", "cli"]);
        // The flags are over the setting.
        assert_eq!(bins(&set, &["admin"]).unwrap(), ["admin"]);

        let wrong = Workspace::single(
            member("app", json!({ "bins": ["server", "gui"] })).bins(&["server"]),
        );
        let said = bins(&wrong, &[]).unwrap_err();
        assert!(
            said.contains(
                "[package.metadata.cluster] `bins`: package `app` has no binary named `gui`; it has: server"
            ),
            "{said}"
        );
        let empty = Workspace::single(member("app", json!({ "bins": [] })).bins(&["server"]));
        let said = bins(&empty, &[]).unwrap_err();
        assert!(
            said.contains("`bins` is empty") && said.ends_with("help: bins = [\"server\"]"),
            "{said}"
        );
    }
}
