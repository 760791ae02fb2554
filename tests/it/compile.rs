//! The run's compile, against a real registry: one `cargo build` per platform with the user's
//! selection, so a `cargo build --release --workspace` the user just ran is reused as it is;
//! binaries of the same name in two packages each reach their own image. (One member that does
//! not compile under `--workspace` is in `workspace_ci`; a compile error under `-p` in
//! `workspaces`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A workspace at `root`: the library `shared` with a feature `extra` that only `worker` turns
/// on, and the binaries `api` and `worker` depending on it, pushing to `registry`. Built alone
/// (`-p api`), `shared` is compiled without `extra`; built with the workspace, with it.
fn workspace(root: &Path, registry: &str) -> PathBuf {
    let manifest = root.join("Cargo.toml");
    std::fs::write(
        &manifest,
        format!(
            "[workspace]\nmembers = [\"shared\", \"api\", \"worker\"]\nresolver = \"2\"\n\n\
             [workspace.metadata.cluster]\nregistry = \"{registry}\"\n"
        ),
    )
    .unwrap();
    let package = |name: &str, extra: &str, file: &str, code: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{extra}"
            ),
        )
        .unwrap();
        std::fs::write(d.join("src").join(file), code).unwrap();
    };
    package(
        "shared",
        "\n[features]\nextra = []\n",
        "lib.rs",
        "pub fn word() -> &'static str {\n    if cfg!(feature = \"extra\") { \"extra\" } else { \"plain\" }\n}\n",
    );
    let main = "fn main() {\n    println!(\"{}\", shared::word());\n}\n";
    package(
        "api",
        "\n[dependencies]\nshared = { path = \"../shared\" }\n",
        "main.rs",
        main,
    );
    package(
        "worker",
        "\n[dependencies]\nshared = { path = \"../shared\", features = [\"extra\"] }\n",
        "main.rs",
        main,
    );
    manifest
}

/// The lines where cargo says it compiles a crate (`   Compiling shared v0.1.0 (…)`); cargo
/// prints them whatever `--message-format`, unless `--quiet`.
fn compiling(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling "))
        .collect()
}

/// The `-vv` trace lines of the tool's `cargo build` invocations.
fn cargo_invocations(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("trace running") && l.contains("--message-format"))
        .collect()
}

#[test]
fn a_workspace_the_user_just_built_is_not_compiled_again() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = workspace(dir.path(), &registry.addr());
    // The user's build and ours in one target directory, whatever the caller's environment.
    let target_dir = dir.path().join("target-of-both");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let users = Command::new(cargo)
        .args(["build", "--release", "--workspace", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&users.stderr);
    assert!(users.status.success(), "{said}");
    // The check below sees a compile when there is one.
    assert!(
        compiling(&said)
            .iter()
            .any(|l| l.contains("Compiling shared v0.1.0")),
        "{said}"
    );

    let out = adapt_push(&manifest)
        .arg("--workspace")
        .env("CARGO_TARGET_DIR", &target_dir)
        .run();
    out.assert_ok();
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert_eq!(registry.tags("api"), ["latest"]);
    assert_eq!(registry.tags("worker"), ["latest"]);
    assert_eq!(
        compiling(&out.stderr),
        Vec::<&str>::new(),
        "everything was fresh from the user's build:\n{}",
        out.stderr
    );

    // A change is compiled, once, in the same features: `shared` and both binaries.
    std::fs::write(
        dir.path().join("shared/src/lib.rs"),
        "pub fn word() -> &'static str {\n    if cfg!(feature = \"extra\") { \"EXTRA\" } else { \"PLAIN\" }\n}\n",
    )
    .unwrap();
    let out = adapt_push(&manifest)
        .arg("--workspace")
        .env("CARGO_TARGET_DIR", &target_dir)
        .run();
    out.assert_ok();
    let lines = compiling(&out.stderr);
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert!(
        lines.iter().any(|l| l.contains("Compiling shared v0.1.0")),
        "{}",
        out.stderr
    );
}

