//! KEP-1755: the registry from the `kube-public/local-registry-hosting` ConfigMap, read from a
//! file and from an API server reached through a kubeconfig, against the real registry.
//!
//! No cluster can run here, so the API server is a small stub on loopback that serves the
//! ConfigMap the way the Kubernetes API does (GET .../namespaces/kube-public/configmaps/NAME,
//! a `Status` with reason NotFound for a missing one). It stands in for a protocol corner only:
//! the push and the pull through the internal address are real.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;

const CM_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/local-registry-hosting";

fn kind_configmap(host: &str, from_runtime: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local-registry-hosting\n  namespace: kube-public\ndata:\n  localRegistryHosting.v1: |\n    host: \"{host}\"\n    hostFromContainerRuntime: \"{from_runtime}\"\n    help: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n"
    )
}

/// A stub API server: serves `body` as the ConfigMap (JSON), or a NotFound Status when `None`.
struct StubApiServer {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl StubApiServer {
    fn start(configmap_json: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let request = String::from_utf8_lossy(&head);
                let path = request.split(' ').nth(1).unwrap_or_default();
                let (status, body) = match (&configmap_json, path.starts_with(CM_PATH)) {
                    (Some(json), true) => ("200 OK", json.clone()),
                    _ => (
                        "404 Not Found",
                        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"local-registry-hosting\" not found","reason":"NotFound","details":{"name":"local-registry-hosting","kind":"configmaps"},"code":404}"#.to_string(),
                    ),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        StubApiServer { port, requests }
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn kubeconfig(dir: &Path, contexts: &[(&str, &str)], current: &str) -> std::path::PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, server) in contexts {
        text.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n"
        ));
    }
    text.push_str("users:\n- name: dev\n  user:\n    token: not-a-secret\ncontexts:\n");
    for (name, _) in contexts {
        text.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: dev\n"
        ));
    }
    text.push_str(&format!("current-context: {current}\n"));
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_pulls_through(internal: &CountingProxy, reference: &str) {
    let (name, digest) = reference.split_once('@').unwrap();
    let (host, repo) = name.split_once('/').unwrap();
    assert_eq!(host, internal.addr());
    let (status, _, _) = http_get(
        &internal.addr(),
        &format!("/v2/{repo}/manifests/{digest}"),
        MANIFEST_ACCEPT,
    );
    assert_eq!(status, 200);
}

#[test]
fn the_registry_comes_from_a_configmap_file() {
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "svc",
        "\n[package.metadata.cluster]\nregistry = { local-registry-hosting = \"deploy/registry.yaml\" }\n",
        HELLO,
    );
    std::fs::create_dir_all(dir.path().join("deploy")).unwrap();
    let cm = dir.path().join("deploy/registry.yaml");
    std::fs::write(&cm, kind_configmap(&registry.addr(), &internal.addr())).unwrap();

    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let reference = out.stdout.trim().to_string();
    assert_eq!(internal.connections(), 0, "pushed through host only");
    assert_eq!(registry.tags("svc"), vec!["latest"]);
    check_pulls_through(&internal, &reference);

    // Done when: from a kind-style ConfigMap and a directory of manifests, one command gives
    // resolved manifests whose references pull through the internal address.
    let manifests = dir.path().join("k8s");
    std::fs::create_dir_all(&manifests).unwrap();
    let yaml = "# the service\nkind: Pod\nspec:\n  containers:\n  - image: adapt://svc # here\n";
    std::fs::write(manifests.join("pod.yaml"), yaml).unwrap();
    let before = internal.connections();
    let out = tool()
        .args(["adapt-push", "resolve", "--manifest-path"])
        .arg(&manifest)
        .arg("-f")
        .arg(&manifests)
        .run();
    out.assert_ok();
    assert_eq!(out.stdout, yaml.replace("adapt://svc", &reference));
    assert_eq!(
        internal.connections(),
        before,
        "resolve never contacts internal"
    );

    // Malformed, missing: errors name the file.
    std::fs::write(&cm, "data:\n  localRegistryHosting.v1: \"help: nothing\"\n").unwrap();
    let out = adapt_push(&manifest).run();
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(
        err.contains("registry.yaml") && err.contains("has no `host`"),
        "{err}"
    );
    std::fs::remove_file(&cm).unwrap();
    let out = adapt_push(&manifest).run();
    let err = &out.stderr;
    assert!(!out.status.success());
    assert!(err.contains("deploy/registry.yaml"), "{err}");
    assert!(err.contains("local-registry-hosting"), "{err}");
}

