//! Where credentials for a registry come from: CI environment variables, then the Docker config
//! (`credHelpers`, `auths`, `credsStore`), then containers' `auth.json`. The registry client and
//! the engine ask through [`DefaultKeychain`], the app's `registry::Keychain`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::reference::Registry;
use crate::registry::{Credential, Keychain, KeychainError, Lookup};

/// How long a credential helper may take before we give up on it.
const HELPER_TIMEOUT: Duration = Duration::from_secs(20);

/// The app's keychain, for the registry client and the engine: [`lookup`].
pub struct DefaultKeychain;

impl Keychain for DefaultKeychain {
    fn lookup(&self, registry: &Registry, push_target: bool) -> Result<Lookup, KeychainError> {
        lookup(registry, push_target)
    }
}

/// Looks up credentials for `registry` in the documented order. Blocking (it may run helpers):
/// call it off the async runtime. A helper that answers "not found", or is not installed (a
/// warning), means no credentials; a helper that fails otherwise is an error.
///
/// `push_target`: the registry is the one being pushed to (the `external` address). Only then
/// are `ADAPT_PUSH_TOKEN` / `ADAPT_PUSH_USERNAME` / `ADAPT_PUSH_PASSWORD` consulted: a base
/// image's registry, or an upload host a registry points to, gets what the Docker/podman
/// configuration and helpers hold for that very host, never the push credentials.
fn lookup(registry: &Registry, push_target: bool) -> Result<Lookup, KeychainError> {
    let mut found = Lookup::default();
    if push_target {
        from_environment(&mut found);
        if found.credential.is_some() {
            return Ok(found);
        }
    }
    from_files(registry, &mut found)?;
    Ok(found)
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
fn from_files(registry: &Registry, found: &mut Lookup) -> Result<(), KeychainError> {
    let docker_config = docker_config_path();
    found.searched.push(docker_config.display().to_string());
    if let Some(config) = read_json(&docker_config, &mut found.warnings)
        && let Some((credential, source)) =
            from_docker_config(&config, &docker_config, registry, &mut found.warnings)?
    {
        found.credential = Some(credential);
        found.source = Some(format!("{} ({source})", docker_config.display()));
        return Ok(());
    }

    for path in containers_auth_paths() {
        found.searched.push(path.display().to_string());
        if let Some(config) = read_json(&path, &mut found.warnings)
            && let Some(credential) = from_auths(&config, registry, &mut found.warnings)
        {
            found.credential = Some(credential);
            found.source = Some(format!("{} (auths)", path.display()));
            return Ok(());
        }
    }
    Ok(())
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

/// What the Docker config at `path` holds for `registry`: from its helper (`credHelpers`), its
/// `auths`, or its store (`credsStore`), with where it came from.
fn from_docker_config(
    config: &Value,
    path: &Path,
    registry: &Registry,
    warnings: &mut Vec<String>,
) -> Result<Option<(Credential, String)>, KeychainError> {
    if let Some(helpers) = config.get("credHelpers").and_then(Value::as_object) {
        for (key, helper) in helpers {
            if matches(key, registry)
                && let Some(helper) = helper.as_str()
            {
                return Ok(run_helper(helper, registry, warnings)
                    .map_err(|cause| helper_failed(cause, path, "credHelpers", helper, registry))?
                    .map(|c| (c, format!("credHelpers: docker-credential-{helper}"))));
            }
        }
    }
    if let Some(c) = from_auths(config, registry, warnings) {
        return Ok(Some((c, "auths".into())));
    }
    if let Some(store) = config
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Ok(run_helper(store, registry, warnings)
            .map_err(|cause| helper_failed(cause, path, "credsStore", store, registry))?
            .map(|c| (c, format!("credsStore: docker-credential-{store}"))));
    }
    Ok(None)
}

/// A helper that failed, named with where it is configured (`key` of the Docker config at
/// `path`) and what to do: mend it, or take it out of the config to go without credentials.
fn helper_failed(
    cause: String,
    path: &Path,
    key: &str,
    helper: &str,
    registry: &Registry,
) -> KeychainError {
    let server = helper_server_url(registry);
    let entry = match key {
        "credHelpers" => format!("the `credHelpers` entry for {server}"),
        _ => format!("the `{key}` entry"),
    };
    KeychainError {
        cause,
        hint: format!(
            "{} names the credential helper `{helper}` ({key}): check that `echo {server} | docker-credential-{helper} get` works (log in again if its login ran out), or remove {entry} to go on without credentials",
            path.display()
        ),
    }
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

/// Runs `docker-credential-<helper> get`: `None` when it answers "not found" (or is not
/// installed, with a warning); why it failed when it does otherwise.
fn run_helper(
    helper: &str,
    registry: &Registry,
    warnings: &mut Vec<String>,
) -> Result<Option<Credential>, String> {
    let program = format!("docker-credential-{helper}");
    let server = helper_server_url(registry);
    let Some(mut child) = spawn_helper(helper, &program, &server, warnings)? else {
        return Ok(None);
    };
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = read_helper_answer(&mut child, &program)?;
    parse_helper_answer(&out, &program)
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

/// Starts the helper; `None` when it is not installed (a warning: the config names a helper
/// this machine does not have, as a config copied from elsewhere does).
fn spawn_helper(
    helper: &str,
    program: &str,
    server: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<std::process::Child>, String> {
    let child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "the Docker config names the credential helper `{helper}`, but `{program}` is not on PATH; continuing without credentials for {server}"
            ));
            Ok(None)
        }
        Err(e) => Err(format!("could not run {program}: {e}")),
    }
}

