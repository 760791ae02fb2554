//! The harness of the integration tests: every test module says `use crate::common::*;` (the
//! fault proxies stay under [`faults`]).
//!
//! * [`registry`]: [`TestRegistry`], a real CNCF distribution registry (`docker-registry`) on a
//!   free loopback port, plain HTTP, htpasswd or TLS.
//! * [`proxies`]: [`CountingProxy`] (the cluster's `internal` address, counting connections) and
//!   [`PathRewritingProxy`] (a mirror serving the registry under another path).
//! * [`faults`]: proxies that reset, cut, throttle or answer 503/429 (shared with
//!   `examples/fault-proxy`).
//! * [`tokens`]: [`TokenIssuer`], a token service for `auth: token` registries.
//! * [`pki`]: a private CA and the certificates it signs (openssl CLI).
//! * [`http`]: a tiny std-only HTTP/1.1 client for looking into registries.
//! * [`engine`]: the Docker engine `scripts/test` starts, and the docker CLI against it.
//! * [`tool`]: the built `cargo-adapt-push` binary with a hermetic environment ([`tool()`],
//!   [`adapt_push`]), the one way to run it ([`ToolCommand::run`]) and what it printed ([`Run`]).
//! * [`crates`]: crates to push (the example project, fixtures, generated crates).
//! * [`assert`]: a consistent registry afterwards, no secret in the output.
//!
//! Everything listens on and connects to 127.0.0.1 only.
pub mod assert;
pub mod crates;
pub mod engine;
pub mod faults;
pub mod http;
pub mod pki;
pub mod proxies;
pub mod registry;
pub mod tokens;
pub mod tool;

pub use assert::*;
pub use crates::*;
pub use engine::*;
pub use http::*;
pub use pki::*;
pub use proxies::*;
pub use registry::*;
pub use tokens::*;
pub use tool::*;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, then release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// The first of `candidates` that exists, else `name` found on PATH, as a full path (for
/// symlinks and `RUSTC=`-style settings); panics when the program is not installed.
pub fn find_program(name: &str, candidates: &[&str]) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name));
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: not on PATH nor at {candidates:?} (scripts/test installs it)")
        })
}

/// Runs `cmd` and returns its stdout; panics with its stderr unless it succeeds. `what` names
/// the program and how to install it, e.g. `"skopeo (apt-get install skopeo)"`.
pub fn run_ok(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
