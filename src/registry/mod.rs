//! A client for the OCI distribution API: ping, auth challenges (Basic and Bearer tokens),
//! per-request retries, blob HEAD / mount / upload / download, manifest GET / PUT.
//!
//! Every request is bounded. Requests without a large body are retried on connection errors,
//! stalls, 408, 429 and 5xx with exponential backoff and jitter (or the server's `Retry-After`),
//! within [`RetryPolicy`]'s attempts and total time; each attempt is cut at that deadline, so a
//! dead or silent registry is given up on in time. Blob uploads restart with a fresh upload
//! session when a transfer breaks, and count as stalled only when no byte has moved for
//! [`RetryPolicy::stall`], so a slow link is not mistaken for a dead one.
//!
//! The application plugs in, through [`Hooks`]: a [`Keychain`] (where credentials come from;
//! a lookup that fails is an error, never an anonymous request), [`Hints`] (the advice in its
//! own words for each [`Problem`]) and an event sink ([`events`]). Of the crate, the client
//! takes only `reference` and `media_type`, so it could be a crate of its own.
//!
//! The files import one another only downwards (this one only declares them and re-exports):
//! the leaves (`http`, `bounded`, `retry`, `activity`, `api_error`, `challenge`, `keychain`,
//! `hints`, `options`, `events`, `error`, `plain_http`, `http_client`) know nothing of the
//! client; `client` defines [`RegistryClient`] and connecting; the files that add its methods
//! (`transport`, `auth`, `ping`, `diagnose`, `blobs`, …) import `client`, never the other way
//! round. The tests below check both.

mod activity;
mod api_error;
mod auth;
mod blob_source;
mod blobs;
mod bounded;
mod challenge;
mod client;
mod diagnose;
mod error;
pub mod events;
mod hints;
mod http;
mod http_client;
mod keychain;
mod manifests;
mod options;
mod ping;
mod plain_http;
pub mod pool;
pub mod referrers;
mod retry;
mod stream_upload;
mod transport;

pub use blobs::Mount;
pub use client::RegistryClient;
pub use error::RegistryError;
pub use hints::{DefaultHints, Hints, Problem};
pub use http::error_chain;
pub use keychain::{Credential, Keychain, KeychainError, Lookup, look_up};
pub use options::{ClientIdentity, ClientOptions, Hooks, RetryPolicy};

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// Each file's code, its tests left out, by file name (`mod` included).
    fn code_of_files() -> BTreeMap<String, String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/registry");
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            // The tests module is left out (a `#[cfg(test)]` item elsewhere stays in).
            let end = text
                .find("#[cfg(test)]\nmod tests")
                .or_else(|| text.find("#[cfg(test)]\npub(super) mod tests"))
                .unwrap_or(text.len());
            let code = text[..end].to_string();
            files.insert(name, code);
        }
        files
    }

    /// The files of this folder each file names through `super::` (mod.rs, which only declares
    /// them, left out).
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let mut files = code_of_files();
        files.remove("mod");
        let mut graph = BTreeMap::new();
        for (name, code) in &files {
            assert!(
                !code.contains("super::{") && !code.contains("crate::registry::"),
                "{name}.rs: name each file of registry/ as `super::file::Item`, so this test sees the import"
            );
            let mut names = BTreeSet::new();
            for (i, _) in code.match_indices("super::") {
                let rest = &code[i + "super::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let named = &rest[..end];
                assert!(
                    files.contains_key(named),
                    "{name}.rs names `super::{named}`, which is not a file of registry/ (a re-export of mod.rs would make mod.rs part of a cycle)"
                );
                names.insert(named.to_string());
            }
            graph.insert(name.clone(), names);
        }
        graph
    }

    /// The files of registry/ import one another without a cycle, so each can be read (and
    /// changed) knowing only the files below it.
    #[test]
    fn no_file_of_the_registry_imports_in_a_cycle() {
        let graph = imports();
        // Kahn's algorithm: take files whose imports are all taken, until none is left.
        let mut taken: BTreeSet<String> = BTreeSet::new();
        loop {
            let ready: Vec<String> = graph
                .iter()
                .filter(|(name, uses)| {
                    !taken.contains(*name) && uses.iter().all(|u| taken.contains(u) || u == *name)
                })
                .map(|(name, _)| name.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            taken.extend(ready);
        }
        let cycle: BTreeMap<_, _> = graph
            .iter()
            .filter(|(name, _)| !taken.contains(*name))
            .collect();
        assert!(
            cycle.is_empty(),
            "files in or above an import cycle: {cycle:?}"
        );
    }

    /// The client could be a crate of its own: of this crate it takes only the image reference
    /// grammar and the media types.
    #[test]
    fn the_registry_imports_nothing_of_the_crate_but_references_and_media_types() {
        for (name, code) in code_of_files() {
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let named = &rest[..end];
                assert!(
                    ["reference", "media_type"].contains(&named),
                    "{name}.rs imports crate::{named}"
                );
            }
        }
    }
}
