//! `[package.metadata.cluster]` as users write it, against a real registry: every mistake
//! names the key, the Cargo.toml and its line, and pushes nothing; an empty `ADAPT_PUSH_*`
//! setting means unset; several binaries get their own repositories; tag templates render.

use crate::common::*;

/// Every config mistake: non-zero exit, a message naming the key and the Cargo.toml (with the
/// line), nothing on stdout, nothing pushed.
#[test]
fn config_errors_name_key_file_and_line() {
    let registry = TestRegistry::start();
    let r = registry.addr();
    // (cluster table body, expected fragments of stderr)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("registry = \"{r}\"\nimgae = \"x\""),
            vec!["unknown key `imgae`", "did you mean `image`", "Cargo.toml:"],
        ),
        (
            format!("registry = {{ external = \"{r}\" }}"),
            vec!["no `internal`", "registry"],
        ),
        (
            format!("registry = {{ external = \"{r}\", internal = \"r:1\", other = \"x\" }}"),
            vec!["registry.other"],
        ),
        (
            "registry = \"ftp://host:5000\"".into(),
            vec!["unsupported scheme", "registry"],
        ),
        ("registry = \"localhost:99999\"".into(), vec!["port number"]),
        (
            format!("registry = \"{r}\"\nimage = \"Team/App\""),
            vec!["`image`", "uppercase"],
        ),
        (
            format!("registry = \"{r}\"\ntags = \"latest\""),
            vec!["`tags` must be an array"],
        ),
        (
            format!("registry = \"{r}\"\ntags = [\"{{nope}}\"]"),
            vec!["unknown placeholder `{nope}`"],
        ),
        (
            format!("registry = \"{r}\"\ntags = [\"bad tag\"]"),
            vec!["not valid"],
        ),
        (
            format!("registry = \"{r}\"\nenv = {{ PORT = 8080 }}"),
            vec!["`env.PORT` must be a string", "quote the value"],
        ),
        (
            format!("registry = \"{r}\"\nuser = \"app\""),
            vec!["`user`", "numeric"],
        ),
        (
            format!("registry = \"{r}\"\nmedia-types = \"v1\""),
            vec![
                "unknown media types `v1`",
                "\"oci\" or \"docker\"",
                "Cargo.toml:",
            ],
        ),
        (
            format!("registry = \"{r}\"\ncheck-base = \"no\""),
            vec!["`check-base` must be true or false"],
        ),
        (
            format!("registry = \"{r}\"\ninclude = [\"missing.txt\"]"),
            vec!["`include`", "missing.txt", "does not exist"],
        ),
        (
            format!("registry = \"{r}\"\nbuilder = \"kaniko\""),
            vec!["unknown builder `kaniko`"],
        ),
        (
            format!("registry = \"{r}\"\ncompression = \"brotli\""),
            vec!["`compression`", "brotli", "zstd"],
        ),
        (
            format!("registry = \"{r}\"\nbin = \"other\""),
            vec!["no binary named `other`"],
        ),
        (
            format!("registry = \"{r}\"\nbase = \"Not A Ref\""),
            vec!["`base`", "not an image reference"],
        ),
        ("image = \"x\"".into(), vec!["no registry to push to"]),
        (
            format!("registry = {{ external = \"{r}\", internal = \"registry\" }}"),
            vec!["registry.internal", "Docker Hub", "registry:5000"],
        ),
        (
            format!("registry = \"{r}\"\npull = \"yes\""),
            vec!["`pull` must be true or false"],
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_crate(
            dir.path(),
            "bad",
            &format!("\n[package.metadata.cluster]\n{body}\n"),
            HELLO_ONCE,
        );
        let out = adapt_push(&manifest).run();
        let err = &out.stderr;
        assert!(!out.status.success(), "case {i} ({body}) should fail");
        assert!(
            out.stdout.is_empty(),
            "case {i}: stdout must stay empty: {}",
            out.stdout
        );
        assert!(!err.contains("panicked"), "case {i}: {err}");
        for fragment in expected {
            assert!(
                err.contains(fragment),
                "case {i} ({body}): stderr lacks {fragment:?}:\n{err}"
            );
        }
        assert!(
            err.contains(manifest.to_str().unwrap()),
            "case {i}: names the Cargo.toml:\n{err}"
        );
        assert!(
            !dir.path().join("target").exists(),
            "case {i}: nothing built"
        );
    }
    let (status, _, body) = http_get(&registry.addr(), "/v2/_catalog", "");
    assert_eq!(status, 200);
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!([]),
        "nothing was pushed"
    );
}

#[test]
fn empty_environment_settings_mean_unset_and_several_binaries_get_their_own_repositories() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "multi",
        &format!(
            "default-run = \"one\"\n\n[[bin]]\nname = \"one\"\npath = \"src/main.rs\"\n\n[[bin]]\nname = \"two\"\npath = \"src/main.rs\"\n{}",
            split_config(&registry.addr(), &registry.addr(), "tags = [\"cfg\"]\n")
        ),
        HELLO_ONCE,
    );
    for bin in ["one", "two"] {
        let out = adapt_push(&manifest)
            .args(["--bin", bin])
            .env("ADAPT_PUSH_TAGS", "")
            .env("ADAPT_PUSH_FORMAT", "")
            .run();
        out.assert_ok();
        assert!(
            out.stdout
                .starts_with(&format!("{}/multi-{bin}@sha256:", registry.addr())),
            "{}",
            out.stdout
        );
        assert_eq!(
            registry.tags(&format!("multi-{bin}")),
            vec!["cfg"],
            "empty ADAPT_PUSH_TAGS is unset"
        );
    }
}

#[test]
fn tags_render_templates() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "tagged",
        &split_config(
            &registry.addr(),
            &registry.addr(),
            "tags = [\"{version}\", \"{package}-{bin}\", \"git-{git_short_sha}\"]\n",
        ),
        HELLO_ONCE,
    );
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "init"]);
    let sha = git(&["rev-parse", "HEAD"]);
    let out = adapt_push(&manifest).run();
    out.assert_ok();
    let mut tags = registry.tags("tagged");
    tags.sort();
    let mut expected = vec![
        "0.1.0".to_string(),
        "tagged-tagged".into(),
        format!("git-{}", &sha[..7]),
    ];
    expected.sort();
    assert_eq!(tags, expected);
}
