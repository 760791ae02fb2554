//! The tool under test: the built `cargo-adapt-push` binary with a hermetic environment, the one
//! way to run it ([`ToolCommand::run`]), and what it printed ([`Run`]).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The built `cargo-adapt-push` binary, with a hermetic environment: no SOURCE_DATE_EPOCH, no
/// KUBECONFIG, an empty DOCKER_CONFIG, and none of the caller's
/// DOCKER_HOST/DOCKER_CONTEXT/DOCKER_TLS_* or ADAPT_PUSH_* (other than ADAPT_PUSH_TEST_*)
/// settings. Tests set what they need, e.g. `.env("DOCKER_HOST", host)`.
pub fn tool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-adapt-push"));
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KUBECONFIG")
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

/// `cargo adapt-push --manifest-path MANIFEST` with the hermetic environment of [`tool`], for
/// the caller to add arguments and settings to, then [`ToolCommand::run`]. Cargo builds the
/// crate in its own `target/` (beside the manifest) unless the test asks for
/// [`ToolCommand::shared_target_dir`].
pub fn adapt_push(manifest: impl AsRef<Path>) -> Command {
    let mut cmd = tool();
    cmd.arg("adapt-push")
        .arg("--manifest-path")
        .arg(manifest.as_ref());
    cmd
}

/// The one way the tests run the tool: std's `Command` (from [`tool`] or [`adapt_push`]) is the
/// builder, and these finish it. A test that must watch or kill the process spawns the command
/// itself and reads the result with [`Run::from`].
pub trait ToolCommand {
    /// Builds crates in one target dir shared by the tests that ask for it, so a dependency or
    /// an identical crate builds once per suite instead of once per test.
    fn shared_target_dir(&mut self) -> &mut Command;
    /// Runs the command to completion and captures both streams.
    fn run(&mut self) -> Run;
    /// [`ToolCommand::run`], but a run that takes longer than `limit` is a hang: the process is
    /// killed and the test fails with what it printed on stderr.
    fn run_within(&mut self, limit: Duration) -> Run;
}

impl ToolCommand for Command {
    fn shared_target_dir(&mut self) -> &mut Command {
        self.env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-tests-target"),
        )
    }

    fn run(&mut self) -> Run {
        let output = self
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.get_program()));
        Run::from(output)
    }

    fn run_within(&mut self, limit: Duration) -> Run {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.get_program()));
        // Both pipes are drained while waiting, so a chatty process cannot block on a full one.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                text
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the tool") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
                panic!("still running after {limit:?} (hung), killed:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Run::from(Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        })
    }
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

/// What one run of the tool did: its exit status and both streams as text.
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

    /// Panics with both streams unless the run succeeded.
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

    /// Panics unless the run failed with an exit code: not killed by a signal, no panic.
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

    /// The one JSON document a successful run printed on stdout (`--format json`).
    pub fn json(&self) -> serde_json::Value {
        self.assert_ok();
        serde_json::from_str(&self.stdout).expect("stdout is one JSON document")
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

/// Splits a printed pull reference `host/repo@sha256:hex` into (host, repo, digest).
pub fn split_ref(reference: &str) -> (String, String, String) {
    let (name, digest) = reference.split_once('@').expect("digest-pinned reference");
    let (host, repo) = name.split_once('/').expect("host/repo");
    (host.to_string(), repo.to_string(), digest.to_string())
}
