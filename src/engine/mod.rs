//! A Docker engine, as the engine builder and the engine publisher both use it: where it is
//! (`DOCKER_HOST`: unix, tcp with or without TLS, ssh), and an image that lives in it.
//!
//! Connecting is lazy: nothing talks to an engine until a target uses the docker builder. Then
//! [`Engine::connect`] negotiates the API version (Debian 12's engine speaks 1.41 and rejects
//! newer clients) and pings, so an absent engine is one clear error before any work is done.

mod context;
mod ssh;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::{API_DEFAULT_VERSION, Docker};
use miette::Diagnostic;

use crate::credentials;
use crate::reference::{Registry, is_loopback_host};
use crate::registry::{Credential, Keychain, RegistryError, error_chain, look_up};
use crate::shell::Shell;

/// The engine's address when `DOCKER_HOST` is unset.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long version negotiation and the ping may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request may take until the engine starts answering. A build request streams the
/// whole context first, so this bounds the context upload; a push answers at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    address: String,
    /// For `ssh://` engines: the bridge the client talks through, kept while the engine is.
    _ssh: Option<std::sync::Arc<ssh::SshTunnel>>,
    /// Podman's Docker-compatible service (`podman system service`), not dockerd.
    podman: bool,
    /// Podman only: registries its pushes may reach over plain HTTP (`tlsVerify=false`).
    plain_http: PlainHttp,
    /// Reached over TLS (DOCKER_TLS_VERIFY).
    tls: bool,
    /// Where what is done with the engine is told.
    shell: Shell,
}

type PlainHttp = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// An image that exists in an engine, by its ID (`sha256:…`).
#[derive(Clone)]
pub struct EngineImage {
    pub id: String,
    pub engine: Engine,
    /// What the image holds besides the binary, when our code made its layers (the generated
    /// Dockerfile); `None` for a user's Dockerfile, whose contents we do not know.
    pub contents: Option<crate::image::contents::Contents>,
}

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum EngineError {
    #[error("cannot reach the Docker engine at {address}: {cause}")]
    #[diagnostic(help(
        "start the engine, or point DOCKER_HOST at one; or build without an engine: --builder oci (builder = \"oci\" in [package.metadata.cluster])"
    ))]
    Unreachable { address: String, cause: String },

    #[error("{0}")]
    #[diagnostic(help(
        "`docker context ls` lists the contexts; set DOCKER_CONTEXT or DOCKER_HOST to choose an engine, or build without one: --builder oci"
    ))]
    Context(String),

    #[error("DOCKER_HOST=`{address}` is not an engine address: {reason}")]
    #[diagnostic(help(
        "use unix:///path/to/docker.sock, tcp://host:port (with TLS: DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH), or ssh://user@host; or build without an engine: --builder oci"
    ))]
    BadAddress { address: String, reason: String },

    #[error("TLS for the Docker engine at {address}: {reason}")]
    #[diagnostic(help(
        "DOCKER_CERT_PATH (default ~/.docker) must hold ca.pem, cert.pem and key.pem, as for `docker --tlsverify`; or build without an engine: --builder oci"
    ))]
    Tls { address: String, reason: String },
}

impl Engine {
    /// Connects to the engine `DOCKER_HOST` names (or the local default) and checks it answers.
    /// Builds and pushes through the engine report to `shell`.
    pub async fn connect(shell: &Shell) -> Result<Engine, EngineError> {
        // DOCKER_HOST, else DOCKER_CONTEXT, else the Docker config's current context.
        let endpoint = context::endpoint().map_err(|e| EngineError::Context(e.to_string()))?;
        if endpoint.source != "DOCKER_HOST" {
            shell.detail(&format!("Docker engine from {}", endpoint.source));
        }
        let address = endpoint
            .host
            .clone()
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let (tls_verify, cert_path) = tls_settings(&endpoint);
        let (docker, ssh) = if address.starts_with("ssh://") {
            let tunnel = ssh::SshTunnel::start(&address, shell).map_err(|reason| {
                EngineError::BadAddress {
                    address: address.clone(),
                    reason,
                }
            })?;
            let socket = format!("unix://{}", tunnel.socket().display());
            (open(&socket, None)?, Some(std::sync::Arc::new(tunnel)))
        } else {
            (
                open(&address, tls_verify.then_some(cert_path.as_path()))?,
                None,
            )
        };
        let docker = probe(docker, &address).await?;
        let podman = names_podman(&docker).await;
        shell.detail(&format!(
            "{} at {address} (API {})",
            if podman {
                "Podman service"
            } else {
                "Docker engine"
            },
            docker.client_version()
        ));
        let plain_http = PlainHttp::default();
        Ok(Engine {
            docker: with_request_rewrites(docker, plain_http.clone()),
            address,
            _ssh: ssh,
            podman,
            plain_http,
            tls: tls_verify,
            shell: shell.clone(),
        })
    }

