//! Errors a user can act on, against the real registry (Debian's docker-registry): a base image
//! that does not exist, and (injected by an HTTP proxy in front of it, because distribution 2.8
//! has neither upload size limits nor quotas) a blob too large and a full quota, as a proxy
//! with a body size limit or a registry with quotas (Harbor, GitLab) answers them. Each exits
//! non-zero without a panic, says what happened and what to do, and tags nothing.

mod common;
mod support;

use common::*;
use support::faults::{Fault, HttpFaultProxy, HttpFaults};
use support::*;

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
    let run = push(&manifest, &[], &[]);
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
    let run = push(&manifest, &[], &[]);
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
    let run = push(&manifest, &[], &[]);
    run.assert_failed();
    assert!(run.stderr.contains("quota"), "{}", run.stderr);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert_eq!(assert_consistent(&registry.addr(), None), 0);
}
