//! `resolve -f PATH`: finds `adapt://<package>` and `adapt://<package>/<bin>` scalars in YAML,
//! builds and pushes each image once, and prints the YAML with each placeholder replaced by its
//! pull reference. Only the placeholder's characters change: the source text is edited at the
//! scalar's span (from the YAML parser's markers), so comments, quoting, key order and document
//! separators stay as written. Every placeholder is checked before anything is built.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, IntoDiagnostic, Result, WrapErr};
use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::cli::{PushArgs, ResolveArgs};
use crate::plan::Plan;

pub const SCHEME: &str = "adapt://";

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ResolveError {
    #[error("{file}:{line}: `{placeholder}`: {reason}")]
    #[diagnostic(help("{help}"))]
    Placeholder {
        file: String,
        line: usize,
        placeholder: String,
        reason: String,
        help: String,
    },
    #[error("{file}:{line}: not valid YAML: {reason}")]
    Yaml {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("-f {path}: {reason}")]
    Input { path: String, reason: String },
}

/// One YAML input: its name for messages, and its text.
pub struct Input {
    pub name: String,
    pub text: String,
}

/// A placeholder found in an input: the byte range of its characters (inside any quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub range: std::ops::Range<usize>,
    pub line: usize,
    pub package: String,
    pub bin: Option<String>,
    pub text: String,
}

/// Reads every `-f` argument: files, directories of `.yaml`/`.yml` (sorted by name), `-`.
pub fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, ResolveError> {
    let fail = |path: &Path, reason: String| ResolveError::Input {
        path: path.display().to_string(),
        reason,
    };
    let mut inputs = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == "-" {
            if stdin_read {
                return Err(fail(path, "stdin can be read only once".into()));
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| fail(path, format!("reading stdin: {e}")))?;
            inputs.push(Input {
                name: "<stdin>".into(),
                text,
            });
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| fail(path, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(fail(
                    path,
                    "the directory has no .yaml or .yml files".into(),
                ));
            }
            for file in files {
                inputs.push(read_file(&file)?);
            }
        } else {
            inputs.push(read_file(path)?);
        }
    }
    Ok(inputs)
}

fn read_file(path: &Path) -> Result<Input, ResolveError> {
    let text = std::fs::read_to_string(path).map_err(|e| ResolveError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Input {
        name: path.display().to_string(),
        text,
    })
}

/// Every `adapt://` scalar of `input`, in order.
pub fn find_placeholders(input: &Input) -> Result<Vec<Placeholder>, ResolveError> {
    // The parser's markers count characters; edits need byte offsets.
    let byte_at: Vec<usize> = input
        .text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(input.text.len()))
        .collect();
    let mut found = Vec::new();
    for event in Parser::new_from_str(&input.text) {
        let (event, span) = event.map_err(|e| ResolveError::Yaml {
            file: input.name.clone(),
            line: e.marker().line(),
            reason: e.info().to_string(),
        })?;
        let Event::Scalar(value, style, _, _) = event else {
            continue;
        };
        // Block scalars (`|`, `>`) are text such as scripts, not references.
        let flow = matches!(
            style,
            ScalarStyle::Plain | ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
        );
        if !flow || !value.starts_with(SCHEME) {
            continue;
        }
        let line = span.start.line();
        let fail = |reason: &str, help: &str| ResolveError::Placeholder {
            file: input.name.clone(),
            line,
            placeholder: value.to_string(),
            reason: reason.into(),
            help: help.into(),
        };
        let start = byte_at
            .get(span.start.index())
            .copied()
            .ok_or_else(|| fail("the parser gave a position outside the file", ""))?;
        let rest = &input.text[start..];
        let offset = match style {
            ScalarStyle::Plain if rest.starts_with(value.as_ref()) => 0,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
                if rest[1.min(rest.len())..].starts_with(value.as_ref()) =>
            {
                1
            }
            _ => {
                return Err(fail(
                    "a placeholder must be written on one line, plain or quoted, without escapes",
                    "write it as image: adapt://api or image: \"adapt://api\"",
                ));
            }
        };
        let (package, bin) = parse_placeholder(&value).map_err(|reason| {
            fail(
                &reason,
                "write adapt://<package> or adapt://<package>/<bin>",
            )
        })?;
        let begin = start + offset;
        found.push(Placeholder {
            range: begin..begin + value.len(),
            line,
            package,
            bin,
            text: value.to_string(),
        });
    }
    Ok(found)
}

