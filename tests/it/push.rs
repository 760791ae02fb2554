//! The core path against a real registry (Debian's docker-registry): split push, workspace
//! inheritance, config errors, reproducibility, tags, JSON and --image-refs, base images.

use std::path::Path;

use crate::common::*;

fn split_config(external: &str, internal: &str, extra: &str) -> String {
    format!(
        "\n[package.metadata.cluster]\nregistry = {{ external = \"{external}\", internal = \"{internal}\" }}\n{extra}"
    )
}

/// Splits `host/repo@sha256:hex` into (host, repo, digest).
fn split_ref(reference: &str) -> (String, String, String) {
    let (name, digest) = reference.split_once('@').expect("digest-pinned reference");
    let (host, repo) = name.split_once('/').expect("host/repo");
    (host.to_string(), repo.to_string(), digest.to_string())
}

#[test]
fn split_push_never_contacts_internal_and_the_reference_pulls_through_it() {
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "greeter",
        &split_config(
            &registry.addr(),
            &internal.addr(),
            "image = \"team/greeter\"\ntags = [\"{version}\", \"latest\"]\n",
        ),
        HELLO_ONCE,
    );

    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let text = &out.stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly the pull reference: {text:?}"
    );
    let (host, repo, digest) = split_ref(lines[0]);
    assert_eq!(
        host,
        internal.addr(),
        "the pull reference names the internal address"
    );
    assert_eq!(repo, "team/greeter");
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(
        internal.connections(),
        0,
        "the push must never touch the internal address"
    );

    // Both tags were pushed, and they point at the printed digest.
    let mut tags = registry.tags("team/greeter");
    tags.sort();
    assert_eq!(tags, vec!["0.1.0", "latest"]);
    let (status, headers, _) = registry.manifest("team/greeter", "0.1.0");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "Docker-Content-Digest"),
        Some(digest.as_str())
    );

    // The printed reference resolves through the internal address.
    let (status, headers, body) = http_get(
        &internal.addr(),
        &format!("/v2/{repo}/manifests/{digest}"),
        MANIFEST_ACCEPT,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        header(&headers, "Docker-Content-Digest"),
        Some(digest.as_str())
    );
    assert!(internal.connections() > 0);
    let manifest_json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for layer in manifest_json["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let (status, _, _) = http_request(
            &internal.addr(),
            "HEAD",
            &format!("/v2/{repo}/blobs/{d}"),
            &[],
        );
        assert_eq!(status, 200, "layer {d} reachable through internal");
    }

    // Where an engine runs: pull through the internal address and run it.
    if let Some(host) = docker_host() {
        assert_eq!(
            docker_pull_run(&host, lines[0], &["--once"]),
            "hello from greeter 0.1.0"
        );
    }
}

/// The split with different paths: pushed to `registry/team/greeter`, pulled as
/// `cache/proxy/team/greeter`. A path-rewriting proxy in front of the same registry stands in
/// for a pull-through cache or mirror (it serves the same digests under another path).
#[test]
fn split_with_different_paths_pulls_through_the_rewriting_address_and_check_pull_verifies_it() {
    let registry = TestRegistry::start();
    let cache = PathRewritingProxy::start(&registry.addr(), "proxy", "");
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "greeter",
        &split_config(
            &format!("{}/team", registry.addr()),
            &format!("{}/proxy/team", cache.addr()),
            "image = \"greeter\"\n",
        ),
        HELLO_ONCE,
    );

    // Without --check-pull the internal address is never contacted.
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let reference = out.stdout.trim().to_string();
    let (host, repo, digest) = split_ref(&reference);
    assert_eq!(host, cache.addr());
    assert_eq!(repo, "proxy/team/greeter");
    assert_eq!(cache.requests(), 0, "the push must not touch internal");
    assert_eq!(registry.tags("team/greeter"), vec!["latest"]);

    // The printed reference resolves through the second address, by digest.
    let (status, headers, _) = http_get(
        &cache.addr(),
        &format!("/v2/{repo}/manifests/{digest}"),
        MANIFEST_ACCEPT,
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "Docker-Content-Digest"),
        Some(digest.as_str())
    );

    // --check-pull asks the internal address for the manifest by digest.
    let before = cache.requests();
    let out = adapt_push(&manifest).arg("--check-pull").run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), reference);
    assert!(cache.requests() > before, "--check-pull contacted internal");

    // A wrong internal path is caught here, not as ImagePullBackOff in the cluster.
    let wrong = format!("{}/elsewhere", cache.addr());
    let out = adapt_push(&manifest)
        .args(["--check-pull", "--registry-internal", &wrong])
        .run();
    assert!(
        !out.status.success(),
        "a wrong internal must fail the check"
    );
    let err = &out.stderr;
    assert!(err.contains("--check-pull"), "{err}");
    assert!(err.contains(&format!("{wrong}/greeter@{digest}")), "{err}");

    if let Some(host) = docker_host() {
        assert_eq!(
            docker_pull_run(&host, &reference, &["--once"]),
            "hello from greeter 0.1.0"
        );
    }
}