#[test]
fn several_packages_compile_in_one_cargo_build_per_platform() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = workspace(dir.path(), &registry.addr());
    let out = adapt_push(&manifest)
        .args(["-p", "api", "-p", "worker", "-vv"])
        .run();
    out.assert_ok();
    let runs = cargo_invocations(&out.stderr);
    assert_eq!(runs.len(), 1, "{}", out.stderr);
    assert!(
        runs[0].contains(r#""--package" "api@0.1.0" "--package" "worker@0.1.0""#),
        "{}",
        runs[0]
    );
    assert!(!runs[0].contains("--bin"), "{}", runs[0]);

    // Two platforms: one build for each, the arm64 one with its target (scripts/test installs
    // `rustup target add aarch64-unknown-linux-gnu` and gcc-aarch64-linux-gnu).
    let out = adapt_push(&manifest)
        .args(["-p", "api", "-p", "worker", "-vv"])
        .args(["--platform", "linux/amd64", "--platform", "linux/arm64"])
        .run();
    out.assert_ok();
    let runs = cargo_invocations(&out.stderr);
    assert_eq!(runs.len(), 2, "{}", out.stderr);
    assert_eq!(
        runs.iter()
            .filter(|l| l.contains(r#""--target" "aarch64-unknown-linux-gnu""#))
            .count(),
        1,
        "{runs:#?}"
    );
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
}

/// The bytes of `path` in the image's layers (the last layer holding it wins).
fn file_from_image(registry: &TestRegistry, repo: &str, path: &str) -> Vec<u8> {
    let manifest = get_json(
        registry,
        &format!("/v2/{repo}/manifests/latest"),
        MANIFEST_ACCEPT,
    );
    let mut found = None;
    for layer in manifest["layers"].as_array().expect("layers") {
        let blob = registry.blob(repo, layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name.trim_start_matches("./") == path.trim_start_matches('/') {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                found = Some(bytes);
            }
        }
    }
    found.unwrap_or_else(|| panic!("{path} is not in {repo}:latest"))
}

#[test]
fn bins_of_the_same_name_in_two_packages_each_reach_their_own_image() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [\"alpha\", \"beta\"]\nresolver = \"2\"\n\n\
             [workspace.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
    )
    .unwrap();
    for name in ["alpha", "beta"] {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [[bin]]\nname = \"serve\"\npath = \"src/main.rs\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("src/main.rs"),
            "fn main() {\n    println!(\"{}\", env!(\"CARGO_PKG_NAME\"));\n}\n",
        )
        .unwrap();
    }
    // Cargo writes both to target/release/serve; the last one written would be in both images.
    let out = adapt_push(root.join("Cargo.toml")).arg("--workspace").run();
    out.assert_ok();
    for name in ["alpha", "beta"] {
        let binary = file_from_image(&registry, name, "/usr/local/bin/serve");
        let path = root.join(format!("serve-from-{name}"));
        std::fs::write(&path, binary).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let ran = Command::new(&path).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), name);
    }
}

#[test]
fn a_typo_in_a_base_or_a_missing_engine_costs_no_compile() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = workspace(dir.path(), &registry.addr());
    let worker = dir.path().join("worker/Cargo.toml");
    let plain = std::fs::read_to_string(&worker).unwrap();
    // `api` comes first and is fine; `worker` cannot be built, which is known before any compile.
    for (setting, says) in [
        (
            format!("base = \"{}/no-such-base:1\"", registry.addr()),
            "no-such-base",
        ),
        (
            "builder = \"docker\"".to_string(),
            "unix:///nonexistent.sock",
        ),
    ] {
        std::fs::write(
            &worker,
            format!("{plain}\n[package.metadata.cluster]\n{setting}\n"),
        )
        .unwrap();
        let out = adapt_push(&manifest)
            .args(["-p", "api", "-p", "worker"])
            .env("DOCKER_HOST", "unix:///nonexistent.sock")
            .run();
        assert!(!out.status.success(), "{setting}:\n{}", out.stderr);
        assert!(out.stderr.contains(says), "{setting}:\n{}", out.stderr);
        assert_eq!(
            compiling(&out.stderr),
            Vec::<&str>::new(),
            "{setting}:\n{}",
            out.stderr
        );
        assert!(registry.tags("api").is_empty(), "{setting}");
    }
}

#[test]
fn a_member_built_by_its_own_dockerfile_is_left_out_of_the_workspace_build() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = workspace(dir.path(), &registry.addr());
    // `worker` compiles only inside its image (here: not at all), so the host must not try.
    let worker = dir.path().join("worker");
    std::fs::write(
        worker.join("src/main.rs"),
        "fn main() { this is not rust }\n",
    )
    .unwrap();
    std::fs::write(worker.join("Dockerfile"), "FROM scratch\n").unwrap();
    let out = adapt_push(&manifest)
        .args(["--workspace", "-vv"])
        // No engine: `worker` fails on its own, `api` goes on.
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .run();
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert_eq!(registry.tags("api"), ["latest"]);
    let runs = cargo_invocations(&out.stderr);
    assert_eq!(runs.len(), 1, "{}", out.stderr);
    assert!(
        runs[0].contains(r#""--workspace" "--exclude" "worker""#),
        "{}",
        runs[0]
    );
    assert!(
        !out.stderr.contains("could not compile `worker`"),
        "{}",
        out.stderr
    );
}
