//! Where the client's credentials come from: a keychain the application implements (its
//! environment variables, configuration files, credential helpers), asked once per registry.

use std::sync::Arc;

use super::error::RegistryError;
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

/// Why a keychain cannot tell what it holds for a registry (a credential helper that failed):
/// what failed, never a secret, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeychainError {
    pub cause: String,
    pub hint: String,
}

/// Where a client gets the credentials for a registry.
pub trait Keychain: Send + Sync {
    /// What the keychain holds for `registry`: a `Lookup` without a credential when it holds
    /// none, an error when it cannot tell. Blocking (it may run programs): the client calls it
    /// off the async runtime. `push_target`: `registry` is one the application pushes to (a
    /// keychain may keep some credentials for those only).
    fn lookup(&self, registry: &Registry, push_target: bool) -> Result<Lookup, KeychainError>;
}

/// A keychain that holds nothing: every registry is spoken to anonymously.
pub struct Anonymous;

impl Keychain for Anonymous {
    fn lookup(&self, _: &Registry, _: bool) -> Result<Lookup, KeychainError> {
        Ok(Lookup::default())
    }
}

/// Asks `keychain` for `registry`, off the async runtime. A lookup that fails, or panics, is an
/// error: going on without the credentials would send the requests anonymously.
pub async fn look_up(
    keychain: &Arc<dyn Keychain>,
    registry: &Registry,
    push_target: bool,
) -> Result<Lookup, RegistryError> {
    let (asked, target) = (keychain.clone(), registry.clone());
    let answer = tokio::task::spawn_blocking(move || asked.lookup(&target, push_target)).await;
    let (cause, hint) = match answer {
        Ok(Ok(lookup)) => return Ok(lookup),
        Ok(Err(KeychainError { cause, hint })) => (cause, hint),
        // The panic's own message is already on stderr (the panic hook); it is not repeated
        // here, where it could quote what the lookup was holding.
        Err(_) => (
            "the credential lookup panicked".to_string(),
            "this is a bug in the credential lookup, not a problem of the registry: please report it with the panic message above".to_string(),
        ),
    };
    Err(RegistryError::Credentials {
        registry: registry.to_string(),
        cause,
        hint,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A keychain whose lookups panic.
    pub(in crate::registry) struct Panics;

    impl Keychain for Panics {
        fn lookup(&self, _: &Registry, _: bool) -> Result<Lookup, KeychainError> {
            panic!("the keychain broke")
        }
    }

    /// A keychain whose helper fails.
    struct Fails;

    impl Keychain for Fails {
        fn lookup(&self, _: &Registry, _: bool) -> Result<Lookup, KeychainError> {
            Err(KeychainError {
                cause: "docker-credential-x get failed (exit status: 3)".into(),
                hint: "mend the helper".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_lookup_that_fails_or_panics_is_an_error_naming_the_registry() {
        let registry = Registry::parse("registry.example.test:5000").unwrap();
        let fails: Arc<dyn Keychain> = Arc::new(Fails);
        let err = look_up(&fails, &registry, true).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot get credentials for registry.example.test:5000: docker-credential-x get failed (exit status: 3)"
        );
        let help = miette::Diagnostic::help(&err).map(|h| h.to_string());
        assert_eq!(help.as_deref(), Some("mend the helper"));

        let panics: Arc<dyn Keychain> = Arc::new(Panics);
        let err = look_up(&panics, &registry, false).await.unwrap_err();
        assert!(matches!(err, RegistryError::Credentials { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot get credentials for registry.example.test:5000: "),
            "{err}"
        );
        let anonymous: Arc<dyn Keychain> = Arc::new(Anonymous);
        assert!(
            look_up(&anonymous, &registry, true)
                .await
                .unwrap()
                .credential
                .is_none()
        );
    }

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