#[test]
fn example_project_pushes_with_env_overrides_and_runs() {
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_project(), dir.path());
    let out = adapt_push(dir.path().join("Cargo.toml"))
        .env("ADAPT_PUSH_REGISTRY_EXTERNAL", registry.addr())
        .env("ADAPT_PUSH_REGISTRY_INTERNAL", internal.addr())
        .run();
    out.assert_ok();
    let reference = out.stdout.trim().to_string();
    assert!(
        reference.starts_with(&format!("{}/demo/greeter@sha256:", internal.addr())),
        "{reference}"
    );
    assert_eq!(internal.connections(), 0);
    if let Some(host) = docker_host() {
        assert_eq!(
            docker_pull_run(&host, &reference, &["--once"]),
            "hello from greeter 0.1.0"
        );
    }
}

#[test]
fn json_output_and_image_refs_file() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "svc",
        &split_config(&registry.addr(), "registry:5000", ""),
        HELLO_ONCE,
    );
    let refs = dir.path().join("refs.txt");
    let out = adapt_push(&manifest)
        .args([
            "--format",
            "json",
            "--image-refs",
            refs.to_str().unwrap(),
            "--tag",
            "v1",
            "--tag",
            "v2",
        ])
        .run();
    out.assert_ok();
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("stdout is one JSON document");
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    assert_eq!(image["package"], "svc");
    assert_eq!(image["bin"], "svc");
    assert_eq!(image["builder"], "oci");
    assert_eq!(image["pull_ref"], format!("registry:5000/svc@{digest}"));
    assert_eq!(
        image["push_ref"],
        format!("{}/svc@{digest}", registry.addr())
    );
    assert_eq!(image["tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(
        std::fs::read_to_string(&refs).unwrap(),
        format!("registry:5000/svc@{digest}\n")
    );
    let mut tags = registry.tags("svc");
    tags.sort();
    assert_eq!(tags, vec!["v1", "v2"], "--tag replaces `tags`");
}

#[test]
fn reproducible_across_cargo_clean_and_source_date_epoch_changes_only_time() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "repro",
        &split_config(&registry.addr(), &registry.addr(), ""),
        HELLO_ONCE,
    );
    let first = adapt_push(&manifest).arg("-q").run();
    first.assert_ok();
    assert!(
        first.stderr.is_empty(),
        "-q leaves stderr silent: {}",
        first.stderr
    );
    let status = std::process::Command::new("cargo")
        .arg("clean")
        .arg("--manifest-path")
        .arg(&manifest)
        .status()
        .unwrap();
    assert!(status.success());
    let second = adapt_push(&manifest).arg("-q").run();
    second.assert_ok();
    assert_eq!(
        first.stdout, second.stdout,
        "same source, same digest, also after cargo clean"
    );

    let (_, repo, digest) = split_ref(first.stdout.trim());
    let (_, _, body) = registry.manifest(&repo, &digest);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let (_, _, config) = http_get(
        &registry.addr(),
        &format!("/v2/{repo}/blobs/{config_digest}"),
        "",
    );
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/repro"])
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );

    let dated = adapt_push(&manifest)
        .arg("-q")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .run();
    dated.assert_ok();
    assert_ne!(
        dated.stdout, first.stdout,
        "SOURCE_DATE_EPOCH changes the timestamps"
    );
}

