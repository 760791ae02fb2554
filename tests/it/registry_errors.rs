//! Errors a user can act on, against the real registry (Debian's docker-registry): a base image
//! that does not exist, and (injected by an HTTP proxy in front of it, because distribution 2.8
//! has neither upload size limits nor quotas) a blob too large and a full quota, as a proxy
//! with a body size limit or a registry with quotas (Harbor, GitLab) answers them. Each exits
//! non-zero without a panic, says what happened and what to do, and tags nothing.

use crate::common::faults::{Fault, HttpFaultProxy, HttpFaults};
use crate::common::*;

#[test]
fn a_base_image_that_does_not_exist_is_named() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{}/nope/base:1.0", registry.addr());
    let manifest = crate_for(
        dir.path(),
        &registry.addr(),
        "errors/base",
        &format!("base = \"{base}\""),
        "base",
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    assert!(run.stderr.contains("nope/base:1.0"), "{}", run.stderr);
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
    assert!(run.stderr.contains(&registry.addr()), "{}", run.stderr);
    assert_eq!(assert_consistent(&registry.addr(), None), 0);
}

fn upload_fault(fault: Fault) -> HttpFaults {
    HttpFaults {
        period: 1,
        offset: 0,
        burst: vec![fault],
        method: Some("PUT".into()),
        path_contains: Some("/blobs/uploads/".into()),
        ..HttpFaults::default()
    }
}

#[test]
fn a_blob_too_large_says_so() {
    let registry = TestRegistry::start();
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        upload_fault(Fault::error(
            413,
            "SIZE_INVALID",
            "request entity too large",
        )),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &proxy.addr(), "errors/large", "", "large");
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    assert!(run.stderr.contains("413"), "{}", run.stderr);
    assert!(
        run.stderr.contains("larger than the registry"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&proxy.addr()), "{}", run.stderr);
    // Not retried: a size limit does not go away.
    let puts = proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "PUT")
        .count();
    assert!(puts <= 3, "{puts} PUTs: {:?}", proxy.exchanges());
    assert_eq!(assert_consistent(&registry.addr(), None), 0);
}

#[test]
fn a_full_quota_says_so() {
    let registry = TestRegistry::start();
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        upload_fault(Fault::error(403, "DENIED", "storage quota exceeded")),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &proxy.addr(), "errors/quota", "", "quota");
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    assert!(run.stderr.contains("quota"), "{}", run.stderr);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert_eq!(assert_consistent(&registry.addr(), None), 0);
}

/// A registry that refuses OCI manifests (older Quay, Artifactory and ECR setups). Debian's
/// distribution takes both kinds, so a proxy in front of it stands in for that protocol corner:
/// it answers every PUT of an OCI manifest with MANIFEST_INVALID and passes the rest through.
#[test]
fn a_registry_refusing_oci_manifests_gets_docker_schema_2() {
    let registry = TestRegistry::start();
    let detail = "unsupported manifest media type application/vnd.oci.image.manifest.v1+json";
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1,
            offset: 0,
            burst: vec![Fault {
                body: Some(format!(
                    r#"{{"errors":[{{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"{detail}"}}]}}"#
                )),
                ..Fault::status(400)
            }],
            method: Some("PUT".into()),
            path_contains: Some("/manifests/".into()),
            content_type_contains: Some("application/vnd.oci.image.manifest".into()),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(
        dir.path(),
        &proxy.addr(),
        "errors/mediatypes",
        "tags = [\"v1\", \"latest\"]",
        "mediatypes",
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    // The warning says what happened (with the registry's own detail) and how to choose.
    assert!(run.stderr.contains("MANIFEST_INVALID"), "{}", run.stderr);
    assert!(run.stderr.contains(detail), "{}", run.stderr);
    assert!(run.stderr.contains("Docker schema 2"), "{}", run.stderr);
    assert!(run.stderr.contains("media-types"), "{}", run.stderr);
    // Such a registry cannot hold OCI 1.1 referrers either: the image stands, the user is told.
    assert!(
        run.stderr
            .contains("does not accept OCI artifact manifests"),
        "{}",
        run.stderr
    );
    // The digest reported is the one the registry holds, a Docker schema 2 manifest, and
    // every tag points at it.
    let digest = run.stdout.trim().rsplit('@').next().unwrap().to_string();
    let (status, headers, body) = registry.manifest("errors/mediatypes", &digest);
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for layer in m["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    assert_eq!(
        header(&headers, "docker-content-digest"),
        Some(digest.as_str())
    );
    for tag in ["v1", "latest"] {
        let (_, headers, _) = registry.manifest("errors/mediatypes", tag);
        assert_eq!(
            header(&headers, "docker-content-digest"),
            Some(digest.as_str()),
            "{tag}"
        );
    }
    assert_eq!(assert_consistent(&registry.addr(), None), 2);

    // Asked for directly, the same image goes up as Docker schema 2 without a refusal.
    // (Without the SBOM and provenance, whose OCI artifact manifests this registry refuses.)
    let run = adapt_push(&manifest)
        .args([
            "--media-types",
            "docker",
            "--sbom",
            "none",
            "--provenance",
            "false",
        ])
        .shared_target_dir()
        .run();
    run.assert_ok();
    assert!(!run.stderr.contains("MANIFEST_INVALID"), "{}", run.stderr);
    assert!(run.stdout.trim().ends_with(&digest), "{}", run.stdout);
}

/// An upload POST sent round in a redirect loop. Stand-in: the HTTP fault proxy in front of the
/// real registry answers every POST with `307` and a `Location` back to the upload URL with a
/// session-like query, as a misconfigured registry or proxy would (a real registry does not
/// loop). The error says it was a loop and shows the addresses, redacted, instead of asking
/// whether the registry runs; and a loop is not retried.
#[test]
fn a_redirect_loop_says_so_and_shows_the_addresses() {
    let registry = TestRegistry::start();
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1,
            offset: 0,
            burst: vec![Fault {
                headers: vec![(
                    "Location".into(),
                    "/v2/errors/loop/blobs/uploads/?_state=s3cr3t-session&hop=1".into(),
                )],
                ..Fault::status(307)
            }],
            method: Some("POST".into()),
            path_contains: Some("/blobs/uploads/".into()),
            ..HttpFaults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &proxy.addr(), "errors/loop", "", "loop");
    let run = adapt_push(&manifest).arg("-vv").shared_target_dir().run();
    run.assert_failed();
    let said = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("redirected in a loop (HTTP 307)"),
        "{}",
        run.stderr
    );
    assert!(
        said.contains(&format!(
            "http://{}/v2/errors/loop/blobs/uploads/?_state=…&hop=… → http://{}/v2/errors/loop/blobs/uploads/?_state=…&hop=…",
            proxy.addr(),
            proxy.addr()
        )),
        "{}",
        run.stderr
    );
    assert!(
        !said.contains("check that the registry runs"),
        "{}",
        run.stderr
    );
    assert!(!said.contains("s3cr3t-session"), "{}", run.stderr);
    assert_no_upload_state(&run.stderr);
    // One loop per upload attempt, not one per retry: a loop does not go away.
    let posts = proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "POST")
        .count();
    assert!(posts <= 8, "{posts} POSTs: {:?}", proxy.exchanges());
    assert_eq!(assert_consistent(&registry.addr(), None), 0);
}
