//! Faults between the tool and the real registry (Debian's docker-registry), injected by proxies
//! written for these tests (tests/it/common/faults.rs, shared with examples/fault-proxy):
//! connection resets, an upload cut midway, 503 and 429 bursts, a dead address, a silent one,
//! and a push killed with SIGKILL. Whole pushes must succeed where retrying can make them, fail
//! within the retry bound naming the address where it cannot, and no tag may ever point at a
//! missing blob.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::faults::{Fault, FaultProxy, HttpFaultProxy, HttpFaults, TcpFaults};
use crate::common::*;

#[test]
fn resets_and_a_cut_upload_are_survived() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // Every third connection is reset; the first connection to carry 200 kB towards the
    // registry (an upload of the runtime layer) is cut midway.
    let proxy = FaultProxy::start(
        &registry.addr(),
        TcpFaults {
            reset_every: 3,
            cut_after: 200_000,
            cuts: 1,
            throttle: 0,
        },
    );
    for i in 0..3 {
        let manifest = crate_for(
            &dir.path().join(format!("c{i}")),
            &proxy.addr(),
            &format!("faults/tcp{i}"),
            "tags = [\"v1\", \"latest\"]",
            &format!("tcp{i}"),
        );
        // -vv: traces and the retried failures name upload URLs, which must not show the
        // upload session's state (a signed token on some registries).
        let run = adapt_push(&manifest).arg("-vv").shared_target_dir().run();
        run.assert_ok();
        assert!(
            run.pull_ref()
                .starts_with(&format!("{}/faults/tcp{i}@sha256:", proxy.addr()))
        );
        assert!(run.stderr.contains("_state=…"), "{}", run.stderr);
        assert_no_upload_state(&run.stderr);
    }
    let stats = &proxy.stats;
    assert!(
        stats.resets.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "{}",
        stats.summary()
    );
    assert_eq!(
        stats.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "{}",
        stats.summary()
    );
    assert_eq!(assert_consistent(&registry.addr(), None), 6);
}

#[test]
fn bursts_of_503_and_429_are_waited_out_honouring_retry_after() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // Of every 7 requests, the first three are answered 429 with Retry-After: 1, then 503
    // twice. The very first request is the API check, so it meets all three in a row.
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 7,
            offset: 0,
            burst: vec![
                Fault::retry_after(429, 1),
                Fault::status(503),
                Fault::status(503),
            ],
            ..HttpFaults::default()
        },
    );
    let manifest = crate_for(
        dir.path(),
        &proxy.addr(),
        "faults/http",
        "tags = [\"a\", \"b\"]",
        "http",
    );
    let run = adapt_push(&manifest).arg("-v").shared_target_dir().run();
    run.assert_ok();
    assert_eq!(assert_consistent(&registry.addr(), None), 2);

    let log = proxy.exchanges();
    let injected_429: Vec<_> = log
        .iter()
        .filter(|e| e.injected && e.status == 429)
        .collect();
    assert!(log.iter().any(|e| e.injected && e.status == 503), "{log:?}");
    assert!(!injected_429.is_empty(), "{log:?}");
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("GET", "/v2/", 429)
    );
    // After a 429 with Retry-After: 1, the same request came back no sooner than a second
    // later. (Upload POSTs share one path across blobs, so they cannot be told apart here.)
    for e in injected_429.into_iter().filter(|e| e.method != "POST") {
        if let Some(next) = log
            .iter()
            .find(|n| n.at > e.at && n.method == e.method && n.path == e.path)
        {
            assert!(
                next.at.duration_since(e.at) >= Duration::from_millis(950),
                "{} {} retried after {:?}",
                e.method,
                e.path,
                next.at.duration_since(e.at)
            );
        }
    }
    assert!(run.stderr.contains("Retry-After"), "{}", run.stderr);
}

