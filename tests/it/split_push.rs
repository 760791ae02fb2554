//! The split registry, the core path, against a real registry (Debian's docker-registry): the
//! push goes through `external` and never touches `internal`; the printed reference pulls
//! through `internal`, also under another path (a mirror), which `--check-pull` verifies; the
//! example project, configured through the environment, pushes and runs.

use crate::common::*;

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
