//! `resolve -f PATH`: finds `adapt://<package>` and `adapt://<package>/<bin>` scalars in YAML,
//! builds and pushes each image once, and prints the YAML with each placeholder replaced by its
//! pull reference. Only the placeholder's characters change: the source text is edited at the
//! scalar's span (from the YAML parser's markers), so comments, quoting, key order and document
//! separators stay as written. Every placeholder is checked before anything is built, and
//! nothing is written before every image is pushed; `--in-place` writes the files back instead.
//!
//! [`input`] reads the inputs (bounded, and never the file stdout writes to), [`scan`] finds the
//! placeholders, [`write`] writes the result.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{Diagnostic, Result, WrapErr};

use crate::plan::{Plan, Selection};
use crate::request::{Batch, Outputs, PushRequest, ResolveRequest};
use crate::shell::Shell;

mod input;
mod scan;
mod write;

use input::Input;
use scan::Placeholder;

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
    #[error("{file}:{line}:{column}: not UTF-8 text (byte 0x{byte:02x})")]
    #[diagnostic(help(
        "Kubernetes manifests are UTF-8: convert the file, e.g. `iconv -f LATIN1 -t UTF-8`"
    ))]
    Encoding {
        file: String,
        line: usize,
        column: usize,
        byte: u8,
    },
    #[error("-f {path}: {reason}")]
    Input { path: String, reason: String },
    #[error("-f {path}: larger than {limit_mib} MiB, the most resolve reads from one input")]
    #[diagnostic(help(
        "split the manifests into files of at most {limit_mib} MiB each (-f takes a directory of them, and is repeatable); -f must name a file, not a stream that never ends"
    ))]
    TooLarge { path: String, limit_mib: u64 },
    #[error("{reason}")]
    #[diagnostic(help("{help}"))]
    StdoutIsInput { reason: String, help: String },
    #[error("--in-place rewrites the files given with -f; it cannot rewrite stdin (-f -)")]
    #[diagnostic(help(
        "give the files (or their directory) with -f, or leave out --in-place to print the YAML"
    ))]
    InPlaceStdin,
}

/// The subcommand; what it does (the pushes, the files rewritten) is told to `shell`.
pub async fn run(args: ResolveRequest, shell: &Shell) -> Result<()> {
    if args.in_place && args.files.iter().any(|f| f.as_os_str() == "-") {
        return Err(ResolveError::InPlaceStdin.into());
    }
    // Before anything is pushed: `resolve -f a.yaml > a.yaml` has already emptied a.yaml.
    let inputs = input::read_inputs(&args.files, input::stdout_file())?;
    let mut found = Vec::new();
    for input in &inputs {
        found.push(scan::find_placeholders(input)?);
    }
    let (manifest, metadata) =
        crate::cargo::workspace_metadata(args.push.manifest_path.as_deref(), &args.push.cargo)?;

    // Check every placeholder and plan each distinct image once, before anything is built.
    let mut images = Images::new(&args.push, &metadata, &manifest);
    for (input, placeholders) in inputs.iter().zip(&found) {
        for p in placeholders {
            images.add(input, p)?;
        }
    }
    crate::report::plan_warnings(&images.plan, shell);
    let references = push_images(
        &images.plan,
        &args.push.cargo,
        args.push.outputs.check_pull,
        shell,
    )
    .await?;

    // Every placeholder's reference, before anything is written.
    let mut files = Vec::new();
    for (input, placeholders) in inputs.iter().zip(&found) {
        let mut edits = Vec::new();
        for p in placeholders {
            let reference = images
                .keys
                .get(&(p.package.clone(), p.bin.clone()))
                .and_then(|i| references.get(*i))
                .and_then(Option::as_deref)
                .ok_or_else(|| ResolveError::Placeholder {
                    file: input.name.clone(),
                    line: p.line,
                    placeholder: p.text.clone(),
                    reason: "its image was pushed but gave no pull reference".into(),
                    help: "nothing was written; run again with -v to see the push".into(),
                })?;
            edits.push((p.range.clone(), reference));
        }
        files.push(write::Resolved { input, edits });
    }
    if args.in_place {
        write::in_place(&files, shell)
    } else {
        write::to_stdout(&files)
    }
}

/// The images the placeholders name, each planned once, and which placeholder is which image.
struct Images<'a> {
    args: &'a PushRequest,
    metadata: &'a cargo_metadata::Metadata,
    manifest: &'a Path,
    /// What planning reads besides the manifests, for all placeholders of the run.
    facts: crate::plan::HostFacts,
    /// (package, bin) of a placeholder → index into `plan.targets`.
    keys: BTreeMap<(String, Option<String>), usize>,
    plan: Plan,
}

impl<'a> Images<'a> {
    fn new(
        args: &'a PushRequest,
        metadata: &'a cargo_metadata::Metadata,
        manifest: &'a Path,
    ) -> Self {
        Images {
            args,
            metadata,
            manifest,
            facts: crate::plan::HostFacts::default(),
            keys: BTreeMap::new(),
            plan: Plan {
                targets: Vec::new(),
                // Each placeholder names a package and so a binary: exactly those are compiled.
                selection: Selection {
                    workspace: false,
                    bins: true,
                },
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
        let mut request = self.args.plan.clone();
        request.packages = vec![p.package.clone()];
        request.workspace = false;
        if let Some(bin) = &p.bin {
            request.bins = vec![bin.clone()];
        }
        let single = crate::plan::make_plan(&request, self.metadata, self.manifest, &self.facts)
            .map_err(miette::Report::new)
            .wrap_err_with(|| format!("{}:{}: for `{}`", input.name, p.line, p.text))?;
        // One placeholder is one reference: with `bins` (or several --bin) it must say which.
        if single.targets.len() > 1 {
            let bins: Vec<&str> = single
                .targets
                .iter()
                .map(|t| t.build.bin.as_str())
                .collect();
            return Err(ResolveError::Placeholder {
                file: input.name.clone(),
                line: p.line,
                placeholder: p.text.clone(),
                reason: format!(
                    "package `{}` puts several binaries in images ({}); a placeholder names one",
                    p.package,
                    bins.join(", ")
                ),
                help: format!("write {SCHEME}{}/{}", p.package, bins[0]),
            }
            .into());
        }
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
    shell: &Shell,
) -> Result<Vec<Option<String>>> {
    let mut references: Vec<Option<String>> = vec![None; plan.targets.len()];
    if plan.targets.is_empty() {
        return Ok(references);
    }
    let outputs = Outputs {
        registry: true,
        check_pull,
        ..Default::default()
    };
    let outcome =
        crate::push::push_all(plan, cargo_options, &outputs, Batch::AllOrNothing, shell).await?;
    for (i, (_, result)) in outcome.results.into_iter().enumerate() {
        let pushed = result?;
        references[i] = pushed.pull_ref.clone();
    }
    Ok(references)
}