/// Waits for the helper until `HELPER_TIMEOUT` and returns its stdout with its exit status.
fn read_helper_answer(
    child: &mut std::process::Child,
    program: &str,
) -> Result<(std::process::ExitStatus, Vec<u8>), String> {
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
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not answer within {}s",
                    HELPER_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    Ok((status, reader.join().unwrap_or_default()))
}

/// Reads `{"Username": .., "Secret": ..}`; a failed `get` that says "not found" means no
/// credentials, any other failure is why the helper failed.
fn parse_helper_answer(
    (status, out): &(std::process::ExitStatus, Vec<u8>),
    program: &str,
) -> Result<Option<Credential>, String> {
    if !status.success() {
        // "credentials not found" is the protocol's answer for none. A helper's error output
        // is its message, never the secret.
        let message = String::from_utf8_lossy(&out[..out.len().min(300)])
            .trim()
            .to_string();
        if message.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(format!(
            "{program} get failed ({status}{})",
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        ));
    }
    let Ok(value) = serde_json::from_slice::<Value>(out) else {
        return Err(format!("{program} get did not answer with JSON"));
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
        return Ok(None);
    }
    // Docker's convention: the username `<token>` marks an identity token.
    Ok(Some(if username == "<token>" {
        Credential::IdentityToken(secret.into())
    } else {
        Credential::Basic {
            username: username.into(),
            password: secret.into(),
        }
    }))
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

    fn exit(code: i32) -> std::process::ExitStatus {
        std::os::unix::process::ExitStatusExt::from_raw(code << 8)
    }

    #[test]
    fn a_helper_that_fails_is_not_taken_for_no_credentials() {
        let program = "docker-credential-x";
        let answer = |code: i32, out: &str| parse_helper_answer(&(exit(code), out.into()), program);
        // The protocol's "none": no credentials, no error.
        assert_eq!(
            answer(1, "credentials not found in native keychain\n"),
            Ok(None)
        );
        assert_eq!(answer(0, r#"{"Username":"u","Secret":""}"#), Ok(None));
        assert_eq!(
            answer(0, r#"{"Username":"<token>","Secret":"refresh"}"#),
            Ok(Some(Credential::IdentityToken("refresh".into())))
        );
        // Anything else is why it failed.
        assert_eq!(
            answer(3, "the keychain is locked\n"),
            Err("docker-credential-x get failed (exit status: 3: the keychain is locked)".into())
        );
        assert_eq!(
            answer(0, "not JSON"),
            Err("docker-credential-x get did not answer with JSON".into())
        );
        let killed = std::os::unix::process::ExitStatusExt::from_raw(9);
        assert!(parse_helper_answer(&(killed, Vec::new()), program).is_err());

        let r = Registry::parse("localhost:5001").unwrap();
        let path = Path::new("/home/u/.docker/config.json");
        let e = helper_failed("it broke".into(), path, "credHelpers", "x", &r);
        assert_eq!(e.cause, "it broke");
        assert!(
            e.hint
                .contains("/home/u/.docker/config.json names the credential helper `x`")
                && e.hint
                    .contains("`echo localhost:5001 | docker-credential-x get`")
                && e.hint
                    .contains("remove the `credHelpers` entry for localhost:5001"),
            "{}",
            e.hint
        );
    }

    #[test]
    fn missing_helper_is_a_warning() {
        let r = Registry::parse("localhost:5001").unwrap();
        let mut warnings = Vec::new();
        let config = json!({"credHelpers": {"localhost:5001": "definitely-not-installed-xyz"}});
        let path = Path::new("/nowhere/config.json");
        assert!(
            from_docker_config(&config, path, &r, &mut warnings)
                .unwrap()
                .is_none()
        );
        assert!(
            warnings[0].contains("docker-credential-definitely-not-installed-xyz"),
            "{warnings:?}"
        );
    }
}
