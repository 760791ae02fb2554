//! `builder = "docker"` with the crate's Dockerfile: the build context honours `.dockerignore`
//! exactly as the docker CLI sends it, the pushed reference runs through `internal`, BuildKit
//! cache mounts persist between builds, and a failing step (classic builder or BuildKit) shows
//! its output and pushes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

#[test]
fn dockerfile_build_honours_dockerignore_and_the_reference_runs_through_internal() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let internal = CountingProxy::start(&registry.addr());
    let base = push_busybox_base(&host, &registry);

    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "dockerapp",
        &format!(
            "\n[package.metadata.cluster]\n{}\nimage = \"team/dockerapp\"\ntags = [\"v1\", \"latest\"]\n\
             build-args = {{ GREETING = \"hello from a build arg\" }}\n\
             labels = {{ \"com.example.team\" = \"platform\" }}\n\
             buildkit = false\n",
            split_registry(&registry.addr(), &internal.addr())
        ),
        EMPTY_MAIN,
    );
    let root = manifest.parent().unwrap();
    fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             ARG GREETING=unset\n\
             RUN echo \"greeting: $GREETING\" > /greeting.txt\n\
             COPY . /ctx\n\
             CMD [\"cat\", \"/greeting.txt\"]\n"
        ),
    )
    .unwrap();
    fs::write(
        root.join(".dockerignore"),
        "# build output and secrets stay home\ntarget\nsecret.txt\n*.log\n!keep.log\ndocs/**\n!docs/public.md\n",
    )
    .unwrap();
    for (path, content) in [
        ("secret.txt", "hunter2"),
        ("target/release/dockerapp", "a stale binary"),
        ("app.log", "noise"),
        ("keep.log", "wanted"),
        ("docs/private.md", "internal"),
        ("docs/public.md", "public"),
        // Patterns are relative to the context root: these are sent.
        ("nested/target/x", "x"),
        ("nested/secret.txt", "not the top-level one"),
    ] {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    let out = adapt_push(&manifest).env("DOCKER_HOST", &host).run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/team/dockerapp", internal.addr()));
    assert_eq!(
        internal.connections(),
        0,
        "the push contacted the internal address"
    );
    let err = &out.stderr;
    assert!(
        err.contains("Step 3/"),
        "the build output goes to stderr:\n{err}"
    );

    let digest = reference.split('@').nth(1).unwrap();
    let mut tags = registry.tags("team/dockerapp");
    tags.sort();
    assert_eq!(tags, ["latest", "v1"]);
    let (status, _, _) = registry.manifest("team/dockerapp", digest);
    assert_eq!(status, 200);
    for tag in ["v1", "latest"] {
        let (_, headers, _) = registry.manifest("team/dockerapp", tag);
        assert_eq!(
            header(&headers, "docker-content-digest"),
            Some(digest),
            "{tag}"
        );
    }

    let pushed: Vec<String> = ["v1", "latest"]
        .iter()
        .map(|t| format!("{}/team/dockerapp:{t}", registry.addr()))
        .collect();
    pull_fresh(&host, &reference, &pushed);
    assert!(
        internal.connections() > 0,
        "the pull did not go through the internal address"
    );
    assert_eq!(
        docker_ok(&host, &["run", "--rm", "--network", "none", &reference]),
        "greeting: hello from a build arg"
    );
    let listing = docker_ok(
        &host,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &reference,
            "find",
            "/ctx",
        ],
    );
    let files: Vec<&str> = listing.lines().collect();
    for present in [
        "/ctx/Dockerfile",
        "/ctx/.dockerignore",
        "/ctx/Cargo.toml",
        "/ctx/src/main.rs",
        "/ctx/keep.log",
        "/ctx/docs/public.md",
        "/ctx/nested/target/x",
        "/ctx/nested/secret.txt",
    ] {
        assert!(
            files.contains(&present),
            "{present} missing from the image:\n{listing}"
        );
    }
    for absent in [
        "/ctx/secret.txt",
        "/ctx/target",
        "/ctx/app.log",
        "/ctx/docs/private.md",
    ] {
        assert!(
            !files.contains(&absent),
            "{absent} reached the engine:\n{listing}"
        );
    }
    assert_eq!(
        docker_ok(
            &host,
            &[
                "inspect",
                "--format",
                "{{index .Config.Labels \"com.example.team\"}}",
                &reference
            ]
        ),
        "platform"
    );
    let _ = docker(&host, &["rmi", "-f", &reference]);
}

