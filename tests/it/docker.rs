//! The Docker engine builder against a real engine (the one `scripts/test` starts; tests that
//! need it skip without it, and fail under CI): Dockerfile builds with `.dockerignore`, generated
//! images, a remote engine over TLS, an engine that is down, and a failing build step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The one line of stdout, which must be `{prefix}@sha256:<64 hex>`.
fn single_reference(run: &Run, prefix: &str) -> String {
    let out = &run.stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be exactly one line:\n{out}\n--- stderr ---\n{}",
        run.stderr
    );
    let reference = lines[0].to_string();
    let digest = reference
        .strip_prefix(&format!("{prefix}@sha256:"))
        .unwrap_or_else(|| panic!("`{reference}` does not start with {prefix}@sha256:"));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{reference}"
    );
    reference
}

fn split_registry(external: &str, internal: &str) -> String {
    format!("registry = {{ external = \"{external}\", internal = \"{internal}\" }}")
}

/// A base image made from Debian's busybox-static, imported into the engine and pushed to the
/// test's registry as `{registry}/base:1`: no image comes from outside the machine.
fn push_busybox_base(host: &str, registry: &TestRegistry) -> String {
    let mut rootfs = BusyboxRootfs::new();
    rootfs
        .dir("bin/", 0o755)
        .dir("tmp/", 0o1777)
        .busybox("bin/");
    for applet in [
        "sh", "echo", "cat", "ls", "find", "env", "test", "true", "false",
    ] {
        rootfs.link(&format!("bin/{applet}"), "busybox");
    }
    rootfs.import_and_push(host, &format!("{}/base:1", registry.addr()), "/bin")
}

/// A root filesystem tar made from Debian's busybox-static, for `docker import`.
struct BusyboxRootfs {
    dir: tempfile::TempDir,
    tar: tar::Builder<fs::File>,
}

impl BusyboxRootfs {
    fn new() -> BusyboxRootfs {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar::Builder::new(fs::File::create(dir.path().join("rootfs.tar")).unwrap());
        BusyboxRootfs { dir, tar }
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }

    /// The busybox binary as `{dir}busybox`.
    fn busybox(&mut self, dir: &str) -> &mut Self {
        let busybox = find_program("busybox", &["/bin/busybox", "/usr/bin/busybox"]);
        let bytes = fs::read(busybox).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(bytes.len() as u64);
        self.tar
            .append_data(&mut h, format!("{dir}busybox"), &bytes[..])
            .unwrap();
        self
    }

    fn link(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    /// Imports the tar into the engine at `host` as `name`, with `PATH={path}`, and pushes it.
    fn import_and_push(mut self, host: &str, name: &str, path: &str) -> String {
        self.tar.finish().unwrap();
        let rootfs = self.dir.path().join("rootfs.tar");
        docker_ok(
            host,
            &[
                "import",
                "--change",
                &format!("ENV PATH={path}"),
                rootfs.to_str().unwrap(),
                name,
            ],
        );
        docker_ok(host, &["push", name]);
        name.to_string()
    }
}

/// Pulls `reference` through its own address after dropping the engine's local copies of the
/// pushed tags, so what runs really came through that address.
fn pull_fresh(host: &str, reference: &str, local_tags: &[String]) {
    for tag in local_tags {
        let _ = docker(host, &["rmi", tag]);
    }
    docker_ok(host, &["pull", reference]);
}

// ---------------------------------------------------------------------------------------------

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

#[test]
fn an_engine_that_does_not_answer_names_its_address_and_suggests_oci() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "noengine",
        "\n[package.metadata.cluster]\nregistry = \"127.0.0.1:1\"\n",
        EMPTY_MAIN,
    );
    fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let closed = format!("tcp://127.0.0.1:{}", free_port());
    for address in ["unix:///nonexistent.sock", closed.as_str()] {
        // No --builder: the Dockerfile makes `auto` choose the engine.
        let out = tool()
            .arg("--manifest-path")
            .arg(&manifest)
            .env("DOCKER_HOST", address)
            .run();
        assert!(
            !out.status.success(),
            "{address}: succeeded without an engine"
        );
        assert_eq!(out.stdout, "", "{address}");
        let err = &out.stderr;
        assert!(err.contains(address), "{address} not named:\n{err}");
        assert!(
            err.contains("--builder oci"),
            "no --builder oci hint:\n{err}"
        );
    }
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