#[test]
fn a_code_change_uploads_only_the_binary_layer() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/motd.txt"), "hi\n").unwrap();
    let manifest = write_crate(
        dir.path(),
        "layered",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "include = [{ from = \"assets\", to = \"/srv/assets\" }]\n",
        ),
        HELLO_ONCE,
    );
    let first = adapt_push(&manifest).run();
    first.assert_ok();
    std::fs::write(
        dir.path().join("src/main.rs"),
        HELLO_ONCE.replace("hello from", "hi from"),
    )
    .unwrap();
    let second = adapt_push(&manifest).run();
    second.assert_ok();
    assert_ne!(first.stdout, second.stdout);
    // Binary layer and config are new; runtime closure and includes are already there.
    assert!(
        second.stderr.contains("(2 uploaded") && second.stderr.contains("2 already there"),
        "{}",
        second.stderr
    );
}

#[test]
fn tags_render_templates() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "tagged",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "tags = [\"{version}\", \"{package}-{bin}\", \"git-{git_short_sha}\"]\n",
        ),
        HELLO_ONCE,
    );
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "init"]);
    let sha = git(&["rev-parse", "HEAD"]);
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let mut tags = registry.tags("tagged");
    tags.sort();
    let mut expected = vec![
        "0.1.0".to_string(),
        "tagged-tagged".into(),
        format!("git-{}", &sha[..7]),
    ];
    expected.sort();
    assert_eq!(tags, expected);
}

#[test]
fn workspace_defaults_and_package_selection() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [\"a/svc\", \"b/svc\", \"tools\"]\nresolver = \"2\"\n\n\
             [workspace.metadata.cluster]\nregistry = {{ external = \"{}\", internal = \"registry:5000\" }}\ntags = [\"ws-{{version}}\"]\nenv = {{ FROM = \"workspace\", LEVEL = \"ws\" }}\n",
            registry.addr()
        ),
    )
    .unwrap();
    let member = |path: &str, name: &str, extra: &str| {
        let d = root.join(path);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.2.0\"\nedition = \"2021\"\n{extra}"
            ),
        )
        .unwrap();
        std::fs::write(d.join("src/main.rs"), HELLO_ONCE).unwrap();
    };
    // Two packages whose directories share a basename must not collide.
    member(
        "a/svc",
        "alpha",
        "\n[package.metadata.cluster]\nimage = \"a/svc\"\nenv = { LEVEL = \"pkg\" }\n",
    );
    member("b/svc", "beta", "\n[package.metadata.cluster]\n");
    member("tools", "tools", "");

    // At the virtual root without -p: an error that lists the packages with settings.
    let out = adapt_push(root.join("Cargo.toml")).run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = &out.stderr;
    assert!(
        err.contains("virtual workspace") && err.contains("alpha") && err.contains("beta"),
        "{err}"
    );
    assert!(registry.tags("a/svc").is_empty());

    // -p picks a member; workspace tags and env are inherited; package keys win.
    let out = adapt_push(root.join("Cargo.toml"))
        .args(["-p", "alpha", "--format", "json"])
        .run();
    out.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        json["images"][0]["pull_ref"]
            .as_str()
            .unwrap()
            .starts_with("registry:5000/a/svc@sha256:")
    );
    assert_eq!(registry.tags("a/svc"), vec!["ws-0.2.0"]);
    let (_, _, body) = registry.manifest("a/svc", "ws-0.2.0");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let cfg = m["config"]["digest"].as_str().unwrap();
    let (_, _, config) = http_get(&registry.addr(), &format!("/v2/a/svc/blobs/{cfg}"), "");
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"FROM=workspace") && env.contains(&"LEVEL=pkg"),
        "{env:?}"
    );

    // From inside a member's directory, that member (image defaults to the package name).
    let out = tool()
        .arg("adapt-push")
        .current_dir(root.join("b/svc"))
        .run();
    out.assert_ok();
    assert!(
        out.stdout.starts_with("registry:5000/beta@sha256:"),
        "{}",
        out.stdout
    );
    assert_eq!(registry.tags("beta"), vec!["ws-0.2.0"]);
}

#[test]
fn dry_run_pushes_nothing() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "planned",
        &split_config(&registry.addr(), "registry:5000", ""),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).arg("--dry-run").run();
    out.assert_ok();
    let text = &out.stdout;
    assert!(
        text.contains(&format!("{}/planned", registry.addr()))
            && text.contains("registry:5000/planned"),
        "{text}"
    );
    assert!(registry.tags("planned").is_empty());
    assert!(
        !dir.path().join("target").exists(),
        "a dry run builds nothing"
    );
}

