//! Where credentials for a registry come from: CI environment variables, then the Docker config
//! (`credHelpers`, `auths`, `credsStore`), then containers' `auth.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::reference::Registry;
use crate::registry::{Credential, Keychain, Lookup};

/// How long a credential helper may take before we give up on it.
const HELPER_TIMEOUT: Duration = Duration::from_secs(20);

/// The app's keychain for the registry client: [`lookup`].
pub struct DefaultKeychain;

impl Keychain for DefaultKeychain {
    fn lookup(&self, registry: &Registry, push_target: bool) -> Lookup {
        lookup(registry, push_target)
    }
}

/// Looks up credentials for `registry` in the documented order. Blocking (it may run helpers):
/// call it off the async runtime.
///
/// `push_target`: the registry is the one being pushed to (the `external` address). Only then
/// are `ADAPT_PUSH_TOKEN` / `ADAPT_PUSH_USERNAME` / `ADAPT_PUSH_PASSWORD` consulted: a base
/// image's registry, or an upload host a registry points to, gets what the Docker/podman
/// configuration and helpers hold for that very host, never the push credentials.
pub fn lookup(registry: &Registry, push_target: bool) -> Lookup {
    let mut found = Lookup::default();
    if push_target {
        from_environment(&mut found);
        if found.credential.is_some() {
            return found;
        }
    }
    from_files(registry, &mut found);
    found
}

/// `ADAPT_PUSH_TOKEN`, or `ADAPT_PUSH_USERNAME` with `ADAPT_PUSH_PASSWORD`.
fn from_environment(found: &mut Lookup) {
    found
        .searched
        .push("ADAPT_PUSH_USERNAME/ADAPT_PUSH_PASSWORD, ADAPT_PUSH_TOKEN".into());
    if let Ok(token) = std::env::var("ADAPT_PUSH_TOKEN")
        && !token.is_empty()
    {
        found.credential = Some(Credential::RegistryToken(token));
        found.source = Some("ADAPT_PUSH_TOKEN".into());
        found.from_environment = true;
        return;
    }
    if let Ok(username) = std::env::var("ADAPT_PUSH_USERNAME")
        && !username.is_empty()
    {
        match std::env::var("ADAPT_PUSH_PASSWORD") {
            Ok(password) => {
                found.credential = Some(Credential::Basic { username, password });
                found.source = Some("ADAPT_PUSH_USERNAME/ADAPT_PUSH_PASSWORD".into());
                found.from_environment = true;
            }
            Err(_) => found.warnings.push(
                "ADAPT_PUSH_USERNAME is set but ADAPT_PUSH_PASSWORD is not; ignoring it".into(),
            ),
        }
    }
}

/// The Docker config (helpers included), then containers' auth files.
fn from_files(registry: &Registry, found: &mut Lookup) {
    let docker_config = docker_config_path();
    found.searched.push(docker_config.display().to_string());
    if let Some(config) = read_json(&docker_config, &mut found.warnings)
        && let Some((credential, source)) =
            from_docker_config(&config, registry, &mut found.warnings)
    {
        found.credential = Some(credential);
        found.source = Some(format!("{} ({source})", docker_config.display()));
        return;
    }

    for path in containers_auth_paths() {
        found.searched.push(path.display().to_string());
        if let Some(config) = read_json(&path, &mut found.warnings)
            && let Some(credential) = from_auths(&config, registry, &mut found.warnings)
        {
            found.credential = Some(credential);
            found.source = Some(format!("{} (auths)", path.display()));
            return;
        }
    }
}

fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("config.json"),
        _ => home_dir().join(".docker").join("config.json"),
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn containers_auth_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(dir).join("containers").join("auth.json"));
    }
    paths
}

fn read_json(path: &Path, warnings: &mut Vec<String>) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warnings.push(format!("could not read {}: {e}", path.display()));
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            // serde_json's message names a line and column, never the content.
            warnings.push(format!(
                "{} is not valid JSON ({e}); ignoring it",
                path.display()
            ));
            None
        }
    }
}

/// The keys a registry may be filed under in `auths` and `credHelpers`.
fn registry_keys(registry: &Registry) -> Vec<String> {
    if registry.is_docker_hub() {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ];
    }
    vec![registry.authority()]
}

/// Normalizes an `auths` key: `https://host:port/v1/` → `host:port`.
fn normalize_key(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
            "https://index.docker.io/v1/".into()
        }
        _ => host,
    }
}

fn matches(key: &str, registry: &Registry) -> bool {
    let normalized = normalize_key(key);
    registry_keys(registry)
        .iter()
        .any(|k| normalize_key(k) == normalized)
}

fn from_docker_config(
    config: &Value,
    registry: &Registry,
    warnings: &mut Vec<String>,
) -> Option<(Credential, String)> {
    if let Some(helpers) = config.get("credHelpers").and_then(Value::as_object) {
        for (key, helper) in helpers {
            if matches(key, registry)
                && let Some(helper) = helper.as_str()
            {
                return run_helper(helper, registry, warnings)
                    .map(|c| (c, format!("credHelpers: docker-credential-{helper}")));
            }
        }
    }
    if let Some(c) = from_auths(config, registry, warnings) {
        return Some((c, "auths".into()));
    }
    if let Some(store) = config
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return run_helper(store, registry, warnings)
            .map(|c| (c, format!("credsStore: docker-credential-{store}")));
    }
    None
}

