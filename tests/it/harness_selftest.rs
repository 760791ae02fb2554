//! Checks the shared test harness itself (tests/it/common): real registry, proxy, HTTP client.

use crate::common::*;

#[test]
fn registry_starts_and_answers_v2() {
    let registry = TestRegistry::start();
    let (status, headers, _) = http_get(&registry.addr(), "/v2/", "");
    assert_eq!(status, 200, "registry log:\n{}", registry.log());
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    // Unknown manifests are a JSON error, not a transport failure.
    let (status, _, body) = registry.manifest("nope/nothing", "latest");
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("error body is JSON");
    assert_eq!(json["errors"][0]["code"], "MANIFEST_UNKNOWN");
    assert!(registry.tags("nope/nothing").is_empty());
}

#[test]
fn proxy_forwards_and_counts_connections() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(&registry.addr());
    assert_eq!(proxy.connections(), 0);

    let (status, _, _) = http_get(&proxy.addr(), "/v2/", "");
    assert_eq!(status, 200);
    assert_eq!(proxy.connections(), 1);

    let (status, _, _) = http_get(&proxy.addr(), "/v2/_catalog", "application/json");
    assert_eq!(status, 200);
    assert_eq!(proxy.connections(), 2);

    // Traffic straight to the registry does not go through the proxy.
    http_get(&registry.addr(), "/v2/", "");
    assert_eq!(proxy.connections(), 2);
}

#[test]
fn dropping_the_proxy_closes_its_port() {
    let registry = TestRegistry::start();
    let proxy = CountingProxy::start(&registry.addr());
    let addr = proxy.addr();
    drop(proxy);
    assert!(
        try_http_request(&addr, "GET", "/v2/", &[], std::time::Duration::from_secs(2)).is_err(),
        "proxy still answers after drop"
    );
}

#[test]
fn htpasswd_registry_requires_credentials() {
    let registry = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let (status, headers, _) = http_get(&registry.addr(), "/v2/", "");
    assert_eq!(status, 401);
    assert!(header(&headers, "www-authenticate").is_some_and(|v| v.starts_with("Basic")));
    // "alice:s3cret" in base64
    let (status, _, _) = http_request(
        &registry.addr(),
        "GET",
        "/v2/",
        &[("Authorization", "Basic YWxpY2U6czNjcmV0")],
    );
    assert_eq!(status, 200, "registry log:\n{}", registry.log());
}

#[test]
fn tls_registry_starts() {
    let registry = TestRegistry::start_with_tls();
    let (cert, key) = registry.tls_cert();
    assert!(cert.is_file() && key.is_file());
    // Plain HTTP to the TLS port gets Go's "client sent an HTTP request to an HTTPS server".
    let (status, _, _) = http_get(&registry.addr(), "/v2/", "");
    assert_eq!(status, 400);
}

#[test]
fn write_crate_makes_a_standalone_crate() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "tiny",
        "[package.metadata.cluster]\nimage = \"t/tiny\"",
        "fn main() { println!(\"hi\"); }\n",
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("[workspace]") && text.contains("image = \"t/tiny\""));

    let copy = dir.path().join("copy");
    copy_dir(dir.path().join("src").as_path(), &copy);
    assert!(copy.join("main.rs").is_file());

    let example = example_project();
    assert!(
        example.join("Cargo.toml").is_file(),
        "{}",
        example.display()
    );
}

#[test]
fn tool_environment_is_hermetic() {
    let cmd = tool();
    let envs: Vec<_> = cmd.get_envs().collect();
    let config = envs
        .iter()
        .find(|(k, _)| *k == "DOCKER_CONFIG")
        .and_then(|(_, v)| *v)
        .expect("DOCKER_CONFIG is set");
    let config = std::path::Path::new(config);
    assert!(config.is_dir());
    assert_eq!(std::fs::read_dir(config).unwrap().count(), 0);
    assert!(envs.contains(&(std::ffi::OsStr::new("SOURCE_DATE_EPOCH"), None)));
}

#[test]
fn docker_engine_answers_when_provided() {
    let Some(host) = docker_host() else { return };
    let version = docker_ok(&host, &["version", "--format", "{{.Server.Version}}"]);
    assert!(!version.is_empty());
}
