//! Everything in the image that did not come from cargo is in the SBOM: a binary linked to the
//! host's libssl goes into a scratch image, and what the registry then serves is compared with
//! the SBOM (every file and its digest), with the host's dpkg (each library's package and
//! version), and with dpkg-query reading the image's `status.d` as a database of its own.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::*;

/// Every regular file of `repo@digest` (the layers applied in order), with its content.
fn image_contents(registry: &TestRegistry, repo: &str, digest: &str) -> BTreeMap<String, Vec<u8>> {
    let (status, _, body) = registry.manifest(repo, digest);
    assert_eq!(status, 200, "manifest {repo}@{digest}");
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = registry.blob(repo, layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type().is_file() {
                let path = format!("/{}", entry.path().unwrap().to_string_lossy());
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                files.insert(path, bytes);
            }
        }
    }
    files
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn dpkg_query(args: &[&str]) -> String {
    String::from_utf8(run_ok(
        Command::new("dpkg-query").args(args),
        "dpkg-query (this test needs a Debian host, as scripts/test sets up)",
    ))
    .unwrap()
}

/// The tls-verify fixture (linked to the host's libssl3), with an included file.
fn tls_crate(dir: &Path, registry: &str) -> std::path::PathBuf {
    let root = dir.join("tls-verify");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls-verify"),
        &root,
    );
    fs::create_dir_all(root.join("certs")).unwrap();
    // Only compiled in (`include_str!`); this test does not run the binary.
    fs::write(root.join("certs/bundle-root.pem"), "unused\n").unwrap();
    fs::write(root.join("certs/unknown.pem"), "unused\n").unwrap();
    fs::create_dir_all(root.join("static")).unwrap();
    fs::write(root.join("static/index.html"), "<p>included</p>\n").unwrap();
    let toml = fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .replace(
            "[workspace]",
            &format!(
                "[package.metadata.cluster]\nregistry = \"{registry}\"\n\
             include = [{{ from = \"static\", to = \"/srv/static\" }}]\n\n[workspace]"
            ),
        );
    fs::write(root.join("Cargo.toml"), toml).unwrap();
    root.join("Cargo.toml")
}

fn push(manifest: &Path, sbom: &str) -> Value {
    let json = adapt_push(manifest)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-tls-verify-target"),
        )
        .args(["--format", "json", "--sbom", sbom])
        .run()
        .json();
    json["images"][0].clone()
}

#[test]
fn host_libraries_are_in_the_sbom_by_package_and_in_the_images_dpkg_records() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = tls_crate(dir.path(), &registry.addr());
    let image = push(&manifest, "spdx");
    let digest = image["digest"].as_str().unwrap();
    let sbom = image["sbom"]["digest"].as_str().expect("an SBOM");
    let doc = referred_document(&registry, "tls-verify", sbom, digest);
    let files = image_contents(&registry, "tls-verify", digest);

    // Every file but the binary is listed, with the digest of the bytes the image holds, and
    // nothing else is.
    let listed: BTreeMap<String, &Value> = doc["files"]
        .as_array()
        .expect("the SBOM lists files")
        .iter()
        .map(|f| (f["fileName"].as_str().unwrap().to_string(), f))
        .collect();
    let in_image: Vec<&String> = files
        .keys()
        .filter(|p| p.as_str() != "/usr/local/bin/tls-verify")
        .collect();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        in_image,
        "the SBOM's files are the image's"
    );
    for (path, f) in &listed {
        let sha256 = f["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["algorithm"] == "SHA256")
            .unwrap();
        assert_eq!(sha256["checksumValue"], sha256_hex(&files[path]), "{path}");
    }
    let index = listed["/srv/static/index.html"];
    assert!(
        index["comment"].as_str().unwrap().starts_with("included"),
        "{index}"
    );

    // libc and libssl are attributed to the host's packages, at the host's versions.
    let arch = String::from_utf8(run_ok(
        Command::new("dpkg").arg("--print-architecture"),
        "dpkg --print-architecture",
    ))
    .unwrap()
    .trim()
    .to_string();
    let os = fs::read_to_string("/etc/os-release").unwrap();
    let field = |key: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap()
    };
    let (id, version_id) = (field("ID"), field("VERSION_ID"));
    let packages = doc["packages"].as_array().unwrap();
    let relationships = doc["relationships"].as_array().unwrap();
    for (name, file) in [("libc6", "libc.so.6"), ("libssl3", "libssl.so.3")] {
        let version = dpkg_query(&["-W", "-f=${Version}", &format!("{name}:{arch}")]);
        let package = packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is in the SBOM"));
        assert_eq!(package["versionInfo"], version.as_str());
        let purl = package["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap();
        assert!(
            purl.starts_with(&format!("pkg:deb/{id}/{name}@"))
                && purl.ends_with(&format!("?arch={arch}&distro={id}-{version_id}")),
            "{purl}"
        );
        let path = listed
            .keys()
            .find(|p| p.ends_with(&format!("/{file}")))
            .unwrap_or_else(|| panic!("{file} is in the image"));
        assert!(
            relationships
                .iter()
                .any(|r| r["relationshipType"] == "CONTAINS"
                    && r["spdxElementId"] == package["SPDXID"]
                    && r["relatedSpdxElement"] == listed[path]["SPDXID"]),
            "{name} CONTAINS {path}"
        );
    }

    // The image's status.d, read by dpkg itself as a status database.
    let admin = dir.path().join("admin");
    fs::create_dir_all(admin.join("updates")).unwrap();
    fs::create_dir_all(admin.join("info")).unwrap();
    let stanzas: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(p, _)| p.starts_with("/var/lib/dpkg/status.d/"))
        .map(|(_, b)| b)
        .collect();
    assert!(!stanzas.is_empty(), "status.d stanzas: {:?}", files.keys());
    let mut status = Vec::new();
    for s in stanzas {
        status.extend_from_slice(s);
        status.push(b'\n');
    }
    fs::write(admin.join("status"), status).unwrap();
    let listed_by_dpkg = dpkg_query(&[
        &format!("--admindir={}", admin.display()),
        "-W",
        "-f=${Package}:${Architecture} ${Version} ${db:Status-Abbrev}\n",
    ]);
    for name in ["libc6", "libssl3"] {
        let version = dpkg_query(&["-W", "-f=${Version}", &format!("{name}:{arch}")]);
        assert!(
            listed_by_dpkg
                .lines()
                .any(|l| l.trim_end() == format!("{name}:{arch} {version} ii")),
            "{name} {version} in:\n{listed_by_dpkg}"
        );
    }

    // The distribution those packages came from.
    let image_os = String::from_utf8(files["/etc/os-release"].clone()).unwrap();
    assert!(
        image_os.contains(&format!("ID=\"{id}\"\n"))
            && image_os.contains(&format!("VERSION_ID=\"{version_id}\"\n")),
        "{image_os}"
    );
}