/// A blob HEAD whose `Content-Length` disagrees with the blob's size. Stand-in: the HTTP fault
/// proxy answers every blob HEAD with 200 and `Content-Length: 7`, as a registry holding
/// something else under the digest (or a proxy mangling its answers) would; a real registry
/// answers with the size it stores. The blobs are not taken as present: each is uploaded, and
/// the push succeeds.
#[test]
fn a_blob_whose_head_size_disagrees_is_uploaded() {
    let registry = TestRegistry::start();
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1,
            offset: 0,
            burst: vec![Fault {
                headers: vec![("Content-Length".into(), "7".into())],
                ..Fault::status(200)
            }],
            method: Some("HEAD".into()),
            path_contains: Some("/blobs/sha256:".into()),
            ..HttpFaults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &proxy.addr(), "faults/size", "", "size");
    let run = adapt_push(&manifest)
        .args(["--retry-attempts", "2"])
        .shared_target_dir()
        .run();
    run.assert_ok();
    assert!(
        run.stderr.contains("is there with 7 bytes"),
        "the mismatch is reported: {}",
        run.stderr
    );
    let pushed = get_json(
        &registry,
        "/v2/faults/size/manifests/latest",
        MANIFEST_ACCEPT,
    );
    let blobs = std::iter::once(&pushed["config"])
        .chain(pushed["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_string());
    let exchanges = proxy.exchanges();
    for digest in blobs {
        assert!(
            exchanges
                .iter()
                .any(|e| (e.method == "PUT" || e.method == "POST")
                    && e.path.contains(&format!("digest={digest}"))),
            "{digest} was not uploaded: {exchanges:?}"
        );
    }
    assert_eq!(assert_consistent(&registry.addr(), None), 1);
}

#[test]
fn a_registry_that_keeps_failing_is_given_up_on_with_the_status() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // Every request is a 503.
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1,
            offset: 0,
            burst: vec![Fault::status(503)],
            ..HttpFaults::default()
        },
    );
    let manifest = crate_for(dir.path(), &proxy.addr(), "faults/down", "", "down");
    let started = Instant::now();
    let run = adapt_push(&manifest)
        .args(["--retry-attempts", "3", "--retry-timeout", "10"])
        .shared_target_dir()
        .run();
    run.assert_failed();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(run.stderr.contains("503"), "{}", run.stderr);
    assert!(run.stderr.contains(&proxy.addr()), "{}", run.stderr);
    // Three attempts of the API check, nothing more.
    assert_eq!(proxy.exchanges().len(), 3, "{:?}", proxy.exchanges());
}

#[test]
fn a_dead_address_fails_within_the_bound_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let manifest = crate_for(dir.path(), &addr, "faults/dead", "", "dead");
    // The elapsed time includes building the crate.
    let started = Instant::now();
    let run = adapt_push(&manifest).shared_target_dir().run();
    let elapsed = started.elapsed();
    run.assert_failed();
    assert!(
        run.stderr.contains("cannot reach the registry"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&addr), "{}", run.stderr);
    assert!(
        run.stderr.contains("attempts over"),
        "says what was tried: {}",
        run.stderr
    );
    // The documented default bound is 30 s of retrying; allow generously for the build.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

#[test]
fn a_refused_port_reports_the_refusal_when_the_budget_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let manifest = crate_for(dir.path(), &addr, "faults/refused", "", "refused");
    let run = adapt_push(&manifest)
        .args(["--retry-timeout", "3"])
        .shared_target_dir()
        .run();
    run.assert_failed();
    let err = &run.stderr;
    assert!(err.contains(&addr), "{err}");
    // The OS's words for it ("Connection refused" on Linux), not a deadline that no attempt
    // ever waited for.
    assert!(err.to_ascii_lowercase().contains("refused"), "{err}");
    assert!(!err.contains("no progress"), "{err}");
    assert!(err.contains("attempts over"), "{err}");
}

