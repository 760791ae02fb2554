//! The Docker engine that `scripts/test` starts for the run, and the docker CLI against it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::find_program;
use super::tool::empty_docker_config;

/// The engine started by `scripts/test` (`ADAPT_PUSH_TEST_DOCKER_HOST`, e.g.
/// `unix:///tmp/.../docker.sock`). Unset: under CI that is a setup bug (panic); locally it
/// returns `None` after printing "skipping: no engine", and the caller returns early.
pub fn docker_host() -> Option<String> {
    match std::env::var("ADAPT_PUSH_TEST_DOCKER_HOST") {
        Ok(host) if !host.is_empty() => Some(host),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => panic!(
            "ADAPT_PUSH_TEST_DOCKER_HOST is not set but CI is: run the tests through \
             scripts/test (as root), which starts a Docker engine and exports it"
        ),
        _ => {
            eprintln!(
                "skipping: no engine (ADAPT_PUSH_TEST_DOCKER_HOST unset; run scripts/test as root)"
            );
            None
        }
    }
}

/// The docker CLI: Debian's /usr/bin/docker (matches the engine) if present, else PATH.
pub fn docker_bin() -> PathBuf {
    find_program("docker", &["/usr/bin/docker"])
}

/// Runs `docker -H host args...` with an empty DOCKER_CONFIG and returns its output.
pub fn docker(host: &str, args: &[&str]) -> Output {
    Command::new(docker_bin())
        .arg("-H")
        .arg(host)
        .args(args)
        .env("DOCKER_CONFIG", empty_docker_config())
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", docker_bin().display()))
}

/// Pulls `reference` (so the pull really goes through its registry address), runs it with
/// `args`, removes it again, and returns the container's trimmed stdout.
pub fn docker_pull_run(host: &str, reference: &str, args: &[&str]) -> String {
    docker_ok(host, &["pull", reference]);
    let mut run = vec!["run", "--rm", reference];
    run.extend_from_slice(args);
    let output = docker_ok(host, &run);
    let _ = docker(host, &["rmi", "-f", reference]);
    output
}

/// Like [`docker`] but panics (with stderr) on failure and returns trimmed stdout.
pub fn docker_ok(host: &str, args: &[&str]) -> String {
    let out = docker(host, args);
    assert!(
        out.status.success(),
        "docker {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
