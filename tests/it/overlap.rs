//! Layers go to the registry while later ones are still compressing (issue 11): a finished
//! layer's upload does not wait for the others. Observed in the order of one stream, the -vv
//! log, not in timings: the registry's answer to a layer's upload is logged before another
//! layer's "compressed" line, and before the image is assembled.

use crate::common::*;

#[test]
fn a_finished_layer_is_uploaded_while_a_larger_one_is_still_compressing() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate_with_data_file(dir.path(), "overlap", &registry.addr(), "big.txt");
    // 24 MiB to deflate in the includes layer; the runtime layer (system files, and the C
    // runtime of a dynamically linked binary) is a few MiB at most.
    std::fs::write(dir.path().join("big.txt"), compressible_text(24 << 20)).unwrap();

    let out = adapt_push(&manifest)
        .args(["-vv", "--sbom", "none", "--provenance", "false"])
        .run();
    out.assert_ok();
    let log = &out.stderr;

    let (status, _, body) = registry.manifest("team/overlap", "v1");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let pushed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layers = pushed["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "runtime, includes, binary: {pushed}");
    let runtime = layers[0]["digest"].as_str().unwrap();

    // The runtime layer's upload is finished (the registry's 201 to the PUT ?digest= is
    // logged) before the includes layer is done compressing, and before the image is put
    // together from all its layers.
    let put = line_with(log, &[&format!("digest={runtime}")]);
    let created = put
        + log
            .lines()
            .skip(put)
            .position(|l| l.contains("<- 201 Created for PUT") && l.contains("/blobs/uploads/"))
            .unwrap_or_else(|| panic!("no 201 for the runtime layer's PUT in:\n{log}"));
    let assembled = line_with(log, &["(3 layers)"]);
    assert!(
        created < assembled,
        "the runtime layer was uploaded only after the image was assembled (lines {created}, {assembled}):\n{log}"
    );
    let includes_done = line_with(log, &["included files: compressed"]);
    assert!(
        created < includes_done,
        "the runtime layer was uploaded only after the includes layer was compressed (lines {created}, {includes_done}):\n{log}"
    );
    // Sent once: the publisher does not upload it again.
    assert_eq!(
        log.matches(&format!("digest={runtime}")).count(),
        1,
        "{log}"
    );
    // Config and three layers, each counted once as uploaded.
    assert!(log.contains("(4 uploaded,"), "{log}");
    assert_consistent(&registry.addr(), None);
}