/// What `find /ctx` lists in an image, sorted.
fn context_listing(host: &str, image: &str) -> Vec<String> {
    let out = docker_ok(
        host,
        &["run", "--rm", "--network", "none", image, "find", "/ctx"],
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn dockerignore_sends_what_the_docker_cli_sends() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let base = push_busybox_base(&host, &registry);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "ignorecheck",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nimage = \"team/ignorecheck\"\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );
    let root = manifest.parent().unwrap();
    fs::write(
        root.join("Dockerfile"),
        format!("FROM {base}\nCOPY . /ctx\n"),
    )
    .unwrap();
    fs::write(
        root.join(".dockerignore"),
        "# comment\n  # not a comment\ntarget\n/secret.txt\n*.log\n!keep.log\ndocs/**\n!docs/public.md\n\
         **/*.key\n!**/test.key\ncache/\n!cache/keep\na?c\n[xy].txt\nnested/**/deep\nvendor\n!vendor/allowed\n\
         ./dot/./slash//\nDockerfile\n",
    )
    .unwrap();
    for path in [
        "target/x",
        "secret.txt",
        "sub/secret.txt",
        "app.log",
        "keep.log",
        "sub/app.log",
        "docs/private.md",
        "docs/public.md",
        "docs/sub/x.md",
        "real.key",
        "k/real.key",
        "k/test.key",
        "cache/junk",
        "cache/keep",
        "abc",
        "abbc",
        "x.txt",
        "z.txt",
        "nested/a/b/deep/f",
        "nested/deep",
        "nested/shallow",
        "vendor/allowed/f",
        "vendor/other/f",
        "dot/slash/f",
        ".hidden",
        "# not a comment",
    ] {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, path).unwrap();
    }

    // The docker CLI's classic builder makes its own context tar from the same directory.
    let cli_image = format!("adapt-push-ignorecheck-{}:cli", registry.port);
    let out = Command::new(docker_bin())
        .args(["-H", &host, "build", "-q", "-t", &cli_image])
        .arg(root)
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", empty_docker_config())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tool()
        .arg("--manifest-path")
        .arg(&manifest)
        .env("DOCKER_HOST", &host)
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/team/ignorecheck", registry.addr()));

    let ours = context_listing(&host, &reference);
    let theirs = context_listing(&host, &cli_image);
    assert_eq!(ours, theirs, "our context differs from the docker CLI's");
    assert!(
        ours.contains(&"/ctx/vendor/allowed/f".to_string()),
        "{ours:#?}"
    );
    assert!(!ours.contains(&"/ctx/secret.txt".to_string()), "{ours:#?}");
    let _ = docker(&host, &["rmi", "-f", &reference, &cli_image]);
}

/// With the classic builder, chosen explicitly (`buildkit = false`).
#[test]
fn a_failing_build_step_shows_its_message_and_pushes_nothing() {
    assert_failing_step_pushes_nothing(false, "COPY . /ctx\n", "returned a non-zero code: 3");
}

/// A `RUN` step that exits 3, under the classic builder or BuildKit: the build fails, the step's
/// output and the engine's message (`engine_message`) are on stderr, stdout is empty, and no tag
/// is pushed.
fn assert_failing_step_pushes_nothing(buildkit: bool, dockerfile_tail: &str, engine_message: &str) {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let base = push_busybox_base(&host, &registry);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "failing",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nimage = \"team/failing\"\nbuildkit = {buildkit}\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );
    fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo 'this step fails on purpose' && exit 3\n{dockerfile_tail}"),
    )
    .unwrap();
    let out = tool()
        .arg("--manifest-path")
        .arg(&manifest)
        .env("DOCKER_HOST", &host)
        .run();
    assert!(
        !out.status.success(),
        "the build succeeded:\n{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    let err = &out.stderr;
    assert!(
        err.contains("this step fails on purpose"),
        "the step's output is missing:\n{err}"
    );
    assert!(
        err.contains(engine_message),
        "the engine's message is missing:\n{err}"
    );
    assert!(
        registry.tags("team/failing").is_empty(),
        "something was pushed"
    );
}

/// A crate whose Dockerfile writes into a BuildKit cache mount and records what it found there.
fn cache_mount_crate(
    dir: &Path,
    registry: &TestRegistry,
    base: &str,
    run: &str,
    cache_id: &str,
) -> PathBuf {
    let manifest = write_crate(
        dir,
        "cached",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nimage = \"team/cached\"\ntags = [\"{run}\"]\n\
             buildkit = true\nbuild-args = {{ RUN_ID = \"{run}\" }}\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             ARG RUN_ID\n\
             RUN --mount=type=cache,target=/cache,id={cache_id} \
             ls /cache > /seen.txt && echo \"$RUN_ID\" > \"/cache/$RUN_ID\"\n\
             CMD [\"cat\", \"/seen.txt\"]\n"
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn buildkit_cache_mounts_build_push_and_persist_between_builds() {
    let Some(host) = docker_host() else { return };
    let registry = TestRegistry::start();
    let base = push_busybox_base(&host, &registry);
    // A cache of its own, so earlier runs of this test leave nothing in it.
    let cache_id = format!(
        "adapt-push-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for run in ["first", "second"] {
        let manifest = cache_mount_crate(dir.path(), &registry, &base, run, &cache_id);
        let out = tool()
            .arg("--manifest-path")
            .arg(&manifest)
            .env("DOCKER_HOST", &host)
            .run();
        assert!(out.status.success(), "build {run} failed:\n{}", out.stderr);
        let reference = single_reference(&out, &format!("{}/team/cached", registry.addr()));
        assert!(registry.tags("team/cached").contains(&run.to_string()));
        pull_fresh(
            &host,
            &reference,
            &[format!("{}/team/cached:{run}", registry.addr())],
        );
        seen.push(docker_ok(&host, &["run", "--rm", &reference]));
    }
    assert_eq!(
        seen[0].trim(),
        "",
        "the cache mount started with files in it"
    );
    assert_eq!(
        seen[1].trim(),
        "first",
        "the second build did not see what the first wrote in the cache mount"
    );
}

#[test]
fn a_failing_buildkit_step_shows_its_output_and_pushes_nothing() {
    assert_failing_step_pushes_nothing(true, "", "exit code: 3");
}
