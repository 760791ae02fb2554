//! Where the client's credentials come from: a keychain the application implements (its
//! environment variables, configuration files, credential helpers), asked once per registry.

use std::sync::Arc;

use crate::reference::Registry;

/// A credential. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
    /// A bearer token to send as is.
    RegistryToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
            Credential::RegistryToken(_) => f.write_str("RegistryToken(<redacted>)"),
        }
    }
}

/// What a keychain found for a registry: the credential, where it came from, and where else it
/// looked (for error messages).
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub credential: Option<Credential>,
    /// Human description of where the credential came from.
    pub source: Option<String>,
    /// The credential came from environment variables (which take precedence over the
    /// keychain's files), not from a file.
    pub from_environment: bool,
    /// Every place consulted, in order.
    pub searched: Vec<String>,
    /// Problems worth telling the user (a missing helper, an unreadable file).
    pub warnings: Vec<String>,
}

/// Where a client gets the credentials for a registry.
pub trait Keychain: Send + Sync {
    /// What the keychain holds for `registry`. Blocking (it may run programs): the client
    /// calls it off the async runtime. `push_target`: `registry` is one the application
    /// pushes to (a keychain may keep some credentials for those only).
    fn lookup(&self, registry: &Registry, push_target: bool) -> Lookup;
}

/// A keychain that holds nothing: every registry is spoken to anonymously.
pub struct Anonymous;

impl Keychain for Anonymous {
    fn lookup(&self, _: &Registry, _: bool) -> Lookup {
        Lookup::default()
    }
}

/// Asks `keychain` for `registry`, off the async runtime.
pub(super) async fn look_up(
    keychain: &Arc<dyn Keychain>,
    registry: &Registry,
    push_target: bool,
) -> Lookup {
    let (keychain, registry) = (keychain.clone(), registry.clone());
    tokio::task::spawn_blocking(move || keychain.lookup(&registry, push_target))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok123".into())).contains("tok123"));
    }
}
