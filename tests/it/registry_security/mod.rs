//! Credentials go only where they belong, and a hostile or odd registry cannot hurt the push,
//! against the real registry (Debian's docker-registry).
//!
//! A real registry cannot produce some of the protocol corners tested here (an upload
//! `Location` on another host, a challenge on `/v2/` of a registry that serves reads
//! anonymously, a manifest of 1 GiB or without end): the rewriting and recording proxies
//! (`HttpFaultProxy`) and the stub server in `odd_registries` are stand-ins for those corners,
//! and each test says which one it uses.
//!
//! The push's credentials and the pair of registries that check them are shared here.

mod credential_scope;
mod odd_registries;
mod secrets_in_addresses;

use crate::common::*;

const USER: &str = "alice";
const PASSWORD: &str = "pa55-W0rd-for-the-push-only";

fn push_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ADAPT_PUSH_USERNAME", USER),
        ("ADAPT_PUSH_PASSWORD", PASSWORD),
    ]
}

fn secrets() -> Vec<String> {
    secret_forms(USER, PASSWORD)
}

fn assert_no_push_secret(run: &Run) {
    let s = secrets();
    run.assert_no_secret(&s.iter().map(String::as_str).collect::<Vec<_>>());
}

fn registry_pair() -> (TestRegistry, TestRegistry) {
    shared_storage_registries((USER, PASSWORD), None)
}

fn registry_pair_with(second_user: Option<(&str, &str)>) -> (TestRegistry, TestRegistry) {
    shared_storage_registries((USER, PASSWORD), second_user)
}