/// Every config mistake: non-zero exit, a message naming the key and the Cargo.toml (with the
/// line), nothing on stdout, nothing pushed.
#[test]
fn config_errors_name_key_file_and_line() {
    let registry = TestRegistry::start();
    let r = registry.addr();
    // (cluster table body, expected fragments of stderr)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("registry = \"{r}\"\nimgae = \"x\""),
            vec!["unknown key `imgae`", "did you mean `image`", "Cargo.toml:"],
        ),
        (
            format!("registry = {{ external = \"{r}\" }}"),
            vec!["no `internal`", "registry"],
        ),
        (
            format!("registry = {{ external = \"{r}\", internal = \"r:1\", other = \"x\" }}"),
            vec!["registry.other"],
        ),
        (
            "registry = \"ftp://host:5000\"".into(),
            vec!["unsupported scheme", "registry"],
        ),
        ("registry = \"localhost:99999\"".into(), vec!["port number"]),
        (
            format!("registry = \"{r}\"\nimage = \"Team/App\""),
            vec!["`image`", "uppercase"],
        ),
        (
            format!("registry = \"{r}\"\ntags = \"latest\""),
            vec!["`tags` must be an array"],
        ),
        (
            format!("registry = \"{r}\"\ntags = [\"{{nope}}\"]"),
            vec!["unknown placeholder `{nope}`"],
        ),
        (
            format!("registry = \"{r}\"\ntags = [\"bad tag\"]"),
            vec!["not valid"],
        ),
        (
            format!("registry = \"{r}\"\nenv = {{ PORT = 8080 }}"),
            vec!["`env.PORT` must be a string", "quote the value"],
        ),
        (
            format!("registry = \"{r}\"\nuser = \"app\""),
            vec!["`user`", "numeric"],
        ),
        (
            format!("registry = \"{r}\"\nmedia-types = \"v1\""),
            vec![
                "unknown media types `v1`",
                "\"oci\" or \"docker\"",
                "Cargo.toml:",
            ],
        ),
        (
            format!("registry = \"{r}\"\ncheck-base = \"no\""),
            vec!["`check-base` must be true or false"],
        ),
        (
            format!("registry = \"{r}\"\ninclude = [\"missing.txt\"]"),
            vec!["`include`", "missing.txt", "does not exist"],
        ),
        (
            format!("registry = \"{r}\"\nbuilder = \"kaniko\""),
            vec!["unknown builder `kaniko`"],
        ),
        (
            format!("registry = \"{r}\"\ncompression = \"brotli\""),
            vec!["`compression`", "brotli", "zstd"],
        ),
        (
            format!("registry = \"{r}\"\nbin = \"other\""),
            vec!["no binary named `other`"],
        ),
        (
            format!("registry = \"{r}\"\nbase = \"Not A Ref\""),
            vec!["`base`", "not an image reference"],
        ),
        ("image = \"x\"".into(), vec!["no registry to push to"]),
        (
            format!("registry = {{ external = \"{r}\", internal = \"registry\" }}"),
            vec!["registry.internal", "Docker Hub", "registry:5000"],
        ),
        (
            format!("registry = \"{r}\"\npull = \"yes\""),
            vec!["`pull` must be true or false"],
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_crate(
            dir.path(),
            "bad",
            &format!("\n[package.metadata.cluster]\n{body}\n"),
            HELLO_ONCE,
        );
        let out = adapt_push(&manifest).run();
        let err = &out.stderr;
        assert!(!out.status.success(), "case {i} ({body}) should fail");
        assert!(
            out.stdout.is_empty(),
            "case {i}: stdout must stay empty: {}",
            out.stdout
        );
        assert!(!err.contains("panicked"), "case {i}: {err}");
        for fragment in expected {
            assert!(
                err.contains(fragment),
                "case {i} ({body}): stderr lacks {fragment:?}:\n{err}"
            );
        }
        assert!(
            err.contains(manifest.to_str().unwrap()),
            "case {i}: names the Cargo.toml:\n{err}"
        );
        assert!(
            !dir.path().join("target").exists(),
            "case {i}: nothing built"
        );
    }
    let (status, _, body) = http_get(&registry.addr(), "/v2/_catalog", "");
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!([]),
        "nothing was pushed"
    );
}

