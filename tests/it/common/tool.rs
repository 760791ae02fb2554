//! The tool under test: the built `cargo-adapt-push` binary with a hermetic environment, ways
//! to run it, and reading what it printed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// An empty directory for DOCKER_CONFIG, one per test process (under cargo's
/// `target/tmp`, so nothing piles up in /tmp), so the user's credentials and credential
/// helpers are never used.
pub fn empty_docker_config() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("empty-docker-config-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    })
}

/// The built `cargo-adapt-push` binary, with a hermetic environment: no SOURCE_DATE_EPOCH, an
/// empty DOCKER_CONFIG, and none of the caller's DOCKER_HOST/DOCKER_CONTEXT/DOCKER_TLS_* or
/// ADAPT_PUSH_* (other than ADAPT_PUSH_TEST_*) settings. Tests set what they need, e.g.
/// `.env("DOCKER_HOST", host)`.
pub fn tool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-adapt-push"));
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .env("DOCKER_CONFIG", empty_docker_config())
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let docker_setting = matches!(
            &*key,
            "DOCKER_HOST" | "DOCKER_CONTEXT" | "DOCKER_TLS_VERIFY" | "DOCKER_CERT_PATH"
        );
        let tool_setting = key.starts_with("ADAPT_PUSH_") && !key.starts_with("ADAPT_PUSH_TEST_");
        if docker_setting || tool_setting {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// Runs the tool on `manifest` with `args` and an optional environment, with a shared target
/// dir so the crate builds once per test binary.
pub fn push(manifest: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    Run::from(
        push_command(manifest, args, env)
            .output()
            .expect("run cargo-adapt-push"),
    )
}

pub fn push_command(manifest: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = adapt_push(manifest);
    cmd.args(args)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// `cargo adapt-push --manifest-path MANIFEST` with the hermetic environment of [`tool`], for
/// the caller to add arguments and settings to (its own target dir: see [`push_command`] for
/// the shared one).
pub fn adapt_push(manifest: impl AsRef<Path>) -> Command {
    let mut cmd = tool();
    cmd.arg("adapt-push")
        .arg("--manifest-path")
        .arg(manifest.as_ref());
    cmd
}

/// [`adapt_push`] with `--format json` and then `args`.
pub fn push_json_command(manifest: &Path, args: &[&str]) -> Command {
    let mut cmd = adapt_push(manifest);
    cmd.args(["--format", "json"]).args(args);
    cmd
}

/// Runs [`push_json_command`]; read the result with [`json_of`].
pub fn push_json(manifest: &Path, args: &[&str]) -> Output {
    push_json_command(manifest, args)
        .output()
        .expect("run cargo-adapt-push")
}

fn shared_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-tests-target")
}

/// A Docker config dir holding `config` as config.json.
pub fn docker_config(dir: &Path, config: &serde_json::Value) -> PathBuf {
    let d = dir.join("docker-config");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    d
}

/// Output of one run, both streams as text.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.status.success(),
            "tool failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_failed(&self) -> &Run {
        assert!(
            !self.status.success(),
            "tool should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.status.code().is_some(),
            "the tool died from a signal (a panic abort?): {}\n{}",
            self.status,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the tool panicked:\n{}",
            self.stderr
        );
        self
    }

    /// The one pull reference on stdout.
    pub fn pull_ref(&self) -> String {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout: {}", self.stdout);
        lines[0].to_string()
    }

    /// Panics if any of `secrets` appears in stdout or stderr.
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "a secret ({} chars) appears in the output:\nstdout:\n{}\nstderr:\n{}",
                secret.len(),
                self.stdout,
                self.stderr
            );
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one JSON document a successful run printed on stdout (`--format json`).
pub fn json_of(o: &Output) -> serde_json::Value {
    assert_success(o);
    serde_json::from_str(&stdout(o)).expect("stdout is one JSON document")
}

/// Panics with both streams when the tool failed.
pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "tool failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}
