//! [`TestRegistry`]: a real CNCF distribution registry (`docker-registry`) on a free loopback
//! port, with its data in a temp dir; killed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::faults::{HttpFaultProxy, HttpFaults};
use super::http::{ANY_MANIFEST_ACCEPT, HttpResponse, http_get, try_http_request};
use super::pki::{Ca, Issued};
use super::{find_program, free_port, run_ok};

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
            fs::write(&file, htpasswd_line(user, password)).expect("write htpasswd file");
            format!(
                "{}auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                Self::default_http(port),
                file.display()
            )
        })
    }

    /// A registry serving HTTPS with a certificate for `127.0.0.1`/`localhost` from a fresh CA
    /// in its directory; the certificate is at [`TestRegistry::tls_cert`]. Needs `openssl`.
    pub fn start_with_tls() -> Self {
        Self::start_with_config(|port, dir| {
            tls_http(
                port,
                &Ca::create(dir, "adapt-push test CA").server("cert.pem", "key.pem"),
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

    /// GET a blob over plain HTTP; fails the test unless the registry has it.
    pub fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let (status, _, blob) = http_get(&self.addr(), &format!("/v2/{repo}/blobs/{digest}"), "");
        assert_eq!(status, 200, "blob {digest}");
        blob
    }

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

/// One htpasswd line (bcrypt) for `user`/`password`, for a registry's `auth: htpasswd` file.
/// Needs `htpasswd` (Debian's apache2-utils; scripts/test installs it).
pub fn htpasswd_line(user: &str, password: &str) -> Vec<u8> {
    run_ok(
        Command::new("htpasswd").args(["-Bbn", user, password]),
        "htpasswd (apt-get install apache2-utils; scripts/test installs it)",
    )
}

/// `base64(user:password)`: the value of a Basic `Authorization` header and of a Docker
/// config's `auth` field.
pub fn basic_auth_b64(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// `GET {path}` on `registry` (plain HTTP) with `accept`, which must answer 200 with JSON.
pub fn get_json(registry: &TestRegistry, path: &str, accept: &str) -> serde_json::Value {
    let (status, _, body) = http_get(&registry.addr(), path, accept);
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// `sha256-<64 hex>`: a referrers fallback tag.
pub fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Paths of the regular files in every layer of `repo@digest`, as stored in the layer tars.
pub fn image_files(registry: &TestRegistry, repo: &str, digest: &str) -> Vec<String> {
    let (status, _, body) = registry.manifest(repo, digest);
    assert_eq!(status, 200, "manifest {repo}@{digest}");
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest JSON");
    let mut files = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let d = layer["digest"].as_str().expect("layer digest");
        let blob = registry.blob(repo, d);
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

/// A registry serving HTTPS with a certificate from a CA made in `pki_dir` (to trust it: the
/// CA's `cert`).
pub fn start_tls_registry(pki_dir: &Path) -> (TestRegistry, Ca) {
    let ca = Ca::create(pki_dir, "adapt-push test CA");
    let server = ca.server("server.pem", "server-key.pem");
    let registry = TestRegistry::start_with_config(move |port, _| tls_http(port, &server));
    (registry, ca)
}

/// The `http:` section of a registry serving HTTPS with `server`'s certificate.
fn tls_http(port: u16, server: &Issued) -> String {
    format!(
        "http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
        server.cert.display(),
        server.key.display()
    )
}

/// Two registry processes sharing one storage directory and one `http.secret`: the first asks
/// for `user`'s Basic credentials; the second is open, or with `second_user` asks for that
/// user's instead. An upload session opened on the first can be finished on the second, as
/// with a registry whose uploads go to a separate front end.
pub fn shared_storage_registries(
    user: (&str, &str),
    second_user: Option<(&str, &str)>,
) -> (TestRegistry, TestRegistry) {
    let secret = "shared-http-secret-for-both";
    let authed = TestRegistry::start_with_config(|port, dir| {
        let file = dir.join("htpasswd");
        fs::write(&file, htpasswd_line(user.0, user.1)).unwrap();
        format!(
            "http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\nauth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
            file.display()
        )
    });
    let shared = authed.dir.path().join("data");
    let second = TestRegistry::start_with_config(|port, dir| {
        let data = dir.join("data");
        let _ = fs::remove_dir(&data);
        std::os::unix::fs::symlink(&shared, &data).unwrap();
        let auth = match second_user {
            Some((user, password)) => {
                let file = dir.join("htpasswd");
                fs::write(&file, htpasswd_line(user, password)).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: upload-host\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        format!("http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n{auth}")
    });
    (authed, second)
}

/// Stand-ins for a registry whose uploads go to another host (a real registry cannot point its
/// uploads elsewhere): `upload_host` is a recording proxy in front of the second registry of
/// [`shared_storage_registries`]; `front` is a proxy in front of the first, rewriting the upload
/// `Location` (which the registry writes from the Host it was asked under: the proxy's) to the
/// upload host. Push to `front`.
pub struct UploadsElsewhere {
    pub front: HttpFaultProxy,
    pub upload_host: HttpFaultProxy,
}

impl UploadsElsewhere {
    pub fn start(registry: &TestRegistry, upload_registry: &TestRegistry) -> UploadsElsewhere {
        let upload_host = HttpFaultProxy::start(&upload_registry.addr(), HttpFaults::default());
        let front = HttpFaultProxy::start_rewriting(
            &registry.addr(),
            HttpFaults::default(),
            Some(("{self}".into(), upload_host.addr())),
        );
        UploadsElsewhere { front, upload_host }
    }
}

/// Requests with `method` reached `upload_host`, and none of its requests carried
/// Authorization.
pub fn assert_reached_without_authorization(upload_host: &HttpFaultProxy, method: &str) {
    let seen = upload_host.exchanges();
    assert!(
        seen.iter().any(|e| e.method == method),
        "no {method} reached the upload host: {seen:?}"
    );
    for e in &seen {
        assert!(
            !e.authorized,
            "{} {} reached the upload host with Authorization",
            e.method, e.path
        );
    }
}
