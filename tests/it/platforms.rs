//! Multi-platform images: one build per platform, an image index on top, checked against a real
//! registry; the arm64 binary runs under qemu-aarch64-static, the amd64 image in the engine.
//! Needs what scripts/test installs: `rustup target add aarch64-unknown-linux-gnu
//! aarch64-unknown-linux-musl`, Debian's gcc-aarch64-linux-gnu and qemu-user-static, and for
//! the zig test cargo-zigbuild and PyPI's ziglang.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const MAIN: &str = r#"fn main() {
    if std::env::args().any(|a| a == "--once") {
        println!("hello from {} on {}", env!("CARGO_PKG_NAME"), std::env::consts::ARCH);
    }
}
"#;

fn fixture(dir: &Path, name: &str, registry: &str, extra: &str) -> PathBuf {
    write_crate(
        dir,
        name,
        &format!("\n[package.metadata.cluster]\nregistry = \"{registry}\"\n{extra}"),
        MAIN,
    )
}

/// The bytes of `path` in the image's layers (the last layer holding it wins).
fn file_from_image(registry: &TestRegistry, repo: &str, digest: &str, path: &str) -> Vec<u8> {
    let manifest = get_json(
        registry,
        &format!("/v2/{repo}/manifests/{digest}"),
        MANIFEST_ACCEPT,
    );
    let mut found = None;
    for layer in manifest["layers"].as_array().expect("layers") {
        let d = layer["digest"].as_str().unwrap();
        let blob = registry.blob(repo, d);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                == path.trim_start_matches('/')
            {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                found = Some(bytes);
            }
        }
    }
    found.unwrap_or_else(|| panic!("{path} is not in {repo}@{digest}"))
}

fn architecture_of(registry: &TestRegistry, repo: &str, digest: &str) -> String {
    let manifest = get_json(
        registry,
        &format!("/v2/{repo}/manifests/{digest}"),
        MANIFEST_ACCEPT,
    );
    let config = manifest["config"]["digest"].as_str().unwrap();
    let config = get_json(registry, &format!("/v2/{repo}/blobs/{config}"), "");
    config["architecture"].as_str().unwrap().to_string()
}

