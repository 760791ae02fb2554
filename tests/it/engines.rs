//! Engines beyond a local socket: an `ssh://` engine on a non-default port, through a real sshd
//! (Debian's openssh-server) on loopback with a generated key, in front of the test engine.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const HELLO_OVER_SSH: &str = "fn main() { println!(\"hello over ssh\"); }\n";

struct Sshd {
    child: Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path),
        "ssh-keygen (apt-get install openssh-client)",
    );
}

/// sshd on 127.0.0.1 (a free, non-default port), accepting `client_key.pub` for root, with
/// DOCKER_HOST set for sessions so `docker system dial-stdio` reaches the test engine.
fn start_sshd(dir: &Path, engine: &str) -> Sshd {
    let port = free_port();
    keygen(&dir.join("host_key"));
    keygen(&dir.join("client_key"));
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSetEnv DOCKER_HOST={engine}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("start /usr/sbin/sshd (apt-get install openssh-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not start: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd { child, port }
}

/// The user's ~/.ssh/config would name the key and the known hosts; ssh takes `~` from the
/// password database, not $HOME, so the test puts a wrapper named `ssh` first on PATH instead.
fn ssh_wrapper(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("ssh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -i {dir}/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile={dir}/known_hosts -o StrictHostKeyChecking=accept-new \"$@\"\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn the_engine_builder_works_through_ssh_on_another_port() {
    let Some(engine) = docker_host() else { return };
    if !Path::new("/usr/sbin/sshd").is_file() {
        panic!("/usr/sbin/sshd missing: scripts/test installs openssh-server");
    }
    let dir = tempfile::tempdir().unwrap();
    let sshd = start_sshd(dir.path(), &engine);
    assert_ne!(sshd.port, 22);
    let bin = ssh_wrapper(dir.path());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let registry = TestRegistry::start();
    let manifest = write_crate(
        &dir.path().join("svc"),
        "svc",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nbuilder = \"docker\"\n",
            registry.addr()
        ),
        HELLO_OVER_SSH,
    );
    let address = format!("ssh://root@127.0.0.1:{}", sshd.port);
    let out = adapt_push(&manifest)
        .env("DOCKER_HOST", &address)
        .env("PATH", &path)
        .run();
    out.assert_ok();
    let reference = out.stdout.trim().to_string();
    assert!(reference.starts_with(&format!("{}/svc@sha256:", registry.addr())));
    assert_eq!(docker_pull_run(&engine, &reference, &[]), "hello over ssh");

    // A host that refuses: the error names the address, and ssh's complaint is shown.
    let out = adapt_push(&manifest)
        .env(
            "DOCKER_HOST",
            format!("ssh://root@127.0.0.1:{}", free_port()),
        )
        .env("PATH", &path)
        .run();
    assert!(!out.status.success());
    let err = &out.stderr;
    assert!(
        err.contains("cannot reach the Docker engine at ssh://root@127.0.0.1:"),
        "{err}"
    );
}

/// `podman system service` on a private unix socket, with its own storage (vfs) and cgroupfs,
/// so it runs here beside the test engine without touching anything else.
struct PodmanService {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_podman(dir: &Path) -> PodmanService {
    let socket = dir.join("podman.sock");
    let child = Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "system",
            "service",
            "--time=0",
        ])
        .arg(format!("unix://{}", socket.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("podman.log")).unwrap())
        .spawn()
        .expect("start podman (apt-get install podman)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "podman service did not start: {}",
            std::fs::read_to_string(dir.join("podman.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    PodmanService { child, socket }
}

#[test]
fn the_engine_builder_works_through_podmans_service_and_pushes_to_a_plain_http_registry() {
    // The pushed image is pulled and run by the test's Docker engine (podman here cannot start
    // containers without extra ulimit flags; the image is what matters).
    let Some(engine) = docker_host() else { return };
    let dir = tempfile::tempdir().unwrap();
    let podman = start_podman(dir.path());
    let registry = TestRegistry::start();
    let manifest = write_crate(
        &dir.path().join("svc"),
        "svc",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\nbuilder = \"docker\"\n",
            registry.addr()
        ),
        HELLO_OVER_SSH,
    );
    let out = tool()
        .args(["adapt-push", "-v", "--manifest-path"])
        .arg(&manifest)
        .env("DOCKER_HOST", format!("unix://{}", podman.socket.display()))
        .run();
    out.assert_ok();
    assert!(out.stderr.contains("Podman service"), "{}", out.stderr);
    let reference = out.stdout.trim().to_string();
    assert!(reference.starts_with(&format!("{}/svc@sha256:", registry.addr())));
    assert_eq!(docker_pull_run(&engine, &reference, &[]), "hello over ssh");
}