    /// The run's shell, for what is said about builds and pushes through the engine.
    pub fn shell(&self) -> &Shell {
        &self.shell
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn is_podman(&self) -> bool {
        self.podman
    }

    /// Podman: let pushes to `registry` use plain HTTP (`tlsVerify=false`). Only for registries
    /// we speak plain HTTP to ourselves (loopback, or listed in `insecure`). dockerd decides by
    /// its own insecure-registries setting and ignores this.
    pub fn allow_plain_http(&self, registry: &Registry) {
        if let Ok(mut list) = self.plain_http.lock() {
            let authority = registry.authority();
            if !list.contains(&authority) {
                list.push(authority);
            }
        }
    }

    /// The address as the user gave it (`DOCKER_HOST`), for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The API version in use with this engine ("1.41").
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The host the engine runs on, when `DOCKER_HOST` names one that is not this machine's
    /// loopback (tcp or ssh to another host). Such an engine pulls and pushes from over there:
    /// `localhost` in a registry address means its own host, not this one.
    pub fn remote_host(&self) -> Option<String> {
        remote_host(&self.address)
    }
}

/// Whether to speak TLS and where the certificates are: a context with TLS material uses it,
/// as the docker CLI does; otherwise DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
fn tls_settings(endpoint: &context::Endpoint) -> (bool, PathBuf) {
    let tls_verify = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty())
        || (endpoint.tls.is_some() && !endpoint.skip_tls_verify);
    let cert_path = endpoint.tls.clone().unwrap_or_else(|| {
        std::env::var_os("DOCKER_CERT_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_cert_path)
    });
    (tls_verify, cert_path)
}

/// Negotiates the API version and pings, within the probe's timeout.
async fn probe(docker: Docker, address: &str) -> Result<Docker, EngineError> {
    let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
        address: address.to_string(),
        cause: error_chain(&e),
    };
    let docker = docker
        .with_timeout(PROBE_TIMEOUT)
        .negotiate_version()
        .await
        .map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Podman names itself in the version's components ("Podman Engine").
async fn names_podman(docker: &Docker) -> bool {
    docker.version().await.ok().is_some_and(|v| {
        v.components
            .iter()
            .flatten()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"))
    })
}

/// The request timeout, and every request's URI rewritten: bollard 0.21 builds its request
/// paths without the `/v1.xx` prefix, which an engine answers with its own newest API. Pin the
/// negotiated version, as the docker CLI does, so the engine speaks the API these request and
/// response types were written for. Pushes to the registries in `allowed` go without TLS
/// verification (Podman).
fn with_request_rewrites(docker: Docker, allowed: PlainHttp) -> Docker {
    let prefix = format!("/v{}", docker.client_version());
    docker
        .with_timeout(REQUEST_TIMEOUT)
        .with_request_modifier(move |mut request| {
            if let Some(uri) = versioned_uri(&request.uri().to_string(), &prefix)
                && let Ok(uri) = uri.parse()
            {
                *request.uri_mut() = uri;
            }
            let registries = allowed.lock().map(|l| l.clone()).unwrap_or_default();
            if let Some(uri) = without_tls_verify(&request.uri().to_string(), &registries)
                && let Ok(uri) = uri.parse()
            {
                *request.uri_mut() = uri;
            }
            request
        })
}

/// The host part of a tcp/ssh `DOCKER_HOST`, unless it is a loopback name or address.
fn remote_host(address: &str) -> Option<String> {
    let (scheme, rest) = address.split_once("://")?;
    if !matches!(scheme, "tcp" | "http" | "https" | "ssh") {
        return None;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    (!host.is_empty() && !is_loopback_host(host)).then(|| host.to_string())
}

/// Our credentials for `registry` (the same lookup the registry client uses), in the form the
/// engine takes in `X-Registry-Auth` / `X-Registry-Config`. `None` means anonymous; a lookup
/// that fails (a credential helper that breaks) is an error, as for the registry client.
/// `push_target`: `registry` is the one pushed to, the only one `ADAPT_PUSH_*` credentials go to.
/// The lookup's warnings go to `shell`; a lookup that fails is an error, not anonymous.
pub async fn credentials_for(
    registry: &Registry,
    push_target: bool,
    shell: &Shell,
) -> Result<Option<DockerCredentials>, RegistryError> {
    let keychain: Arc<dyn Keychain> = Arc::new(credentials::DefaultKeychain);
    let mut found = look_up(&keychain, registry, push_target).await?;
    for warning in found.warnings.drain(..) {
        shell.warn(&warning);
    }
    if let Some(source) = &found.source {
        shell.trace(&format!("credentials for {registry} from {source}"));
    }
    let serveraddress = Some(server_address(registry));
    let Some(credential) = found.credential else {
        return Ok(None);
    };
    Ok(Some(match credential {
        Credential::Basic { username, password } => DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress,
            ..DockerCredentials::default()
        },
        Credential::IdentityToken(token) => DockerCredentials {
            identitytoken: Some(token),
            serveraddress,
            ..DockerCredentials::default()
        },
        Credential::RegistryToken(token) => DockerCredentials {
            registrytoken: Some(token),
            serveraddress,
            ..DockerCredentials::default()
        },
    }))
}

/// How the engine names a registry in credentials: Docker Hub has its historical key.
pub fn server_address(registry: &Registry) -> String {
    if registry.is_docker_hub() {
        "https://index.docker.io/v1/".into()
    } else {
        registry.authority()
    }
}

/// `~/.docker`, where the Docker CLI looks for TLS material without DOCKER_CERT_PATH.
fn default_cert_path() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".docker")
}

