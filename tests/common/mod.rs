//! Shared harness for the integration tests (`mod common;` in each test file).
//!
//! * [`TestRegistry`]: a real CNCF distribution registry (`docker-registry`) on a free
//!   loopback port, with its data in a temp dir; killed on drop.
//! * [`CountingProxy`]: a loopback TCP forwarder that counts connections; it stands in for the
//!   cluster's `internal` registry address, to prove the tool never contacts it during a push
//!   while the printed reference still resolves through it.
//! * [`http_get`] / [`http_request`]: tiny std-only HTTP/1.1 clients (no TLS).
//! * [`docker_host`] / [`docker`]: the Docker engine that `scripts/test` starts for the run.
//! * [`tool`]: the built `cargo-adapt-push` binary with a hermetic environment.
//! * [`copy_dir`] / [`write_crate`] / [`example_project`]: crates to push.
//!
//! Everything listens on and connects to 127.0.0.1 only.
#![allow(dead_code)]

mod path_proxy;
#[allow(unused_imports)]
pub use path_proxy::PathRewritingProxy;

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Accept header that asks a registry for a single-image manifest, OCI or Docker v2.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Accept header that also allows image indexes / manifest lists.
pub const ANY_MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------------------------
// Ports and small utilities
// ---------------------------------------------------------------------------------------------

