//! Images that start in the engine: includes merged onto a usr-merged base the way `COPY` merges
//! them, and what a scratch image carries (a non-root user with a writable /tmp, the CA bundle
//! where OpenSSL looks by default).

use std::path::Path;

use super::*;

/// A usr-merged base like debian:12 and distroless, made from busybox-static: `/usr/bin` holds
/// busybox and its applets, `/bin -> usr/bin`, `/tmp` is 1777. Pushed as `{registry}/usrmerged:1`.
fn push_usr_merged_base(host: &str, registry: &TestRegistry) -> String {
    let mut rootfs = BusyboxRootfs::new();
    rootfs
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .dir("tmp/", 0o1777)
        .busybox("usr/bin/");
    for applet in ["sh", "echo", "cat", "ls", "test", "id", "touch"] {
        rootfs.link(&format!("usr/bin/{applet}"), "busybox");
    }
    rootfs.link("bin", "usr/bin");
    let name = format!("{}/usrmerged:1", registry.addr());
    rootfs.import_and_push(host, &name, "/usr/bin:/bin")
}

/// `docker run` of `reference` with `sh -c script` as `user`, no network; trimmed stdout.
fn run_shell(host: &str, reference: &str, user: &str, script: &str) -> String {
    docker_ok(
        host,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            user,
            "--entrypoint",
            "/bin/sh",
            reference,
            "-c",
            script,
        ],
    )
}

#[test]
fn includes_merge_with_a_usr_merged_base_like_copy() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let base = push_usr_merged_base(&host, &registry);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("healthcheck"), "#!/bin/sh\necho healthy\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("healthcheck"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::create_dir_all(root.join("seed")).unwrap();
    fs::write(root.join("seed/data.txt"), "seed data\n").unwrap();
    let manifest = write_crate(
        root,
        "merged",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nbase = \"{base}\"\ntags = [\"v1\"]\n\
             include = [{{ from = \"healthcheck\", to = \"/bin/\" }}, {{ from = \"seed\", to = \"/tmp/seed/\" }}]\n",
            registry.addr()
        ),
        "fn main() { println!(\"merged app\"); }\n",
    );
    let out = adapt_push(&manifest)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-merge-target"),
        )
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/merged", registry.addr()));
    pull_fresh(
        &host,
        &reference,
        &[format!("{}/merged:v1", registry.addr())],
    );

    // /bin is still the base's link; the include landed at its target, next to busybox.
    let seen = run_shell(
        &host,
        &reference,
        "0",
        "test -L /bin && echo bin-is-a-link; /bin/healthcheck; ls /usr/bin/healthcheck; \
         cat /tmp/seed/data.txt; ls -ld /tmp",
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "bin-is-a-link",
            "healthy",
            "/usr/bin/healthcheck",
            "seed data"
        ],
        "{seen}"
    );
    assert!(
        lines[4].starts_with("drwxrwxrwt"),
        "/tmp keeps 1777: {seen}"
    );
    // The unprivileged user can still use /tmp.
    assert_eq!(
        run_shell(&host, &reference, "65534", "touch /tmp/by-nobody && id -u"),
        "65534"
    );
    assert_eq!(
        docker_ok(&host, &["run", "--rm", "--network", "none", &reference]),
        "merged app"
    );
    let _ = docker(&host, &["rmi", "-f", &reference, &base]);
}

#[test]
fn a_scratch_image_runs_as_nonroot_with_a_writable_temp_dir() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "tmpwriter",
        &format!(
            // No `user`: nonroot (65532) is the default on scratch.
            "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
        r#"fn main() {
    let path = std::env::temp_dir().join("written-by-me");
    std::fs::write(&path, "ok").expect("write to the temp dir");
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        .unwrap();
    println!("uid {uid} wrote {} {}", path.display(), std::fs::read_to_string(&path).unwrap());
}
"#,
    );
    let out = adapt_push(&manifest)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-scratch-target"),
        )
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/tmpwriter", registry.addr()));
    assert_eq!(
        docker_pull_run(&host, &reference, &[]),
        "uid 65532 wrote /tmp/written-by-me ok"
    );
    // The engine building the generated Dockerfile gives the same user.
    let out = adapt_push(&manifest)
        .args(["--builder", "docker"])
        .env("DOCKER_HOST", &host)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-scratch-target"),
        )
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/tmpwriter", registry.addr()));
    docker_ok(&host, &["pull", &reference]);
    assert_eq!(
        docker_ok(
            &host,
            &["inspect", "--format", "{{.Config.User}}", &reference]
        ),
        "65532:65532"
    );
    assert_eq!(
        docker_pull_run(&host, &reference, &[]),
        "uid 65532 wrote /tmp/written-by-me ok"
    );
}

#[test]
fn a_scratch_image_trusts_the_ca_bundle_through_openssl_default_paths() {
    let Some(host) = docker_host() else { return };
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let Ok(bundle) = fs::read_to_string(bundle) else {
        panic!(
            "{} is missing (scripts/test installs ca-certificates)",
            bundle.display()
        );
    };
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tls-verify");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls-verify"),
        &root,
    );
    // A real root from the bundle, and a certificate nobody trusts: the first must verify
    // through the default paths alone, the second must not (so the check can fail).
    let first_root = bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .find(|c| c.contains("-----BEGIN CERTIFICATE-----"))
        .expect("a certificate in the bundle");
    fs::create_dir_all(root.join("certs")).unwrap();
    fs::write(root.join("certs/bundle-root.pem"), first_root.trim_start()).unwrap();
    let unknown = Ca::create(&dir.path().join("pki"), "adapt-push unknown CA");
    fs::copy(unknown.cert, root.join("certs/unknown.pem")).unwrap();
    let mut cargo_toml = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    cargo_toml = cargo_toml.replace(
        "[workspace]",
        &format!(
            "[package.metadata.cluster]\nregistry = \"{}\"\n\n[workspace]",
            registry.addr()
        ),
    );
    fs::write(root.join("Cargo.toml"), cargo_toml).unwrap();

    let out = adapt_push(root.join("Cargo.toml"))
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-tls-verify-target"),
        )
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/tls-verify", registry.addr()));
    let seen = docker_pull_run(&host, &reference, &[]);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "bundle root: verified", "{seen}");
    assert!(
        lines[1].starts_with("unknown CA: ") && !lines[1].ends_with("verified"),
        "{seen}"
    );
}