/// Makes the client for an address; nothing is sent yet.
fn open(address: &str, tls_certs: Option<&Path>) -> Result<Docker, EngineError> {
    let timeout = PROBE_TIMEOUT.as_secs();
    let bad = |reason: &str| EngineError::BadAddress {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
        address: address.to_string(),
        cause: error_chain(&e),
    };
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme"))?;
    match scheme {
        "unix" => {
            if rest.is_empty() {
                return Err(bad("no socket path"));
            }
            if !Path::new(rest).exists() {
                return Err(EngineError::Unreachable {
                    address: address.to_string(),
                    cause: format!("there is no socket at {rest}"),
                });
            }
            Docker::connect_with_unix(address, timeout, API_DEFAULT_VERSION).map_err(unreachable)
        }
        "tcp" | "http" | "https" => {
            let tls = scheme == "https" || tls_certs.is_some();
            let authority = with_default_port(rest, if tls { 2376 } else { 2375 })
                .ok_or_else(|| bad("no host after the scheme"))?;
            if !tls {
                return Docker::connect_with_http(
                    &format!("tcp://{authority}"),
                    timeout,
                    API_DEFAULT_VERSION,
                )
                .map_err(unreachable);
            }
            let dir = tls_certs
                .map(Path::to_path_buf)
                .unwrap_or_else(default_cert_path);
            let (ca, cert, key) = (
                dir.join("ca.pem"),
                dir.join("cert.pem"),
                dir.join("key.pem"),
            );
            for file in [&ca, &cert, &key] {
                if !file.is_file() {
                    return Err(EngineError::Tls {
                        address: address.to_string(),
                        reason: format!("{} does not exist", file.display()),
                    });
                }
            }
            // rustls with ring is the one crypto provider in this program; make it the default
            // that bollard's TLS setup asks for. (Already installed is fine.)
            let _ = rustls::crypto::ring::default_provider().install_default();
            Docker::connect_with_ssl(
                &format!("tcp://{authority}"),
                &key,
                &cert,
                &ca,
                timeout,
                API_DEFAULT_VERSION,
            )
            .map_err(|e| EngineError::Tls {
                address: address.to_string(),
                reason: error_chain(&e),
            })
        }
        // Reached through engine_ssh's bridge, by `Engine::connect`.
        "ssh" => Err(bad("ssh:// engines are reached through a bridge")),
        "npipe" => Err(bad("named pipes are Windows-only")),
        other => Err(bad(&format!("unsupported scheme `{other}://`"))),
    }
}

/// A push (`.../images/{registry}/{repo}/push?...`) to one of `registries`, with `tlsVerify=false`
/// added; `None` for every other request.
fn without_tls_verify(uri: &str, registries: &[String]) -> Option<String> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let name = path.split_once("/images/")?.1.strip_suffix("/push")?;
    if !registries
        .iter()
        .any(|r| name.starts_with(&format!("{r}/")))
        || query.split('&').any(|p| p.starts_with("tlsVerify="))
    {
        return None;
    }
    Some(if query.is_empty() {
        format!("{path}?tlsVerify=false")
    } else {
        format!("{path}?{query}&tlsVerify=false")
    })
}

