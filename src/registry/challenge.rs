//! What authentication is made of, apart from the client: `WWW-Authenticate` challenges, bearer
//! tokens and the per-origin state that caches them, and the scopes a request asks for.

use std::collections::HashMap;
use std::time::Instant;

use super::keychain::Credential;

use crate::reference::Repository;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Clone)]
pub(super) struct Token {
    pub(super) value: String,
    pub(super) expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

#[derive(Debug, Default)]
pub(super) struct AuthState {
    pub(super) challenge: Option<Challenge>,
    /// Bearer tokens by origin and scope set.
    pub(super) tokens: HashMap<String, Token>,
    /// Other origins (upload hosts a `Location` points to), by `scheme://host:port`. The
    /// registry's own credentials never go there.
    pub(super) foreign: HashMap<String, ForeignAuth>,
}

/// What we know of an origin other than the registry's: the challenge it sent, and what the
/// credential sources hold for that very host (looked up once, after its first challenge).
#[derive(Debug, Default, Clone)]
pub(super) struct ForeignAuth {
    pub(super) challenge: Option<Challenge>,
    pub(super) credential: Option<Credential>,
    pub(super) looked_up: bool,
}

/// What a request needs access to, for bearer token scopes.
#[derive(Debug, Clone)]
pub struct Scope(pub(super) Vec<String>);

impl Scope {
    pub fn pull(repo: &Repository) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }

    pub fn push(repo: &Repository) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }

    /// Push to `repo` and read `from`, for cross-repository mounts.
    pub fn push_and_mount(repo: &Repository, from: &Repository) -> Scope {
        Scope(vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }

    pub(super) fn key(&self) -> String {
        self.0.join(" ")
    }

    /// The repository the scope is mainly about, for error messages.
    pub(super) fn repository(&self) -> String {
        self.0
            .first()
            .and_then(|s| s.strip_prefix("repository:"))
            .and_then(|s| s.rsplit_once(':'))
            .map(|(repo, _)| repo.to_string())
            .unwrap_or_default()
    }
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub(super) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_auth_params(params);
            let realm = params.get("realm")?.clone();
            Some(Challenge::Bearer {
                realm,
                service: params.get("service").cloned(),
            })
        }
        _ => None,
    }
}

pub(super) fn parse_auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(stripped) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in stripped.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.unwrap_or(stripped.len());
            value = stripped[..end].replace("\\\"", "\"");
            rest = stripped.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.insert(key, value);
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge(""), None);
        let p = parse_auth_params(r#"realm="a,b", service=plain , x="q\"uote""#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["service"], "plain");
        assert_eq!(p["x"], "q\"uote");
    }

    #[test]
    fn challenge_parser_survives_random_input() {
        let alphabet: Vec<char> = "aB =,\"\\realmservicBEARERbasic\u{e9}\u{1F600}\t"
            .chars()
            .collect();
        for _ in 0..5000 {
            let len = rand::random::<u32>() % 40;
            let s: String = (0..len)
                .map(|_| alphabet[rand::random::<u32>() as usize % alphabet.len()])
                .collect();
            let _ = parse_challenge(&s);
            let _ = parse_challenge(&format!("Bearer {s}"));
            let _ = parse_auth_params(&s);
        }
    }

    #[test]
    fn scopes_name_their_repository() {
        let repo = Repository::parse("team/app").unwrap();
        let from = Repository::parse("base/img").unwrap();
        assert_eq!(Scope::push(&repo).repository(), "team/app");
        assert_eq!(
            Scope::push_and_mount(&repo, &from).key(),
            "repository:team/app:pull,push repository:base/img:pull"
        );
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token {
            value: "secret-token-value".into(),
            expires: Instant::now(),
        };
        assert!(!format!("{t:?}").contains("secret-token-value"));
    }
}
