//! `cargo adapt-push`: build a crate's container image, push it through the external address of
//! a split registry, print the digest-pinned pull reference at the internal address.
//!
//! Data flows one way: CLI + cargo metadata → plan → builder → image → publisher → report.
//!
//! The binary (`src/main.rs`) parses the command line and calls [`run`]; the parsers of image
//! references and `[package.metadata.cluster]` are public for the fuzz targets and the
//! random-input test.

mod builder;
mod cargo;
mod ci;
pub mod cli;
mod cluster;
pub mod config;
mod credentials;
mod engine;
mod file_lock;
mod image;
mod media_type;
mod output;
mod plan;
mod platform;
mod publish;
mod push;
pub mod reference;
mod registry;
mod registry_hints;
mod resolve;
mod runtime_closure;
mod spec;
mod supply_chain;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use miette::{IntoDiagnostic, Result};

use crate::cargo::CargoOptions;

/// Runs one parsed invocation and gives the process's exit status: 0 done, 1 failed, 2 (verify)
/// the image could not be read, 3 some images were done and others failed.
pub fn run(invocation: cli::Invocation) -> ExitCode {
    let (quiet, verbose) = invocation.verbosity();
    output::init(quiet, verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match invocation {
        cli::Invocation::Push(args) => runtime.block_on(run_push(args)),
        // verify's own exit codes: 0 verified, 1 a check failed, 2 the image could not be read.
        cli::Invocation::Verify(args) => {
            return match runtime.block_on(verify::run(args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(report) => {
                    output::print_error(&report);
                    ExitCode::from(2)
                }
            };
        }
        cli::Invocation::Resolve(args) => runtime.block_on(resolve::run(args)),
        cli::Invocation::Completions(shell) => {
            cli::print_completions(shell);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            output::print_error(&report);
            // The runner reads workflow commands from both output streams; stdout stays the
            // result's alone.
            if ci::in_github_actions() {
                eprintln!("{}", ci::annotation_for(&report));
            }
            if PARTIAL.load(std::sync::atomic::Ordering::SeqCst) {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run_push(args: cli::PushArgs) -> Result<()> {
    let (manifest, cargo_options, metadata) = load_metadata(&args)?;
    let plan = plan::make_plan(&args.plan_request(), &metadata, &manifest)?;
    output::plan_warnings(&plan);

    if args.dry_run {
        output::print_plan(&plan, args.format).into_diagnostic()?;
        return Ok(());
    }

    if let Some(path) = &args.image_refs {
        check_writable(path)?;
    }
    let destinations = push::Destinations::from_args(&args);
    let keep_going = args.workspace;
    let outcome = push::push_all(&plan, &cargo_options, &destinations, keep_going).await?;
    let (result, partial) = push::finish(outcome, &args);
    if partial {
        PARTIAL.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    result
}

/// Set when some images were done and others failed: exit status 3.
static PARTIAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The Cargo.toml to start from, cargo's options, and `cargo metadata` for its workspace.
fn load_metadata(
    args: &cli::PushArgs,
) -> Result<(PathBuf, CargoOptions, cargo_metadata::Metadata)> {
    let manifest = locate_manifest(args.manifest_path.as_deref())?;
    let cargo_options = args.cargo_options();
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(cargo::cargo_program())
        .manifest_path(&manifest)
        .no_deps()
        .other_options(cargo_options.manifest_flags())
        .exec()
        .map_err(|e| {
            miette::miette!(
                help = "run `cargo metadata` there to see cargo's full message",
                "cargo could not read {}: {e}",
                manifest.display()
            )
        })?;
    Ok((manifest, cargo_options, metadata))
}

/// Fails early (before any build) when `--image-refs` cannot be written.
fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(miette::miette!(
            help = "create the directory first, or choose another path",
            "--image-refs {}: the directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(miette::miette!(
            "--image-refs {}: is a directory; give a file path",
            path.display()
        ));
    }
    Ok(())
}

/// `--manifest-path`, else the nearest Cargo.toml from the current directory upward (cargo's rule).
fn locate_manifest(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        let path = if path.is_dir() {
            path.join("Cargo.toml")
        } else {
            path.to_path_buf()
        };
        if !path.is_file() {
            return Err(miette::miette!(
                "--manifest-path: {} does not exist",
                path.display()
            ));
        }
        return path.canonicalize().into_diagnostic();
    }
    let cwd = std::env::current_dir().into_diagnostic()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join("Cargo.toml");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(miette::miette!(
        help = "run it inside a Rust package, or pass --manifest-path",
        "could not find Cargo.toml in {} or any parent directory",
        cwd.display()
    ))
}
