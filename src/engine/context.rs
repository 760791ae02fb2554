//! Which engine the docker CLI would talk to: `DOCKER_HOST`, else the context `DOCKER_CONTEXT`
//! names, else the `currentContext` of the Docker config (`DOCKER_CONFIG` or `~/.docker`), read
//! from the CLI's context store (`contexts/meta/<sha256 of the name>/meta.json`, TLS material in
//! `contexts/tls/<sha256 of the name>/docker/`). The context `default` means the default socket.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Where the engine is, and where the answer came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `None`: the default socket.
    pub host: Option<String>,
    /// The context's TLS directory (ca.pem, cert.pem, key.pem), when it has one.
    pub tls: Option<PathBuf>,
    pub skip_tls_verify: bool,
    /// "DOCKER_HOST", "DOCKER_CONTEXT=name", "context name (currentContext in …/config.json)".
    pub source: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("docker context `{name}` ({source_name}): {reason}")]
pub struct ContextError {
    pub name: String,
    pub source_name: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "Endpoints", default)]
    endpoints: std::collections::HashMap<String, MetaEndpoint>,
}

#[derive(Deserialize)]
struct MetaEndpoint {
    #[serde(rename = "Host")]
    host: Option<String>,
    #[serde(rename = "SkipTLSVerify", default)]
    skip_tls_verify: bool,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(rename = "currentContext")]
    current_context: Option<String>,
}

/// The Docker config directory, as the docker CLI finds it.
pub fn config_dir() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".docker"),
    }
}

/// The engine endpoint from the environment and the Docker config.
pub fn endpoint() -> Result<Endpoint, ContextError> {
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(host) = env("DOCKER_HOST") {
        return Ok(Endpoint {
            host: Some(host),
            tls: None,
            skip_tls_verify: false,
            source: "DOCKER_HOST".into(),
        });
    }
    let dir = config_dir();
    let (name, source) = match env("DOCKER_CONTEXT") {
        Some(name) => (name.clone(), format!("DOCKER_CONTEXT={name}")),
        None => {
            let file = dir.join("config.json");
            let current = std::fs::read(&file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ConfigFile>(&bytes).ok())
                .and_then(|c| c.current_context)
                .filter(|c| !c.is_empty());
            match current {
                Some(name) => (name, format!("currentContext in {}", file.display())),
                None => return Ok(default_endpoint("no context set")),
            }
        }
    };
    if name == "default" {
        return Ok(default_endpoint(&source));
    }
    read_context(&dir, &name, &source)
}

fn default_endpoint(source: &str) -> Endpoint {
    Endpoint {
        host: None,
        tls: None,
        skip_tls_verify: false,
        source: source.to_string(),
    }
}

fn read_context(dir: &Path, name: &str, source: &str) -> Result<Endpoint, ContextError> {
    let fail = |reason: String| ContextError {
        name: name.to_string(),
        source_name: source.to_string(),
        reason,
    };
    let id = hex::encode(Sha256::digest(name.as_bytes()));
    let meta_path = dir
        .join("contexts")
        .join("meta")
        .join(&id)
        .join("meta.json");
    let bytes = std::fs::read(&meta_path).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "no such context (looked for {}); `docker context ls` lists them",
                meta_path.display()
            ),
            _ => format!("cannot read {}: {e}", meta_path.display()),
        })
    })?;
    let meta: Meta = serde_json::from_slice(&bytes)
        .map_err(|e| fail(format!("{} is not a context: {e}", meta_path.display())))?;
    let docker = meta
        .endpoints
        .get("docker")
        .ok_or_else(|| fail(format!("{} has no docker endpoint", meta_path.display())))?;
    let host = docker
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| fail(format!("{} has no docker Host", meta_path.display())))?;
    let tls_dir = dir.join("contexts").join("tls").join(&id).join("docker");
    Ok(Endpoint {
        host: Some(host),
        tls: tls_dir.is_dir().then_some(tls_dir),
        skip_tls_verify: docker.skip_tls_verify,
        source: format!("context {name}, from {source}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_is_found_by_the_hash_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let id = hex::encode(Sha256::digest(b"remote"));
        let meta = dir.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://10.0.0.5:2376","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("contexts/tls").join(&id).join("docker")).unwrap();
        let e = read_context(dir.path(), "remote", "DOCKER_CONTEXT=remote").unwrap();
        assert_eq!(e.host.as_deref(), Some("tcp://10.0.0.5:2376"));
        assert!(e.tls.is_some());
        let err = read_context(dir.path(), "nope", "DOCKER_CONTEXT=nope").unwrap_err();
        assert!(err.to_string().contains("no such context"), "{err}");
    }
}
