//! Checks on what a push left behind and what the tool printed: a consistent registry, and no
//! secret in the output.

use base64::Engine as _;

use super::http::{ANY_MANIFEST_ACCEPT, http_request};
use super::registry::{basic_auth_b64, is_referrers_tag};

/// Every tag of every repository in the registry at `addr` (plain HTTP) resolves to a manifest
/// whose config and layers exist (indexes: every child manifest, recursively). `auth` is an
/// Authorization header value for registries that need one. Returns the number of tags.
pub fn assert_consistent(addr: &str, auth: Option<&str>) -> usize {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
    let (status, _, body) = http_request(addr, "GET", "/v2/_catalog", &headers);
    assert_eq!(status, 200, "catalog: {}", String::from_utf8_lossy(&body));
    let catalog: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut tags_seen = 0;
    for repo in catalog["repositories"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let repo = repo.as_str().unwrap().to_string();
        let (status, _, body) =
            http_request(addr, "GET", &format!("/v2/{repo}/tags/list"), &headers);
        if status == 404 {
            continue; // a repository with uploads but no tag yet
        }
        assert_eq!(
            status,
            200,
            "tags of {repo}: {}",
            String::from_utf8_lossy(&body)
        );
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for tag in list["tags"].as_array().cloned().unwrap_or_default() {
            let tag = tag.as_str().unwrap();
            check_manifest(addr, &headers, &repo, tag);
            // A referrers fallback tag (`sha256-<hex>`, listing the SBOM and provenance) is
            // checked like any manifest but is not an image tag.
            if !is_referrers_tag(tag) {
                tags_seen += 1;
            }
        }
    }
    tags_seen
}

fn check_manifest(addr: &str, headers: &[(&str, &str)], repo: &str, reference: &str) {
    let mut h = headers.to_vec();
    h.push(("Accept", ANY_MANIFEST_ACCEPT));
    let (status, _, body) = http_request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &h,
    );
    assert_eq!(
        status,
        200,
        "{repo}:{reference} does not resolve: {}",
        String::from_utf8_lossy(&body)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            check_manifest(addr, headers, repo, child["digest"].as_str().unwrap());
        }
        return;
    }
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_string());
    }
    for digest in digests {
        let (status, _, _) =
            http_request(addr, "HEAD", &format!("/v2/{repo}/blobs/{digest}"), headers);
        assert_eq!(
            status, 200,
            "{repo}:{reference} points at missing blob {digest}"
        );
    }
}

/// Panics if an upload session's state (`_state=…` in distribution's upload URLs, a signed token
/// on some registries) appears in `text` with its value.
pub fn assert_no_upload_state(text: &str) {
    for (i, _) in text.match_indices("_state=") {
        let value = &text[i + "_state=".len()..];
        if !value.starts_with('…') {
            let boundary = |mut j: usize| {
                while !text.is_char_boundary(j) {
                    j -= 1;
                }
                j
            };
            let around = &text[boundary(i.saturating_sub(80))..boundary((i + 120).min(text.len()))];
            panic!("an upload URL is shown with its query: {around}");
        }
    }
}

/// Every encoding of a password we must never print: itself, base64 of `user:password`, and
/// base64 of the password alone.
pub fn secret_forms(user: &str, password: &str) -> Vec<String> {
    vec![
        password.to_string(),
        basic_auth_b64(user, password),
        base64::engine::general_purpose::STANDARD.encode(password),
    ]
}

/// The index of the first line of `log` containing every one of `needles`, or a failure
/// showing the log (for checking the order of events in a -vv log).
pub fn line_with(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .position(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{log}"))
}

/// Every piece of a password written into an address (`user:password@host`) that must never be
/// shown: the user, the password whole and percent-decoded, and each piece between its `@`, `:`
/// and `%40` (what a redaction that splits at the wrong `@` would leave in sight).
pub fn userinfo_fragments(user: &str, password: &str) -> Vec<String> {
    let mut out = vec![
        user.to_string(),
        password.to_string(),
        password.replace("%40", "@"),
    ];
    for piece in password.split("%40").flat_map(|p| p.split(['@', ':'])) {
        if !piece.is_empty() {
            out.push(piece.to_string());
        }
    }
    out
}

/// Panics if any of `secrets` appears in `text` in any letter case (an uppercase hint could
/// show a password lowercased); `what` names the text.
pub fn assert_no_secret_in(what: &str, text: &str, secrets: &[String]) {
    let lower = text.to_lowercase();
    for secret in secrets {
        assert!(
            !lower.contains(&secret.to_lowercase()),
            "{what} shows `{secret}`, a piece of a password:\n{text}"
        );
    }
}
