//! `resolve -f`: a three-service workspace resolved from a directory of multi-document YAML with
//! comments, against the real registry; references pull through the internal address.

mod memory;

use std::path::Path;

use crate::common::*;

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
    // Two binaries: `adapt://worker/cron` picks one; the image names say which (`worker`, the
    // package's own name, and `worker-cron`).
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
        .run();
    out.assert_ok();
    let text = &out.stdout;
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
        reference("worker"),
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
    assert_eq!(*text, format!("{expected_deploy}{expected_cron}"));
    assert_eq!(
        out.stderr.matches("Pushing").count(),
        4,
        "four images, each pushed once:\n{}",
        out.stderr
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
            .run();
        assert!(!out.status.success(), "{yaml}");
        assert!(out.stdout.is_empty());
        let err = &out.stderr;
        assert!(err.contains("<stdin>"), "{err}");
        for e in expected {
            assert!(err.contains(e), "{yaml}: lacks {e:?}:\n{err}");
        }
        assert!(registry.tags("shop/api").is_empty(), "nothing pushed");
    }
}

/// A workspace of `api` (pushing to `registry`) and `down` (pushing to `down`, where nothing
/// listens).
fn api_and_down(root: &Path, registry: &str, down: &str) {
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"api\", \"down\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    for (name, addr) in [("api", registry), ("down", down)] {
        member(
            root,
            name,
            &format!(
                "\n[package.metadata.cluster]\nregistry = \"{addr}\"\nimage = \"shop/{name}\"\n"
            ),
            &[],
        );
    }
}

/// The files under `dir` (recursively, symlinks not followed), relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.strip_prefix(dir).unwrap().display().to_string();
        if path.is_dir() && !path.is_symlink() {
            names.extend(listing(&path).into_iter().map(|n| format!("{name}/{n}")));
        } else {
            names.push(name);
        }
    }
    names.sort();
    names
}

#[test]
fn stdout_redirected_to_an_input_is_refused_before_anything_is_pushed() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    shop(&root, &registry.addr(), &registry.addr());
    let k8s = dir.path().join("k8s");
    std::fs::create_dir_all(&k8s).unwrap();
    let yaml = "kind: Pod\nspec:\n  containers:\n  - image: adapt://api\n";
    let resolve = || {
        let mut cmd = tool();
        cmd.args(["adapt-push", "resolve", "--manifest-path"])
            .arg(root.join("Cargo.toml"));
        cmd
    };
    let append = |path: &Path| std::fs::OpenOptions::new().append(true).open(path).unwrap();

    // `resolve -f a.yaml > a.yaml`: the shell has emptied a.yaml already.
    let a = k8s.join("a.yaml");
    std::fs::write(&a, yaml).unwrap();
    let out = resolve()
        .arg("-f")
        .arg(&a)
        .stdout(std::fs::File::create(&a).unwrap())
        .run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in ["a.yaml", "emptied", "version control", "--in-place"] {
        assert!(err.contains(needle), "lacks {needle:?}:\n{err}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), b"", "nothing written");

    // `resolve -f k8s/ >> k8s/b.yaml`: the file is not empty, but would be written while read.
    std::fs::write(&a, yaml).unwrap();
    let b = k8s.join("b.yaml");
    std::fs::write(&b, yaml).unwrap();
    let out = resolve().arg("-f").arg(&k8s).stdout(append(&b)).run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in ["b.yaml", "while it is read", "--in-place"] {
        assert!(err.contains(needle), "lacks {needle:?}:\n{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&b).unwrap(),
        yaml,
        "nothing appended"
    );

    // `resolve -f - < b.yaml >> b.yaml`, and through a symlink: the same file.
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&b, &link).unwrap();
    let out = resolve()
        .args(["-f", "-"])
        .stdin(std::fs::File::open(&link).unwrap())
        .stdout(append(&b))
        .run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("<stdin>"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&b).unwrap(),
        yaml,
        "nothing appended"
    );

    assert!(registry.tags("shop/api").is_empty(), "nothing pushed");
}

const ANCHORED: &str = r#"# anchors, tags and aliases stay as written
apiVersion: v1
kind: Pod
spec:
  containers:
  - name: api
    image: &api-image adapt://api   # anchored
  - name: copy
    image: *api-image
  - name: web
    image: !!str "adapt://web"
  - name: again
    image: &w !!str 'adapt://web'
"#;