/// Runs an aarch64 binary under qemu-aarch64-static; its stdout.
fn run_arm64(binary: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app");
    std::fs::write(&path, binary).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let qemu = find_program("qemu-aarch64-static", &["/usr/bin/qemu-aarch64-static"]);
    let out = Command::new(qemu)
        .arg(&path)
        .arg("--once")
        .output()
        .expect("run qemu-aarch64-static (scripts/test installs qemu-user-static)");
    assert!(
        out.status.success(),
        "the arm64 binary failed under qemu ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn amd64_and_arm64_make_an_index_whose_images_run() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = fixture(
        dir.path(),
        "multi",
        &registry.addr(),
        "platforms = [\"linux/amd64\", \"linux/arm64\"]\n",
    );
    let json = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();

    // The tag and the printed digest name the index.
    let (status, headers, body) = http_get(
        &registry.addr(),
        "/v2/multi/manifests/latest",
        &format!("{OCI_INDEX}, {MANIFEST_ACCEPT}"),
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "Docker-Content-Digest"), Some(digest));
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    let by_arch = |arch: &str| {
        manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
            .unwrap_or_else(|| panic!("no linux/{arch} in {index}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (amd64, arm64) = (by_arch("amd64"), by_arch("arm64"));
    assert_eq!(architecture_of(&registry, "multi", &amd64), "amd64");
    assert_eq!(architecture_of(&registry, "multi", &arm64), "arm64");
    let platforms = image["platforms"].as_array().unwrap();
    assert_eq!(platforms[1]["platform"], "linux/arm64");
    assert_eq!(platforms[1]["digest"], arm64.as_str());

    // The arm64 binary, taken from its layer, runs under qemu.
    let binary = file_from_image(&registry, "multi", &arm64, "/usr/local/bin/multi");
    assert_eq!(&binary[..4], b"\x7fELF");
    assert_eq!(run_arm64(&binary), "hello from multi on aarch64");

    // Each platform image has its own SBOM and provenance, found by `verify` through the
    // fallback tags.
    for p in platforms {
        assert!(p["sbom"]["digest"].is_string(), "{p}");
        assert!(p["provenance"]["digest"].is_string(), "{p}");
    }
    let out = tool()
        .args(["adapt-push", "verify", image["push_ref"].as_str().unwrap()])
        .run();
    out.assert_ok();
    let text = &out.stdout;
    assert!(text.contains("(linux/arm64/v8)"), "{text}");
    assert!(text.contains("(linux/amd64)"), "{text}");

    // What skopeo sees: the index under the tag, and the arm64 image's SBOM and provenance
    // listed under its referrers fallback tag.
    let skopeo = |reference: &str| -> Value {
        let out = run_ok(
            Command::new(find_program("skopeo", &["/usr/bin/skopeo"]))
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{}/multi{reference}", registry.addr())),
            "skopeo (scripts/test installs it)",
        );
        serde_json::from_slice(&out).unwrap()
    };
    assert_eq!(skopeo(":latest")["manifests"].as_array().unwrap().len(), 2);
    let referrers = skopeo(&format!(":{}", arm64.replacen(':', "-", 1)));
    let types: Vec<&str> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["artifactType"].as_str())
        .collect();
    assert!(types.contains(&"application/spdx+json"), "{referrers}");
    assert!(
        types.contains(&"application/vnd.in-toto+json"),
        "{referrers}"
    );

    // The engine pulls the index and runs its amd64 image.
    if let Some(host) = docker_host() {
        assert_eq!(
            docker_pull_run(&host, image["pull_ref"].as_str().unwrap(), &["--once"]),
            "hello from multi on x86_64"
        );
    }
}

/// A PATH holding only the named programs (symlinks to where they are now), so a test can
/// take a cross gcc or cargo-zigbuild away.
fn path_with_only(dir: &Path, programs: &[(&str, PathBuf)]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, target) in programs {
        std::os::unix::fs::symlink(target, bin.join(name)).unwrap();
    }
    bin.to_string_lossy().into_owned()
}

fn toolchain_env(cmd: &mut Command) -> &mut Command {
    let cargo = std::env::var("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|_| find_program("cargo", &[]));
    let rustc = find_program("rustc", &[]);
    cmd.env("CARGO", cargo).env("RUSTC", rustc)
}

#[test]
fn a_missing_rust_target_names_rustup_target_add() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = fixture(dir.path(), "riscv", &registry.addr(), "");
    // A linker is "configured", so the missing piece is the Rust target itself.
    let out = toolchain_env(adapt_push(&manifest).args([
        "--format",
        "json",
        "--platform",
        "linux/riscv64",
    ]))
    .env(
        "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER",
        "/bin/false",
    )
    .run();
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(
        err.contains("rustup target add riscv64gc-unknown-linux-gnu"),
        "{err}"
    );
    assert!(err.contains("linux/riscv64"), "{err}");
    assert!(out.stdout.is_empty());
    assert!(registry.tags("riscv").is_empty(), "nothing is pushed");
}

#[test]
fn a_missing_linker_names_the_package_the_setting_and_zig() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = fixture(dir.path(), "nolinker", &registry.addr(), "");
    // Neither aarch64-linux-gnu-gcc nor cargo-zigbuild on PATH.
    let path = path_with_only(dir.path(), &[]);
    let out = toolchain_env(adapt_push(&manifest).args([
        "--format",
        "json",
        "--platform",
        "linux/arm64",
    ]))
    .env("PATH", path)
    .env_remove("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER")
    .run();
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(err.contains("aarch64-linux-gnu-gcc"), "{err}");
    assert!(
        err.contains("apt-get install gcc-aarch64-linux-gnu"),
        "{err}"
    );
    assert!(
        err.contains("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"),
        "{err}"
    );
    assert!(err.contains("cargo install cargo-zigbuild"), "{err}");
    assert!(registry.tags("nolinker").is_empty());
}