#[test]
fn base_image_layers_are_mounted_in_the_same_registry_and_copied_across_registries() {
    let registry = TestRegistry::start();
    let other = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // A base image: pushed by the tool itself into `other/base`.
    let base_manifest = write_crate(
        &dir.path().join("base"),
        "base",
        &split_config(
            &other.addr(),
            &other.addr(),
            "image = \"base\"\ntags = [\"1\"]\n",
        ),
        HELLO_ONCE,
    );
    adapt_push(&base_manifest).run().assert_ok();
    // And the same base in the destination registry, under another repository.
    adapt_push(&base_manifest)
        .args(["--registry", &registry.addr()])
        .run()
        .assert_ok();

    let app = |base: String| {
        let d = tempfile::tempdir().unwrap();
        let manifest = write_crate(
            d.path(),
            "app",
            &split_config(
                &registry.addr(),
                "registry:5000",
                &format!("base = \"{base}\"\nenv = {{ MODE = \"on-base\" }}\n"),
            ),
            HELLO_ONCE,
        );
        let out = adapt_push(&manifest).arg("-v").run();
        out.assert_ok();
        (d, out)
    };
    let (_d1, same) = app(format!("{}/base:1", registry.addr()));
    assert!(
        same.stderr.contains("mounted base layer 1/2 from base"),
        "{}",
        same.stderr
    );
    let (_d2, across) = app(format!("{}/base:1", other.addr()));
    assert!(across.stdout.starts_with("registry:5000/app@sha256:"));

    // Every blob of the final manifest exists in the destination registry.
    let (_, _, digest) = split_ref(across.stdout.trim());
    let (status, _, body) = registry.manifest("app", &digest);
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.len() >= 3, "base layers plus ours: {m}");
    for layer in layers {
        let d = layer["digest"].as_str().unwrap();
        let (status, _, _) =
            http_request(&registry.addr(), "HEAD", &format!("/v2/app/blobs/{d}"), &[]);
        assert_eq!(status, 200, "blob {d}");
    }
    if let Some(host) = docker_host() {
        let reference = format!("{}/app@{digest}", registry.addr());
        assert_eq!(
            docker_pull_run(&host, &reference, &["--once"]),
            "hello from app 0.1.0"
        );
    }
}

#[test]
fn an_unreachable_registry_fails_with_its_address() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let manifest = write_crate(
        dir.path(),
        "lonely",
        &split_config(&addr, "registry:5000", ""),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest)
        .env("ADAPT_PUSH_RETRY_TIMEOUT", "3")
        .run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = &out.stderr;
    assert!(err.contains(&addr) && err.contains("cannot reach"), "{err}");
}

#[test]
fn a_static_binary_goes_in_alone_and_runs_from_scratch() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "lone",
        &split_config(&registry.addr(), &registry.addr(), ""),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest)
        .arg("-v")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run();
    out.assert_ok();
    assert!(out.stderr.contains("statically linked"), "{}", out.stderr);
    let (_, repo, digest) = split_ref(out.stdout.trim());
    // Every file in the image: the system files a scratch image carries (users, name service
    // settings), the CA bundle and the binary (plus their directories); no libraries.
    let files = image_files(&registry, &repo, &digest);
    let expected: Vec<&str> = if Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        vec![
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/lone",
        ]
    } else {
        vec![
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "usr/local/bin/lone",
        ]
    };
    assert_eq!(files, expected);
    if let Some(host) = docker_host() {
        let reference = out.stdout.trim().to_string();
        assert_eq!(
            docker_pull_run(&host, &reference, &["--once"]),
            "hello from lone 0.1.0"
        );
    }
}

#[test]
fn a_compile_error_in_one_package_pushes_nothing_at_all() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [\"api\", \"worker\"]\nresolver = \"2\"\n\n\
             [workspace.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
    )
    .unwrap();
    for (name, main) in [
        ("api", HELLO_ONCE),
        ("worker", "fn main() { this is not rust }\n"),
    ] {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        )
        .unwrap();
        std::fs::write(d.join("src/main.rs"), main).unwrap();
    }
    let out = adapt_push(root.join("Cargo.toml"))
        .args(["-p", "api", "-p", "worker"])
        .run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("`cargo build` failed for package `worker`"),
        "{}",
        out.stderr
    );
    assert!(
        registry.tags("api").is_empty(),
        "api must not be pushed when worker fails to build"
    );
}

