//! Logging in, against the real registry (Debian's docker-registry): htpasswd Basic auth with
//! credentials from a Docker config, the environment and a credential helper; token auth with a
//! token issuer written here (RS256 JWTs the registry verifies against our certificate), with
//! token reuse and the identity-token (refresh) flow; and TLS with a private CA. No secret may
//! appear in any output, even with -vv.

use serde_json::json;

use crate::common::faults::{HttpFaultProxy, HttpFaults};
use crate::common::*;

const USER: &str = "alice";
const PASSWORD: &str = "pa55-W0rd-never-printed";

#[test]
fn basic_auth_from_docker_config_auths_pushes_and_never_shows_the_password() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = docker_config(
        dir.path(),
        &json!({"auths": {registry.addr(): {"auth": basic_auth_b64(USER, PASSWORD)}}}),
    );
    let manifest = crate_for(dir.path(), &registry.addr(), "team/basic", "", "basic");
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .env("DOCKER_CONFIG", config.to_str().unwrap())
        .run();
    run.assert_ok();
    assert!(
        run.pull_ref()
            .starts_with(&format!("{}/team/basic@sha256:", registry.addr()))
    );
    run.assert_no_secret(
        &secret_forms(USER, PASSWORD)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    // -vv shows that an Authorization header went, but never its value.
    assert!(
        run.stderr.contains("Authorization: Basic <redacted>"),
        "{}",
        run.stderr
    );
    let auth = format!("Basic {}", basic_auth_b64(USER, PASSWORD));
    assert_eq!(assert_consistent(&registry.addr(), Some(&auth)), 1);
}

