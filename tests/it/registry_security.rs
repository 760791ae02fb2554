//! Credentials go only where they belong, and a hostile or odd registry cannot hurt the push,
//! against the real registry (Debian's docker-registry).
//!
//! A real registry cannot produce some of the protocol corners tested here (an upload
//! `Location` on another host, a challenge on `/v2/` of a registry that serves reads
//! anonymously, a manifest of 1 GiB or without end): the rewriting and recording proxies
//! (`HttpFaultProxy`) and the stub server below are stand-ins for those corners, and each test
//! says which one it uses.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::faults::{Fault, FaultProxy, HttpFaultProxy, HttpFaults, TcpFaults};
use crate::common::*;

const USER: &str = "alice";
const PASSWORD: &str = "pa55-W0rd-for-the-push-only";

fn push_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ADAPT_PUSH_USERNAME", USER),
        ("ADAPT_PUSH_PASSWORD", PASSWORD),
    ]
}

fn secrets() -> Vec<String> {
    secret_forms(USER, PASSWORD)
}

fn assert_no_push_secret(run: &Run) {
    let s = secrets();
    run.assert_no_secret(&s.iter().map(String::as_str).collect::<Vec<_>>());
}

fn registry_pair() -> (TestRegistry, TestRegistry) {
    shared_storage_registries((USER, PASSWORD), None)
}

fn registry_pair_with(second_user: Option<(&str, &str)>) -> (TestRegistry, TestRegistry) {
    shared_storage_registries((USER, PASSWORD), second_user)
}

#[test]
fn an_upload_on_another_host_gets_no_credentials() {
    let (authed, open) = registry_pair();
    // Stand-ins: see `UploadsElsewhere`.
    let UploadsElsewhere { front, upload_host } = UploadsElsewhere::start(&authed, &open);

    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &front.addr(), "team/elsewhere", "", "elsewhere");
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .envs(push_env())
        .run();
    run.assert_ok();
    assert_no_push_secret(&run);

    assert_reached_without_authorization(&upload_host, "PUT");
    // The registry itself got the credentials (the push needs them).
    assert!(front.exchanges().iter().any(|e| e.authorized));
    let auth = format!("Basic {}", basic_auth_b64(USER, PASSWORD));
    assert!(assert_consistent(&authed.addr(), Some(&auth)) >= 1);
}

#[test]
fn an_upload_host_that_challenges_gets_only_its_own_credentials() {
    const BOB: &str = "bob";
    const BOB_PASSWORD: &str = "b0b-upload-host-Pw";
    let (authed, upload_registry) = registry_pair_with(Some((BOB, BOB_PASSWORD)));
    // Stand-ins as in `an_upload_on_another_host_gets_no_credentials`; here the upload host
    // asks for Basic credentials of its own, which only the Docker config holds (for it).
    let UploadsElsewhere { front, upload_host } =
        UploadsElsewhere::start(&authed, &upload_registry);
    let dir = tempfile::tempdir().unwrap();
    let config = docker_config(
        dir.path(),
        &serde_json::json!({"auths": {upload_host.addr(): {"auth": basic_auth_b64(BOB, BOB_PASSWORD)}}}),
    );
    let manifest = crate_for(
        dir.path(),
        &front.addr(),
        "team/challenged",
        "",
        "challenged",
    );
    let mut env = push_env();
    env.push(("DOCKER_CONFIG", config.to_str().unwrap()));
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .envs(env.iter().copied())
        .run();
    // The upload host accepts only bob: had alice's credentials gone there, the push failed.
    run.assert_ok();
    assert_no_push_secret(&run);
    run.assert_no_secret(&[BOB_PASSWORD, &basic_auth_b64(BOB, BOB_PASSWORD)]);
    let at_upload_host = upload_host.exchanges();
    let first = at_upload_host
        .first()
        .expect("uploads went to the upload host");
    assert!(
        !first.authorized && first.status == 401,
        "the first request went without credentials and was challenged: {at_upload_host:?}"
    );
    assert!(
        at_upload_host
            .iter()
            .any(|e| e.method == "PUT" && e.authorized && e.status == 201),
        "{at_upload_host:?}"
    );
    let auth = format!("Basic {}", basic_auth_b64(USER, PASSWORD));
    assert!(assert_consistent(&authed.addr(), Some(&auth)) >= 1);
}