/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, then release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// First existing path among `candidates`, else the bare `name` (looked up on PATH).
fn find_program(name: &str, candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

// ---------------------------------------------------------------------------------------------
// TestRegistry
// ---------------------------------------------------------------------------------------------

/// A `docker-registry` (CNCF distribution 2.8) serving on `127.0.0.1:port`.
///
/// Its config is `dir/config.yml`, its blobs live in `dir/data`, its log in `dir/registry.log`.
/// Dropping it kills the process and removes the directory.
pub struct TestRegistry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    /// A plain-HTTP registry without auth.
    pub fn start() -> Self {
        Self::start_with_config(|port, _dir| Self::default_http(port))
    }

    /// A registry whose config is the fixed top part (version, log, storage) followed by the
    /// YAML that `config` returns. `config` gets the port and the registry's directory (to write
    /// an htpasswd file or certificates into) and must return at least an `http:` section that
    /// listens on `127.0.0.1:{port}`, usually `TestRegistry::default_http(port)` plus extra
    /// top-level sections (e.g. `auth:`), or a full `http:` section with `tls:`.
    ///
    /// Readiness is "any HTTP answer on /v2/" (200, 401 with auth, or Go's 400 for plain HTTP
    /// to a TLS port), within 20 s.
    pub fn start_with_config(config: impl Fn(u16, &Path) -> String) -> Self {
        // The port is released before the registry binds it, so another process may grab it in
        // between; retry a few times on "address already in use".
        let mut attempt = 1;
        loop {
            match Self::try_start(&config) {
                Ok(registry) => return registry,
                Err(log) if attempt < 3 && log.contains("address already in use") => attempt += 1,
                Err(log) => panic!("{log}"),
            }
        }
    }

    /// The default `http:` section: plain HTTP on 127.0.0.1:port.
    pub fn default_http(port: u16) -> String {
        format!("http:\n  addr: 127.0.0.1:{port}\n")
    }

    /// A registry requiring HTTP basic auth (htpasswd, bcrypt) for `user`/`password`.
    /// Needs `htpasswd` (Debian's apache2-utils; scripts/test installs it).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Self {
        Self::start_with_config(|port, dir| {
            let file = dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd (apt-get install apache2-utils; scripts/test installs it)");
            assert!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            fs::write(&file, &out.stdout).expect("write htpasswd file");
            format!(
                "{}auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                Self::default_http(port),
                file.display()
            )
        })
    }

    /// A registry serving HTTPS with a fresh self-signed certificate for `127.0.0.1`/`localhost`.
    /// The certificate (also its own CA) is at [`TestRegistry::tls_cert`]. Needs `openssl`.
    pub fn start_with_tls() -> Self {
        Self::start_with_config(|port, dir| {
            let (cert, key) = self_signed_cert(dir);
            format!(
                "http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        })
    }

    fn try_start(config: &impl Fn(u16, &Path) -> String) -> Result<Self, String> {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("adapt-push-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).expect("create registry data dir");
        let yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             cache:\n    blobdescriptor: inmemory\n\
             {}",
            data.display(),
            config(port, dir.path())
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, yaml).expect("write registry config.yml");
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).expect("create registry.log");

        let program = find_program("docker-registry", &["/usr/bin/docker-registry"]);
        let child = Command::new(&program)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}\n\
                     install Debian's docker-registry package (scripts/test does it)",
                    program.display()
                )
            });
        let mut registry = TestRegistry { port, dir, child };

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = registry.child.try_wait().expect("poll registry process") {
                return Err(format!(
                    "docker-registry exited ({status}) before answering on {}\n\
                     --- config.yml ---\n{}\n--- registry.log ---\n{}",
                    registry.addr(),
                    fs::read_to_string(&config_path).unwrap_or_default(),
                    registry.log()
                ));
            }
            if try_http_request(&registry.addr(), "GET", "/v2/", &[], Duration::from_secs(2))
                .is_ok()
            {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry did not answer GET http://{}/v2/ within 20s\n\
                     --- config.yml ---\n{}\n--- registry.log ---\n{}",
                    registry.addr(),
                    fs::read_to_string(&config_path).unwrap_or_default(),
                    registry.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT`, the address to push to.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Contents of the registry's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Certificate and key written by [`TestRegistry::start_with_tls`].
    pub fn tls_cert(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("cert.pem"),
            self.dir.path().join("key.pem"),
        )
    }

    /// GET a manifest (`reference` is a tag or a digest) over plain HTTP.
    pub fn manifest(&self, repo: &str, reference: &str) -> HttpResponse {
        http_get(
            &self.addr(),
            &format!("/v2/{repo}/manifests/{reference}"),
            ANY_MANIFEST_ACCEPT,
        )
    }

    /// Tags of `repo` (empty if the repository does not exist).
    /// The repository's image tags. Referrers fallback tags (`sha256-<hex>`, the OCI 1.1 tag
    /// schema holding an image's SBOM and provenance) are not image tags and are left out; see
    /// [`TestRegistry::all_tags`].
    pub fn tags(&self, repo: &str) -> Vec<String> {
        self.all_tags(repo)
            .into_iter()
            .filter(|t| !is_referrers_tag(t))
            .collect()
    }

    /// Every tag of the repository, referrers fallback tags included.
    pub fn all_tags(&self, repo: &str) -> Vec<String> {
        let (status, _, body) = http_get(&self.addr(), &format!("/v2/{repo}/tags/list"), "");
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "tags/list: {}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).expect("tags/list JSON");
        json["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl args…` in `dir`; panics with its stderr when it fails.
/// `sha256-<64 hex>`: a referrers fallback tag.
pub fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `cert.pem`/`key.pem` (self-signed, SAN 127.0.0.1 and localhost) into `dir`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}

// ---------------------------------------------------------------------------------------------
// CountingProxy
// ---------------------------------------------------------------------------------------------

/// Forwards TCP connections from `127.0.0.1:port` to `target`, counting accepted connections.
/// Stops (and cuts open connections) on drop.
pub struct CountingProxy {
    pub port: u16,
    target: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    open: OpenConnections,
    acceptor: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Starts forwarding to `target` (e.g. `registry.addr()`).
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy on 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy local addr").port();
        listener
            .set_nonblocking(true)
            .expect("set proxy listener non-blocking");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open: OpenConnections = Arc::new(Mutex::new(HashMap::new()));

