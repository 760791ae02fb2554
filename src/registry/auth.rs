//! Authenticating requests: Basic credentials and bearer tokens as the registry's challenge asks,
//! token requests and their answers, and upload hosts that challenge on their own.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::bounded::{SMALL_BLOB_LIMIT, read_error_body};
use super::challenge::{AuthState, Challenge, ForeignAuth, Scope, Token, parse_challenge};
use super::client::RegistryClient;
use super::error::RegistryError;
use super::hints::Problem;
use super::http::{authority_of, header_str, origin_of, redact_url, url_is_loopback};
use super::keychain::{Credential, look_up};
use super::plain_http::plain_http_allowed;
use crate::reference::{Registry, Repository};

impl RegistryClient {
    /// Records the challenge an upload host answered with and looks up what the keychain holds
    /// for that very host (asked as a registry not pushed to).
    /// `Ok(true)` when a next attempt can carry something new.
    pub(super) async fn learn_foreign_challenge(
        &self,
        url: &str,
        response: &Response,
    ) -> Result<bool, RegistryError> {
        let origin = origin_of(url);
        let challenge = header_str(response.headers(), WWW_AUTHENTICATE.as_str())
            .as_deref()
            .and_then(parse_challenge);
        let known = self.auth_state().foreign.get(&origin).cloned();
        if let Some(known) = &known
            && known.looked_up
            && known.challenge == challenge
        {
            // Already learnt (perhaps by a concurrent upload that met the same challenge):
            // another attempt helps only if there is something to answer it with; the upload
            // loop bounds how often.
            return Ok(known.credential.is_some());
        }
        let Some(challenge) = challenge else {
            return Ok(false);
        };
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .and_then(|h| Registry::parse(&h).ok());
        let credential = match host {
            Some(host) => look_up(&self.keychain, &host, false).await?.credential,
            None => None,
        };
        let useful = credential.is_some();
        self.events.trace(&format!(
            "the upload host {origin} asks for credentials; {}",
            if useful {
                "found some for that host"
            } else {
                "none are configured for that host"
            }
        ));
        self.auth_state().foreign.insert(
            origin,
            ForeignAuth {
                challenge: Some(challenge),
                credential,
                looked_up: true,
            },
        );
        Ok(useful)
    }

    pub(super) fn foreign_unauthorized(&self, repo: &Repository, url: &str) -> RegistryError {
        let origin = origin_of(url);
        RegistryError::Unauthorized {
            registry: origin.clone(),
            repository: repo.to_string(),
            problem: format!(
                "the upload host that {} sent us to asks for credentials for",
                self.registry
            ),
            status: 401,
            hint: self.hints.hint(&Problem::UploadHostCredentials {
                registry: &self.registry,
                origin: &origin,
            }),
        }
    }

    /// Plain HTTP to `url` refused: `plain` (`host[:port]`) is neither loopback nor insecure.
    fn plain_http_refused(&self, url: String, plain: String) -> RegistryError {
        RegistryError::PlainHttpRefused {
            url,
            hint: self
                .hints
                .hint(&Problem::PlainHttpRefused { authority: &plain }),
            plain,
        }
    }

    /// Whether the registry asked for bearer tokens (which expire), not Basic credentials.
    pub(super) fn uses_tokens(&self) -> bool {
        matches!(self.auth_state().challenge, Some(Challenge::Bearer { .. }))
    }

