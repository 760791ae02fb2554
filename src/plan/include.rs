//! `include`: host files for the image, taken the way Docker's `COPY` takes them from its
//! context. A source must resolve (symlinks followed) inside the package's directory or the
//! workspace root; anything else is an error naming the entry and where it resolves to, before
//! anything is built. Inside an included directory, symlinks are copied as links (never
//! followed, wherever they point), FIFOs, sockets and devices are refused, and files other users
//! of the host cannot read are warned about: in the image they become readable by every user.

use std::path::{Path, PathBuf};

use crate::config::{ClusterConfig, ConfigError, IncludeSetting, Sourced};
use crate::image::layer::special_kind;
use crate::spec::Include;

/// How many entries of an included tree are looked at while planning; the layer builder
/// checks every one again when it reads them.
const SURVEY_BUDGET: usize = 10_000;

/// `include`: host files resolved and checked, with where each lands in the image. `roots`:
/// the package's directory and the workspace root.
pub(super) fn plan_includes(
    config: &ClusterConfig,
    roots: &[&Path],
    warnings: &mut Vec<String>,
) -> Result<Vec<Include>, ConfigError> {
    let mut includes = Vec::new();
    let Some(inc) = &config.include else {
        return Ok(includes);
    };
    for item in &inc.value {
        let host_path = resolve(inc, item)?;
        check_inside(inc, item, &host_path, roots)?;
        let components: Vec<&str> = item
            .to
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if !item.to.starts_with('/') || components.contains(&"..") || components.is_empty() {
            return Err(inc.error(
                format!(
                    "`{}` would land at `{}` in the image; the path there must be absolute, below `/`, without `..`",
                    item.from, item.to
                ),
                Some("write it as { from = \"assets\", to = \"/srv/assets\" }".into()),
            ));
        }
        let mut survey = Survey::default();
        survey.walk(&host_path, SURVEY_BUDGET);
        if let Some((path, kind)) = survey.special {
            return Err(inc.error(
                format!(
                    "`include` entry `{}`: {} is {kind}; an image holds only regular files, directories and symlinks",
                    item.from,
                    path.display()
                ),
                Some(
                    "move it out of the included directory, or name the files beside it in `include` one by one"
                        .into(),
                ),
            ));
        }
        if let Some(first) = survey.private.first() {
            warnings.push(format!(
                "`include` entry `{}`: {}{} not readable by every user on this host, but becomes world-readable in the image",
                item.from,
                first.display(),
                match survey.private.len() {
                    1 => " is".to_string(),
                    n => format!(" and {} more are", n - 1),
                }
            ));
        }
        // `to` ending in `/` means "into this directory", as with COPY.
        let image_path = match host_path.file_name() {
            Some(name) if item.to.ends_with('/') && host_path.is_file() => {
                format!("{}{}", item.to, name.to_string_lossy())
            }
            _ => item.to.clone(),
        };
        includes.push(Include {
            host_path,
            image_path,
        });
    }
    Ok(includes)
}

/// The source with every symlink followed (a symlink named in `include` is followed, as `COPY`
/// does; links inside a directory stay links).
fn resolve(
    inc: &Sourced<Vec<IncludeSetting>>,
    item: &IncludeSetting,
) -> Result<PathBuf, ConfigError> {
    let host_path = inc.origin.resolve(&item.from);
    host_path.canonicalize().map_err(|e| {
        inc.error(
            match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "`{}` does not exist (looked for {})",
                    item.from,
                    host_path.display()
                ),
                _ => format!("`{}` cannot be read: {e}", item.from),
            },
            Some("paths in `include` are relative to the Cargo.toml that names them".into()),
        )
    })
}

