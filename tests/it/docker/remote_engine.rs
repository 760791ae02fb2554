//! The engine the Docker builder talks to, when it is not the local socket: a remote engine
//! over TCP with TLS (and without the client certificate), and an engine that does not answer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::*;

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
