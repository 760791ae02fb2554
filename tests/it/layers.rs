//! An image's layers, against a real registry: the same source gives the same digest (also
//! after `cargo clean`; `SOURCE_DATE_EPOCH` changes only the timestamps), a code change uploads
//! only the binary layer, a layer larger than one upload streams from the layer cache, and
//! `compression = "zstd"`.

use crate::common::*;

#[test]
fn reproducible_across_cargo_clean_and_source_date_epoch_changes_only_time() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "repro",
        &split_config(&registry.addr(), &registry.addr(), ""),
        HELLO_ONCE,
    );
    let first = adapt_push(&manifest).arg("-q").run();
    first.assert_ok();
    assert!(
        first.stderr.is_empty(),
        "-q leaves stderr silent: {}",
        first.stderr
    );
    let status = std::process::Command::new("cargo")
        .arg("clean")
        .arg("--manifest-path")
        .arg(&manifest)
        .status()
        .unwrap();
    assert!(status.success());
    let second = adapt_push(&manifest).arg("-q").run();
    second.assert_ok();
    assert_eq!(
        first.stdout, second.stdout,
        "same source, same digest, also after cargo clean"
    );

    let (_, repo, digest) = split_ref(first.stdout.trim());
    let (_, _, body) = registry.manifest(&repo, &digest);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let (_, _, config) = http_get(
        &registry.addr(),
        &format!("/v2/{repo}/blobs/{config_digest}"),
        "",
    );
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/repro"])
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );

    let dated = adapt_push(&manifest)
        .arg("-q")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .run();
    dated.assert_ok();
    assert_ne!(
        dated.stdout, first.stdout,
        "SOURCE_DATE_EPOCH changes the timestamps"
    );
}

#[test]
fn a_code_change_uploads_only_the_binary_layer() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/motd.txt"), "hi\n").unwrap();
    let manifest = write_crate(
        dir.path(),
        "layered",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "include = [{ from = \"assets\", to = \"/srv/assets\" }]\n",
        ),
        HELLO_ONCE,
    );
    let first = adapt_push(&manifest).run();
    first.assert_ok();
    std::fs::write(
        dir.path().join("src/main.rs"),
        HELLO_ONCE.replace("hello from", "hi from"),
    )
    .unwrap();
    let second = adapt_push(&manifest).run();
    second.assert_ok();
    assert_ne!(first.stdout, second.stdout);
    // Binary layer and config are new; runtime closure and includes are already there.
    assert!(
        second.stderr.contains("(2 uploaded") && second.stderr.contains("2 already there"),
        "{}",
        second.stderr
    );
}

/// A layer larger than one monolithic PUT (16 MiB) goes up in a streamed PATCH read from the
/// layer cache; what the registry stores decompresses to the very bytes included, across blocks
/// that were deflated and blocks that were stored (random data).
#[test]
fn a_large_layer_streams_from_the_cache_and_round_trips() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x1234_5678_u32;
    let mut big: Vec<u8> = (0..18 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    big.extend(
        b"a compressible line of text\n"
            .iter()
            .cycle()
            .take(4 << 20),
    );
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    let manifest = write_crate(
        dir.path(),
        "large",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "include = [{ from = \"big.bin\", to = \"/data/big.bin\" }]\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let (status, _, body) = registry.manifest(&repo, &digest);
    assert_eq!(status, 200);
    let image: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut found = false;
    for layer in image["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let blob = registry.blob(&repo, d);
        assert_eq!(layer["size"].as_u64().unwrap(), blob.len() as u64);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_string_lossy() == "data/big.bin" {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
                assert!(content == big, "the included file changed on the way");
                assert!(blob.len() > 16 << 20, "not over the monolithic limit");
                assert!(blob.len() < big.len(), "the text half was not compressed");
                found = true;
            }
        }
    }
    assert!(found, "the included file is not in the image");
}

/// `compression = "zstd"`: every layer of ours is a zstd stream with the OCI zstd media type,
/// and it reads back to the binary.
#[test]
fn zstd_layers_when_asked() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "zapp",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "compression = \"zstd\"\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let (status, _, body) = registry.manifest(&repo, &digest);
    assert_eq!(status, 200);
    let image: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut files = Vec::new();
    for layer in image["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let d = layer["digest"].as_str().unwrap();
        let blob = registry.blob(&repo, d);
        let tar = zstd::stream::decode_all(&blob[..]).unwrap();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            files.push(
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(
        files.contains(&"usr/local/bin/zapp".to_string()),
        "{files:?}"
    );
}
