//! [`TokenIssuer`]: a token service for a registry configured with `auth: token`. It checks
//! Basic credentials or a refresh token and signs RS256 JWTs with `x5c` that distribution
//! verifies against the test's certificate bundle.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::pki::Ca;
use super::registry::basic_auth_b64;

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
        // The signing certificate is a CA of its own: distribution trusts it as a root.
        let ca = Ca::create(dir, "adapt-push test token issuer");
        let key_der = pem_body(&fs::read_to_string(&ca.key).unwrap());
        let cert_der = pem_body(&fs::read_to_string(&ca.cert).unwrap());
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
            cert_pem: ca.cert.clone(),
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

    let expected_basic = format!("Basic {}", basic_auth_b64(user, password));
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