#[test]
fn an_upload_location_on_a_plain_http_host_elsewhere_is_refused() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    // Stand-in: a proxy rewriting the upload `Location` to a plain-HTTP name that is not
    // loopback (nothing listens there; no request may even be tried).
    let front = HttpFaultProxy::start_rewriting(
        &registry.addr(),
        HttpFaults::default(),
        Some(("http://{self}".into(), "http://registry.test:5000".into())),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &front.addr(), "team/cleartext", "", "cleartext");
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .envs(push_env())
        .run();
    run.assert_failed();
    assert_no_push_secret(&run);
    assert!(
        run.stderr.contains("http://registry.test:5000")
            && run.stderr.contains("plain HTTP")
            && run.stderr.contains("insecure = [\"registry.test:5000\"]"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("-> PUT http://registry.test"),
        "a request was tried: {}",
        run.stderr
    );
}

/// Pushes a small image into `registry` (open) and returns `repo@digest` there.
fn push_base(registry: &TestRegistry, dir: &std::path::Path) -> String {
    let manifest = crate_for(dir, &registry.addr(), "base/img", "", "base-image");
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    run.pull_ref()
        .strip_prefix(&format!("{}/", registry.addr()))
        .unwrap()
        .to_string()
}

#[test]
fn a_base_registry_never_gets_the_push_credentials() {
    let base_registry = TestRegistry::start();
    let base_dir = tempfile::tempdir().unwrap();
    let base = push_base(&base_registry, base_dir.path());
    // Stand-in: a recording proxy in front of the base registry that answers its first
    // `GET /v2/` with a Basic challenge, as registries serving anonymous reads behind an
    // authenticating front do; every other request reaches the registry.
    let base_front = HttpFaultProxy::start(
        &base_registry.addr(),
        HttpFaults {
            period: 1_000_000,
            offset: 0,
            burst: vec![Fault::unauthorized("Basic realm=\"base\"")],
            method: Some("GET".into()),
            path_contains: Some("/v2/".into()),
            ..HttpFaults::default()
        },
    );
    let push_registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(
        dir.path(),
        &push_registry.addr(),
        "team/on-base",
        &format!("base = \"{}/{base}\"", base_front.addr()),
        "on-base",
    );
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .envs(push_env())
        .run();
    run.assert_ok();
    assert_no_push_secret(&run);
    let exchanges = base_front.exchanges();
    assert!(
        exchanges.iter().any(|e| e.path.contains("/manifests/")),
        "the base was read through the proxy: {exchanges:?}"
    );
    for e in &exchanges {
        assert!(
            !e.authorized,
            "{} {} reached the base registry with Authorization",
            e.method, e.path
        );
    }
}

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

#[test]
fn plain_http_to_a_host_elsewhere_is_refused_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(
        dir.path(),
        "http://registry.example:5000/team",
        "app",
        "",
        "plain-http",
    );
    let run = adapt_push(&manifest)
        .shared_target_dir()
        .envs(push_env())
        .run();
    run.assert_failed();
    assert_no_push_secret(&run);
    let said = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("insecure = [\"registry.example:5000\"]") && said.contains("plain HTTP"),
        "{}",
        run.stderr
    );
    // Refused while reading the configuration (the error points into Cargo.toml), before
    // anything is built or any address looked up.
    assert!(said.contains("Cargo.toml"), "{}", run.stderr);
    assert!(!said.contains("cannot reach"), "{}", run.stderr);
}

/// A registry whose token service is named by a plain-HTTP address off loopback: the real
/// registry, configured with `auth: token` and that realm (the issuer itself listens on
/// 127.0.0.1). Even an anonymous token request is refused before it is sent, like any
/// plain-HTTP traffic to a host not listed in `insecure`: the token that comes back would be
/// handed to the registry.
#[test]
fn an_anonymous_token_request_to_a_plain_http_realm_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = TokenIssuer::start(&dir.path().join("issuer"), USER, PASSWORD, "refresh");
    let realm_host = format!("tokens.example.test:{}", issuer.port);
    let auth = format!(
        "auth:\n  token:\n    realm: http://{realm_host}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        issuer.service,
        issuer.issuer,
        issuer.cert_pem.display()
    );
    let registry = TestRegistry::start_with_config(move |port, _| {
        format!("{}{auth}", TestRegistry::default_http(port))
    });
    let manifest = crate_for(dir.path(), &registry.addr(), "team/realm", "", "realm");
    let run = adapt_push(&manifest)
        .args(["--retry-timeout", "5"])
        .shared_target_dir()
        .run();
    run.assert_failed();
    let said = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains(&format!(
            "http://{realm_host}/token (the token service {} names) is plain HTTP to a host that is not loopback",
            registry.addr()
        )),
        "{}",
        run.stderr
    );
    assert!(
        said.contains(&format!("insecure = [\"{realm_host}\"]")),
        "{}",
        run.stderr
    );
    assert!(!said.contains("cannot reach"), "{}", run.stderr);
    assert!(issuer.requests().is_empty());
}

