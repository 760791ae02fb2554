//! Support for the registry hardening tests (`mod support;` next to `mod common;`):
//!
//! * [`faults`]: a TCP proxy that resets connections, cuts uploads and throttles, and an
//!   HTTP-aware proxy that answers 503 / 429 bursts (shared with `examples/fault-proxy.rs`).
//! * [`TokenIssuer`]: a token service for a registry configured with `auth: token`; it checks
//!   Basic credentials or a refresh token and signs RS256 JWTs with `x5c` that distribution
//!   verifies against the test's certificate bundle.
//! * [`Pki`]: a CA and a server certificate made with the openssl CLI.
//! * [`assert_consistent`]: every tag in a registry resolves to a manifest whose blobs exist.
//! * Small helpers to run the tool and check that no secret reached its output.
#![allow(dead_code)]

#[path = "../../examples/fault-proxy/faults.rs"]
pub mod faults;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::common::*;

pub const HELLO: &str = "fn main() {\n    println!(\"hello\");\n}\n";

/// Output of one run, both streams as text.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.status.success(),
            "tool failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_failed(&self) -> &Run {
        assert!(
            !self.status.success(),
            "tool should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.status.code().is_some(),
            "the tool died from a signal (a panic abort?): {}\n{}",
            self.status,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the tool panicked:\n{}",
            self.stderr
        );
        self
    }

    /// The one pull reference on stdout.
    pub fn pull_ref(&self) -> String {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout: {}", self.stdout);
        lines[0].to_string()
    }

    /// Panics if any of `secrets` appears in stdout or stderr.
    pub fn assert_no_secret(&self, secrets: &[&str]) {
        for secret in secrets {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "a secret ({} chars) appears in the output:\nstdout:\n{}\nstderr:\n{}",
                secret.len(),
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Panics if an upload session's state (`_state=…` in distribution's upload URLs, a signed token
/// on some registries) appears in `text` with its value.
pub fn assert_no_upload_state(text: &str) {
    for (i, _) in text.match_indices("_state=") {
        let value = &text[i + "_state=".len()..];
        if !value.starts_with('…') {
            let boundary = |mut j: usize| {
                while !text.is_char_boundary(j) {
                    j -= 1;
                }
                j
            };
            let around = &text[boundary(i.saturating_sub(80))..boundary((i + 120).min(text.len()))];
            panic!("an upload URL is shown with its query: {around}");
        }
    }
}

/// Every encoding of a password we must never print: itself, base64 of `user:password`, and
/// base64 of the password alone.
pub fn secret_forms(user: &str, password: &str) -> Vec<String> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    vec![
        password.to_string(),
        b64(&format!("{user}:{password}")),
        b64(password),
    ]
}

/// A crate in `dir` pushing to `registry` (any string form) as `image`, plus `extra` lines for
/// the cluster table. `salt` goes into the binary so each crate's layers differ.
pub fn crate_for(dir: &Path, registry: &str, image: &str, extra: &str, salt: &str) -> PathBuf {
    write_crate(
        dir,
        "faulty",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{registry}\"\nimage = \"{image}\"\n{extra}"
        ),
        &format!("fn main() {{\n    println!(\"hello {salt}\");\n}}\n"),
    )
}

/// Runs the tool on `manifest` with `args` and an optional environment, with a shared target
/// dir so the crate builds once per test binary.
pub fn push(manifest: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    Run::from(
        push_command(manifest, args, env)
            .output()
            .expect("run cargo-adapt-push"),
    )
}

pub fn push_command(manifest: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = tool();
    cmd.arg("adapt-push")
        .arg("--manifest-path")
        .arg(manifest)
        .args(args)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn shared_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-tests-target")
}

/// A Docker config dir holding `config` as config.json.
pub fn docker_config(dir: &Path, config: &serde_json::Value) -> PathBuf {
    let d = dir.join("docker-config");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    d
}

// ---------------------------------------------------------------------------------------------
// Registry consistency
// ---------------------------------------------------------------------------------------------