/// Refuses a source that resolves outside every root, as `COPY` refuses anything outside its
/// context: an absolute path, a `..` too many or a symlink would put host files (keys, other
/// projects) into an image that may be pushed anywhere.
fn check_inside(
    inc: &Sourced<Vec<IncludeSetting>>,
    item: &IncludeSetting,
    resolved: &Path,
    roots: &[&Path],
) -> Result<(), ConfigError> {
    let mut canonical: Vec<PathBuf> = Vec::new();
    for root in roots {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        if !canonical.contains(&root) {
            canonical.push(root);
        }
    }
    if canonical.iter().any(|root| resolved.starts_with(root)) {
        return Ok(());
    }
    let allowed = match canonical.as_slice() {
        [package] => format!("the package's directory {}", package.display()),
        [package, workspace, ..] => format!(
            "the package's directory {} and the workspace root {}",
            package.display(),
            workspace.display()
        ),
        [] => "the package".to_string(),
    };
    Err(inc.error(
        format!(
            "`include` entry `{}` resolves to {}, outside {allowed}",
            item.from,
            resolved.display()
        ),
        Some(
            "like Docker's COPY, `include` takes only what is inside the package or its workspace (a symlink named in `include` is followed, so its target must be inside too): copy the file there, or have the build put it there"
                .into(),
        ),
    ))
}

/// What planning notices in an included tree.
#[derive(Debug, Default)]
struct Survey {
    /// Files and directories without the world-read bit.
    private: Vec<PathBuf>,
    /// The first FIFO, socket or device, and what it is.
    special: Option<(PathBuf, &'static str)>,
}

impl Survey {
    /// Looks at `path` and what is under it (links not followed), at most `budget` entries,
    /// until a special file is found; returns the budget left.
    fn walk(&mut self, path: &Path, budget: usize) -> usize {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return budget;
        };
        if self.special.is_some() || budget == 0 {
            return 0;
        }
        if meta.file_type().is_symlink() {
            return budget - 1;
        }
        if let Some(kind) = special_kind(meta.file_type()) {
            self.special = Some((path.to_path_buf(), kind));
            return 0;
        }
        if meta.permissions().mode() & 0o004 == 0 {
            self.private.push(path.to_path_buf());
        }
        let mut budget = budget - 1;
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(path)
        {
            let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            children.sort();
            for child in children {
                budget = self.walk(&child, budget);
            }
        }
        budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    /// A package at `dir/pkg` whose cluster table has `include` = `entries`.
    fn config(dir: &Path, entries: serde_json::Value) -> ClusterConfig {
        let manifest = dir.join("pkg/Cargo.toml");
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        std::fs::write(
            &manifest,
            "[package]\nname = \"p\"\n\n[package.metadata.cluster]\ninclude = []\n",
        )
        .unwrap();
        ClusterConfig::from_table(
            &serde_json::json!({ "include": entries }),
            &Origin::package(&manifest),
        )
        .unwrap()
    }

    fn plan(
        dir: &Path,
        entries: serde_json::Value,
        roots: &[&Path],
    ) -> Result<Vec<Include>, String> {
        plan_includes(&config(dir, entries), roots, &mut Vec::new())
            .map_err(|e| e.message().to_string())
    }

    fn entry(from: &str) -> serde_json::Value {
        serde_json::json!([{ "from": from, "to": "/srv/" }])
    }

    #[test]
    fn sources_must_resolve_inside_the_package_or_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let dir = &dir.path().canonicalize().unwrap();
        let (pkg, ws) = (dir.join("pkg"), dir.to_path_buf());
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("inside.txt"), "in").unwrap();
        std::fs::write(dir.join("shared.txt"), "shared").unwrap();
        std::fs::create_dir(dir.join("pkg-other")).unwrap();
        std::fs::write(dir.join("pkg-other/x"), "x").unwrap();
        std::os::unix::fs::symlink(dir.join("shared.txt"), pkg.join("to-shared")).unwrap();

