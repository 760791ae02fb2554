//! Several binaries of one package in one run (`--bin a --bin b`, `bins = [...]`), each its own
//! image with its own name, and the user a scratch image runs as, against a real registry.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// The package `kv` with three binaries: `kv` (src/main.rs), `kv-server` and `admin`.
fn kv(dir: &Path, cluster: &str) -> PathBuf {
    let manifest = write_crate(
        dir,
        "kv",
        &format!("\n[package.metadata.cluster]\n{cluster}\n"),
        HELLO_ONCE,
    );
    std::fs::create_dir_all(dir.join("src/bin")).unwrap();
    for bin in ["kv-server", "admin"] {
        std::fs::write(dir.join(format!("src/bin/{bin}.rs")), HELLO_ONCE).unwrap();
    }
    manifest
}

/// The binaries under /usr/local/bin in the image `reference` names.
fn binaries_in(registry: &TestRegistry, reference: &str) -> Vec<String> {
    let (_, repo, digest) = split_ref(reference);
    image_files(registry, &repo, &digest)
        .into_iter()
        .filter_map(|f| f.strip_prefix("usr/local/bin/").map(String::from))
        .collect()
}

#[test]
fn several_binaries_in_one_run_are_an_image_each_named_after_the_binary() {
    let registry = TestRegistry::start();
    let addr = registry.addr();
    let dir = tempfile::tempdir().unwrap();
    let manifest = kv(dir.path(), &format!("registry = \"{addr}\""));
    let refs_file = dir.path().join("refs.txt");

    // `--bin`, repeated: `kv-server` starts with `kv-`, so it is its own name; `admin` does not.
    let out = adapt_push(&manifest)
        .args(["--bin", "kv-server", "--bin", "admin", "--image-refs"])
        .arg(&refs_file)
        .run();
    out.assert_ok();
    let refs: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(refs.len(), 2, "{}", out.stdout);
    assert!(
        refs[0].starts_with(&format!("{addr}/kv-server@sha256:")),
        "{refs:?}"
    );
    assert!(
        refs[1].starts_with(&format!("{addr}/kv-admin@sha256:")),
        "{refs:?}"
    );
    assert_eq!(binaries_in(&registry, refs[0]), ["kv-server"]);
    assert_eq!(binaries_in(&registry, refs[1]), ["admin"]);
    // One entry per image.
    assert_eq!(std::fs::read_to_string(&refs_file).unwrap(), out.stdout);

    // `bins` as a setting: `kv` is the package's own name.
    let private = dir.path().join("private.txt");
    std::fs::write(&private, "x").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let manifest = kv(
        dir.path(),
        &format!(
            "registry = \"{addr}\"\nbins = [\"kv\", \"kv-server\"]\ninclude = [\"private.txt\"]"
        ),
    );
    let plan = adapt_push(&manifest)
        .args(["--dry-run", "--format", "json"])
        .run()
        .json();
    let planned: Vec<(&str, &str, &str)> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["bin"].as_str().unwrap(),
                i["push_name"].as_str().unwrap(),
                i["user"].as_str().unwrap(),
            )
        })
        .collect();
    let (kv_name, server_name) = (format!("{addr}/kv"), format!("{addr}/kv-server"));
    assert_eq!(
        planned,
        [
            ("kv", kv_name.as_str(), "65532:65532"),
            ("kv-server", server_name.as_str(), "65532:65532")
        ]
    );
    let text = adapt_push(&manifest).arg("--dry-run").run();
    text.assert_ok();
    // The package's settings are both images': their warning is said once.
    assert_eq!(
        text.stderr
            .matches("`include` entry `private.txt`: ")
            .count(),
        1,
        "{}",
        text.stderr
    );
    assert!(
        text.stdout.contains("kv 0.1.0 (bin kv)\n")
            && text.stdout.contains("kv 0.1.0 (bin kv-server)\n")
            && text.stdout.matches("  user      65532:65532\n").count() == 2,
        "{}",
        text.stdout
    );

    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let refs: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(refs.len(), 2, "{}", out.stdout);
    assert!(
        refs[0].starts_with(&format!("{kv_name}@sha256:")),
        "{refs:?}"
    );
    assert!(
        refs[1].starts_with(&format!("{server_name}@sha256:")),
        "{refs:?}"
    );
    assert_eq!(binaries_in(&registry, refs[0]), ["kv"]);
    assert_eq!(binaries_in(&registry, refs[1]), ["kv-server"]);
}