#[test]
fn the_registry_comes_from_the_cluster_of_a_kubeconfig_context() {
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(dir.path().join("svc").as_path(), "svc", "", HELLO);
    let configmap = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
        "data": {"localRegistryHosting.v1": format!(
            "host: \"{}\"\nhostFromContainerRuntime: \"{}\"\n", registry.addr(), internal.addr())},
    })
    .to_string();
    let api = StubApiServer::start(Some(configmap));
    let empty_api = StubApiServer::start(None);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = kubeconfig(
        dir.path(),
        &[
            ("kind-dev", &api.server()),
            ("bare", &empty_api.server()),
            ("gone", &closed),
        ],
        "bare",
    );
    let env: [(&str, &Path); 2] = [("KUBECONFIG", &config), ("HOME", dir.path())];

    let out = adapt_push(&manifest)
        .args(["--registry-from-cluster", "--kube-context", "kind-dev"])
        .envs(env)
        .run();
    out.assert_ok();
    assert!(api.requests.load(Ordering::SeqCst) > 0);
    let reference = out.stdout.trim().to_string();
    assert_eq!(internal.connections(), 0);
    check_pulls_through(&internal, &reference);

    // The same through the config: registry = { local-registry-hosting = "cluster" }.
    let cluster_manifest = write_crate(
        dir.path().join("svc2").as_path(),
        "svc2",
        "\n[package.metadata.cluster]\nregistry = { local-registry-hosting = \"cluster\" }\n",
        HELLO,
    );
    let out = adapt_push(&cluster_manifest)
        .args(["--kube-context", "kind-dev"])
        .envs(env)
        .run();
    out.assert_ok();
    check_pulls_through(&internal, out.stdout.trim());

    // The current context's cluster has no ConfigMap.
    let out = adapt_push(&manifest)
        .arg("--registry-from-cluster")
        .envs(env)
        .run();
    let err = &out.stderr;
    assert!(!out.status.success());
    assert!(
        err.contains("context bare") && err.contains(&empty_api.server()),
        "{err}"
    );
    assert!(
        err.contains("no ConfigMap kube-public/local-registry-hosting"),
        "{err}"
    );

    // An API server that does not answer is named.
    let out = adapt_push(&manifest)
        .args(["--registry-from-cluster", "--kube-context", "gone"])
        .envs(env)
        .run();
    let err = &out.stderr;
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach the Kubernetes API server") && err.contains(&closed),
        "{err}"
    );

    // A context that is not in the kubeconfig.
    let out = adapt_push(&manifest)
        .args(["--registry-from-cluster", "--kube-context", "nope"])
        .envs(env)
        .run();
    let err = &out.stderr;
    assert!(
        err.contains("context nope") && err.contains("kind-dev"),
        "{err}"
    );

    // No kubeconfig at all.
    let missing = dir.path().join("no-such-kubeconfig");
    let out = adapt_push(&manifest)
        .arg("--registry-from-cluster")
        .env("KUBECONFIG", &missing)
        .env("HOME", dir.path())
        .run();
    let err = &out.stderr;
    assert!(!out.status.success());
    assert!(
        err.contains("no kubeconfig") && err.contains("no-such-kubeconfig"),
        "{err}"
    );
    assert!(!err.contains("not-a-secret"));
    assert!(!err.contains("panicked"), "{err}");
}
