//! A layer with new content goes to the registry while it is compressed (issue 11): one upload
//! session, a PATCH whose body follows the compressor, and the PUT `?digest=` at the end.
//! "New" means its compressed bytes differ from the blob the same layer had last time; a
//! touched file or a fresh layer cache streams nothing (the registry may have those bytes).
//! Observed in the order of the -vv log, not in timings. A failed stream falls back to the
//! upload from the layer cache, so it never fails a push.

use crate::common::faults::{FaultProxy, TcpFaults};
use crate::common::*;

/// A crate whose image has a `size`-byte include (runtime, includes, binary layers).
fn crate_with_include(dir: &std::path::Path, name: &str, registry: &str, size: usize) {
    crate_with_data_file(dir, name, registry, "big.txt");
    std::fs::write(dir.join("big.txt"), compressible_text(size)).unwrap();
}

/// Builds the image once with the include one byte different, to a local OCI layout (nothing
/// is sent anywhere), then puts the real include back: the layer cache then holds an older
/// blob of the includes layer, so the next push's includes layer is known to be new.
fn with_an_older_includes_layer(dir: &std::path::Path, target: &std::path::Path, size: usize) {
    let mut older = compressible_text(size);
    older[size / 2] ^= 1;
    std::fs::write(dir.join("big.txt"), older).unwrap();
    let layout = dir.join("older-layout");
    adapt_push(dir.join("Cargo.toml"))
        .args(["--oci-layout", layout.to_str().unwrap()])
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .run()
        .assert_ok();
    std::fs::write(dir.join("big.txt"), compressible_text(size)).unwrap();
}

/// The pushed manifest's layer digests.
fn pushed_layers(registry: &TestRegistry, repo: &str) -> Vec<String> {
    let (status, _, body) = registry.manifest(repo, "v1");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let pushed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    pushed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_large_layer_is_uploaded_while_it_is_compressed_and_the_digest_does_not_change() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let target_env = target.to_str().unwrap();
    crate_with_include(dir.path(), "streamed", &registry.addr(), 24 << 20);
    let manifest = dir.path().join("Cargo.toml");

    with_an_older_includes_layer(dir.path(), &target, 24 << 20);
    let run = adapt_push(&manifest)
        .args(["-vv", "--sbom", "none", "--provenance", "false"])
        .env("CARGO_TARGET_DIR", target_env)
        .run();
    run.assert_ok();
    let log = &run.stderr;

    let layers = pushed_layers(&registry, "team/streamed");
    assert_eq!(layers.len(), 3, "runtime, includes, binary: {layers:?}");
    let includes = &layers[1];
    // The includes layer's session: its closing PUT names the digest; its PATCH went to the
    // same path, and started before the layer was done compressing.
    let put = log
        .lines()
        .nth(line_with(log, &["-> PUT ", &format!("digest={includes}")]));
    let session = put
        .and_then(|l| l.split("-> PUT ").nth(1))
        .and_then(|u| u.split('?').next())
        .unwrap();
    let patch = line_with(log, &["-> PATCH ", &format!("{session}?")]);
    let compressed = line_with(log, &["included files: compressed"]);
    assert!(
        patch < compressed,
        "the includes layer's upload started only after it was compressed (lines {patch}, {compressed}):\n{log}"
    );
    assert!(log.contains("uploaded included files"), "{log}");
    // Sent once: not again from the layer cache, nor by the publisher.
    assert_eq!(
        log.matches(&format!("digest={includes}")).count(),
        1,
        "{log}"
    );
    assert!(log.contains("(4 uploaded,"), "{log}");
    assert_consistent(&registry.addr(), None);

    // The digest a plain build gives, without a registry (nothing is streamed) and from an
    // empty layer cache.
    let layers_cache = target.join("adapt-push").join("layers");
    std::fs::remove_dir_all(&layers_cache).unwrap();
    let layout = dir.path().join("layout");
    let local = adapt_push(&manifest)
        .args(["--oci-layout", layout.to_str().unwrap(), "-vv"])
        .env("CARGO_TARGET_DIR", target_env)
        .run();
    local.assert_ok();
    assert!(!local.stderr.contains("streaming"), "{}", local.stderr);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let local_digest = index["manifests"][0]["digest"].as_str().unwrap();
    assert!(
        run.pull_ref().ends_with(&format!("@{local_digest}")),
        "streamed {} vs {local_digest}\n{log}",
        run.pull_ref()
    );

    // Pushed again unchanged: the layer cache hits, nothing is streamed, all already there.
    let unchanged = ["-vv", "--sbom", "none", "--provenance", "false"];
    let again = adapt_push(&manifest)
        .args(unchanged)
        .env("CARGO_TARGET_DIR", target_env)
        .run();
    again.assert_ok();
    assert!(!again.stderr.contains("-> PATCH"), "{}", again.stderr);
    assert!(!again.stderr.contains("streaming"), "{}", again.stderr);

    // Touched (as a fresh checkout would be), and then with an empty layer cache (a fresh CI
    // runner): the includes layer is read again, but its bytes are the ones the registry has,
    // so nothing is streamed or uploaded.
    let touched = filetime_now(&dir.path().join("big.txt"));
    let after_touch = adapt_push(&manifest)
        .args(unchanged)
        .env("CARGO_TARGET_DIR", target_env)
        .run();
    after_touch.assert_ok();
    assert!(
        after_touch.stderr.contains("included files: compressed"),
        "the touched include was not read again ({touched}):\n{}",
        after_touch.stderr
    );
    assert!(
        !after_touch.stderr.contains("-> PATCH"),
        "{}",
        after_touch.stderr
    );
    std::fs::remove_dir_all(&layers_cache).unwrap();
    let fresh = adapt_push(&manifest)
        .args(unchanged)
        .env("CARGO_TARGET_DIR", target_env)
        .run();
    fresh.assert_ok();
    assert!(!fresh.stderr.contains("-> PATCH"), "{}", fresh.stderr);
    assert!(!fresh.stderr.contains("streaming"), "{}", fresh.stderr);
    assert!(fresh.pull_ref().ends_with(&format!("@{local_digest}")));
}