/// Every tag of every repository in the registry at `addr` (plain HTTP) resolves to a manifest
/// whose config and layers exist (indexes: every child manifest, recursively). `auth` is an
/// Authorization header value for registries that need one. Returns the number of tags.
pub fn assert_consistent(addr: &str, auth: Option<&str>) -> usize {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    let (status, _, body) = http_request(addr, "GET", "/v2/_catalog", &headers);
    assert_eq!(status, 200, "catalog: {}", String::from_utf8_lossy(&body));
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut tags_seen = 0;
    for repo in catalog["repositories"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let repo = repo.as_str().unwrap().to_string();
        let (status, _, body) =
            http_request(addr, "GET", &format!("/v2/{repo}/tags/list"), &headers);
        if status == 404 {
            continue; // a repository with uploads but no tag yet
        }
        assert_eq!(
            status,
            200,
            "tags of {repo}: {}",
            String::from_utf8_lossy(&body)
        );
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for tag in list["tags"].as_array().cloned().unwrap_or_default() {
            let tag = tag.as_str().unwrap();
            check_manifest(addr, &headers, &repo, tag);
            // A referrers fallback tag (`sha256-<hex>`, listing the SBOM and provenance) is
            // checked like any manifest but is not an image tag.
            let referrers_tag = tag
                .strip_prefix("sha256-")
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if !referrers_tag {
                tags_seen += 1;
            }
        }
    }
    tags_seen
}