#[test]
fn empty_environment_settings_mean_unset_and_several_binaries_get_their_own_repositories() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "multi",
        &format!(
            "default-run = \"one\"\n\n[[bin]]\nname = \"one\"\npath = \"src/main.rs\"\n\n[[bin]]\nname = \"two\"\npath = \"src/main.rs\"\n{}",
            split_config(&registry.addr(), &registry.addr(), "tags = [\"cfg\"]\n")
        ),
        HELLO_ONCE,
    );
    for bin in ["one", "two"] {
        let out = adapt_push(&manifest)
            .args(["--bin", bin])
            .env("ADAPT_PUSH_TAGS", "")
            .env("ADAPT_PUSH_FORMAT", "")
            .run();
        out.assert_ok();
        assert!(
            out.stdout
                .starts_with(&format!("{}/multi-{bin}@sha256:", registry.addr())),
            "{}",
            out.stdout
        );
        assert_eq!(
            registry.tags(&format!("multi-{bin}")),
            vec!["cfg"],
            "empty ADAPT_PUSH_TAGS is unset"
        );
    }
}

#[test]
fn includes_behave_like_copy() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("data.txt"), "data\n").unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("app.toml"), "x = 1\n").unwrap();
    let manifest = write_crate(
        dir.path(),
        "inc",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "include = [{ from = \"link\", to = \"/srv/data\" }, { from = \"app.toml\", to = \"/etc/inc/\" }]\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let files = image_files(&registry, &repo, &digest);
    assert!(
        files.contains(&"srv/data/data.txt".to_string()),
        "a linked directory is followed: {files:?}"
    );
    assert!(
        files.contains(&"etc/inc/app.toml".to_string()),
        "`to` ending in / is a directory: {files:?}"
    );
}

#[test]
fn a_dynamic_binary_on_a_base_without_its_c_library_is_refused_before_any_push() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // The base: a static binary on scratch, so it has no loader and no libc.
    let base_manifest = write_crate(
        &dir.path().join("base"),
        "nolibc",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "image = \"nolibc\"\ntags = [\"1\"]\n",
        ),
        HELLO_ONCE,
    );
    adapt_push(&base_manifest)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run()
        .assert_ok();

    let app = |extra: &str| {
        write_crate(
            &dir.path().join("app"),
            "dynapp",
            &split_config(
                &registry.addr(),
                &registry.addr(),
                &format!(
                    "base = \"{}/nolibc:1\"\ntags = [\"v1\"]\n{extra}",
                    registry.addr()
                ),
            ),
            HELLO_ONCE,
        )
    };
    let out = adapt_push(app("")).run();
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let err = &out.stderr;
    // What is missing, and the ways out.
    assert!(err.contains("cannot start"), "{err}");
    assert!(err.contains("ld-linux"), "the loader is named: {err}");
    assert!(err.contains("libc.so.6"), "the C library is named: {err}");
    assert!(err.contains("crt-static"), "{err}");
    assert!(err.contains("scratch"), "{err}");
    assert!(err.contains("check-base = false"), "{err}");
    assert!(
        registry.tags("dynapp").is_empty(),
        "nothing may be tagged when the base cannot run the binary"
    );

    // Turned off, the same push goes through (the user knows better about an exotic base).
    let out = adapt_push(app("check-base = false\n")).run();
    out.assert_ok();
    assert_eq!(registry.tags("dynapp"), ["v1"]);
}

#[test]
fn a_scratch_image_can_carry_the_hosts_time_zones() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "tz",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "tzdata = true\nuser = \"nonroot\"\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let files = image_files(&registry, &repo, &digest);
    for zone in ["usr/share/zoneinfo/Europe/Paris", "etc/passwd", "etc/group"] {
        assert!(files.iter().any(|f| f == zone), "{zone} missing: {files:?}");
    }
}

