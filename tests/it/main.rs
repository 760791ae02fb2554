//! The integration tests, built as one binary (cargo's own `tests/testsuite` shape): one module
//! per feature, and the harness they share in [`common`]. Each test runs the built
//! `cargo-adapt-push` against real registries (Debian's `docker-registry`) it starts itself, and
//! a real Docker engine where `scripts/test` provides one.
//!
//! Run one module with `cargo test --test it split_push::`, one test by (part of) its name.

mod common;

mod architecture;
mod base_images;
mod binaries;
mod cluster;
mod compile;
mod config;
mod destinations;
mod docker;
mod embedding;
mod engines;
mod harness_selftest;
mod includes;
mod layers;
mod local_state;
mod overlap;
mod parsers_random;
mod platforms;
mod registry_auth;
mod registry_errors;
mod registry_faults;
mod registry_security;
mod resolve;
mod results;
mod scratch_images;
mod split_push;
mod streamed_layers;
mod supply_chain;
mod terminal;
mod workspace_ci;
mod workspaces;