fn check_manifest(addr: &str, headers: &[(&str, &str)], repo: &str, reference: &str) {
    let mut h = headers.to_vec();
    h.push(("Accept", ANY_MANIFEST_ACCEPT));
    let (status, _, body) = http_request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &h,
    );
    assert_eq!(
        status,
        200,
        "{repo}:{reference} does not resolve: {}",
        String::from_utf8_lossy(&body)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            check_manifest(addr, headers, repo, child["digest"].as_str().unwrap());
        }
        return;
    }
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_string());
    }
    for digest in digests {
        let (status, _, _) =
            http_request(addr, "HEAD", &format!("/v2/{repo}/blobs/{digest}"), headers);
        assert_eq!(
            status, 200,
            "{repo}:{reference} points at missing blob {digest}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates (openssl CLI)
// ---------------------------------------------------------------------------------------------

/// A private CA and a server certificate it signed for 127.0.0.1 and localhost.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
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
                "/CN=adapt-push test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Pki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// A registry serving HTTPS with a certificate from `pki`.
pub fn start_tls_registry(pki_dir: &Path) -> (TestRegistry, Pki) {
    let pki = Pki::create(pki_dir);
    let (cert, key) = (pki.server_cert.clone(), pki.server_key.clone());
    let registry = TestRegistry::start_with_config(move |port, _| {
        format!(
            "http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        )
    });
    (registry, pki)
}

// ---------------------------------------------------------------------------------------------
// Token issuer
// ---------------------------------------------------------------------------------------------

/// What the issuer saw.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    pub scopes: Vec<String>,
    /// "basic", "refresh", "anonymous".
    pub kind: String,
    pub granted: bool,
    /// The token handed out, if any (a secret: it must never appear in the tool's output).
    pub token: Option<String>,
}

/// A token service for `auth: token`: grants every requested action to `user`/`password` (Basic,
/// GET) or to the refresh token `refresh` (OAuth2 POST), and 401 to anything else.
pub struct TokenIssuer {
    pub port: u16,
    pub service: String,
    pub issuer: String,
    pub cert_pem: PathBuf,
    key: Arc<ring::signature::RsaKeyPair>,
    cert_der: Vec<u8>,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    /// Seconds the tokens handed out live (`expires_in`).
    lifetime: u64,
}

/// distribution accepts a token this long past its `exp` (clock skew leeway).
const REGISTRY_LEEWAY: u64 = 60;

impl TokenIssuer {
    pub fn start(dir: &Path, user: &str, password: &str, refresh: &str) -> TokenIssuer {
        Self::start_with_lifetime(dir, user, password, refresh, 300)
    }

    /// Tokens that say `expires_in: lifetime` and that the registry really refuses about a
    /// second later (their `exp` is set back by the registry's leeway).
    pub fn start_with_lifetime(
        dir: &Path,
        user: &str,
        password: &str,
        refresh: &str,
        lifetime: u64,
    ) -> TokenIssuer {
        fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "issuer.key",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-key",
                "issuer.key",
                "-days",
                "2",
                "-subj",
                "/CN=adapt-push test token issuer",
                "-out",
                "issuer.pem",
            ],
        );
        let key_der = pem_body(&fs::read_to_string(dir.join("issuer.key")).unwrap());
        let cert_der = pem_body(&fs::read_to_string(dir.join("issuer.pem")).unwrap());
        let key = Arc::new(
            ring::signature::RsaKeyPair::from_pkcs8(&key_der).expect("PKCS#8 RSA key from openssl"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let issuer = TokenIssuer {
            port,
            service: "adapt-push-test-registry".into(),
            issuer: "adapt-push-test-issuer".into(),
            cert_pem: dir.join("issuer.pem"),
            key,
            cert_der,
            requests: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            lifetime,
        };
        let signer = issuer.signer();
        let (requests, stop) = (issuer.requests.clone(), issuer.stop.clone());
        let (user, password, refresh) =
            (user.to_string(), password.to_string(), refresh.to_string());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let (signer, requests) = (signer.clone(), requests.clone());
                        let (user, password, refresh) =
                            (user.clone(), password.clone(), refresh.clone());
                        std::thread::spawn(move || {
                            serve_token(stream, &signer, &requests, &user, &password, &refresh)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        issuer
    }

    fn signer(&self) -> Signer {
        Signer {
            key: self.key.clone(),
            cert_der: self.cert_der.clone(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            lifetime: self.lifetime,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The `auth:` section of the registry's config.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            self.realm(),
            self.service,
            self.issuer,
            self.cert_pem.display()
        )
    }

    /// A token for reading everything (catalog and every repository), for checks.
    pub fn admin_token(&self, repos: &[&str]) -> String {
        let mut access =
            vec![serde_json::json!({"type": "registry", "name": "catalog", "actions": ["*"]})];
        for r in repos {
            access.push(
                serde_json::json!({"type": "repository", "name": r, "actions": ["pull", "push"]}),
            );
        }
        Signer {
            lifetime: 300,
            ..self.signer()
        }
        .sign("admin", access)
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Signer {
    key: Arc<ring::signature::RsaKeyPair>,
    cert_der: Vec<u8>,
    service: String,
    issuer: String,
    lifetime: u64,
}

impl Signer {
    /// The `exp` claim for a token issued at `now`: refused by the registry (leeway included)
    /// one second after `lifetime` for short-lived tokens.
    fn expiry(&self, now: u64) -> u64 {
        if self.lifetime < REGISTRY_LEEWAY {
            now + self.lifetime + 1 - REGISTRY_LEEWAY
        } else {
            now + self.lifetime
        }
    }

    fn sign(&self, subject: &str, access: Vec<serde_json::Value>) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let std64 = base64::engine::general_purpose::STANDARD.encode(&self.cert_der);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [std64]});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": self.expiry(now),
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", rand_u64()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("sign JWT");
        format!("{signing_input}.{}", b64(&signature))
    }
}

fn rand_u64() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) as u64
}

fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM base64")
}

/// One HTTP/1.1 exchange (Connection: close) with the issuer.
fn serve_token(
    stream: TcpStream,
    signer: &Signer,
    requests: &Mutex<Vec<TokenRequest>>,
    user: &str,
    password: &str,
    refresh: &str,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if method == "POST" {
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();

    let expected_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let (kind, granted) = if method == "POST" {
        let grant = params
            .iter()
            .find(|(k, _)| k == "grant_type")
            .map(|(_, v)| v.as_str());
        let token = params
            .iter()
            .find(|(k, _)| k == "refresh_token")
            .map(|(_, v)| v.as_str());
        (
            "refresh",
            grant == Some("refresh_token") && token == Some(refresh),
        )
    } else {
        match headers.get("authorization") {
            Some(a) => ("basic", *a == expected_basic),
            None => ("anonymous", false),
        }
    };
    let mut issued = None;
    let response = if granted {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut p = s.splitn(3, ':');
                let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
                Some(serde_json::json!({
                    "type": t,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let token = signer.sign(user, access);
        issued = Some(token.clone());
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": signer.lifetime,
        })
        .to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nWWW-Authenticate: Basic realm=\"issuer\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    requests.lock().unwrap().push(TokenRequest {
        method,
        scopes,
        kind: kind.into(),
        granted,
        token: issued,
    });
    let _ = writer.write_all(response.as_bytes());
}
