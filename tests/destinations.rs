//! Registry-less destinations against the real registry and engine: `--tarball` loaded by
//! `docker load` and run, `--oci-layout` read by `skopeo inspect`, `--load` then `docker run`,
//! `--no-push`; and the same digest whatever the destination.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const HELLO: &str = r#"fn main() {
    if std::env::args().any(|a| a == "--once") {
        println!("hello from {} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    }
}
"#;

fn push(manifest: &Path, args: &[&str], docker_host: Option<&str>) -> std::process::Output {
    let mut cmd = tool();
    cmd.arg("adapt-push")
        .arg("--manifest-path")
        .arg(manifest)
        .args(args);
    if let Some(host) = docker_host {
        cmd.env("DOCKER_HOST", host);
    }
    cmd.output().expect("run cargo-adapt-push")
}

fn crate_with_split(dir: &Path, registry: &str, internal: &str) -> std::path::PathBuf {
    write_crate(
        dir,
        "greeter",
        &format!(
            "\n[package.metadata.cluster]\nregistry = {{ external = \"{registry}\", internal = \"{internal}\" }}\nimage = \"team/greeter\"\ntags = [\"{{version}}\", \"latest\"]\n"
        ),
        HELLO,
    )
}

fn skopeo_inspect(target: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", target])
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo JSON")
}

#[test]
fn one_image_same_digest_in_the_registry_a_tarball_a_layout_and_the_engine() {
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_with_split(
        &dir.path().join("greeter"),
        &registry.addr(),
        &internal.addr(),
    );

    // The registry push: the reference digest.
    let out = push(&manifest, &[], None);
    assert_success(&out);
    let pull_ref = stdout(&out).trim().to_string();
    let (_, digest) = pull_ref.split_once('@').unwrap();

    // --no-push: built, nothing pushed, the digest printed.
    let before = registry.log().matches("PUT /v2/").count();
    assert!(before > 0, "the registry's log shows the first push's PUTs");
    let out = push(&manifest, &["--no-push"], None);
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), digest, "--no-push prints the digest");
    assert_eq!(
        registry.log().matches("PUT /v2/").count(),
        before,
        "nothing pushed"
    );

    // --tarball and --oci-layout at once; neither touches a registry.
    let tarball = dir.path().join("greeter.tar");
    let layout = dir.path().join("layout");
    let out = push(
        &manifest,
        &[
            "--tarball",
            tarball.to_str().unwrap(),
            "--oci-layout",
            layout.to_str().unwrap(),
        ],
        None,
    );
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), digest, "same digest as the registry's");
    assert_eq!(registry.log().matches("PUT /v2/").count(), before);
    assert_eq!(internal.connections(), 0);

    // The layout: index.json names the image by reference and digest; skopeo reads it.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let name = format!("{}/team/greeter", internal.addr());
    let refs: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap(),
                m["digest"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            (format!("{name}:0.1.0").as_str(), digest),
            (format!("{name}:latest").as_str(), digest)
        ]
    );
    let inspected = skopeo_inspect(&format!("oci:{}:{name}:latest", layout.display()));
    assert_eq!(inspected["Digest"], digest);
    assert_eq!(inspected["Architecture"], "amd64");

    // Added to, not replaced: a second image (another tag) joins the first.
    let out = push(
        &manifest,
        &["--oci-layout", layout.to_str().unwrap(), "--tag", "v2"],
        None,
    );
    assert_success(&out);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3);
    let inspected = skopeo_inspect(&format!("oci:{}:{name}:v2", layout.display()));
    assert_eq!(inspected["Digest"], digest);

    // The tarball: docker load takes it, tagged with the pull reference's repository and first
    // tag, and the image runs.
    let Some(host) = docker_host() else { return };
    let loaded = docker_ok(&host, &["load", "-i", tarball.to_str().unwrap()]);
    assert!(loaded.contains(&format!("{name}:0.1.0")), "{loaded}");
    assert_eq!(
        docker_ok(&host, &["run", "--rm", &format!("{name}:0.1.0"), "--once"]),
        "hello from greeter 0.1.0"
    );
    // The engine's image ID is the config digest the registry's manifest names.
    let (_, _, body) = registry.manifest("team/greeter", digest);
    let registry_manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = docker_ok(
        &host,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("{name}:0.1.0"),
        ],
    );
    assert_eq!(id, registry_manifest["config"]["digest"].as_str().unwrap());
    let _ = docker(&host, &["rmi", "-f", &format!("{name}:0.1.0")]);

    // --load: into the engine, every tag; then run it.
    let out = push(&manifest, &["--load"], Some(&host));
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), digest);
    assert_eq!(
        docker_ok(&host, &["run", "--rm", &format!("{name}:latest"), "--once"]),
        "hello from greeter 0.1.0"
    );
    let id = docker_ok(
        &host,
        &[
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("{name}:0.1.0"),
        ],
    );
    assert_eq!(id, registry_manifest["config"]["digest"].as_str().unwrap());
    let _ = docker(
        &host,
        &[
            "rmi",
            "-f",
            &format!("{name}:0.1.0"),
            &format!("{name}:latest"),
        ],
    );
}

#[test]
fn without_a_registry_setting_a_tarball_is_named_as_docker_names_an_unqualified_image() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        &dir.path().join("solo"),
        "solo",
        "\n[package.metadata.cluster]\ntags = [\"dev\"]\n",
        HELLO,
    );
    // A push still needs a registry.
    let out = push(&manifest, &[], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no registry to push to"));

    let tarball = dir.path().join("solo.tar");
    let out = push(&manifest, &["--tarball", tarball.to_str().unwrap()], None);
    assert_success(&out);
    let digest = stdout(&out).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let Some(host) = docker_host() else { return };
    let loaded = docker_ok(&host, &["load", "-i", tarball.to_str().unwrap()]);
    assert!(loaded.contains("solo:dev"), "{loaded}");
    assert_eq!(
        docker_ok(&host, &["run", "--rm", "solo:dev", "--once"]),
        "hello from solo 0.1.0"
    );
    let _ = docker(&host, &["rmi", "-f", "solo:dev"]);
}
