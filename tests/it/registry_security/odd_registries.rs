//! A hostile or odd registry cannot hurt the push: a huge or endless base manifest is refused
//! with bounded memory, `Retry-After` is honoured on an upload PATCH, tokens that expire after a
//! second are renewed during a slow upload, six concurrent pushes into one new repository all
//! succeed, and the registry's own race errors are settled by checking blobs and retrying.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::faults::{Fault, FaultProxy, HttpFaultProxy, HttpFaults, TcpFaults};

use super::*;

/// How the stub serves a manifest.
#[derive(Clone, Copy)]
enum Huge {
    /// `Content-Length: 1 GiB`, then zeros for as long as the client reads.
    Announced,
    /// Chunked, without end.
    Endless,
}

/// Stand-in for a hostile registry (no real registry serves such manifests): `/v2/` answers
/// 200, every manifest GET answers as `mode` says. Returns its address and a count of the
/// manifest bytes it managed to send.
fn hostile_registry(mode: Huge) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    if !first.contains("/manifests/") {
                        let _ = writer.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                        );
                        continue;
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    let head: &[u8] = match mode {
                        Huge::Announced => b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1073741824\r\n\r\n",
                        Huge::Endless => b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n",
                    };
                    if writer.write_all(head).is_err() {
                        return;
                    }
                    loop {
                        let ok = match mode {
                            Huge::Announced => writer.write_all(&chunk),
                            Huge::Endless => writer
                                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                                .and_then(|_| writer.write_all(&chunk))
                                .and_then(|_| writer.write_all(b"\r\n")),
                        };
                        if ok.is_err() {
                            return;
                        }
                        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (addr, sent)
}

/// Runs the push and returns it with the peak resident memory of the tool's process (VmHWM,
/// sampled from /proc while it runs), in KiB.
fn push_measuring_memory(manifest: &std::path::Path) -> (Run, u64) {
    let child = adapt_push(manifest)
        .shared_target_dir()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let seen = peak.clone();
    let watcher = std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        while let Ok(status) = fs::read_to_string(&path) {
            let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) else {
                break; // a zombie: it has exited
            };
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            seen.fetch_max(kib, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let output = child.wait_with_output().unwrap();
    watcher.join().unwrap();
    (Run::from(output), peak.load(Ordering::Relaxed))
}

#[test]
fn a_huge_or_endless_base_manifest_is_refused_with_bounded_memory() {
    for mode in [Huge::Announced, Huge::Endless] {
        let (addr, sent) = hostile_registry(mode);
        let dir = tempfile::tempdir().unwrap();
        let push_registry = TestRegistry::start();
        let manifest = crate_for(
            dir.path(),
            &push_registry.addr(),
            "team/huge-base",
            &format!("base = \"{addr}/evil/base:1\""),
            "huge",
        );
        let (run, peak_kib) = push_measuring_memory(&manifest);
        run.assert_failed();
        assert!(run.stderr.contains("larger than 4 MiB"), "{}", run.stderr);
        assert!(!run.stderr.contains("stalled"), "{}", run.stderr);
        assert!(peak_kib > 0, "the memory was measured");
        assert!(
            peak_kib < 100 * 1024,
            "peak RSS {peak_kib} KiB for a manifest the registry made {} bytes of",
            sent.load(Ordering::Relaxed)
        );
        eprintln!(
            "peak RSS {} MiB; the stub sent {} MiB",
            peak_kib / 1024,
            sent.load(Ordering::Relaxed) / (1024 * 1024)
        );
    }
}

#[test]
fn retry_after_is_honoured_on_an_upload_patch() {
    let registry = TestRegistry::start();
    // Stand-in: a proxy answering the first PATCH (a layer over 16 MiB goes in one streamed
    // PATCH) with 429 and `Retry-After: 2`.
    let front = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1_000_000,
            offset: 0,
            burst: vec![Fault::retry_after(429, 2)],
            method: Some("PATCH".into()),
            path_contains: Some("/blobs/uploads/".into()),
            ..HttpFaults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    // 17 MiB that do not compress: the include layer is uploaded with a PATCH.
    let noise = incompressible_bytes(17 * 1024 * 1024, 0x9E37_79B9_7F4A_7C15);
    fs::write(dir.path().join("noise.bin"), &noise).unwrap();
    let manifest = crate_for(
        dir.path(),
        &front.addr(),
        "team/patched",
        "include = [{ from = \"noise.bin\", to = \"/srv/noise.bin\" }]",
        "patched",
    );
    let run = adapt_push(&manifest).arg("-v").shared_target_dir().run();
    run.assert_ok();
    assert!(run.stderr.contains("as Retry-After asks"), "{}", run.stderr);
    let patches: Vec<_> = front
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "PATCH")
        .collect();
    assert!(patches.len() >= 2 && patches[0].injected, "{patches:?}");
    // What the server asked for is a lower bound on the wait, not a speed measurement.
    let waited = patches[1].at.duration_since(patches[0].at);
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "the retry came after {waited:?}"
    );
    assert_eq!(assert_consistent(&registry.addr(), None), 1);
}

