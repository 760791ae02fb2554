//! `--check-pull`: after the push, ask the internal address for the manifest by digest, so a
//! wrong `internal` is caught here rather than as `ImagePullBackOff` in the cluster. Only run
//! when asked: without the flag the internal address is never contacted.

use miette::{Diagnostic, Result};

use crate::reference::Digest;
use crate::registry::error_chain;
use crate::registry::pool::Clients;
use crate::shell::Shell;
use crate::spec::Destination;

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("--check-pull: {pull_ref} cannot be pulled through the internal address: {cause}")]
#[diagnostic(help(
    "the image was pushed as {push_name}; `internal` must be how the cluster's runtime sees the same registry (or a cache or mirror of it) with the same digests. Check `internal` (and its path), or drop --check-pull when the internal address is not reachable from here"
))]
pub struct CheckPullError {
    pull_ref: String,
    push_name: String,
    cause: String,
}

/// Fetches `internal/pull_repository@digest` and checks the registry serves exactly that digest.
pub async fn check_pull(
    clients: &Clients,
    destination: &Destination,
    digest: &Digest,
    shell: &Shell,
) -> Result<()> {
    let pull_ref = format!("{}@{digest}", destination.pull_name());
    let fail = |cause: String| CheckPullError {
        pull_ref: pull_ref.clone(),
        push_name: destination.push_name(),
        cause,
    };
    shell.status(
        "Checking",
        &format!("{pull_ref} pulls through {}", destination.internal),
    );
    let client = clients
        .get(&destination.internal)
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    // get_manifest checks the bytes served hash to the digest asked for.
    client
        .get_manifest(&destination.pull_repository, digest.as_str())
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    shell.detail(&format!(
        "{pull_ref} is served through the internal address"
    ));
    Ok(())
}