fn from_auths(
    config: &Value,
    registry: &Registry,
    warnings: &mut Vec<String>,
) -> Option<Credential> {
    let auths = config.get("auths")?.as_object()?;
    let entry = auths
        .iter()
        .find(|(k, _)| matches(k, registry))
        .map(|(_, v)| v)?;
    if let Some(token) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Some(Credential::IdentityToken(token.to_string()));
    }
    if let Some(token) = entry
        .get("registrytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Some(Credential::RegistryToken(token.to_string()));
    }
    if let (Some(u), Some(p)) = (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) && !u.is_empty()
    {
        return Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        });
    }
    let auth = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((username, password)) => Some(Credential::Basic {
            username: username.into(),
            password: password.into(),
        }),
        None => {
            // Never quote the value: it is a secret, however malformed.
            warnings.push(format!(
                "the `auth` entry for {registry} is not base64 of `user:password`; ignoring it"
            ));
            None
        }
    }
}

/// Runs `docker-credential-<helper> get`. "Not found" (non-zero exit) means anonymous.
fn run_helper(helper: &str, registry: &Registry, warnings: &mut Vec<String>) -> Option<Credential> {
    let program = format!("docker-credential-{helper}");
    let server = helper_server_url(registry);
    let mut child = spawn_helper(helper, &program, &server, warnings)?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = read_helper_answer(&mut child, &program, warnings)?;
    parse_helper_answer(&out, &program, &server, warnings)
}

/// The server URL a credential helper is asked about: Docker Hub's historical key, else the
/// registry's authority.
fn helper_server_url(registry: &Registry) -> String {
    if registry.is_docker_hub() {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.authority()
    }
}

fn spawn_helper(
    helper: &str,
    program: &str,
    server: &str,
    warnings: &mut Vec<String>,
) -> Option<std::process::Child> {
    let child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "the Docker config names the credential helper `{helper}`, but `{program}` is not on PATH; continuing without credentials for {server}"
            ));
            None
        }
        Err(e) => {
            warnings.push(format!("could not run {program}: {e}"));
            None
        }
    }
}

/// Waits for the helper until `HELPER_TIMEOUT` and returns its stdout with its exit status.
fn read_helper_answer(
    child: &mut std::process::Child,
    program: &str,
    warnings: &mut Vec<String>,
) -> Option<(std::process::ExitStatus, Vec<u8>)> {
    // Read stdout on a thread so a hung helper can be killed at the deadline.
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut s) = stdout {
            use std::io::Read;
            let _ = s.read_to_end(&mut out);
        }
        out
    });
    let deadline = std::time::Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                warnings.push(format!(
                    "{program} did not answer within {}s; continuing without credentials",
                    HELPER_TIMEOUT.as_secs()
                ));
                break None;
            }
            Err(e) => {
                warnings.push(format!("waiting for {program}: {e}"));
                break None;
            }
        }
    }?;
    Some((status, reader.join().unwrap_or_default()))
}

/// Reads `{"Username": .., "Secret": ..}`; a failed `get` that says "not found" is anonymous.
fn parse_helper_answer(
    (status, out): &(std::process::ExitStatus, Vec<u8>),
    program: &str,
    server: &str,
    warnings: &mut Vec<String>,
) -> Option<Credential> {
    if !status.success() {
        // "credentials not found" means anonymous; anything else is worth a warning. A
        // helper's error output is its message, never the secret.
        let message = String::from_utf8_lossy(&out[..out.len().min(300)])
            .trim()
            .to_string();
        if !message.to_ascii_lowercase().contains("not found") {
            warnings.push(format!(
                "{program} get failed ({status}{}); continuing without credentials for {server}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ));
        }
        return None;
    }
    let Ok(value) = serde_json::from_slice::<Value>(out) else {
        warnings.push(format!(
            "{program} get did not answer with JSON; continuing without credentials for {server}"
        ));
        return None;
    };
    let username = value
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = value
        .get("Secret")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if secret.is_empty() {
        return None;
    }
    // Docker's convention: the username `<token>` marks an identity token.
    if username == "<token>" {
        Some(Credential::IdentityToken(secret.into()))
    } else {
        Some(Credential::Basic {
            username: username.into(),
            password: secret.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auths_forms() {
        let r = Registry::parse("localhost:5001").unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let config = json!({"auths": {"http://localhost:5001/v2/": {"auth": auth}}});
        assert_eq!(
            from_auths(&config, &r, &mut Vec::new()),
            Some(Credential::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            })
        );
        let config = json!({"auths": {"localhost:5001": {"identitytoken": "tok"}}});
        assert_eq!(
            from_auths(&config, &r, &mut Vec::new()),
            Some(Credential::IdentityToken("tok".into()))
        );
        let config = json!({"auths": {"localhost:5002": {"auth": auth}}});
        assert_eq!(from_auths(&config, &r, &mut Vec::new()), None);
    }

    #[test]
    fn docker_hub_keys_are_normalized() {
        let hub = Registry::docker_hub();
        let config =
            json!({"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}});
        assert!(from_auths(&config, &hub, &mut Vec::new()).is_some());
        let config = json!({"auths": {"docker.io": {"username": "u", "password": "p"}}});
        assert!(from_auths(&config, &hub, &mut Vec::new()).is_some());
    }

    #[test]
    fn missing_helper_is_a_warning() {
        let r = Registry::parse("localhost:5001").unwrap();
        let mut warnings = Vec::new();
        let config = json!({"credHelpers": {"localhost:5001": "definitely-not-installed-xyz"}});
        assert!(from_docker_config(&config, &r, &mut warnings).is_none());
        assert!(
            warnings[0].contains("docker-credential-definitely-not-installed-xyz"),
            "{warnings:?}"
        );
    }
}
