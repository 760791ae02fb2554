//! Images on a base image, against real registries: the base's layers are mounted within a
//! registry and copied across registries, and a dynamic binary is refused before any push on
//! a base that cannot start it (no loader or C library, also where only its ld.so.conf says).

use std::path::Path;

use crate::common::*;

#[test]
fn base_image_layers_are_mounted_in_the_same_registry_and_copied_across_registries() {
    let registry = TestRegistry::start();
    let other = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // A base image: pushed by the tool itself into `other/base`.
    let base_manifest = write_crate(
        &dir.path().join("base"),
        "base",
        &split_config(
            &other.addr(),
            &other.addr(),
            "image = \"base\"\ntags = [\"1\"]\n",
        ),
        HELLO_ONCE,
    );
    adapt_push(&base_manifest).run().assert_ok();
    // And the same base in the destination registry, under another repository.
    adapt_push(&base_manifest)
        .args(["--registry", &registry.addr()])
        .run()
        .assert_ok();

    let app = |base: String| {
        let d = tempfile::tempdir().unwrap();
        let manifest = write_crate(
            d.path(),
            "app",
            &split_config(
                &registry.addr(),
                "registry:5000",
                &format!("base = \"{base}\"\nenv = {{ MODE = \"on-base\" }}\n"),
            ),
            HELLO_ONCE,
        );
        let out = adapt_push(&manifest).arg("-v").run();
        out.assert_ok();
        (d, out)
    };
    let (_d1, same) = app(format!("{}/base:1", registry.addr()));
    assert!(
        same.stderr.contains("mounted base layer 1/2 from base"),
        "{}",
        same.stderr
    );
    let (_d2, across) = app(format!("{}/base:1", other.addr()));
    assert!(across.stdout.starts_with("registry:5000/app@sha256:"));

    // Every blob of the final manifest exists in the destination registry.
    let (_, _, digest) = split_ref(across.stdout.trim());
    let (status, _, body) = registry.manifest("app", &digest);
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.len() >= 3, "base layers plus ours: {m}");
    for layer in layers {
        let d = layer["digest"].as_str().unwrap();
        let (status, _, _) =
            http_request(&registry.addr(), "HEAD", &format!("/v2/app/blobs/{d}"), &[]);
        assert_eq!(status, 200, "blob {d}");
    }
    if let Some(host) = docker_host() {
        let reference = format!("{}/app@{digest}", registry.addr());
        assert_eq!(
            docker_pull_run(&host, &reference, &["--once"]),
            "hello from app 0.1.0"
        );
    }
}

#[test]
fn a_dynamic_binary_on_a_base_without_its_c_library_is_refused_before_any_push() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // The base: a static binary on scratch, so it has no loader and no libc.
    let base_manifest = write_crate(
        &dir.path().join("base"),
        "nolibc",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "image = \"nolibc\"\ntags = [\"1\"]\n",
        ),
        HELLO_ONCE,
    );
    adapt_push(&base_manifest)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .run()
        .assert_ok();

    let app = |extra: &str| {
        write_crate(
            &dir.path().join("app"),
            "dynapp",
            &split_config(
                &registry.addr(),
                &registry.addr(),
                &format!(
                    "base = \"{}/nolibc:1\"\ntags = [\"v1\"]\n{extra}",
                    registry.addr()
                ),
            ),
            HELLO_ONCE,
        )
    };
    let out = adapt_push(app("")).run();
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let err = &out.stderr;
    // What is missing, and the ways out.
    assert!(err.contains("cannot start"), "{err}");
    assert!(err.contains("ld-linux"), "the loader is named: {err}");
    assert!(err.contains("libc.so.6"), "the C library is named: {err}");
    assert!(err.contains("crt-static"), "{err}");
    assert!(err.contains("scratch"), "{err}");
    assert!(err.contains("check-base = false"), "{err}");
    assert!(
        registry.tags("dynapp").is_empty(),
        "nothing may be tagged when the base cannot run the binary"
    );

    // Turned off, the same push goes through (the user knows better about an exotic base).
    let out = adapt_push(app("check-base = false\n")).run();
    out.assert_ok();
    assert_eq!(registry.tags("dynapp"), ["v1"]);
}

#[test]
fn the_base_check_follows_the_bases_ld_so_conf() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // A base whose C library sits in /opt/libs, a directory only its ld.so.conf names. Made by
    // the tool itself from the host's loader and libraries (a static binary on scratch).
    let make_base = |name: &str, with_conf: bool| {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("libs")).unwrap();
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        for lib in ["libc.so.6", "libgcc_s.so.1"] {
            std::fs::copy(
                Path::new("/lib/x86_64-linux-gnu").join(lib),
                root.join("libs").join(lib),
            )
            .unwrap();
        }
        // `include` takes only what is in the package, like COPY.
        std::fs::copy(
            "/lib64/ld-linux-x86-64.so.2",
            root.join("ld-linux-x86-64.so.2"),
        )
        .unwrap();
        std::fs::write(
            root.join("ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(root.join("conf.d/opt.conf"), "# ours\n/opt/libs\n").unwrap();
        let conf = if with_conf {
            ", { from = \"ld.so.conf\", to = \"/etc/ld.so.conf\" }, { from = \"conf.d\", to = \"/etc/ld.so.conf.d\" }"
        } else {
            ""
        };
        let manifest = write_crate(
            &root,
            name,
            &split_config(
                &registry.addr(),
                &registry.addr(),
                &format!(
                    "tags = [\"1\"]\ninclude = [{{ from = \"libs\", to = \"/opt/libs\" }}, \
                     {{ from = \"ld-linux-x86-64.so.2\", to = \"/lib64/ld-linux-x86-64.so.2\" }}{conf}]\n"
                ),
            ),
            HELLO_ONCE,
        );
        adapt_push(&manifest)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .run()
            .assert_ok();
        format!("{}/{name}:1", registry.addr())
    };
    let with_conf = make_base("confbase", true);
    let without_conf = make_base("bareconf", false);

    let app = |base: &str, name: &str| {
        let manifest = write_crate(
            &dir.path().join(name),
            name,
            &split_config(
                &registry.addr(),
                &registry.addr(),
                &format!("base = \"{base}\"\n"),
            ),
            HELLO_ONCE,
        );
        adapt_push(&manifest).arg("-v").run()
    };
    let out = app(&with_conf, "onconf");
    out.assert_ok();
    let out = app(&without_conf, "onbare");
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(err.contains("it has no libc.so.6"), "{err}");
    assert!(
        !err.contains("program interpreter"),
        "the loader is there: {err}"
    );
    assert!(registry.tags("onbare").is_empty());
}