/// `scheme://authority/path?query` with `prefix` put before the path, unless a version is there.
fn versioned_uri(uri: &str, prefix: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let path_start = rest.find('/')?;
    let (authority, path) = rest.split_at(path_start);
    let versioned = path
        .strip_prefix("/v")
        .and_then(|p| p.split('/').next())
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    (!versioned).then(|| format!("{scheme}://{authority}{prefix}{path}"))
}

/// `host[:port][/path]` → `host:port`, adding the engine's default port when none is given.
fn with_default_port(rest: &str, port: u16) -> Option<String> {
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    Some(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports() {
        assert_eq!(
            with_default_port("127.0.0.1", 2376).as_deref(),
            Some("127.0.0.1:2376")
        );
        assert_eq!(
            with_default_port("127.0.0.1:1234/", 2376).as_deref(),
            Some("127.0.0.1:1234")
        );
        assert_eq!(
            with_default_port("[::1]", 2375).as_deref(),
            Some("[::1]:2375")
        );
        assert_eq!(
            with_default_port("[::1]:99", 2375).as_deref(),
            Some("[::1]:99")
        );
        assert_eq!(with_default_port("", 2375), None);
    }

    #[test]
    fn remote_hosts() {
        for (address, remote) in [
            ("unix:///var/run/docker.sock", None),
            ("tcp://127.0.0.1:2375", None),
            ("tcp://127.8.9.1", None),
            ("tcp://localhost:2376", None),
            ("https://[::1]:2376", None),
            ("ssh://me@localhost", None),
            ("tcp://build.example.com:2376", Some("build.example.com")),
            ("tcp://10.0.0.5:2375/", Some("10.0.0.5")),
            ("ssh://me@builder", Some("builder")),
            ("ssh://builder", Some("builder")),
            ("tcp://[2001:db8::1]:2376", Some("2001:db8::1")),
        ] {
            assert_eq!(remote_host(address).as_deref(), remote, "{address}");
        }
    }

    #[test]
    fn request_paths_carry_the_api_version() {
        assert_eq!(
            versioned_uri("unix://2f746d70/build?dockerfile=Dockerfile", "/v1.41").as_deref(),
            Some("unix://2f746d70/v1.41/build?dockerfile=Dockerfile")
        );
        assert_eq!(
            versioned_uri(
                "https://127.0.0.1:2376/images/127.0.0.1:5000/a/push?tag=v1",
                "/v1.41"
            )
            .as_deref(),
            Some("https://127.0.0.1:2376/v1.41/images/127.0.0.1:5000/a/push?tag=v1")
        );
        assert_eq!(versioned_uri("http://h:2375/v1.53/_ping", "/v1.41"), None);
        assert_eq!(
            versioned_uri("http://h:2375/volumes", "/v1.41").as_deref(),
            Some("http://h:2375/v1.41/volumes")
        );
    }

    #[test]
    fn podman_pushes_to_allowed_registries_skip_tls_verification() {
        let allowed = vec!["127.0.0.1:5000".to_string()];
        assert_eq!(
            without_tls_verify(
                "http://d/v4.3.1/images/127.0.0.1:5000/a/push?tag=v1",
                &allowed
            )
            .as_deref(),
            Some("http://d/v4.3.1/images/127.0.0.1:5000/a/push?tag=v1&tlsVerify=false")
        );
        for other in [
            "http://d/v4.3.1/images/registry.corp/a/push?tag=v1",
            "http://d/v4.3.1/images/127.0.0.1:50001/a/push?tag=v1",
            "http://d/v4.3.1/images/127.0.0.1:5000/a/json",
            "http://d/v4.3.1/build?t=127.0.0.1:5000/a/push",
        ] {
            assert_eq!(without_tls_verify(other, &allowed), None, "{other}");
        }
    }

    #[test]
    fn addresses_that_cannot_work() {
        for (address, needle) in [
            ("localhost:2375", "no scheme"),
            ("npipe:////./pipe/docker_engine", "Windows"),
            ("ftp://x", "unsupported scheme"),
            ("tcp://", "no host"),
        ] {
            let Err(e) = open(address, None) else {
                panic!("{address} opened")
            };
            assert!(e.to_string().contains(needle), "{address}: {e}");
        }
        let Err(e) = open("unix:///nonexistent.sock", None) else {
            panic!()
        };
        assert!(e.to_string().contains("unix:///nonexistent.sock"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = open("tcp://127.0.0.1:1", Some(dir.path())) else {
            panic!()
        };
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }
}
