//! HTTP helpers the rest of the client shares, knowing nothing of the client: origins and
//! authorities of URLs, headers, loopback names, URLs redacted for messages, and an error's
//! chain of causes read for messages and for what it says.

use reqwest::header::HeaderMap;

use crate::reference::is_loopback_host;

/// `scheme://host[:port]` of a URL (the port only when not the scheme's default); an
/// unparseable URL is an origin of its own that matches nothing.
pub(super) fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "null".into())
}

/// `host[:port]` of a URL, as an `insecure` entry names it.
pub(super) fn authority_of(url: &url::Url) -> String {
    url.host_str().map_or(String::new(), |h| match url.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_string(),
    })
}

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

pub(super) fn is_localhost_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

pub(super) fn url_is_loopback(url: &url::Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// Query parameters whose values are content addresses, repository names or token scopes,
/// never secrets.
pub(super) const PLAIN_QUERY_KEYS: &[&str] =
    &["digest", "mount", "from", "n", "last", "service", "scope"];

/// A URL fit for traces and error messages: upload `Location`s may carry signed tokens or
/// session state in the query, so every query value but a few known-harmless ones becomes `…`
/// (and a password in the URL becomes `redacted`).
pub(super) fn redact_url(url: &url::Url) -> String {
    let mut base = url.clone();
    if base.password().is_some() {
        let _ = base.set_password(Some("redacted"));
    }
    base.set_fragment(None);
    let Some(query) = url.query() else {
        return base.to_string();
    };
    base.set_query(None);
    let params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if PLAIN_QUERY_KEYS.contains(&k) => format!("{k}={v}"),
            Some((k, _)) => format!("{k}=…"),
            None => "…".to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// An error and its sources, without repeats: "client error (Connect): Connection refused".
/// Shared by everything that reports a library's error (registry, engine, publishing).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// A reqwest error's chain with the request URL's query values hidden (see [`redact_url`]).
pub(super) fn reqwest_chain(e: &reqwest::Error) -> String {
    let chain = error_chain(e);
    match e.url() {
        Some(url) => chain.replace(url.as_str(), &redact_url(url)),
        _ => chain,
    }
}

/// The first error of type `T` in `e`'s chain of sources.
pub(super) fn source_of<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

pub(super) fn is_plain_http_answer(lower_chain: &str) -> bool {
    lower_chain.contains("invalidcontenttype")
        || lower_chain.contains("corrupt message")
        || lower_chain.contains("http response to an https")
}

pub(super) fn is_certificate_problem(lower_chain: &str) -> bool {
    lower_chain.contains("certificate")
        || lower_chain.contains("unknownissuer")
        || lower_chain.contains("notvalidforname")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Digest;

    #[test]
    fn urls_in_traces_and_errors_hide_query_values() {
        let d = Digest::sha256_of(b"x");
        let u = url::Url::parse(&format!(
            "https://r.example/v2/a/blobs/uploads/1?_state=c2VjcmV0&X-Amz-Signature=abc123&digest={d}"
        ))
        .unwrap();
        let shown = redact_url(&u);
        assert_eq!(
            shown,
            format!("https://r.example/v2/a/blobs/uploads/1?_state=…&X-Amz-Signature=…&digest={d}")
        );
        let u = url::Url::parse("https://user:pw-secret@r.example/v2/?token#frag").unwrap();
        let shown = redact_url(&u);
        assert!(
            !shown.contains("pw-secret") && !shown.contains("token"),
            "{shown}"
        );
        assert_eq!(
            redact_url(&url::Url::parse("http://r.example/v2/").unwrap()),
            "http://r.example/v2/"
        );
    }
}
