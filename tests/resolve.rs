//! `resolve -f`: a three-service workspace resolved from a directory of multi-document YAML with
//! comments, against the real registry; references pull through the internal address.

mod common;

use std::path::Path;

use common::*;

fn member(root: &Path, name: &str, extra: &str, bins: &[&str]) {
    let d = root.join(name);
    std::fs::create_dir_all(d.join("src/bin")).unwrap();
    std::fs::write(
        d.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{extra}"),
    )
    .unwrap();
    std::fs::write(d.join("src/main.rs"), HELLO).unwrap();
    for bin in bins {
        std::fs::write(d.join(format!("src/bin/{bin}.rs")), HELLO).unwrap();
    }
}

fn shop(root: &Path, external: &str, internal: &str) {
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]
members = [\"api\", \"web\", \"worker\", \"tools\"]
resolver = \"2\"
",
    )
    .unwrap();
    let cluster = |image: &str| {
        format!(
            "\n[package.metadata.cluster]\nregistry = {{ external = \"{external}\", internal = \"{internal}\" }}\nimage = \"{image}\"\n"
        )
    };
    member(root, "api", &cluster("shop/api"), &[]);
    member(root, "web", &cluster("shop/web"), &[]);
    // Two binaries: `adapt://worker/cron` picks one; the image names say which.
    member(
        root,
        "worker",
        &format!(
            "\n[package.metadata.cluster]\nregistry = {{ external = \"{external}\", internal = \"{internal}\" }}\nbin = \"worker\"\n"
        ),
        &["cron"],
    );
    member(root, "tools", "", &[]);
}

const DEPLOY: &str = r#"# Deployments for the shop (comments stay)
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}   # flow style
spec:
  template:
    spec:
      containers:
      - name: api
        image: adapt://api
      - name: sidecar
        image: "adapt://web"
---
# the second document
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
      - image: 'adapt://worker'
        args: ["--say", "run adapt://api here: not a whole scalar"]
"#;

const CRON: &str = r#"---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - image: adapt://worker/cron   # the other binary
          - image: adapt://api  # the same image as in deploy.yaml
...
"#;

#[test]
fn a_directory_of_manifests_resolves_to_references_that_pull_through_internal() {
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    shop(&root, &registry.addr(), &internal.addr());
    let manifests = dir.path().join("k8s");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("a-deploy.yaml"), DEPLOY).unwrap();
    std::fs::write(manifests.join("b-cron.yml"), CRON).unwrap();
    std::fs::write(manifests.join("notes.txt"), "adapt://ignored").unwrap();

    let out = tool()
        .args(["adapt-push", "resolve", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("-f")
        .arg(&manifests)
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout(&out);
    assert_eq!(
        internal.connections(),
        0,
        "resolving never contacts internal"
    );

    // Each image pushed once; the references name the internal address and a digest.
    let digest_of = |repo: &str| {
        let (status, headers, _) = registry.manifest(repo, "latest");
        assert_eq!(status, 200, "{repo} pushed");
        header(&headers, "Docker-Content-Digest")
            .unwrap()
            .to_string()
    };
    let reference = |repo: &str| format!("{}/{repo}@{}", internal.addr(), digest_of(repo));
    let (api, web, worker, cron) = (
        reference("shop/api"),
        reference("shop/web"),
        reference("worker-worker"),
        reference("worker-cron"),
    );
    let expected_deploy = DEPLOY
        .replace("image: adapt://api\n", &format!("image: {api}\n"))
        .replace("\"adapt://web\"", &format!("\"{web}\""))
        .replace("'adapt://worker'", &format!("'{worker}'"));
    let expected_cron = CRON
        .replace("adapt://worker/cron", &cron)
        .replace("adapt://api", &api);
    // Every other byte as written, the files joined as one stream.
    assert_eq!(text, format!("{expected_deploy}{expected_cron}"));
    assert_eq!(
        stderr(&out).matches("Pushing").count(),
        4,
        "four images, each pushed once:\n{}",
        stderr(&out)
    );

    // The references resolve through the internal address.
    for r in [&api, &web, &worker, &cron] {
        let (name, digest) = r.split_once('@').unwrap();
        let repo = name.split_once('/').unwrap().1;
        let (status, _, _) = http_get(
            &internal.addr(),
            &format!("/v2/{repo}/manifests/{digest}"),
            MANIFEST_ACCEPT,
        );
        assert_eq!(status, 200, "{r}");
    }
    if let Some(host) = docker_host() {
        assert_eq!(docker_pull_run(&host, &cron, &[]), "hello");
    }
}

#[test]
fn an_unknown_package_or_one_without_settings_is_an_error_with_file_and_line_and_nothing_is_pushed()
{
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    shop(&root, &registry.addr(), &registry.addr());
    for (yaml, expected) in [
        (
            "a: adapt://api\nb: adapt://nope\n",
            vec![":2:", "no package `nope`", "members:"],
        ),
        (
            "a: adapt://api\n---\nb:\n  - adapt://tools\n",
            vec![":4:", "`tools` has no [package.metadata.cluster]"],
        ),
        (
            "a: adapt://worker/nobin\n",
            vec![":1:", "no binary named `nobin`"],
        ),
    ] {
        let file = dir.path().join("m.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = tool()
            .args(["adapt-push", "resolve", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .arg("-f")
            .arg("-")
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{yaml}");
        assert!(stdout(&out).is_empty());
        let err = stderr(&out);
        assert!(err.contains("<stdin>"), "{err}");
        for e in expected {
            assert!(err.contains(e), "{yaml}: lacks {e:?}:\n{err}");
        }
        assert!(registry.tags("shop/api").is_empty(), "nothing pushed");
    }
}
