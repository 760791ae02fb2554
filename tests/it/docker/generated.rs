//! `builder = "docker"` without a Dockerfile: the engine builds the generated daemonless image,
//! with the classic builder and through BuildKit.

use std::path::Path;

use super::*;

#[test]
fn generated_mode_builds_the_daemonless_image_in_the_engine() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_project(), dir.path());
    assert!(!dir.path().join("Dockerfile").exists());
    // Values the Dockerfile must quote: quotes, `$` (no expansion), backslashes, spaces, `=`.
    let mut manifest = fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
    manifest.push_str(concat!(
        "env = { GREETING = 'hi \"you\" $HOME \\ a=b', EMPTY = '' }\n",
        "labels = { \"com.example.note\" = 'costs $5 \\ \"net\"', \"com.example.team\" = \"platform\" }\n",
        // The step counts below are the classic builder's (BuildKit runs no step containers).
        "buildkit = false\n",
    ));
    fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();

    let out = adapt_push(dir.path().join("Cargo.toml"))
        .args(["--builder", "docker", "--tag", "gen"])
        .args(["--registry-external", &registry.addr()])
        .args(["--registry-internal", &internal.addr()])
        .env("DOCKER_HOST", &host)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-generated-target"),
        )
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/demo/greeter", internal.addr()));
    assert_eq!(internal.connections(), 0);
    assert_eq!(registry.tags("demo/greeter"), ["gen"]);

    pull_fresh(
        &host,
        &reference,
        &[format!("{}/demo/greeter:gen", registry.addr())],
    );
    assert_eq!(
        docker_ok(
            &host,
            &["run", "--rm", "--network", "none", &reference, "--once"]
        ),
        "hello from greeter 0.1.0"
    );
    // The daemonless builder's config: entrypoint, PATH, the package's labels.
    assert_eq!(
        docker_ok(
            &host,
            &[
                "inspect",
                "--format",
                "{{json .Config.Entrypoint}}",
                &reference
            ]
        ),
        r#"["/usr/local/bin/greeter"]"#
    );
    assert_eq!(
        docker_ok(
            &host,
            &[
                "inspect",
                "--format",
                "{{index .Config.Labels \"org.opencontainers.image.version\"}}",
                &reference
            ]
        ),
        "0.1.0"
    );
    let env = docker_ok(
        &host,
        &["inspect", "--format", "{{json .Config.Env}}", &reference],
    );
    assert!(
        env.contains(r#""GREETING=hi \"you\" $HOME \\ a=b""#) && env.contains(r#""EMPTY=""#),
        "{env}"
    );
    let note = docker_ok(
        &host,
        &[
            "inspect",
            "--format",
            "{{index .Config.Labels \"com.example.note\"}}",
            &reference,
        ],
    );
    assert_eq!(note, r#"costs $5 \ "net""#);
    // One ENV and one LABEL step for all of them (each step is an intermediate container).
    let history = docker_ok(
        &host,
        &[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            &reference,
        ],
    );
    let steps = |word: &str| {
        history
            .lines()
            .filter(|l| l.contains(&format!("#(nop)  {word} ")))
            .count()
    };
    assert_eq!((steps("ENV"), steps("LABEL")), (1, 1), "{history}");
    let _ = docker(&host, &["rmi", "-f", &reference]);
}

/// Generated mode through BuildKit (`buildkit = "auto"` on an engine that has it): the same
/// daemonless layers and config, and the binary runs.
#[test]
fn generated_mode_builds_through_buildkit_too() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_project(), dir.path());
    let mut manifest = fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
    manifest.push_str("env = { GREETING = 'hi \"you\" $HOME' }\nbuildkit = \"auto\"\n");
    fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    let out = adapt_push(dir.path().join("Cargo.toml"))
        .args(["--builder", "docker", "--tag", "genbk", "-v"])
        .args(["--registry", &registry.addr()])
        .env("DOCKER_HOST", &host)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-generated-target"),
        )
        .run();
    out.assert_ok();
    assert!(
        out.stderr.contains("building with BuildKit"),
        "{}",
        out.stderr
    );
    let reference = single_reference(&out, &format!("{}/demo/greeter", registry.addr()));
    pull_fresh(
        &host,
        &reference,
        &[format!("{}/demo/greeter:genbk", registry.addr())],
    );
    assert_eq!(
        docker_ok(
            &host,
            &["run", "--rm", "--network", "none", &reference, "--once"]
        ),
        "hello from greeter 0.1.0"
    );
    let env = docker_ok(
        &host,
        &["inspect", "--format", "{{json .Config.Env}}", &reference],
    );
    assert!(env.contains(r#""GREETING=hi \"you\" $HOME""#), "{env}");
}
