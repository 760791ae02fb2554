//! Images without a base (scratch), against a real registry: a static binary goes in alone
//! with the few system files it needs, and `tzdata = true` adds the host's time zones.

use std::path::Path;

use crate::common::*;

#[test]
fn a_static_binary_goes_in_alone_and_runs_from_scratch() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "lone",
        &split_config(&registry.addr(), &registry.addr(), ""),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest)
        .arg("-v")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run();
    out.assert_ok();
    assert!(out.stderr.contains("statically linked"), "{}", out.stderr);
    let (_, repo, digest) = split_ref(out.stdout.trim());
    // Every file in the image: the system files a scratch image carries (users, name service
    // settings), the CA bundle and the binary (plus their directories); no libraries.
    let files = image_files(&registry, &repo, &digest);
    let expected: Vec<&str> = if Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        vec![
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/lone",
        ]
    } else {
        vec![
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "usr/local/bin/lone",
        ]
    };
    assert_eq!(files, expected);
    if let Some(host) = docker_host() {
        let reference = out.stdout.trim().to_string();
        assert_eq!(
            docker_pull_run(&host, &reference, &["--once"]),
            "hello from lone 0.1.0"
        );
    }
}

#[test]
fn a_scratch_image_can_carry_the_hosts_time_zones() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "tz",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "tzdata = true\nuser = \"nonroot\"\n",
        ),
        HELLO_ONCE,
    );
    let out = adapt_push(&manifest)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run();
    out.assert_ok();
    let (_, repo, digest) = split_ref(out.stdout.trim());
    let files = image_files(&registry, &repo, &digest);
    for zone in ["usr/share/zoneinfo/Europe/Paris", "etc/passwd", "etc/group"] {
        assert!(files.iter().any(|f| f == zone), "{zone} missing: {files:?}");
    }
}
