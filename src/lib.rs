//! `cargo adapt-push`: build a crate's container image, push it through the external address of
//! a split registry, print the digest-pinned pull reference at the internal address.
//!
//! Data flows one way: CLI + cargo metadata → plan → builder → image → publisher → report.
//!
//! The binary (`src/main.rs`) calls [`run_from_env`]. An embedder or a test can build a
//! [`Command`] (the plain request types of [`request`]) and call [`run`]. The parsers of image
//! references and `[package.metadata.cluster]` are public for the fuzz targets and the
//! random-input test.

mod builder;
mod cargo;
mod ci;
mod cli;
mod cluster;
pub mod config;
mod credentials;
mod dpkg;
mod engine;
mod file_lock;
mod image;
mod media_type;
mod plan;
mod platform;
mod publish;
mod push;
pub mod reference;
mod registry;
mod registry_hints;
mod report;
pub mod request;
mod resolve;
mod runtime_closure;
mod shell;
mod spec;
mod supply_chain;
mod verify;

use std::process::ExitCode;

pub use crate::request::Command;
use crate::shell::Shell;

/// Runs the command the process's arguments ask for and gives its exit status (see [`run`]).
pub fn run_from_env() -> ExitCode {
    match cli::parse() {
        cli::Parsed::Run(command) => run(*command),
        cli::Parsed::Completions(shell) => {
            cli::print_completions(shell);
            ExitCode::SUCCESS
        }
    }
}

/// Runs one command and gives the process's exit status: 0 done, 1 failed, 2 (verify) the image
/// could not be read, 3 some images were done and others failed.
pub fn run(command: Command) -> ExitCode {
    let (quiet, verbose) = command.verbosity();
    // This run's own: nothing of an earlier run in the same process carries over.
    let shell = Shell::new(quiet, verbose);
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
    let (result, partial) = match command {
        Command::Push(request) => runtime.block_on(push::run(&request, &shell)),
        // verify's own exit codes: 0 verified, 1 a check failed, 2 the image could not be read.
        Command::Verify(request) => {
            return match runtime.block_on(verify::run(request, &shell)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(report) => {
                    shell.print_error(&report);
                    ExitCode::from(2)
                }
            };
        }
        Command::Resolve(request) => (runtime.block_on(resolve::run(request, &shell)), false),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            shell.print_error(&report);
            // The runner reads workflow commands from both output streams; stdout stays the
            // result's alone.
            if ci::in_github_actions() {
                eprintln!("{}", ci::annotation_for(&report));
            }
            if partial {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
