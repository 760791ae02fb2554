//! `--workspace` against the real registry (one member that does not compile), and the CI
//! integration: GITHUB_OUTPUT step outputs, `::error` annotations, shell completions.

use std::path::Path;

use crate::common::*;

/// A workspace at `root` whose members are (name, main.rs or None for a library).
fn workspace(root: &Path, cluster: &str, members: &[(&str, Option<&str>, &str)]) {
    let names: Vec<String> = members.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [{}]\nresolver = \"2\"\n\n{cluster}",
            names.join(", ")
        ),
    )
    .unwrap();
    for (name, main, extra) in members {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{extra}"
            ),
        )
        .unwrap();
        match main {
            Some(m) => std::fs::write(d.join("src/main.rs"), m).unwrap(),
            None => std::fs::write(d.join("src/lib.rs"), "pub fn f() {}\n").unwrap(),
        }
    }
}

#[test]
fn workspace_pushes_every_member_and_one_failing_build_does_not_hide_the_others() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    workspace(
        root,
        &format!(
            "[workspace.metadata.cluster]\nregistry = \"{}/shop\"\n",
            registry.addr()
        ),
        &[
            ("web", Some(HELLO), ""),
            ("api", Some(HELLO), ""),
            ("broken", Some("fn main() { this is not rust }\n"), ""),
            ("shared", None, ""),
        ],
    );
    let outputs = root.join("github_output");
    let out = adapt_push(root.join("Cargo.toml"))
        .arg("--workspace")
        .env("GITHUB_OUTPUT", outputs.to_str().unwrap())
        .run();
    let err = &out.stderr;
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure exits 3:\n{err}"
    );
    // Package order; the library has no binary and is not an image.
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{}/shop/api@sha256:", registry.addr())));
    assert!(lines[1].starts_with(&format!("{}/shop/web@sha256:", registry.addr())));
    assert!(err.contains("broken"), "{err}");
    assert!(err.contains("1 of 3 images failed"), "{err}");
    assert_eq!(registry.tags("shop/api"), vec!["latest"]);
    assert_eq!(registry.tags("shop/web"), vec!["latest"]);
    assert!(registry.tags("shop/broken").is_empty());

    // Step outputs for several images carry the package name.
    let text = std::fs::read_to_string(&outputs).unwrap();
    let api_digest = lines[0].split_once('@').unwrap().1;
    assert!(
        text.contains(&format!("api-pull-ref={}\n", lines[0])),
        "{text}"
    );
    assert!(
        text.contains(&format!("api-digest={api_digest}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("web-pull-ref={}\n", lines[1])),
        "{text}"
    );
    assert!(!text.contains("broken"), "{text}");

    // Without the broken member: exit 0.
    std::fs::write(root.join("broken/src/main.rs"), HELLO).unwrap();
    let out = adapt_push(root.join("Cargo.toml")).arg("--workspace").run();
    out.assert_ok();
    assert_eq!(out.stdout.lines().count(), 3);
}

#[test]
fn workspace_takes_only_members_with_cluster_settings_when_the_root_has_none() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cluster = format!(
        "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
        registry.addr()
    );
    workspace(
        root,
        "",
        &[("svc", Some(HELLO), &cluster), ("script", Some(HELLO), "")],
    );
    let outputs = root.join("github_output");
    let out = adapt_push(root.join("Cargo.toml"))
        .arg("--workspace")
        .env("GITHUB_OUTPUT", outputs.to_str().unwrap())
        .run();
    out.assert_ok();
    let reference = out.stdout.trim().to_string();
    assert!(reference.starts_with(&format!("{}/svc@sha256:", registry.addr())));
    // One image: plain keys.
    let text = std::fs::read_to_string(&outputs).unwrap();
    let digest = reference.split_once('@').unwrap().1;
    assert_eq!(text, format!("pull-ref={reference}\ndigest={digest}\n"));
}

#[test]
fn config_errors_become_github_annotations_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "bad",
        "\n[package.metadata.cluster]\nregistry = \"localhost:5000\"\ntags = [\"{nope}\"]\n",
        HELLO,
    );
    let out = adapt_push(&manifest).env("GITHUB_ACTIONS", "true").run();
    assert_eq!(out.status.code(), Some(1));
    let err = &out.stderr;
    let expected = format!("::error file={},line=8::", manifest.display());
    assert!(err.contains(&expected), "lacks {expected}:\n{err}");
    assert!(err.contains("unknown placeholder"), "{err}");
    // Not under Actions: no annotation.
    let out = adapt_push(&manifest).run();
    assert!(!out.stderr.contains("::error"));
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef"),
        ("fish", "complete -c"),
    ] {
        let out = tool().args(["adapt-push", "completions", shell]).run();
        out.assert_ok();
        let text = &out.stdout;
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("registry-external"), "{shell}");
        assert!(text.contains("resolve"), "{shell}");
    }
}

/// A Docker config directory holding one context, `name`, whose engine is at `host`.
fn docker_config_with_context(dir: &Path, name: &str, host: &str, current: Option<&str>) {
    use sha2::Digest;
    let id = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let meta = dir.join("contexts/meta").join(id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        serde_json::json!({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}}).to_string(),
    )
    .unwrap();
    let config = match current {
        Some(c) => serde_json::json!({"auths": {}, "currentContext": c}),
        None => serde_json::json!({"auths": {}}),
    };
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn the_engine_comes_from_docker_context_or_the_current_context() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        &dir.path().join("ctx"),
        "ctx",
        "\n[package.metadata.cluster]\nregistry = \"localhost:5000/ctx-test\"\n",
        HELLO,
    );
    let config_dir = dir.path().join("docker-config");
    // An unknown context is an error naming it; nothing falls back to another engine.
    docker_config_with_context(&config_dir, "private", "unix:///nonexistent.sock", None);
    let out = tool()
        .args(["adapt-push", "--load", "--manifest-path"])
        .arg(&manifest)
        .env("DOCKER_CONFIG", &config_dir)
        .env("DOCKER_CONTEXT", "missing")
        .run();
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(
        err.contains("docker context `missing`") && err.contains("no such context"),
        "{err}"
    );

    let Some(host) = docker_host() else { return };
    let name = "localhost:5000/ctx-test/ctx:latest";
    for (context_env, current) in [(Some("private"), None), (None, Some("private"))] {
        docker_config_with_context(&config_dir, "private", &host, current);
        let mut cmd = tool();
        cmd.args(["adapt-push", "--load", "--manifest-path"])
            .arg(&manifest)
            .env("DOCKER_CONFIG", &config_dir);
        if let Some(c) = context_env {
            cmd.env("DOCKER_CONTEXT", c);
        }
        cmd.run().assert_ok();
        assert_eq!(
            docker_ok(&host, &["run", "--rm", name]),
            "hello",
            "loaded through the context's engine"
        );
        let _ = docker(&host, &["rmi", "-f", name]);
    }
}