#[test]
fn zig_links_arm64_when_there_is_no_cross_gcc() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = fixture(dir.path(), "zigged", &registry.addr(), "");
    // cargo-zigbuild and python3 (for PyPI's ziglang), but no aarch64-linux-gnu-gcc.
    let python = Command::new(find_program("python3", &[]))
        .args(["-c", "import sys, ziglang; print(sys.executable)"])
        .output()
        .expect("python3");
    assert!(
        python.status.success(),
        "pip install ziglang (scripts/test does): {}",
        String::from_utf8_lossy(&python.stderr)
    );
    let python = PathBuf::from(String::from_utf8_lossy(&python.stdout).trim());
    let path = path_with_only(
        dir.path(),
        &[
            ("cargo-zigbuild", find_program("cargo-zigbuild", &[])),
            ("python3", python),
        ],
    );
    let json = toolchain_env(adapt_push(&manifest).args([
        "--format",
        "json",
        "--platform",
        "linux/arm64",
    ]))
    .env("PATH", path)
    .env_remove("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER")
    .run()
    .json();
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    // One platform: an image, not an index.
    assert_eq!(architecture_of(&registry, "zigged", digest), "arm64");
    let binary = file_from_image(&registry, "zigged", digest, "/usr/local/bin/zigged");
    assert_eq!(run_arm64(&binary), "hello from zigged on aarch64");
    // The provenance names the target zig built for.
    let provenance = image["provenance"]["digest"].as_str().unwrap();
    let artifact = get_json(
        &registry,
        &format!("/v2/zigged/manifests/{provenance}"),
        MANIFEST_ACCEPT,
    );
    let blob = artifact["layers"][0]["digest"].as_str().unwrap();
    let statement = get_json(&registry, &format!("/v2/zigged/blobs/{blob}"), "");
    assert_eq!(
        statement["predicate"]["buildDefinition"]["externalParameters"]["target"],
        "aarch64-unknown-linux-musl"
    );
}

#[test]
fn each_platform_image_stands_on_the_matching_image_of_a_base_index() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let both = "platforms = [\"linux/amd64\", \"linux/arm64\"]\n";
    // A two-platform base, made by the tool itself.
    let base_manifest = fixture(
        &dir.path().join("base"),
        "basecrate",
        &registry.addr(),
        both,
    );
    let base = adapt_push(&base_manifest)
        .args([
            "--format",
            "json",
            "--sbom",
            "none",
            "--provenance",
            "false",
        ])
        .run()
        .json();
    let base_platforms = base["images"][0]["platforms"].as_array().unwrap().clone();
    let base_layers = |platform: &str| -> Vec<String> {
        let digest = base_platforms
            .iter()
            .find(|p| p["platform"] == platform)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let m = get_json(
            &registry,
            &format!("/v2/basecrate/manifests/{digest}"),
            MANIFEST_ACCEPT,
        );
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };

    let app = fixture(
        &dir.path().join("app"),
        "onbase",
        &registry.addr(),
        &format!("{both}base = \"{}/basecrate:latest\"\n", registry.addr()),
    );
    let json = adapt_push(&app)
        .args([
            "--format",
            "json",
            "--sbom",
            "none",
            "--provenance",
            "false",
        ])
        .run()
        .json();
    for p in json["images"][0]["platforms"].as_array().unwrap() {
        let platform = p["platform"].as_str().unwrap();
        let m = get_json(
            &registry,
            &format!("/v2/onbase/manifests/{}", p["digest"].as_str().unwrap()),
            MANIFEST_ACCEPT,
        );
        let layers: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        let expected = base_layers(platform);
        assert_eq!(
            layers[..expected.len()],
            expected[..],
            "the {platform} image starts with the base's {platform} layers"
        );
    }
    // The arm64 image's base binary is the arm64 one.
    let arm64 = json["images"][0]["platforms"][1]["digest"]
        .as_str()
        .unwrap();
    let base_binary = file_from_image(&registry, "onbase", arm64, "/usr/local/bin/basecrate");
    assert_eq!(run_arm64(&base_binary), "hello from basecrate on aarch64");
}