// ---------------------------------------------------------------------------------------------
// BuildKit
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// A remote engine over TCP with TLS
// ---------------------------------------------------------------------------------------------

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, named as Docker expects
/// (`ca.pem`, `cert.pem`, `key.pem` for the client; `server-*.pem` for the daemon).
fn make_certificates(dir: &Path) {
    let ca = Ca::create(dir, "adapt-push test CA");
    ca.server("server-cert.pem", "server-key.pem");
    ca.client("cert.pem", "key.pem");
}

/// A second dockerd listening only on tcp://127.0.0.1:port with --tlsverify; stopped on drop.
struct TlsEngine {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsEngine {
    fn start() -> TlsEngine {
        // Short paths: containerd's sockets live under the exec root.
        let dir = tempfile::Builder::new()
            .prefix("ap-tls-")
            .tempdir_in("/tmp")
            .unwrap();
        make_certificates(dir.path());
        let port = free_port();
        let d = dir.path();
        let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("dockerd"));
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .arg("--host")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(d.join("ca.pem"))
            .arg("--tlscert")
            .arg(d.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(d.join("server-key.pem"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--bridge=none", "--iptables=false"])
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/sbin",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut engine = TlsEngine { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = engine.child.try_wait().unwrap() {
                panic!("dockerd exited ({status}):\n{}", engine.log());
            }
            if engine.cli(&["version"]).status.success() {
                return engine;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd with TLS did not answer in 60s:\n{}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new(docker_bin())
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(d.join("ca.pem"))
            .arg("--tlscert")
            .arg(d.join("cert.pem"))
            .arg("--tlskey")
            .arg(d.join("key.pem"))
            .args(["-H", &self.address()])
            .args(args)
            .env("DOCKER_CONFIG", empty_docker_config())
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for TlsEngine {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever the daemon left mounted under its directory, so the directory can go.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|t| t.starts_with(&prefix))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = Command::new("umount").args(["-l", t]).status();
        }
    }
}

#[test]
fn a_remote_engine_over_tcp_with_tls() {
    if docker_host().is_none() {
        return;
    }
    if !is_root() {
        eprintln!("skipping: starting a second dockerd needs root");
        return;
    }
    let engine = TlsEngine::start();
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "remote",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nimage = \"team/remote\"\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );
    fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    fs::write(dir.path().join("hello.txt"), "hello over TLS\n").unwrap();

    let out = tool()
        .arg("--manifest-path")
        .arg(&manifest)
        .env("DOCKER_HOST", engine.address())
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", engine.dir.path())
        .run();
    out.assert_ok();
    let reference = single_reference(&out, &format!("{}/team/remote", registry.addr()));
    assert_eq!(registry.tags("team/remote"), ["latest"]);
    let (status, _, _) = registry.manifest("team/remote", reference.split('@').nth(1).unwrap());
    assert_eq!(status, 200);
    // The image was built by the TLS engine, not the other one.
    let images = engine.cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(
        images.contains(&format!("{}/team/remote:latest", registry.addr())),
        "{images}"
    );

    // Without the client certificate the engine refuses us: a clear error, nothing printed.
    let empty = tempfile::tempdir().unwrap();
    fs::copy(
        engine.dir.path().join("ca.pem"),
        empty.path().join("ca.pem"),
    )
    .unwrap();
    let out = tool()
        .arg("--manifest-path")
        .arg(&manifest)
        .env("DOCKER_HOST", engine.address())
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", empty.path())
        .run();
    assert!(!out.status.success());
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("cert.pem"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// Images that start: merging with a usr-merged base, and what a scratch image carries
// ---------------------------------------------------------------------------------------------

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
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nuser = \"nonroot\"\n",
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