#[test]
fn basic_auth_from_the_environment() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &registry.addr(), "team/env", "", "env");
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .env("ADAPT_PUSH_USERNAME", USER)
        .env("ADAPT_PUSH_PASSWORD", PASSWORD)
        .run();
    run.assert_ok();
    run.assert_no_secret(
        &secret_forms(USER, PASSWORD)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        run.stderr.contains("credentials from ADAPT_PUSH_USERNAME"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_wrong_password_fails_clearly_without_showing_it() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wr0ng-Secret-value";
    let config = docker_config(
        dir.path(),
        &json!({"auths": {registry.addr(): {"auth": basic_auth_b64(USER, wrong)}}}),
    );
    let manifest = crate_for(dir.path(), &registry.addr(), "team/wrong", "", "wrong");
    for verbosity in [&[][..], &["-vv"][..]] {
        let run = adapt_push(&manifest)
            .args(verbosity)
            .shared_target_dir()
            .env("DOCKER_CONFIG", config.to_str().unwrap())
            .run();
        run.assert_failed();
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        let err = &run.stderr;
        assert!(err.contains(&registry.addr()), "names the registry: {err}");
        assert!(err.contains("team/wrong"), "names the repository: {err}");
        assert!(
            err.contains("refused"),
            "says the credentials were refused: {err}"
        );
        assert!(
            err.contains(config.join("config.json").to_str().unwrap()),
            "says where the credentials came from: {err}"
        );
        assert!(err.contains("looked in"), "says where it looked: {err}");
        run.assert_no_secret(
            &secret_forms(USER, wrong)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
    }
    // Nothing was tagged.
    let auth = format!("Basic {}", basic_auth_b64(USER, PASSWORD));
    assert_eq!(assert_consistent(&registry.addr(), Some(&auth)), 0);
}

#[test]
fn no_credentials_at_all_says_where_it_looked() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(dir.path(), &registry.addr(), "team/anon", "", "anon");
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    assert!(
        run.stderr.contains("credentials are required"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("ADAPT_PUSH_USERNAME"), "{}", run.stderr);
    assert!(run.stderr.contains("config.json"), "{}", run.stderr);
}

/// Writes `docker-credential-<name>` into `bin`: answers `get` for `server` with the
/// credentials, "credentials not found" (exit 1) for anything else.
fn write_helper(bin: &std::path::Path, name: &str, server: &str, user: &str, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).unwrap();
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\nif [ \"$server\" = \"{server}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn path_with(bin: &std::path::Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn credential_helper_from_cred_helpers() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    write_helper(&bin, "test", &registry.addr(), USER, PASSWORD);
    let config = docker_config(
        dir.path(),
        &json!({"credHelpers": {registry.addr(): "test"}, "auths": {}}),
    );
    let manifest = crate_for(dir.path(), &registry.addr(), "team/helper", "", "helper");
    let path = path_with(&bin);
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .env("DOCKER_CONFIG", config.to_str().unwrap())
        .env("PATH", &path)
        .run();
    run.assert_ok();
    assert!(
        run.stderr.contains("docker-credential-test"),
        "{}",
        run.stderr
    );
    run.assert_no_secret(
        &secret_forms(USER, PASSWORD)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
}

#[test]
fn a_configured_but_missing_helper_is_a_warning() {
    let registry = TestRegistry::start_with_htpasswd(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = docker_config(
        dir.path(),
        &json!({"credHelpers": {registry.addr(): "adapt-push-missing"}}),
    );
    let manifest = crate_for(dir.path(), &registry.addr(), "team/missing", "", "missing");
    let run = adapt_push(&manifest)
        .shared_target_dir()
        .env("DOCKER_CONFIG", config.to_str().unwrap())
        .run();
    run.assert_failed();
    assert!(
        run.stderr.contains("warning:")
            && run.stderr.contains("docker-credential-adapt-push-missing")
            && run.stderr.contains("not on PATH"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("credentials are required"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_helper_saying_not_found_means_anonymous() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    write_helper(&bin, "store", "some.other.registry", USER, PASSWORD);
    let config = docker_config(dir.path(), &json!({"credsStore": "store"}));
    let manifest = crate_for(dir.path(), &registry.addr(), "team/store", "", "store");
    let path = path_with(&bin);
    let run = adapt_push(&manifest)
        .shared_target_dir()
        .env("DOCKER_CONFIG", config.to_str().unwrap())
        .env("PATH", &path)
        .run();
    run.assert_ok();
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);
}

/// A credential helper that fails (in any way but the protocol's "credentials not found") stops
/// the push with an error naming the registry, the helper and what to do: a failure is never
/// taken for "no credentials", which would push anonymously. The registry here needs no
/// credentials, so an anonymous push would have succeeded.
#[test]
fn a_failing_credential_helper_stops_the_push_instead_of_going_anonymous() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    // (helper, what `get` does after reading the server, how the config names it)
    let failures = [
        (
            "locked",
            "echo 'the keychain is locked'; exit 3",
            "credHelpers",
        ),
        ("garbage", "echo 'this is not JSON'", "credHelpers"),
        ("killed", "kill -9 $$", "credsStore"),
    ];
    for (name, answer, kind) in failures {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&bin).unwrap();
        let helper = bin.join(format!("docker-credential-{name}"));
        std::fs::write(
            &helper,
            format!("#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread server\n{answer}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let case = dir.path().join(name);
        let config = match kind {
            "credHelpers" => json!({"credHelpers": {registry.addr(): name}}),
            _ => json!({"credsStore": name}),
        };
        let config = docker_config(&case, &config);
        let repo = format!("team/{name}");
        let manifest = crate_for(&case, &registry.addr(), &repo, "", name);
        let path = path_with(&bin);
        let run = adapt_push(&manifest)
            .shared_target_dir()
            .env("DOCKER_CONFIG", config.to_str().unwrap())
            .env("PATH", &path)
            .run();
        run.assert_failed();
        assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
        let said = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            said.contains(&format!("cannot get credentials for {}", registry.addr())),
            "{name}: {said}"
        );
        assert!(
            said.contains(&format!("docker-credential-{name}")),
            "{name}: {said}"
        );
        assert!(
            said.contains(kind),
            "{name}: names where it is configured: {said}"
        );
        assert!(
            said.contains(&format!("remove the `{kind}` entry")),
            "{name}: says what to do: {said}"
        );
        assert!(registry.tags(&repo).is_empty(), "{name}: pushed anyway");
    }
}

// ---------------------------------------------------------------------------------------------
// Token auth
// ---------------------------------------------------------------------------------------------

const REFRESH: &str = "refresh-token-never-printed-0123";

fn token_registry(dir: &std::path::Path) -> (TestRegistry, TokenIssuer) {
    let issuer = TokenIssuer::start(&dir.join("issuer"), USER, PASSWORD, REFRESH);
    let auth = issuer.registry_auth_yaml();
    let registry = TestRegistry::start_with_config(move |port, _| {
        format!("{}{auth}", TestRegistry::default_http(port))
    });
    (registry, issuer)
}

#[test]
fn token_auth_pushes_and_reuses_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, issuer) = token_registry(dir.path());
    // Count the requests the registry sees by pushing through a (fault-free) HTTP proxy.
    let counter = HttpFaultProxy::start(&registry.addr(), HttpFaults::default());
    let manifest = crate_for(
        dir.path(),
        &counter.addr(),
        "team/token",
        "tags = [\"v1\", \"v2\", \"latest\"]",
        "token",
    );
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .env("ADAPT_PUSH_USERNAME", USER)
        .env("ADAPT_PUSH_PASSWORD", PASSWORD)
        .run();
    run.assert_ok();
    run.assert_no_secret(
        &secret_forms(USER, PASSWORD)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        run.stderr.contains("Authorization: Bearer <redacted>"),
        "{}",
        run.stderr
    );

    let tokens = issuer.requests();
    let issued: Vec<&str> = tokens.iter().filter_map(|t| t.token.as_deref()).collect();
    run.assert_no_secret(&issued);
    let registry_requests = counter.exchanges().len();
    assert!(
        tokens.iter().all(|t| t.kind == "basic" && t.granted),
        "{tokens:?}"
    );
    // One token per scope: pull+push on team/token. Far fewer than the requests it covered.
    assert!(
        !tokens.is_empty() && tokens.len() <= 2,
        "{} token requests for {registry_requests} registry requests: {tokens:?}",
        tokens.len()
    );
    assert!(
        registry_requests >= 4 * tokens.len(),
        "{registry_requests} vs {tokens:?}"
    );
    assert!(
        tokens[0]
            .scopes
            .contains(&"repository:team/token:pull,push".to_string()),
        "{tokens:?}"
    );

    let admin = format!("Bearer {}", issuer.admin_token(&["team/token"]));
    assert_eq!(assert_consistent(&registry.addr(), Some(&admin)), 3);
    // Every registry request after the challenge carried a token.
    let unauthorized = counter
        .exchanges()
        .iter()
        .filter(|e| !e.authorized && e.path != "/v2/")
        .count();
    assert_eq!(unauthorized, 0, "{:?}", counter.exchanges());
}

#[test]
fn token_auth_with_a_wrong_password_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, issuer) = token_registry(dir.path());
    let manifest = crate_for(dir.path(), &registry.addr(), "team/denied", "", "denied");
    let wrong = "n0t-the-Password";
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .env("ADAPT_PUSH_USERNAME", USER)
        .env("ADAPT_PUSH_PASSWORD", wrong)
        .run();
    run.assert_failed();
    assert!(run.stderr.contains(&registry.addr()), "{}", run.stderr);
    assert!(run.stderr.contains("team/denied"), "{}", run.stderr);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    // The hint names the variables as the credentials' source instead of suggesting them.
    let said = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("came from ADAPT_PUSH_USERNAME/ADAPT_PUSH_PASSWORD: check them"),
        "{}",
        run.stderr
    );
    assert!(
        !said.contains("or set ADAPT_PUSH_USERNAME"),
        "{}",
        run.stderr
    );
    run.assert_no_secret(
        &secret_forms(USER, wrong)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(issuer.requests().iter().all(|t| !t.granted));
}

#[test]
fn identity_token_is_exchanged_as_a_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, issuer) = token_registry(dir.path());
    let config = docker_config(
        dir.path(),
        &json!({"auths": {registry.addr(): {"identitytoken": REFRESH}}}),
    );
    let manifest = crate_for(
        dir.path(),
        &registry.addr(),
        "team/identity",
        "",
        "identity",
    );
    let run = adapt_push(&manifest)
        .arg("-vv")
        .shared_target_dir()
        .env("DOCKER_CONFIG", config.to_str().unwrap())
        .run();
    run.assert_ok();
    run.assert_no_secret(&[REFRESH]);
    let tokens = issuer.requests();
    let issued: Vec<&str> = tokens.iter().filter_map(|t| t.token.as_deref()).collect();
    run.assert_no_secret(&issued);
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|t| t.method == "POST" && t.kind == "refresh" && t.granted),
        "{tokens:?}"
    );
    let admin = format!("Bearer {}", issuer.admin_token(&["team/identity"]));
    assert_eq!(assert_consistent(&registry.addr(), Some(&admin)), 1);
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// Fetches the pushed manifest over HTTPS with curl, trusting `ca`.
fn curl_manifest(ca: &std::path::Path, port: u16, repo: &str, digest: &str) {
    run_ok(
        std::process::Command::new("curl")
            .args(["-fsS", "--cacert"])
            .arg(ca)
            .args(["-H", &format!("Accept: {ANY_MANIFEST_ACCEPT}")])
            .arg(format!(
                "https://127.0.0.1:{port}/v2/{repo}/manifests/{digest}"
            )),
        "curl",
    );
}

