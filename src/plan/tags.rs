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