fn parse_placeholder(value: &str) -> Result<(String, Option<String>), String> {
    let rest = &value[SCHEME.len()..];
    let (package, bin) = match rest.split_once('/') {
        Some((p, b)) => (p, Some(b)),
        None => (rest, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !valid(package) || bin.is_some_and(|b| !valid(b)) {
        return Err("not a package name (and optional binary)".into());
    }
    Ok((package.to_string(), bin.map(String::from)))
}

/// `text` with each placeholder's range replaced by `replacement(placeholder)`.
pub fn replace(
    text: &str,
    placeholders: &[Placeholder],
    replacement: impl Fn(&Placeholder) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for p in placeholders {
        out.push_str(&text[at..p.range.start]);
        out.push_str(&replacement(p));
        at = p.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Joins the resolved inputs as one YAML stream: a `---` between files unless the next one
/// starts with its own.
pub fn join_documents(texts: &[String]) -> String {
    let mut out = String::new();
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            if !text.starts_with("---") {
                out.push_str("---\n");
            }
        }
        out.push_str(text);
    }
    out
}

/// The subcommand.
pub async fn run(args: ResolveArgs) -> Result<()> {
    let inputs = read_inputs(&args.files)?;
    let mut found = Vec::new();
    for input in &inputs {
        found.push(find_placeholders(input)?);
    }
    let (manifest, cargo_options, metadata) = crate::load_metadata(&args.push)?;

    // Check every placeholder and plan each distinct image once, before anything is built.
    let mut images = Images::new(&args.push, &metadata, &manifest);
    for (input, placeholders) in inputs.iter().zip(&found) {
        for p in placeholders {
            images.add(input, p)?;
        }
    }
    crate::output::plan_warnings(&images.plan);
    let references = push_images(&images.plan, &cargo_options, args.push.check_pull).await?;

    let mut texts = Vec::new();
    for (input, placeholders) in inputs.iter().zip(&found) {
        texts.push(replace(&input.text, placeholders, |p| {
            images
                .keys
                .get(&(p.package.clone(), p.bin.clone()))
                .and_then(|i| references.get(*i).cloned().flatten())
                .unwrap_or_else(|| p.text.clone())
        }));
    }
    write_stdout(&join_documents(&texts))
}

/// The images the placeholders name, each planned once, and which placeholder is which image.
struct Images<'a> {
    args: &'a PushArgs,
    metadata: &'a cargo_metadata::Metadata,
    manifest: &'a Path,
    /// (package, bin) of a placeholder → index into `plan.targets`.
    keys: BTreeMap<(String, Option<String>), usize>,
    plan: Plan,
}

impl<'a> Images<'a> {
    fn new(args: &'a PushArgs, metadata: &'a cargo_metadata::Metadata, manifest: &'a Path) -> Self {
        Images {
            args,
            metadata,
            manifest,
            keys: BTreeMap::new(),
            plan: Plan {
                targets: Vec::new(),
            },
        }
    }

    /// Checks a placeholder's package and plans its image, unless an earlier one did.
    fn add(&mut self, input: &Input, p: &Placeholder) -> Result<()> {
        self.check_package(input, p)?;
        let key = (p.package.clone(), p.bin.clone());
        if self.keys.contains_key(&key) {
            return Ok(());
        }
        let mut request = self.args.plan_request();
        request.packages = vec![p.package.clone()];
        request.workspace = false;
        if p.bin.is_some() {
            request.bin = p.bin.clone();
        }
        let single = crate::plan::make_plan(&request, self.metadata, self.manifest)
            .map_err(miette::Report::new)
            .wrap_err_with(|| format!("{}:{}: for `{}`", input.name, p.line, p.text))?;
        for target in single.targets {
            // `adapt://api` and `adapt://api/api` may name the same image: build it once.
            let same = self.plan.targets.iter().position(|t| {
                t.build.package == target.build.package && t.build.bin == target.build.bin
            });
            let index = match same {
                Some(i) => i,
                None => {
                    self.plan.targets.push(target);
                    self.plan.targets.len() - 1
                }
            };
            self.keys.insert(key.clone(), index);
        }
        Ok(())
    }

    /// The placeholder's package is a workspace member with cluster settings.
    fn check_package(&self, input: &Input, p: &Placeholder) -> Result<(), ResolveError> {
        let fail = |reason: String, help: String| ResolveError::Placeholder {
            file: input.name.clone(),
            line: p.line,
            placeholder: p.text.clone(),
            reason,
            help,
        };
        let members = self.metadata.workspace_packages();
        let Some(package) = members.iter().find(|m| m.name.as_str() == p.package) else {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            return Err(fail(
                format!(
                    "no package `{}` in the workspace at {}",
                    p.package, self.metadata.workspace_root
                ),
                format!("members: {}", names.join(", ")),
            ));
        };
        let inherited = self.metadata.workspace_metadata.get("cluster").is_some();
        if !inherited && package.metadata.get("cluster").is_none() {
            return Err(fail(
                format!(
                    "package `{}` has no [package.metadata.cluster] settings",
                    p.package
                ),
                format!(
                    "add [package.metadata.cluster] with a registry to {}",
                    package.manifest_path
                ),
            ));
        }
        Ok(())
    }
}

/// Pushes every planned image (concurrently); the pull reference of each, by plan index.
async fn push_images(
    plan: &Plan,
    cargo_options: &crate::cargo::CargoOptions,
    check_pull: bool,
) -> Result<Vec<Option<String>>> {
    let mut references: Vec<Option<String>> = vec![None; plan.targets.len()];
    if plan.targets.is_empty() {
        return Ok(references);
    }
    let destinations = crate::push::Destinations {
        registry: true,
        check_pull,
        concurrent: true,
        ..Default::default()
    };
    let outcome = crate::push::push_all(plan, cargo_options, &destinations, false).await?;
    for (i, (_, result)) in outcome.results.into_iter().enumerate() {
        let pushed = result?;
        references[i] = pushed.pull_ref.clone();
    }
    Ok(references)
}

fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .into_diagnostic()
        .wrap_err("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> Input {
        Input {
            name: "m.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn placeholders_in_every_style_are_replaced_and_nothing_else_changes() {
        let text = "# adapt://not-this, a comment\n---\nkind: Pod # ünïcode\nspec:\n  containers:\n  - image: adapt://api\n  - image: 'adapt://web/server'   # quoted\n  - {name: x, image: \"adapt://api\"}\n  - args: [\"run adapt://api later\"]\n---\nnote: |\n  adapt://in-a-block\n...\n";
        let found = find_placeholders(&input(text)).unwrap();
        let names: Vec<(&str, Option<&str>, usize)> = found
            .iter()
            .map(|p| (p.package.as_str(), p.bin.as_deref(), p.line))
            .collect();
        assert_eq!(
            names,
            vec![
                ("api", None, 6),
                ("web", Some("server"), 7),
                ("api", None, 8)
            ]
        );
        let out = replace(text, &found, |p| format!("R/{}@sha256:1", p.package));
        assert_eq!(
            out,
            text.replace("adapt://api\n", "R/api@sha256:1\n")
                .replace("'adapt://web/server'", "'R/web@sha256:1'")
                .replace("\"adapt://api\"}", "\"R/api@sha256:1\"}")
        );
    }

    #[test]
    fn bad_placeholders_and_yaml_name_the_line() {
        let err = find_placeholders(&input("a: 1\nb: adapt://Not OK\n")).unwrap_err();
        assert!(err.to_string().starts_with("m.yaml:2:"), "{err}");
        let err = find_placeholders(&input("a: [\n")).unwrap_err();
        assert!(err.to_string().contains("not valid YAML"), "{err}");
        let err = find_placeholders(&input("a: \"adapt://\\x61pi\"\n")).unwrap_err();
        assert!(err.to_string().contains("without escapes"), "{err}");
    }

    #[test]
    fn files_are_joined_as_one_stream() {
        assert_eq!(
            join_documents(&["a: 1".into(), "b: 2\n".into(), "---\nc: 3\n".into()]),
            "a: 1\n---\nb: 2\n---\nc: 3\n"
        );
    }
}
