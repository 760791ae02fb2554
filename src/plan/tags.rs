//! Tags: `--tag`/`tags` templates rendered with the package's version and git commit.

use cargo_metadata::Package;

use super::Request;
use super::facts::GitInfo;
use crate::config::{ClusterConfig, ConfigError, Origin, Sourced};
use crate::reference::Tag;

pub(super) fn render_tags(
    request: &Request,
    config: &ClusterConfig,
    package: &Package,
    bin: &str,
    git: &GitInfo,
    origin: &Origin,
) -> Result<Vec<Tag>, ConfigError> {
    let (templates, sourced): (Vec<String>, Option<&Sourced<Vec<String>>>) =
        if !request.tags.is_empty() {
            (request.tags.clone(), None)
        } else if let Some(t) = &config.tags {
            (t.value.clone(), Some(t))
        } else {
            (vec!["latest".into()], None)
        };
    let fail = |message: String, help: Option<String>| match sourced {
        Some(s) => s.error(message, help),
        None if !request.tags.is_empty() => {
            ConfigError::plain(format!("--tag (or ADAPT_PUSH_TAGS): {message}"), help)
        }
        None => ConfigError::at(origin, &[], message, help),
    };
    if templates.is_empty() {
        return Err(fail(
            "`tags` is empty; at least one tag is needed".into(),
            Some("tags = [\"latest\"]".into()),
        ));
    }
    let mut tags: Vec<Tag> = Vec::new();
    for template in &templates {
        let rendered = render_template(template, package, bin, git).map_err(|m| fail(m, None))?;
        // `+build` metadata is legal in versions but not in tags; Helm uses `_` the same way.
        let rendered = rendered.replace('+', "_");
        let tag = Tag::parse(&rendered).map_err(|e| {
            fail(
                format!(
                    "`{template}` gives the tag `{rendered}`, which is not valid: {}",
                    e.0
                ),
                None,
            )
        })?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

pub(super) fn render_template(
    template: &str,
    package: &Package,
    bin: &str,
    git: &GitInfo,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{template}` has a `{{` that is never closed"));
        };
        let name = &after[..end];
        let need_git = || {
            git.sha.clone().ok_or_else(|| match &git.problem {
                Some(problem) => {
                    format!("`{{{name}}}` in `{template}` needs the git commit, but {problem}")
                }
                None => format!(
                    "`{{{name}}}` in `{template}` needs a git checkout, and {} is not in one",
                    package.manifest_path
                ),
            })
        };
        let value = match name {
            "version" => package.version.to_string(),
            "package" => package.name.to_string(),
            "bin" => bin.to_string(),
            "git_sha" => need_git()?,
            "git_short_sha" => need_git()?.chars().take(7).collect(),
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` in `{template}`; known: {{version}}, {{package}}, {{bin}}, {{git_sha}}, {{git_short_sha}}"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{Workspace, member, said};
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn git(sha: Option<&str>, problem: Option<&str>) -> GitInfo {
        GitInfo {
            sha: sha.map(String::from),
            problem: problem.map(String::from),
        }
    }

    /// The tags `app` 1.2.3+build.5 (binary `server`) gets with these settings and `--tag`s.
    fn tags(cluster: Value, flags: &[&str], git: &GitInfo) -> Result<Vec<String>, String> {
        let ws = Workspace::single(
            member("app", cluster)
                .version("1.2.3+build.5")
                .bins(&["server"]),
        );
        let request = Request {
            tags: flags.iter().map(|t| t.to_string()).collect(),
            ..Request::default()
        };
        render_tags(
            &request,
            &ws.config("app"),
            ws.package("app"),
            "server",
            git,
            &ws.origin("app"),
        )
        .map(|tags| tags.iter().map(|t| t.to_string()).collect())
        .map_err(|e| said(&e))
    }

    #[test]
    fn templates_render_the_package_the_binary_and_the_commit() {
        let at_commit = git(Some(SHA), None);
        let cluster = json!({ "tags": [
            "{version}", "{package}-{bin}", "{git_sha}", "v{version}-{git_short_sha}", "latest", "latest"
        ] });
        assert_eq!(
            tags(cluster, &[], &at_commit).unwrap(),
            [
                // `+` is not allowed in a tag: `_` instead, as Helm does.
                "1.2.3_build.5",
                "app-server",
                SHA,
                "v1.2.3_build.5-0123456",
                // Duplicates once.
                "latest",
            ]
        );
        // Without `tags`: latest. `--tag` replaces `tags`.
        assert_eq!(tags(json!({}), &[], &at_commit).unwrap(), ["latest"]);
        assert_eq!(
            tags(
                json!({ "tags": ["{version}"] }),
                &["ci-{git_short_sha}"],
                &at_commit
            )
            .unwrap(),
            ["ci-0123456"]
        );
    }

    #[test]
    fn git_placeholders_without_a_commit_say_why() {
        let outside = tags(json!({ "tags": ["{git_sha}"] }), &[], &git(None, None)).unwrap_err();
        assert!(
            outside.contains("`{git_sha}` in `{git_sha}` needs a git checkout, and ")
                && outside.ends_with("/Cargo.toml is not in one"),
            "{outside}"
        );
        let broken = git(None, Some("git says: fatal: detected dubious ownership"));
        let said = tags(json!({}), &["{git_short_sha}"], &broken).unwrap_err();
        assert_eq!(
            said,
            "--tag (or ADAPT_PUSH_TAGS): `{git_short_sha}` in `{git_short_sha}` needs the git commit, but git says: fatal: detected dubious ownership"
        );
        // No commit is needed when no tag asks for it.
        assert_eq!(
            tags(json!({ "tags": ["{version}"] }), &[], &broken).unwrap(),
            ["1.2.3_build.5"]
        );
    }

    #[test]
    fn a_bad_template_is_blamed_on_where_it_was_written() {
        let none = git(None, None);
        let from_flag = tags(json!({}), &["{nope}"], &none).unwrap_err();
        assert_eq!(
            from_flag,
            "--tag (or ADAPT_PUSH_TAGS): unknown placeholder `{nope}` in `{nope}`; known: {version}, {package}, {bin}, {git_sha}, {git_short_sha}"
        );
        let from_setting = tags(json!({ "tags": ["v{version"] }), &[], &none).unwrap_err();
        assert!(
            from_setting.contains(
                "[package.metadata.cluster] `tags`: `v{version` has a `{` that is never closed"
            ),
            "{from_setting}"
        );
        let invalid = tags(json!({ "tags": ["{package} {bin}"] }), &[], &none).unwrap_err();
        assert!(
            invalid.contains("`{package} {bin}` gives the tag `app server`, which is not valid: "),
            "{invalid}"
        );
        let empty = tags(json!({ "tags": [] }), &[], &none).unwrap_err();
        assert!(
            empty.contains("`tags` is empty; at least one tag is needed")
                && empty.ends_with("help: tags = [\"latest\"]"),
            "{empty}"
        );
    }
}