#[test]
fn one_fixed_image_name_for_several_binaries_and_bin_beside_bins_are_refused() {
    let registry = TestRegistry::start();
    let addr = registry.addr();
    for (cluster, args, fragments) in [
        (
            format!("registry = \"{addr}\"\nimage = \"team/kv\"\nbins = [\"kv\", \"admin\"]"),
            vec![],
            vec![
                "[package.metadata.cluster] `image`: \"team/kv\" is one name for the 2 binaries of package `kv` (kv, admin)",
                "put {bin} in it",
            ],
        ),
        (
            format!("registry = \"{addr}\"\nimage = \"team/kv\""),
            vec!["--bin", "kv", "--bin", "admin"],
            vec!["`image`: \"team/kv\" is one name for the 2 binaries"],
        ),
        (
            format!("registry = \"{addr}\"\nbin = \"kv\"\nbins = [\"admin\"]"),
            vec![],
            vec!["`bin` and `bins` are both set"],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let manifest = kv(dir.path(), &cluster);
        let out = adapt_push(&manifest).args(&args).run();
        out.assert_failed();
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        for fragment in fragments {
            assert!(
                out.stderr.contains(fragment),
                "{cluster}: lacks {fragment:?}:\n{}",
                out.stderr
            );
        }
        assert!(
            out.stderr.contains(manifest.to_str().unwrap()),
            "{}",
            out.stderr
        );
        assert!(!dir.path().join("target").exists(), "nothing was built");
    }

    // With {bin} in it, `image` names each binary's image.
    let dir = tempfile::tempdir().unwrap();
    let manifest = kv(
        dir.path(),
        &format!("registry = \"{addr}\"\nimage = \"team/{{package}}/{{bin}}\""),
    );
    let plan = adapt_push(&manifest)
        .args([
            "--bin",
            "kv",
            "--bin",
            "admin",
            "--dry-run",
            "--format",
            "json",
        ])
        .run()
        .json();
    let names: Vec<&str> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["push_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            format!("{addr}/team/kv/kv"),
            format!("{addr}/team/kv/admin")
        ]
    );
}

/// The image config and every layer entry (path, mode, uid, gid) of `reference`.
fn config_and_entries(
    registry: &TestRegistry,
    reference: &str,
) -> (serde_json::Value, Vec<(String, u32, u64, u64)>) {
    let (_, repo, digest) = split_ref(reference);
    let (status, _, body) = registry.manifest(&repo, &digest);
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &registry.blob(&repo, manifest["config"]["digest"].as_str().unwrap()),
    )
    .unwrap();
    let mut entries = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = registry.blob(&repo, layer["digest"].as_str().unwrap());
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            entries.push((
                path.trim_end_matches('/').to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
            ));
        }
    }
    (config, entries)
}

#[test]
fn a_scratch_image_runs_as_65532_by_default_and_user_root_gives_the_old_config() {
    let registry = TestRegistry::start();
    let addr = registry.addr();
    let dir = tempfile::tempdir().unwrap();
    let include = dir.path().join("static");
    std::fs::create_dir_all(&include).unwrap();
    std::fs::write(include.join("index.html"), "hi").unwrap();
    let manifest = write_crate(
        dir.path(),
        "who",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{addr}\"\ninclude = [{{ from = \"static\", to = \"/srv/static/\" }}]\n"
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (config, entries) = config_and_entries(&registry, &out.pull_ref());
    // Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    let entry = |path: &str| {
        entries
            .iter()
            .find(|e| e.0 == path)
            .map(|e| (e.1, e.2, e.3))
            .unwrap_or_else(|| panic!("{path} missing: {entries:?}"))
    };
    // What 65532 needs: a /tmp everyone may write, its own home, and the files it runs and reads.
    assert_eq!(entry("tmp"), (0o1777, 0, 0));
    assert_eq!(entry("home/nonroot"), (0o700, 65532, 65532));
    assert_eq!(entry("usr/local/bin/who"), (0o755, 0, 0));
    assert_eq!(entry("etc/passwd").0, 0o644);
    assert_eq!(entry("srv/static/index.html").0, 0o644);
    for dir in ["srv", "srv/static", "usr/local/bin"] {
        let (mode, _, _) = entry(dir);
        assert_eq!(
            mode & 0o005,
            0o005,
            "{dir} {mode:o}: others may read and enter it"
        );
    }

    // `user = "root"`: the config earlier releases wrote, with no User.
    let manifest = write_crate(
        dir.path(),
        "who",
        &format!("\n[package.metadata.cluster]\nregistry = \"{addr}\"\nuser = \"root\"\n"),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (config, _) = config_and_entries(&registry, &out.pull_ref());
    assert!(
        config["config"].get("User").is_none_or(|u| u == ""),
        "{config}"
    );
}

#[test]
fn a_resolve_placeholder_names_one_binary_of_a_package_with_bins() {
    let registry = TestRegistry::start();
    let addr = registry.addr();
    let dir = tempfile::tempdir().unwrap();
    let manifest = kv(
        dir.path(),
        &format!("registry = \"{addr}\"\nbins = [\"kv\", \"admin\"]"),
    );
    let resolve = |yaml: &str| {
        let file = dir.path().join("deploy.yaml");
        std::fs::write(&file, yaml).unwrap();
        tool()
            .args(["adapt-push", "resolve", "--manifest-path"])
            .arg(&manifest)
            .arg("-f")
            .arg(&file)
            .run()
    };
    let out = resolve("image: adapt://kv\n");
    out.assert_failed();
    assert!(
        out.stderr.contains(
            "package `kv` puts several binaries in images (kv, admin); a placeholder names one"
        ) && out.stderr.contains("write adapt://kv/kv"),
        "{}",
        out.stderr
    );
    assert!(registry.tags("kv").is_empty(), "nothing pushed");

    let out = resolve("image: adapt://kv/admin\n");
    out.assert_ok();
    assert!(
        out.stdout
            .starts_with(&format!("image: {addr}/kv-admin@sha256:")),
        "{}",
        out.stdout
    );
    assert!(registry.tags("kv").is_empty(), "only the named binary");
}