        let acceptor = {
            let (target, connections, stop, open) = (
                target.to_string(),
                connections.clone(),
                stop.clone(),
                open.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let id = connections.fetch_add(1, Ordering::SeqCst);
                            forward(id, client, &target, &open);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => {
                            eprintln!("CountingProxy: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        };

        CountingProxy {
            port,
            target: target.to_string(),
            connections,
            stop,
            open,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`, the address that stands in for the cluster's registry address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where connections are forwarded to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Open connections by id: (client side, upstream side), for cutting them on drop.
type OpenConnections = Arc<Mutex<HashMap<usize, (TcpStream, TcpStream)>>>;

/// Pipes `client` <-> a new connection to `target` in two threads.
fn forward(id: usize, client: TcpStream, target: &str, open: &OpenConnections) {
    // The listener is non-blocking; accepted sockets must not be.
    let _ = client.set_nonblocking(false);
    let upstream = match TcpStream::connect(target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("CountingProxy: cannot connect to {target}: {e}");
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let clones = || -> io::Result<_> {
        Ok((
            client.try_clone()?,
            upstream.try_clone()?,
            client.try_clone()?,
            upstream.try_clone()?,
        ))
    };
    let Ok((client2, upstream2, client3, upstream3)) = clones() else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    open.lock().unwrap().insert(id, (client3, upstream3));
    let remaining = Arc::new(AtomicUsize::new(2));
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let (open, remaining) = (open.clone(), remaining.clone());
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
            if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                open.lock().unwrap().remove(&id);
            }
        });
    };
    pipe(client, upstream);
    pipe(upstream2, client2);
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, (client, upstream)) in self.open.lock().unwrap().drain() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 client (plain TCP, no TLS)
// ---------------------------------------------------------------------------------------------

/// `(status, headers, body)`; header names are as the server sent them.
pub type HttpResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// `GET http://{addr}{path}` with `Connection: close`; `accept` may be empty. Panics on I/O
/// errors (not on HTTP error statuses).
pub fn http_get(addr: &str, path: &str, accept: &str) -> HttpResponse {
    let headers: Vec<(&str, &str)> = if accept.is_empty() {
        Vec::new()
    } else {
        vec![("Accept", accept)]
    };
    http_request(addr, "GET", path, &headers)
}

/// Any bodiless request (GET, HEAD, DELETE) with extra headers, e.g. `Authorization`.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    try_http_request(addr, method, path, headers, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

/// Case-insensitive header lookup.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Like [`http_request`] but returns I/O and protocol errors; `timeout` bounds connect and
/// each read/write.
pub fn try_http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let sock: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| io::Error::other(format!("no address for {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("User-Agent: adapt-push-tests\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    stream.flush()?;

    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP status line: {line:?}")))?;

    let mut response_headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            response_headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }

    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    let chunked = header(&response_headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header(&response_headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if no_body {
    } else if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size_hex = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| io::Error::other(format!("bad chunk size line: {line:?}")))?;
            if size == 0 {
                break; // trailers, if any, are ignored
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((status, response_headers, body))
}

// ---------------------------------------------------------------------------------------------
// Docker engine
// ---------------------------------------------------------------------------------------------

/// The engine started by `scripts/test` (`ADAPT_PUSH_TEST_DOCKER_HOST`, e.g.
/// `unix:///tmp/.../docker.sock`). Unset: under CI that is a setup bug (panic); locally it
/// returns `None` after printing "skipping: no engine", and the caller returns early.
pub fn docker_host() -> Option<String> {
    match std::env::var("ADAPT_PUSH_TEST_DOCKER_HOST") {
        Ok(host) if !host.is_empty() => Some(host),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => panic!(
            "ADAPT_PUSH_TEST_DOCKER_HOST is not set but CI is: run the tests through \
             scripts/test (as root), which starts a Docker engine and exports it"
        ),
        _ => {
            eprintln!(
                "skipping: no engine (ADAPT_PUSH_TEST_DOCKER_HOST unset; run scripts/test as root)"
            );
            None
        }
    }
}

/// The docker CLI: Debian's /usr/bin/docker (matches the engine) if present, else PATH.
pub fn docker_bin() -> PathBuf {
    find_program("docker", &["/usr/bin/docker"])
}

/// Runs `docker -H host args...` with an empty DOCKER_CONFIG and returns its output.
pub fn docker(host: &str, args: &[&str]) -> Output {
    Command::new(docker_bin())
        .arg("-H")
        .arg(host)
        .args(args)
        .env("DOCKER_CONFIG", empty_docker_config())
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", docker_bin().display()))
}

/// Pulls `reference` (so the pull really goes through its registry address), runs it with
/// `args`, removes it again, and returns the container's trimmed stdout.
pub fn docker_pull_run(host: &str, reference: &str, args: &[&str]) -> String {
    docker_ok(host, &["pull", reference]);
    let mut run = vec!["run", "--rm", reference];
    run.extend_from_slice(args);
    let output = docker_ok(host, &run);
    let _ = docker(host, &["rmi", "-f", reference]);
    output
}

/// Like [`docker`] but panics (with stderr) on failure and returns trimmed stdout.
pub fn docker_ok(host: &str, args: &[&str]) -> String {
    let out = docker(host, args);
    assert!(
        out.status.success(),
        "docker {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// The tool
// ---------------------------------------------------------------------------------------------

/// An empty directory for DOCKER_CONFIG, one per test process (under cargo's
/// `target/tmp`, so nothing piles up in /tmp), so the user's credentials and credential
/// helpers are never used.
pub fn empty_docker_config() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("empty-docker-config-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    })
}

/// The built `cargo-adapt-push` binary, with a hermetic environment: no SOURCE_DATE_EPOCH, an
/// empty DOCKER_CONFIG, and none of the caller's DOCKER_HOST/DOCKER_CONTEXT/DOCKER_TLS_* or
/// ADAPT_PUSH_* (other than ADAPT_PUSH_TEST_*) settings. Tests set what they need, e.g.
/// `.env("DOCKER_HOST", host)`.
pub fn tool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cargo-adapt-push"));
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .env("DOCKER_CONFIG", empty_docker_config())
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let docker_setting = matches!(
            &*key,
            "DOCKER_HOST" | "DOCKER_CONTEXT" | "DOCKER_TLS_VERIFY" | "DOCKER_CERT_PATH"
        );
        let tool_setting = key.starts_with("ADAPT_PUSH_") && !key.starts_with("ADAPT_PUSH_TEST_");
        if docker_setting || tool_setting {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

// ---------------------------------------------------------------------------------------------
// Crates to push
// ---------------------------------------------------------------------------------------------

/// The repository's `example-project/` (the `greeter` crate).
pub fn example_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-project")
}

/// Recursively copies `src` into `dst` (created if missing), skipping `target/` and `.git/`
/// directories. Symlinks are copied as the files they point to.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    for entry in entries {
        let entry = entry.expect("read dir entry");
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if from.is_dir() {
            if entry.file_name() == "target" || entry.file_name() == ".git" {
                continue;
            }
            copy_dir(&from, &to);
        } else {
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
        }
    }
}

/// Writes a minimal std-only binary crate into `dir` and returns its Cargo.toml path.
///
/// The manifest is `[package]` (name, version 0.1.0, edition 2021), then `cargo_toml_extra`
/// verbatim (more `[package]` keys and/or tables such as `[package.metadata.cluster]`), then an
/// empty `[workspace]` so cargo never searches the parent directories.
pub fn write_crate(dir: &Path, name: &str, cargo_toml_extra: &str, main_rs: &str) -> PathBuf {
    fs::create_dir_all(dir.join("src")).expect("create crate src dir");
    let manifest = dir.join("Cargo.toml");
    fs::write(
        &manifest,
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             {cargo_toml_extra}\n\n[workspace]\n"
        ),
    )
    .expect("write Cargo.toml");
    fs::write(dir.join("src/main.rs"), main_rs).expect("write src/main.rs");
    manifest
}

// ---------------------------------------------------------------------------------------------
// Reading results
// ---------------------------------------------------------------------------------------------

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with both streams when the tool failed.
pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "tool failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Paths of the regular files in every layer of `repo@digest`, as stored in the layer tars.
pub fn image_files(registry: &TestRegistry, repo: &str, digest: &str) -> Vec<String> {
    let (status, _, body) = registry.manifest(repo, digest);
    assert_eq!(status, 200, "manifest {repo}@{digest}");
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest JSON");
    let mut files = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let d = layer["digest"].as_str().expect("layer digest");
        let (status, _, blob) = http_get(&registry.addr(), &format!("/v2/{repo}/blobs/{d}"), "");
        assert_eq!(status, 200, "blob {d}");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().expect("layer tar") {
            let entry = entry.expect("tar entry");
            if entry.header().entry_type().is_file() {
                files.push(entry.path().expect("path").to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}