#[test]
fn a_name_that_does_not_resolve_reports_the_lookup_failure() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(
        dir.path(),
        "nonexistent.invalid:5000",
        "faults/dns",
        "",
        "dns",
    );
    let run = adapt_push(&manifest)
        .args(["--retry-timeout", "3"])
        .shared_target_dir()
        .run();
    run.assert_failed();
    let err = &run.stderr;
    assert!(err.contains("nonexistent.invalid"), "{err}");
    assert!(!err.contains("no progress for 0s"), "{err}");
    // Where the resolver answers at all (it may not in a sandbox), its answer is the cause.
    if !err.contains("no answer") {
        assert!(err.to_ascii_lowercase().contains("dns error"), "{err}");
    }
}

#[test]
fn a_silent_address_fails_within_the_bound_naming_it() {
    // A listener that accepts connections and never answers (a blackhole).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &addr, "faults/silent", "", "silent");

    // The default bound (30 s).
    let started = Instant::now();
    let run = adapt_push(&manifest).shared_target_dir().run();
    let elapsed = started.elapsed();
    run.assert_failed();
    assert!(run.stderr.contains(&addr), "{}", run.stderr);
    assert!(run.stderr.contains("no answer"), "{}", run.stderr);
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");

    // A shorter one, from the environment.
    let started = Instant::now();
    let run = adapt_push(&manifest)
        .shared_target_dir()
        .env("ADAPT_PUSH_RETRY_TIMEOUT", "3")
        .run();
    let elapsed = started.elapsed();
    run.assert_failed();
    assert!(run.stderr.contains(&addr), "{}", run.stderr);
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[test]
fn a_push_killed_midway_leaves_no_broken_tag_and_the_next_one_succeeds() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // A slow link: 100 kB/s towards the registry, so the upload is still running when killed.
    let slow = FaultProxy::start(
        &registry.addr(),
        TcpFaults {
            throttle: 100_000,
            ..TcpFaults::default()
        },
    );
    let manifest = crate_for(
        dir.path(),
        &slow.addr(),
        "faults/killed",
        "tags = [\"v1\", \"latest\"]",
        "killed",
    );
    let mut child = adapt_push(&manifest)
        .shared_target_dir()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the tool");
    let deadline = Instant::now() + Duration::from_secs(120);
    while slow
        .stats
        .upstream_bytes
        .load(std::sync::atomic::Ordering::SeqCst)
        < 150_000
    {
        assert!(
            Instant::now() < deadline,
            "the upload never got going: {}",
            slow.stats.summary()
        );
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the tool finished ({status}) before it could be killed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "killed by a signal: {status}");

    // No tag exists yet, and certainly none pointing at missing blobs.
    assert_eq!(assert_consistent(&registry.addr(), None), 0);
    assert!(registry.tags("faults/killed").is_empty());

    // Run again, through the same slow link: it succeeds and every tag resolves.
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    assert_eq!(assert_consistent(&registry.addr(), None), 2);
    let digest = run.pull_ref().split_once('@').unwrap().1.to_string();
    let (status, _, _) = registry.manifest("faults/killed", &digest);
    assert_eq!(status, 200);
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

/// The registry client is a library that names the application it works for: every request of
/// a push (the API check, blobs, manifests, referrers) says `cargo-adapt-push/<version>`. The
/// HTTP proxy forwards everything unchanged and logs each request's User-Agent.
#[test]
fn every_request_names_the_tool_and_its_version() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = HttpFaultProxy::start(&registry.addr(), HttpFaults::default());
    let manifest = crate_for(dir.path(), &proxy.addr(), "faults/agent", "", "agent");
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    let log = proxy.exchanges();
    assert!(log.len() > 3, "{log:?}");
    let expected = format!("cargo-adapt-push/{}", env!("CARGO_PKG_VERSION"));
    for exchange in &log {
        assert_eq!(
            exchange.user_agent.as_deref(),
            Some(expected.as_str()),
            "{exchange:?}"
        );
    }
}
