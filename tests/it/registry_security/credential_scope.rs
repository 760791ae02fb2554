//! Credentials go only where they belong: not to an upload `Location` on another host, only its
//! own to an upload host that challenges, none to the registry a base image comes from, and no
//! plain-HTTP request (not even an anonymous token request) to a host off loopback that is not
//! listed in `insecure`.

use crate::common::faults::{Fault, HttpFaultProxy, HttpFaults};

use super::*;

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