#[test]
fn in_place_rewrites_each_file_atomically_keeping_its_mode_and_symlinks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    shop(&root, &registry.addr(), &registry.addr());
    let k8s = dir.path().join("k8s");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&k8s).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    let a = k8s.join("a.yaml");
    std::fs::write(&a, ANCHORED).unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o640)).unwrap();
    let plain = "kind: ConfigMap\ndata: {note: \"the image is adapt://api\"}\n";
    let b = k8s.join("b.yml");
    std::fs::write(&b, plain).unwrap();
    let b_inode = std::fs::metadata(&b).unwrap().ino();
    // A symlink in the directory: its target is rewritten, the link stays a link.
    let c = shared.join("c.yaml");
    std::fs::write(&c, "image: adapt://api\n").unwrap();
    std::os::unix::fs::symlink("../shared/c.yaml", k8s.join("c.yaml")).unwrap();
    // What a run killed while staging left beside an input: nobody holds its lock, so it goes.
    std::fs::write(shared.join(".c.yaml.Zq1x9a.adapt-push-tmp"), "half").unwrap();

    let out = tool()
        .args(["adapt-push", "resolve", "--in-place", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("-f")
        .arg(&k8s)
        .run();
    out.assert_ok();
    assert_eq!(out.stdout, "", "no YAML on stdout");
    let err = &out.stderr;
    assert!(
        err.contains("Rewrote") && err.contains("a.yaml (3 placeholders)"),
        "{err}"
    );
    assert!(!err.contains("b.yml"), "{err}");

    let reference = |repo: &str| {
        let (status, headers, _) = registry.manifest(repo, "latest");
        assert_eq!(status, 200, "{repo} pushed");
        let digest = header(&headers, "Docker-Content-Digest").unwrap();
        format!("{}/{repo}@{digest}", registry.addr())
    };
    let (api, web) = (reference("shop/api"), reference("shop/web"));
    let resolved = std::fs::read_to_string(&a).unwrap();
    assert_eq!(
        resolved,
        ANCHORED
            .replace("adapt://api", &api)
            .replace("adapt://web", &web)
    );
    let pod: serde_yaml::Value = serde_yaml::from_str(&resolved).unwrap();
    let images: Vec<&str> = pod["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [&api, &api, &web, &web],
        "the alias is the pinned reference"
    );
    assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o7777, 0o640);

    assert_eq!(std::fs::read_to_string(&b).unwrap(), plain);
    assert_eq!(
        std::fs::metadata(&b).unwrap().ino(),
        b_inode,
        "a file without placeholders is left alone"
    );
    assert!(k8s.join("c.yaml").is_symlink());
    assert_eq!(
        std::fs::read_to_string(&c).unwrap(),
        format!("image: {api}\n")
    );
    assert_eq!(
        listing(&k8s),
        ["a.yaml", "b.yml", "c.yaml"],
        "no temporary file left"
    );
    assert_eq!(
        listing(&shared),
        ["c.yaml"],
        "no temporary file left, nor the one a killed run left"
    );

    // Stdin cannot be rewritten.
    let out = tool()
        .args(["adapt-push", "resolve", "--in-place", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .args(["-f", "-"])
        .run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot rewrite stdin (-f -)"), "{err}");
}

#[test]
fn in_place_rewrites_no_file_when_an_image_is_not_pushed() {
    let registry = TestRegistry::start();
    let down = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    api_and_down(&root, &registry.addr(), &down);
    let k8s = dir.path().join("k8s");
    std::fs::create_dir_all(&k8s).unwrap();
    let (a, b) = ("image: adapt://api\n", "image: adapt://down\n");
    std::fs::write(k8s.join("a.yaml"), a).unwrap();
    std::fs::write(k8s.join("b.yaml"), b).unwrap();

    let out = tool()
        .args(["adapt-push", "resolve", "--in-place", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("-f")
        .arg(&k8s)
        .args(["--retry-attempts", "1", "--retry-timeout", "5"])
        .run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&down), "the push to {down} failed:\n{err}");
    assert!(!err.contains("Rewrote"), "{err}");
    assert_eq!(std::fs::read_to_string(k8s.join("a.yaml")).unwrap(), a);
    assert_eq!(std::fs::read_to_string(k8s.join("b.yaml")).unwrap(), b);
    assert_eq!(
        listing(&k8s),
        ["a.yaml", "b.yaml"],
        "no temporary file left"
    );
}

#[test]
fn bytes_that_are_not_utf8_are_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shop");
    std::fs::create_dir_all(&root).unwrap();
    shop(&root, "127.0.0.1:9", "127.0.0.1:9");
    let k8s = dir.path().join("k8s");
    std::fs::create_dir_all(&k8s).unwrap();
    std::fs::write(k8s.join("a.yaml"), "a: 1\n").unwrap();
    std::fs::write(
        k8s.join("latin1.yaml"),
        b"kind: Pod\nmetadata:\n  name: caf\xe9\n",
    )
    .unwrap();
    let out = tool()
        .args(["adapt-push", "resolve", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("-f")
        .arg(&k8s)
        .run();
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("latin1.yaml:3:12: not UTF-8 text (byte 0xe9)"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