        // Inside the package; through `..` or a link into the workspace, for a member.
        for from in ["inside.txt", "../shared.txt", "to-shared"] {
            let included = plan(dir, entry(from), &[&pkg, &ws]).unwrap();
            assert!(included[0].host_path.starts_with(&ws), "{from}");
        }
        // Without a workspace around it (the package is its own root), the same are outside;
        // a sibling whose name starts like the package's is no part of it.
        for (from, resolved) in [
            ("../shared.txt", dir.join("shared.txt")),
            ("to-shared", dir.join("shared.txt")),
            ("../pkg-other/x", dir.join("pkg-other/x")),
        ] {
            let said = plan(dir, entry(from), &[&pkg, &pkg]).unwrap_err();
            assert!(
                said.contains(&format!(
                    "`include` entry `{from}` resolves to {}",
                    resolved.display()
                )) && said.contains("Cargo.toml")
                    && said.contains(&format!(
                        "outside the package's directory {}",
                        pkg.display()
                    )),
                "{said}"
            );
        }
    }

    #[test]
    fn special_files_in_an_included_directory_are_refused_when_planning() {
        let dir = tempfile::tempdir().unwrap();
        let dir = &dir.path().canonicalize().unwrap();
        let pkg = dir.join("pkg");
        std::fs::create_dir_all(pkg.join("assets/run")).unwrap();
        std::fs::write(pkg.join("assets/a.txt"), "a").unwrap();
        let socket = pkg.join("assets/run/app.sock");
        let _listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let said = plan(dir, serde_json::json!(["assets"]), &[&pkg]).unwrap_err();
        assert!(
            said.contains("`include` entry `assets`")
                && said.contains(&format!("{} is a socket", socket.display())),
            "{said}"
        );
    }

    #[test]
    fn links_in_an_included_directory_are_not_followed_when_planning() {
        let dir = tempfile::tempdir().unwrap();
        let dir = &dir.path().canonicalize().unwrap();
        let pkg = dir.join("pkg");
        std::fs::create_dir_all(pkg.join("assets")).unwrap();
        // Copied as links: where they point is no concern of planning.
        std::os::unix::fs::symlink("/dev/zero", pkg.join("assets/zero")).unwrap();
        std::os::unix::fs::symlink("/etc", pkg.join("assets/etc")).unwrap();
        let included = plan(dir, serde_json::json!(["assets"]), &[&pkg]).unwrap();
        assert_eq!(included[0].host_path, pkg.join("assets"));
    }

    #[test]
    fn where_an_entry_lands_must_be_absolute_and_a_trailing_slash_means_into() {
        let dir = tempfile::tempdir().unwrap();
        let dir = &dir.path().canonicalize().unwrap();
        let pkg = dir.join("pkg");
        std::fs::create_dir_all(pkg.join("assets")).unwrap();
        std::fs::write(pkg.join("app.toml"), "").unwrap();
        let lands = |to: &str, from: &str| {
            plan(
                dir,
                serde_json::json!([{ "from": from, "to": to }]),
                &[&pkg],
            )
            .map(|i| i[0].image_path.clone())
        };
        assert_eq!(lands("/etc/app/", "app.toml").unwrap(), "/etc/app/app.toml");
        assert_eq!(lands("/etc/app.toml", "app.toml").unwrap(), "/etc/app.toml");
        // A directory lands at `to` itself, slash or not.
        assert_eq!(lands("/srv/assets/", "assets").unwrap(), "/srv/assets/");
        for to in ["etc/app.toml", "/srv/../etc/x", "/", "/./"] {
            let said = lands(to, "app.toml").unwrap_err();
            assert!(
                said.contains(&format!(
                    "`app.toml` would land at `{to}` in the image; the path there must be absolute, below `/`, without `..`"
                )),
                "{said}"
            );
        }
        let said = lands("/srv/", "missing.txt").unwrap_err();
        assert!(
            said.contains(&format!(
                "`missing.txt` does not exist (looked for {})",
                pkg.join("missing.txt").display()
            )),
            "{said}"
        );
    }

    #[test]
    fn files_other_users_cannot_read_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dir = &dir.path().canonicalize().unwrap();
        let pkg = dir.join("pkg");
        std::fs::create_dir_all(pkg.join("secrets")).unwrap();
        for name in ["a.key", "b.key", "public.txt"] {
            std::fs::write(pkg.join("secrets").join(name), "x").unwrap();
        }
        for name in ["a.key", "b.key"] {
            let path = pkg.join("secrets").join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::set_permissions(
            pkg.join("secrets/public.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(pkg.join("secrets"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let mut warnings = Vec::new();
        let config = config(dir, serde_json::json!(["secrets"]));
        plan_includes(&config, &[&pkg], &mut warnings).unwrap();
        assert_eq!(
            warnings,
            [format!(
                "`include` entry `secrets`: {} and 1 more are not readable by every user on this host, but becomes world-readable in the image",
                pkg.join("secrets/a.key").display()
            )]
        );
    }
}
