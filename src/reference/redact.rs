//! The one redaction of userinfo (`user:password@`) for everything shown to people.

/// `text` with the userinfo of every address in it (`[scheme://]user:password@host…`) replaced
/// by `<redacted>`: the one redaction for everything shown to people (errors, Cargo.toml
/// snippets, logs, CI annotations), so a password written into an address is never echoed.
///
/// An address is a run of text between spaces, quotes, backticks or angle brackets; its
/// authority runs from the start (or after `://`) to the first `/`, `?` or `#`, and the userinfo
/// is everything in it before the LAST `@`, as in RFC 3986 and the address parser (so a password
/// holding `@` is hidden whole). E-mail addresses (`a@b.org`: no `:` before the `@`) and
/// digest references (`busybox:1@sha256:…`) are not addresses with userinfo and stay as they are.
pub fn redact_userinfo(text: &str) -> String {
    let boundary = |c: char| c.is_whitespace() || matches!(c, '"' | '`' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(end) = rest.find(boundary) {
        out.push_str(&redact_token(&rest[..end]));
        let c = rest[end..].chars().next().expect("a boundary character");
        out.push(c);
        rest = &rest[end + c.len_utf8()..];
    }
    out.push_str(&redact_token(rest));
    out
}

/// One address-like run of text with its userinfo replaced (see [`redact_userinfo`]).
fn redact_token(token: &str) -> std::borrow::Cow<'_, str> {
    let start = token.find("://").map_or(0, |i| i + 3);
    let end = token[start..]
        .find(['/', '?', '#'])
        .map_or(token.len(), |i| start + i);
    let Some(at) = token[start..end].rfind('@').map(|i| start + i) else {
        return token.into();
    };
    let (userinfo, host) = (&token[start..at], &token[at + 1..end]);
    let has_password = userinfo.contains(':') || userinfo.contains('@');
    let names_a_host = host
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[');
    if userinfo.is_empty() || !has_password || !names_a_host || looks_like_digest(host) {
        return token.into();
    }
    format!("{}<redacted>@{}", &token[..start], &token[at + 1..]).into()
}

/// `algorithm:encoded` with a long encoded part (a digest, not `host:port`).
fn looks_like_digest(text: &str) -> bool {
    text.split_once(':').is_some_and(|(algorithm, encoded)| {
        !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && encoded.len() >= 32
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::RegistryLocation;

    #[test]
    fn userinfo_is_never_echoed() {
        for input in [
            "https://bob:s3cret-pw@registry.example/team",
            "bob:s3cret-pw@registry.example:5000",
            "http://bob:s3cret-pw@[::1]:5000",
        ] {
            let e = RegistryLocation::parse(input).unwrap_err().to_string();
            assert!(!e.contains("s3cret-pw") && !e.contains("bob"), "{e}");
            assert!(e.contains("<redacted>@"), "{e}");
        }
        let toml =
            "registry = \"https://bob:s3cret-pw@r.example/x\"\nauthors = [\"A <a@b.org>\"]\n";
        let shown = redact_userinfo(toml);
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("https://<redacted>@r.example/x"), "{shown}");
        assert!(shown.contains("<a@b.org>"), "{shown}");
    }

    #[test]
    fn redaction_hides_the_userinfo_up_to_the_last_at() {
        for (text, shown) in [
            ("alice:Pa@SECRET-TAIL@host", "<redacted>@host"),
            (
                "registry = \"alice:Pa@SECRET-TAIL@host:5000/team\"",
                "registry = \"<redacted>@host:5000/team\"",
            ),
            (
                "`https://u:Top@Sec:ret%40X9@127.0.0.1:5000/base:1` is not",
                "`https://<redacted>@127.0.0.1:5000/base:1` is not",
            ),
            (
                "-> GET http://u:pw@[::1]:5000/v2/",
                "-> GET http://<redacted>@[::1]:5000/v2/",
            ),
            (
                "ADAPT_PUSH_REGISTRY=u:p@w@h.example",
                "<redacted>@h.example",
            ),
            ("(u:p@ss@h.example)", "<redacted>@h.example)"),
            ("a\tu:x@y@h:1\n", "a\t<redacted>@h:1\n"),
        ] {
            assert_eq!(redact_userinfo(text), shown, "{text}");
        }
        let digest = format!("sha256:{}", "ab".repeat(32));
        for same in [
            "authors = [\"A <a@b.org>\"]".to_string(),
            "mail a@b.org, or ssh://git@host/x, or git@github.com:org/repo.git".into(),
            format!("localhost:5000/app:v1@{digest}"),
            format!("`busybox:1.36@{digest}`"),
            format!("registry:5000/team/app@{digest} (pushed)"),
            "user@ alone, @host, :@, a:b@".into(),
            "ünïcödé:ß@ ok".into(),
        ] {
            assert_eq!(redact_userinfo(&same), same);
        }
    }
}