    pub(super) fn auth_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding it cannot leave the state inconsistent: take it anyway.
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Authorizes a request to `url`, which may be on another origin than the registry (an
    /// upload `Location`). The registry's own credentials go only to its own origin; another
    /// origin gets only what was found for it after it challenged, and nothing over plain HTTP
    /// unless it is loopback or listed in `insecure`.
    pub(super) async fn authorize_at(
        &self,
        scope: &Scope,
        url: &str,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, RegistryError> {
        let parsed = url::Url::parse(url).map_err(|e| RegistryError::Protocol {
            registry: self.registry.to_string(),
            what: "an upload".into(),
            cause: format!("the upload URL is not a URL ({e})"),
        })?;
        let origin = parsed.origin().ascii_serialization();
        if origin == self.origin {
            return self.authorize(Some(scope), request).await;
        }
        if parsed.scheme() == "http" && !plain_http_allowed(&parsed, &self.insecure) {
            return Err(self.plain_http_refused(
                format!("{origin} (the upload location {} sent)", self.registry),
                authority_of(&parsed),
            ));
        }
        let Some(foreign) = self.auth_state().foreign.get(&origin).cloned() else {
            return Ok(request);
        };
        let header = self
            .auth_header(
                foreign.challenge.as_ref(),
                foreign.credential.as_ref(),
                scope,
                &origin,
            )
            .await?;
        self.with_header(request, header)
    }

    /// Adds the Authorization header the registry's last challenge calls for.
    pub(super) async fn authorize(
        &self,
        scope: Option<&Scope>,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, RegistryError> {
        let Some(scope) = scope else {
            return Ok(request);
        };
        let challenge = self.auth_state().challenge.clone();
        let header = self
            .auth_header(
                challenge.as_ref(),
                self.credential.as_ref(),
                scope,
                &self.origin,
            )
            .await?;
        self.with_header(request, header)
    }

    /// The Authorization value `challenge` calls for with `credential` (bearer tokens cached by
    /// `origin` and scope).
    pub(super) async fn auth_header(
        &self,
        challenge: Option<&Challenge>,
        credential: Option<&Credential>,
        scope: &Scope,
        origin: &str,
    ) -> Result<Option<String>, RegistryError> {
        Ok(match (challenge, credential) {
            (None, _) => None,
            (Some(Challenge::Basic), Some(Credential::Basic { username, password })) => {
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                ))
            }
            (Some(Challenge::Basic), _) => None,
            (Some(Challenge::Bearer { .. }), Some(Credential::RegistryToken(t))) => {
                Some(format!("Bearer {t}"))
            }
            (Some(Challenge::Bearer { realm, service }), credential) => Some(format!(
                "Bearer {}",
                // Boxed: fetching a token sends a request (without a scope) itself.
                Box::pin(self.token_for(realm, service.as_deref(), scope, credential, origin))
                    .await?
            )),
        })
    }

    pub(super) fn with_header(
        &self,
        request: RequestBuilder,
        header: Option<String>,
    ) -> Result<RequestBuilder, RegistryError> {
        Ok(match header {
            Some(h) => {
                let mut value = HeaderValue::from_str(&h).map_err(|_| RegistryError::Protocol {
                    registry: self.registry.to_string(),
                    what: "the credentials".into(),
                    cause: "they have characters that cannot go in an HTTP header".into(),
                })?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
            None => request,
        })
    }

    pub(super) fn cached_token(&self, key: &str) -> Option<String> {
        self.auth_state()
            .tokens
            .get(key)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.value.clone())
    }

    /// A bearer token for `scope` on the registry itself.
    #[cfg(test)]
    pub(super) async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<String, RegistryError> {
        self.token_for(
            realm,
            service,
            scope,
            self.credential.as_ref(),
            &self.origin,
        )
        .await
    }

    /// A bearer token for `scope` on `origin`, got with `credential`, from the cache or the
    /// token endpoint (one fetch at a time).
    pub(super) async fn token_for(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        credential: Option<&Credential>,
        origin: &str,
    ) -> Result<String, RegistryError> {
        let key = format!("{origin} {}", scope.key());
        if let Some(t) = self.cached_token(&key) {
            return Ok(t);
        }
        let _fetching = self.token_fetch.lock().await;
        if let Some(t) = self.cached_token(&key) {
            return Ok(t);
        }
        let what = format!("a token from {realm}");
        self.check_realm(realm, credential)?;
        let response = self
            .request_token(realm, service, scope, credential, &what)
            .await?;
        let answer = self.token_answer(response, scope, &what).await?;
        let token = self.token_in(&answer, &what)?;
        let value = token.value.clone();
        self.auth_state().tokens.insert(key, token);
        Ok(value)
    }

    /// Refuses a token realm that is not http(s), or that is plain HTTP off loopback: with a
    /// secret (a password or a refresh token) always, and even anonymously unless its host is
    /// listed in `insecure`, like any other plain-HTTP traffic (the token that comes back is
    /// sent on to the registry).
    fn check_realm(
        &self,
        realm: &str,
        credential: Option<&Credential>,
    ) -> Result<(), RegistryError> {
        let realm_url = url::Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: self.registry.to_string(),
            what: "the authentication challenge".into(),
            cause: format!("the token realm `{realm}` is not a URL ({e})"),
        })?;
        let secret = matches!(
            credential,
            Some(Credential::Basic { .. } | Credential::IdentityToken(_))
        );
        match realm_url.scheme() {
            "https" => Ok(()),
            "http" if url_is_loopback(&realm_url) => Ok(()),
            "http" if secret => Err(RegistryError::CleartextRealm {
                registry: self.registry.to_string(),
                realm: redact_url(&realm_url),
            }),
            "http" if plain_http_allowed(&realm_url, &self.insecure) => Ok(()),
            "http" => Err(self.plain_http_refused(
                format!(
                    "{} (the token service {} names)",
                    redact_url(&realm_url),
                    self.registry
                ),
                authority_of(&realm_url),
            )),
            other => Err(RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: "the authentication challenge".into(),
                cause: format!("the token realm has the scheme `{other}`"),
            }),
        }
    }

    /// Asks the token endpoint: anonymously, with Basic credentials, or exchanging Docker's
    /// identity token (an OAuth2 refresh token).
    async fn request_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        credential: Option<&Credential>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in &scope.0 {
            query.push(("scope", s));
        }
        self.events.trace(&format!(
            "requesting a token from {realm} for {} ({})",
            scope.key(),
            match credential {
                Some(Credential::IdentityToken(_)) => "refresh-token exchange",
                Some(Credential::Basic { .. }) => "with Basic credentials",
                _ => "anonymous",
            }
        ));
        self.send_with_retry(None, what, || match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", self.client_id.as_str()),
                ];
                form.extend(query.iter().cloned());
                self.http.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            _ => self.http.get(realm).query(&query),
        })
        .await
    }

    /// The token endpoint's answer as JSON (bounded), or why there is none.
    async fn token_answer(
        &self,
        response: Response,
        scope: &Scope,
        what: &str,
    ) -> Result<serde_json::Value, RegistryError> {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(&scope.repository(), status));
        }
        if !status.is_success() {
            let body = read_error_body(response, self.retry.stall).await;
            return Err(RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: what.to_string(),
                cause: format!("HTTP {status}{}", body.shown),
            });
        }
        let text = self.read_body(response, SMALL_BLOB_LIMIT, what).await?;
        serde_json::from_slice(&text).map_err(|e| RegistryError::Protocol {
            registry: self.registry.to_string(),
            what: what.to_string(),
            cause: format!("not JSON ({e})"),
        })
    }

    /// The token in the endpoint's answer, and until when to use it: no longer than the token
    /// service says (60 s when it says nothing, as the token spec does), renewed a little early
    /// so a token rarely expires mid-request; a 401 on one that did is answered by
    /// authenticating again.
    fn token_in(&self, answer: &serde_json::Value, what: &str) -> Result<Token, RegistryError> {
        let value = answer
            .get("token")
            .or_else(|| answer.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                registry: self.registry.to_string(),
                what: what.to_string(),
                cause: "no token in the answer".into(),
            })?
            .to_string();
        let lifetime = Duration::from_secs(
            answer
                .get("expires_in")
                .and_then(|e| e.as_u64())
                .unwrap_or(60)
                .min(24 * 3600),
        );
        let margin = (lifetime / 10).min(Duration::from_secs(5));
        Ok(Token {
            value,
            expires: Instant::now() + lifetime.saturating_sub(margin),
        })
    }

    pub(super) fn unauthorized(&self, repository: &str, status: StatusCode) -> RegistryError {
        let searched = self.lookup.searched.join(", ");
        let (problem, hint) = match (&self.credential, &self.lookup.source, status) {
            (_, Some(source), StatusCode::FORBIDDEN) if self.credential.is_some() => (
                "the credentials were accepted, but access is denied to".to_string(),
                format!(
                    "credentials came from {source}; that account may not push to this repository"
                ),
            ),
            (Some(_), Some(_), _) => (
                "the credentials were refused for".to_string(),
                self.hints.hint(&Problem::CredentialsRefused {
                    registry: &self.registry,
                    lookup: &self.lookup,
                }),
            ),
            (None, Some(source), _) => (
                "credentials are required for".to_string(),
                format!(
                    "credentials from {source} are not sent to {} over plain HTTP (looked in: {searched}); use https://",
                    self.registry
                ),
            ),
            _ => (
                "credentials are required for".to_string(),
                self.hints.hint(&Problem::NoCredentials {
                    registry: &self.registry,
                    lookup: &self.lookup,
                }),
            ),
        };
        RegistryError::Unauthorized {
            registry: self.registry.to_string(),
            repository: repository.to_string(),
            problem,
            status: status.as_u16(),
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::client::tests::test_client;

    #[tokio::test]
    async fn no_credentials_to_a_plain_http_token_realm_elsewhere() {
        let client = test_client(
            "registry.example.test",
            "https://registry.example.test",
            Some(Credential::Basic {
                username: "alice".into(),
                password: "pw".into(),
            }),
        );
        let repo = Repository::parse("team/app").unwrap();
        let err = client
            .token(
                "http://auth.example.test/token",
                Some("svc"),
                &Scope::push(&repo),
            )
            .await
            .expect_err("must refuse");
        assert!(matches!(err, RegistryError::CleartextRealm { .. }), "{err}");
    }

    /// Which token realms a request may go to, by scheme, host, `insecure` and credentials.
    #[test]
    fn plain_http_realms_off_loopback_need_insecure_and_never_get_secrets() {
        let basic = Credential::Basic {
            username: "alice".into(),
            password: "pw".into(),
        };
        let mut client = test_client(
            "registry.example.test",
            "https://registry.example.test",
            None,
        );
        client.insecure = vec![Registry::parse("tokens.lan:8080").unwrap()];
        let cases: &[(&str, Option<&Credential>, bool)] = &[
            ("https://auth.example.test/token", None, true),
            ("https://auth.example.test/token", Some(&basic), true),
            ("http://127.0.0.1:5001/token", None, true),
            ("http://localhost:5001/token", Some(&basic), true),
            ("http://auth.example.test/token", None, false),
            ("http://tokens.lan:8080/token", None, true),
            ("http://tokens.lan:8080/token", Some(&basic), false),
            ("http://tokens.lan:9090/token", None, false),
            ("ftp://auth.example.test/token", None, false),
        ];
        for (realm, credential, allowed) in cases {
            let result = client.check_realm(realm, *credential);
            assert_eq!(
                result.is_ok(),
                *allowed,
                "{realm} {credential:?}: {result:?}"
            );
        }
        let err = client
            .check_realm("http://auth.example.test:8080/token?account=x", None)
            .unwrap_err();
        let help = miette::Diagnostic::help(&err).map(|h| h.to_string());
        assert!(
            matches!(&err, RegistryError::PlainHttpRefused { plain, .. } if plain == "auth.example.test:8080"),
            "{err}"
        );
        assert!(err.to_string().contains("the token service"), "{err}");
        assert!(
            help.is_some_and(|h| h.contains("if auth.example.test:8080 really serves plain HTTP")),
            "{err}"
        );
    }
}