#[test]
fn the_base_check_follows_the_bases_ld_so_conf() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // A base whose C library sits in /opt/libs, a directory only its ld.so.conf names. Made by
    // the tool itself from the host's loader and libraries (a static binary on scratch).
    let make_base = |name: &str, with_conf: bool| {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("libs")).unwrap();
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        for lib in ["libc.so.6", "libgcc_s.so.1"] {
            std::fs::copy(
                Path::new("/lib/x86_64-linux-gnu").join(lib),
                root.join("libs").join(lib),
            )
            .unwrap();
        }
        // `include` takes only what is in the package, like COPY.
        std::fs::copy(
            "/lib64/ld-linux-x86-64.so.2",
            root.join("ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::fs::write(
            root.join("ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(root.join("conf.d/opt.conf"), "# ours\n/opt/libs\n").unwrap();
        let conf = if with_conf {
            ", { from = \"ld.so.conf\", to = \"/etc/ld.so.conf\" }, { from = \"conf.d\", to = \"/etc/ld.so.conf.d\" }"
        } else {
            ""
        };
        let manifest = write_crate(
            &root,
            name,
            &split_config(
                &registry.addr(),
                &registry.addr(),
                &format!(
                    "tags = [\"1\"]\ninclude = [{{ from = \"libs\", to = \"/opt/libs\" }}, \
                     {{ from = \"ld-linux-x86-64.so.2\", to = \"/lib64/ld-linux-x86-64.so.2\" }}{conf}]\n"
                ),
            ),
            HELLO_ONCE,
        );
        adapt_push(&manifest)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .run()
            .assert_ok();
        format!("{}/{name}:1", registry.addr())
    };
    let with_conf = make_base("confbase", true);
    let without_conf = make_base("bareconf", false);

    let app = |base: &str, name: &str| {
        let manifest = write_crate(
            &dir.path().join(name),
            name,
            &split_config(
                &registry.addr(),
                &registry.addr(),
                &format!("base = \"{base}\"\n"),
            ),
            HELLO_ONCE,
        );
        adapt_push(&manifest).arg("-v").run()
    };
    let out = app(&with_conf, "onconf");
    out.assert_ok();
    let out = app(&without_conf, "onbare");
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(err.contains("it has no libc.so.6"), "{err}");
    assert!(
        !err.contains("program interpreter"),
        "the loader is there: {err}"
    );
    assert!(registry.tags("onbare").is_empty());
}

/// A layer larger than one monolithic PUT (16 MiB) goes up in a streamed PATCH read from the
/// layer cache; what the registry stores decompresses to the very bytes included, across blocks
/// that were deflated and blocks that were stored (random data).
#[test]
fn a_large_layer_streams_from_the_cache_and_round_trips() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x1234_5678_u32;
    let mut big: Vec<u8> = (0..18 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    big.extend(
        b"a compressible line of text\n"
            .iter()
            .cycle()
            .take(4 << 20),
    );
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    let manifest = write_crate(
        dir.path(),
        "large",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "include = [{ from = \"big.bin\", to = \"/data/big.bin\" }]\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let (status, _, body) = registry.manifest(&repo, &digest);
    assert_eq!(status, 200);
    let image: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut found = false;
    for layer in image["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let blob = registry.blob(&repo, d);
        assert_eq!(layer["size"].as_u64().unwrap(), blob.len() as u64);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_string_lossy() == "data/big.bin" {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
                assert!(content == big, "the included file changed on the way");
                assert!(blob.len() > 16 << 20, "not over the monolithic limit");
                assert!(blob.len() < big.len(), "the text half was not compressed");
                found = true;
            }
        }
    }
    assert!(found, "the included file is not in the image");
}

/// `compression = "zstd"`: every layer of ours is a zstd stream with the OCI zstd media type,
/// and it reads back to the binary.
#[test]
fn zstd_layers_when_asked() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "zapp",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "compression = \"zstd\"\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let (status, _, body) = registry.manifest(&repo, &digest);
    assert_eq!(status, 200);
    let image: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut files = Vec::new();
    for layer in image["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let d = layer["digest"].as_str().unwrap();
        let blob = registry.blob(&repo, d);
        let tar = zstd::stream::decode_all(&blob[..]).unwrap();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            files.push(
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(
        files.contains(&"usr/local/bin/zapp".to_string()),
        "{files:?}"
    );
}