/// A user and a password for addresses: the password holds `:`, `@` and `%40`, and each piece
/// carries `Qz` so any leak is found.
const ADDRESS_USER: &str = "adm1nQz";
const ADDRESS_PASSWORD: &str = "TopQz7:Secret9Qz@MidQz8:InnerQz@TailQz9%40PctQz";

/// One way of giving the tool an address: a Cargo.toml, files beside it, and the command line.
struct AddressCase {
    name: &'static str,
    cargo_toml: String,
    files: Vec<(&'static str, String)>,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// `-vv` exists for pushes and `resolve`, not for `verify`.
    verbose: bool,
}

/// Every setting and flag that takes a registry address or an image reference, each given one
/// with `ADDRESS_USER:ADDRESS_PASSWORD@` in it (`secret`), the others valid (`host`).
fn address_cases(host: &str, secret: &str) -> Vec<AddressCase> {
    let package = |cluster: &str| {
        format!(
            "[package]\nname = \"addr\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.cluster]\n{cluster}\n\n[workspace]\n"
        )
    };
    let digest = format!("sha256:{}", "a".repeat(64));
    let case = |name, cargo_toml: String, args: &[&str]| AddressCase {
        name,
        cargo_toml,
        files: Vec::new(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        verbose: true,
    };
    let plain = package(&format!("registry = \"{host}\""));
    let mut cases = vec![
        case(
            "registry",
            package(&format!("registry = \"{secret}/team\"")),
            &[],
        ),
        case(
            "registry.external",
            package(&format!(
                "registry = {{ external = \"{secret}\", internal = \"{host}\" }}"
            )),
            &[],
        ),
        case(
            "registry.internal",
            package(&format!(
                "registry = {{ external = \"{host}\", internal = \"http://{secret}/team\" }}"
            )),
            &[],
        ),
        case(
            "base",
            package(&format!(
                "registry = \"{host}\"\nbase = \"{secret}/base:1\""
            )),
            &[],
        ),
        case(
            "insecure",
            package(&format!("registry = \"{host}\"\ninsecure = [\"{secret}\"]")),
            &[],
        ),
        case(
            "image",
            package(&format!("registry = \"{host}\"\nimage = \"{secret}/app\"")),
            &[],
        ),
        case(
            "workspace registry",
            format!(
                "[package]\nname = \"addr\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [workspace]\n\n[workspace.metadata.cluster]\nregistry = \"https://{secret}\"\n"
            ),
            &[],
        ),
        case("--registry", plain.clone(), &["--registry", secret]),
        case(
            "--registry-external",
            plain.clone(),
            &["--registry-external", secret],
        ),
        case(
            "--registry-internal",
            plain.clone(),
            &[&format!("--registry-internal={secret}/team")],
        ),
        case(
            "resolve --registry",
            plain.clone(),
            &["resolve", "-f", "deploy.yaml", "--registry", secret],
        ),
        case(
            "verify REF",
            plain.clone(),
            &["verify", &format!("{secret}/app@{digest}")],
        ),
        case(
            "verify --insecure",
            plain.clone(),
            &[
                "verify",
                "--insecure",
                secret,
                &format!("{host}/app@{digest}"),
            ],
        ),
    ];
    for (side, yaml) in [
        ("host", format!("host: \"{secret}\"\n")),
        (
            "hostFromContainerRuntime",
            format!("host: \"{host}\"\nhostFromContainerRuntime: \"{secret}\"\n"),
        ),
    ] {
        let mut c = case(
            "registry.local-registry-hosting",
            package("registry = { local-registry-hosting = \"hosting.yaml\" }"),
            &[],
        );
        c.name = if side == "host" {
            "local-registry-hosting host"
        } else {
            "local-registry-hosting hostFromContainerRuntime"
        };
        c.files.push(("hosting.yaml", yaml));
        cases.push(c);
    }
    for variable in [
        "ADAPT_PUSH_REGISTRY",
        "ADAPT_PUSH_REGISTRY_EXTERNAL",
        "ADAPT_PUSH_REGISTRY_INTERNAL",
    ] {
        let mut c = case(variable, plain.clone(), &[]);
        c.env.push((variable, secret.to_string()));
        cases.push(c);
    }
    for c in &mut cases {
        if c.args.first().is_some_and(|a| a == "verify") {
            c.verbose = false;
        }
        if c.args.first().is_some_and(|a| a == "resolve") {
            c.files
                .push(("deploy.yaml", "image: adapt://addr\n".to_string()));
        }
    }
    cases
}

#[test]
fn no_piece_of_a_password_in_any_address_setting_is_ever_shown() {
    // A live registry behind the address, so nothing fails for want of one.
    let registry = TestRegistry::start();
    let host = registry.addr();
    let secret = format!("{ADDRESS_USER}:{ADDRESS_PASSWORD}@{host}");
    let mut fragments = userinfo_fragments(ADDRESS_USER, ADDRESS_PASSWORD);
    fragments.push("Qz".into());
    for case in address_cases(&host, &secret) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        fs::write(&manifest, &case.cargo_toml).unwrap();
        fs::create_dir_all(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/main.rs"), EMPTY_MAIN).unwrap();
        for (name, text) in &case.files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let modes: &[(&str, &[&str], bool)] = &[
            ("plain", &[], false),
            ("-vv", &["-vv"], false),
            ("GitHub Actions", &[], true),
        ];
        for &(mode, extra, github) in modes {
            if mode == "-vv" && !case.verbose {
                continue;
            }
            let outputs = dir.path().join("github-output");
            let mut cmd = tool();
            cmd.current_dir(dir.path()).arg("adapt-push");
            let verify = case.args.first().is_some_and(|a| a == "verify");
            let (sub, rest) = match case.args.first().map(String::as_str) {
                Some(s @ ("verify" | "resolve")) => (Some(s), &case.args[1..]),
                _ => (None, &case.args[..]),
            };
            cmd.args(sub);
            if !verify {
                cmd.arg("--manifest-path").arg(&manifest);
            }
            cmd.args(rest).args(extra);
            for (k, v) in &case.env {
                cmd.env(k, v);
            }
            if github {
                cmd.env("GITHUB_ACTIONS", "true")
                    .env("GITHUB_OUTPUT", &outputs);
            }
            let run = cmd.run();
            let what = format!("{} ({mode})", case.name);
            assert!(
                !run.status.success(),
                "{what}: an address with a password must be refused:\n{}",
                run.stderr
            );
            run.assert_failed();
            assert_no_secret_in(&format!("{what}: stdout"), &run.stdout, &fragments);
            assert_no_secret_in(&format!("{what}: stderr"), &run.stderr, &fragments);
            let written = fs::read_to_string(&outputs).unwrap_or_default();
            assert_no_secret_in(&format!("{what}: GITHUB_OUTPUT"), &written, &fragments);
            // The address is still named, with its userinfo hidden.
            assert!(
                run.stderr.contains(&format!("<redacted>@{host}")),
                "{what}:\n{}",
                run.stderr
            );
            if github && !verify {
                assert!(run.stderr.contains("::error"), "{what}:\n{}", run.stderr);
            }
        }
    }
}

/// Sources outside the package are refused (see `includes`); a file inside it that other
/// users of the host cannot read goes in, with a warning: in the image it is world-readable.
#[test]
fn included_files_other_users_cannot_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("host-secret.txt");
    fs::write(&secret, "not for the image").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let manifest = crate_for(
        dir.path(),
        &registry.addr(),
        "team/includes",
        "include = [{ from = \"host-secret.txt\", to = \"/etc/app/secret.txt\" }]",
        "includes",
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_ok();
    let shown = secret.canonicalize().unwrap().display().to_string();
    assert!(
        run.stderr.contains(&format!(
            "`include` entry `host-secret.txt`: {shown} is not readable by every user on this host, but becomes world-readable in the image"
        )),
        "{}",
        run.stderr
    );
}