#[test]
fn a_token_that_expires_after_one_second_during_a_slow_upload() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens say `expires_in: 1`, and the registry really refuses them about a second later.
    let issuer =
        TokenIssuer::start_with_lifetime(&dir.path().join("issuer"), USER, PASSWORD, "r", 1);
    let auth = issuer.registry_auth_yaml();
    let registry = TestRegistry::start_with_config(move |port, _| {
        format!("{}{auth}", TestRegistry::default_http(port))
    });
    // A slow link (1 MiB/s towards the registry), and a recording proxy before it.
    let slow = FaultProxy::start(
        &registry.addr(),
        TcpFaults {
            throttle: 1024 * 1024,
            ..TcpFaults::default()
        },
    );
    let front = HttpFaultProxy::start(&slow.addr(), HttpFaults::default());
    let noise = incompressible_bytes(3 * 1024 * 1024, 0x2545_F491_4F6C_DD1D);
    fs::write(dir.path().join("noise.bin"), &noise).unwrap();
    let manifest = crate_for(
        dir.path(),
        &front.addr(),
        "team/short-tokens",
        "include = [{ from = \"noise.bin\", to = \"/srv/noise.bin\" }]",
        "short-tokens",
    );
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .envs(push_env())
        .run();
    run.assert_ok();
    assert_no_push_secret(&run);
    assert!(!run.stderr.contains("refused"), "{}", run.stderr);
    // Tokens were renewed as they expired, not used past their `expires_in`: no request but
    // the first API check met a 401.
    let refused: Vec<_> = front
        .exchanges()
        .into_iter()
        .filter(|e| e.status == 401 && e.path != "/v2/")
        .collect();
    assert!(
        refused.is_empty(),
        "requests made with expired tokens: {refused:?}"
    );
    let grants = issuer.requests().into_iter().filter(|r| r.granted).count();
    assert!(grants >= 2, "the tokens were renewed: {grants}");
}

#[test]
fn six_concurrent_pushes_of_one_image_into_one_new_repository_all_succeed() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &registry.addr(), "race/app", "", "race");
    let target = dir.path().join("target");
    // Built once, so the rounds race on the registry and not on cargo's lock.
    let first = adapt_push(&manifest)
        .args(["--registry", &format!("{}/warmup", registry.addr())])
        .env("CARGO_TARGET_DIR", target.to_str().unwrap())
        .run();
    first.assert_ok();
    for round in 0..5 {
        let repo = format!("{}/round{round}", registry.addr());
        let children: Vec<_> = (0..6)
            .map(|_| {
                adapt_push(&manifest)
                    .args(["-v", "--registry", &repo])
                    .env("CARGO_TARGET_DIR", target.to_str().unwrap())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let run = Run::from(child.wait_with_output().unwrap());
            run.assert_ok();
        }
    }
    // Every tag of every round resolves to a manifest whose blobs all exist.
    assert_eq!(assert_consistent(&registry.addr(), None), 6);
}

#[test]
fn the_registrys_race_errors_are_settled_by_checking_blobs_and_retrying() {
    // What the concurrent pushes above meet now and then (about 1 in 12 against distribution
    // 2.8), made certain. Stand-ins: a proxy answering the first blob PUT with DIGEST_INVALID,
    // and one answering the first manifest PUT with MANIFEST_BLOB_UNKNOWN, as the registry does
    // when two pushes race on one blob.
    let registry = TestRegistry::start();
    let blob_race = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1_000_000,
            offset: 0,
            burst: vec![Fault::error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
            )],
            method: Some("PUT".into()),
            path_contains: Some("/blobs/uploads/".into()),
            ..HttpFaults::default()
        },
    );
    let manifest_race = HttpFaultProxy::start(
        &blob_race.addr(),
        HttpFaults {
            period: 1_000_000,
            offset: 0,
            burst: vec![Fault::error(
                400,
                "MANIFEST_BLOB_UNKNOWN",
                "blob unknown to registry",
            )],
            method: Some("PUT".into()),
            path_contains: Some("/manifests/".into()),
            ..HttpFaults::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(
        dir.path(),
        &manifest_race.addr(),
        "race/settled",
        "",
        "settled",
    );
    let run = adapt_push(&manifest).arg("-v").shared_target_dir().run();
    run.assert_ok();
    assert!(blob_race.exchanges().iter().any(|e| e.injected));
    assert!(manifest_race.exchanges().iter().any(|e| e.injected));
    assert_eq!(assert_consistent(&registry.addr(), None), 1);
}