#[test]
fn tls_with_a_private_ca_from_the_flag_the_config_and_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, pki) = start_tls_registry(&dir.path().join("pki"));
    let ca = pki.cert.to_str().unwrap().to_string();

    // --ca-cert, with the address written without a scheme (loopback: the tool finds the
    // port speaks TLS) …
    let manifest = crate_for(
        &dir.path().join("a"),
        &registry.addr(),
        "tls/flag",
        "",
        "flag",
    );
    let run = adapt_push(&manifest)
        .args(["--ca-cert", &ca])
        .shared_target_dir()
        .run();
    run.assert_ok();
    let digest = run.pull_ref().split_once('@').unwrap().1.to_string();
    curl_manifest(&pki.cert, registry.port, "tls/flag", &digest);

    // … `ca-cert` in Cargo.toml, relative to it, with https:// written out …
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(&pki.cert, b.join("registry-ca.pem")).unwrap();
    let manifest = crate_for(
        &b,
        &format!("https://{}", registry.addr()),
        "tls/config",
        "ca-cert = \"registry-ca.pem\"",
        "config",
    );
    adapt_push(&manifest).shared_target_dir().run().assert_ok();

    // … and SSL_CERT_FILE.
    let manifest = crate_for(
        &dir.path().join("c"),
        &registry.addr(),
        "tls/env",
        "",
        "env",
    );
    adapt_push(&manifest)
        .shared_target_dir()
        .env("SSL_CERT_FILE", &ca)
        .run()
        .assert_ok();
}

#[test]
fn tls_without_the_ca_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _pki) = start_tls_registry(&dir.path().join("pki"));
    let manifest = crate_for(dir.path(), &registry.addr(), "tls/none", "", "none");
    let started = std::time::Instant::now();
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    let err = &run.stderr;
    assert!(err.contains("TLS"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("ca-cert"), "suggests ca-cert: {err}");
    assert!(err.contains(&registry.addr()), "{err}");
    // A certificate problem is not retried for the whole retry budget.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn https_against_a_plain_http_registry_explains_itself() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_for(
        dir.path(),
        &format!("https://{}", registry.addr()),
        "tls/plain",
        "",
        "plain",
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    assert!(
        run.stderr.contains("HTTP response to an HTTPS client"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("http://{}", registry.addr())),
        "{}",
        run.stderr
    );
}