/// Sets `path`'s mtime to now (what `touch` does); returns the new time for messages.
fn filetime_now(path: &std::path::Path) -> String {
    let now = std::time::SystemTime::now();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(now)
        .unwrap();
    format!("{now:?}")
}

#[test]
fn a_streamed_upload_cut_midway_falls_back_to_the_layer_cache() {
    let registry = TestRegistry::start();
    // The first connection to carry 12 MiB towards the registry is cut: the includes layer's
    // streamed PATCH (the other layers are a few MiB each).
    let proxy = FaultProxy::start(
        &registry.addr(),
        TcpFaults {
            cut_after: 12 << 20,
            cuts: 1,
            ..TcpFaults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    crate_with_include(dir.path(), "streamcut", &proxy.addr(), 32 << 20);
    with_an_older_includes_layer(dir.path(), &target, 32 << 20);
    let run = adapt_push(dir.path().join("Cargo.toml"))
        .args(["-vv", "--sbom", "none", "--provenance", "false"])
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .run();
    run.assert_ok();
    let log = &run.stderr;
    let fallback = line_with(
        log,
        &[
            "streaming included files:",
            "sending it from the layer cache instead",
        ],
    );
    assert!(
        line_with(log, &["-> PATCH "]) < fallback,
        "no streamed PATCH before the fallback:\n{log}"
    );
    assert_eq!(
        proxy.stats.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "{}",
        proxy.stats.summary()
    );
    assert_eq!(pushed_layers(&registry, "team/streamcut").len(), 3);
    assert_consistent(&registry.addr(), None);
}

#[test]
fn a_streamed_upload_on_another_host_gets_no_credentials() {
    const USER: &str = "alice";
    const PASSWORD: &str = "pa55-W0rd-for-the-stream-only";
    let (authed, open) = shared_storage_registries((USER, PASSWORD), None);
    // Stand-ins (a real registry cannot point its uploads elsewhere): see `UploadsElsewhere`.
    let UploadsElsewhere { front, upload_host } = UploadsElsewhere::start(&authed, &open);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    crate_with_include(dir.path(), "streamaway", &front.addr(), 20 << 20);
    with_an_older_includes_layer(dir.path(), &target, 20 << 20);
    let run = adapt_push(dir.path().join("Cargo.toml"))
        .args(["-vv", "--sbom", "none", "--provenance", "false"])
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .env("ADAPT_PUSH_USERNAME", USER)
        .env("ADAPT_PUSH_PASSWORD", PASSWORD)
        .run();
    run.assert_ok();
    run.assert_no_secret(&[PASSWORD]);
    assert!(
        run.stderr.contains("uploaded included files")
            && run.stderr.contains("while it was compressed"),
        "the layer was streamed:\n{}",
        run.stderr
    );
    assert_reached_without_authorization(&upload_host, "PATCH");
    assert!(front.exchanges().iter().any(|e| e.authorized));
    let auth = format!("Basic {}", basic_auth_b64(USER, PASSWORD));
    assert_consistent(&authed.addr(), Some(&auth));
}