#[test]
fn on_a_base_the_bases_files_stay_the_bases_named_by_digest() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // The base: a scratch image with the host's C library (and so its dpkg records).
    let base = push(&tls_crate(dir.path(), &registry.addr()), "none");
    let base_digest = base["digest"].as_str().unwrap();
    let manifest = write_crate(
        &dir.path().join("onbase"),
        "onbase",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nbase = \"{}/tls-verify@{base_digest}\"\n",
            registry.addr(),
            registry.addr()
        ),
        HELLO_ONCE,
    );
    let json = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    let doc = referred_document(
        &registry,
        "onbase",
        image["sbom"]["digest"].as_str().unwrap(),
        digest,
    );
    let base_package = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "CONTAINER")
        .expect("the base is in the SBOM");
    assert_eq!(base_package["versionInfo"], base_digest);
    assert!(
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "libc6"),
        "the base's packages are the base's"
    );
    // Our layers added the binary alone: no file of ours to list, no dpkg record or
    // os-release written over the base's.
    assert!(doc.get("files").is_none(), "{}", doc["files"]);
    let (status, _, body) = registry.manifest("onbase", digest);
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    let ours = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = registry.blob("onbase", &ours);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let paths: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .filter(|p| !p.ends_with('/'))
        .collect();
    assert_eq!(paths, ["usr/local/bin/onbase"]);
}

#[test]
fn cyclonedx_lists_the_same_files_by_digest() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = tls_crate(dir.path(), &registry.addr());
    let image = push(&manifest, "cyclonedx");
    let digest = image["digest"].as_str().unwrap();
    let sbom = image["sbom"]["digest"].as_str().expect("an SBOM");
    let doc = referred_document(&registry, "tls-verify", sbom, digest);
    let files = image_contents(&registry, "tls-verify", digest);

    // Files sit at the top level, or inside the package they belong to.
    let mut listed = BTreeMap::new();
    let mut stack: Vec<&Value> = doc["components"].as_array().unwrap().iter().collect();
    while let Some(c) = stack.pop() {
        if c["type"] == "file" {
            let sha256 = c["hashes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["alg"] == "SHA-256")
                .unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            listed.insert(c["name"].as_str().unwrap().to_string(), sha256);
        }
        if let Some(inner) = c["components"].as_array() {
            stack.extend(inner);
        }
    }
    let expected: BTreeMap<String, String> = files
        .iter()
        .filter(|(p, _)| p.as_str() != "/usr/local/bin/tls-verify")
        .map(|(p, b)| (p.clone(), sha256_hex(b)))
        .collect();
    assert_eq!(listed, expected);
    let ssl = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "libssl3")
        .expect("libssl3 is a component");
    assert!(
        ssl["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"].as_str().unwrap().ends_with("/libssl.so.3")),
        "{ssl}"
    );
}
