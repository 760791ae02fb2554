//! What a push reports, against a real registry: `--format json` and the `--image-refs` file
//! name the pushed image (and `--tag` replaces `tags`); `--dry-run` prints the plan and builds
//! and pushes nothing.

use crate::common::*;

#[test]
fn json_output_and_image_refs_file() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "svc",
        &split_config(&registry.addr(), "registry:5000", ""),
        HELLO_ONCE,
    );
    let refs = dir.path().join("refs.txt");
    let out = adapt_push(&manifest)
        .args([
            "--format",
            "json",
            "--image-refs",
            refs.to_str().unwrap(),
            "--tag",
            "v1",
            "--tag",
            "v2",
        ])
        .run();
    out.assert_ok();
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("stdout is one JSON document");
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    assert_eq!(image["package"], "svc");
    assert_eq!(image["bin"], "svc");
    assert_eq!(image["builder"], "oci");
    assert_eq!(image["pull_ref"], format!("registry:5000/svc@{digest}"));
    assert_eq!(
        image["push_ref"],
        format!("{}/svc@{digest}", registry.addr())
    );
    assert_eq!(image["tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(
        std::fs::read_to_string(&refs).unwrap(),
        format!("registry:5000/svc@{digest}\n")
    );
    let mut tags = registry.tags("svc");
    tags.sort();
    assert_eq!(tags, vec!["v1", "v2"], "--tag replaces `tags`");
}

#[test]
fn dry_run_pushes_nothing() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "planned",
        &split_config(&registry.addr(), "registry:5000", ""),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).arg("--dry-run").run();
    out.assert_ok();
    let text = &out.stdout;
    assert!(
        text.contains(&format!("{}/planned", registry.addr()))
            && text.contains("registry:5000/planned"),
        "{text}"
    );
    assert!(registry.tags("planned").is_empty());
    assert!(
        !dir.path().join("target").exists(),
        "a dry run builds nothing"
    );
}
