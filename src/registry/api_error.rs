//! The distribution API's error answer, `{"errors":[{"code","message","detail"}]}`, parsed once:
//! the codes typed, so what an answer means is decided on its codes, not on its wording; and the
//! text messages show, as the registry wrote it.

use serde_json::Value;

/// The error codes of the OCI distribution spec (and Docker's distribution, which added
/// `TOOMANYREQUESTS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A code the spec does not define, as the registry wrote it.
    Other(String),
}

impl ErrorCode {
    /// The code a registry wrote (in any case).
    pub fn parse(code: &str) -> ErrorCode {
        match code.to_ascii_uppercase().as_str() {
            "BLOB_UNKNOWN" => ErrorCode::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => ErrorCode::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => ErrorCode::BlobUploadUnknown,
            "DIGEST_INVALID" => ErrorCode::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => ErrorCode::ManifestBlobUnknown,
            "MANIFEST_INVALID" => ErrorCode::ManifestInvalid,
            "MANIFEST_UNKNOWN" => ErrorCode::ManifestUnknown,
            "NAME_INVALID" => ErrorCode::NameInvalid,
            "NAME_UNKNOWN" => ErrorCode::NameUnknown,
            "SIZE_INVALID" => ErrorCode::SizeInvalid,
            "UNAUTHORIZED" => ErrorCode::Unauthorized,
            "DENIED" => ErrorCode::Denied,
            "UNSUPPORTED" => ErrorCode::Unsupported,
            "TOOMANYREQUESTS" => ErrorCode::TooManyRequests,
            _ => ErrorCode::Other(code.to_string()),
        }
    }
}

/// One entry of an error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// `detail` as text: free-form JSON, often the reason itself ("unknown media type").
    pub detail: String,
}

/// An error answer's body, as far as it is read (`bounded::read_error_body`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// The entries, when the body is the spec's envelope.
    pub errors: Vec<ApiError>,
    /// What messages show after the status: ` (CODE message: detail; …)`, or the start of a body
    /// that is not the envelope, or nothing.
    pub shown: String,
    /// The start of a body that is not the envelope, for what it says.
    text: String,
}

/// How much of an entry, or of a body that is not the envelope, messages show.
const ENTRY_SHOWN: usize = 300;
const TEXT_SHOWN: usize = 200;

impl ErrorBody {
    pub fn parse(text: &str) -> ErrorBody {
        let parsed: Option<Value> = serde_json::from_str(text).ok();
        let Some(entries) = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
        else {
            let start: String = text.chars().take(TEXT_SHOWN).collect();
            return ErrorBody {
                errors: Vec::new(),
                shown: in_parentheses(&start),
                text: start,
            };
        };
        let as_str = |e: &Value, key: &str| {
            e.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut errors = Vec::new();
        let mut shown = Vec::new();
        for e in entries {
            let (code, message) = (as_str(e, "code"), as_str(e, "message"));
            let detail = match e.get("detail") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            let entry = match &detail {
                Some(detail) => format!("{code} {message}: {detail}"),
                None => format!("{code} {message}"),
            };
            shown.push(entry.trim().chars().take(ENTRY_SHOWN).collect::<String>());
            errors.push(ApiError {
                code: ErrorCode::parse(&code),
                message,
                detail: detail.unwrap_or_default(),
            });
        }
        let summary = shown.join("; ");
        ErrorBody {
            errors,
            shown: in_parentheses(&summary),
            text: String::new(),
        }
    }

    pub fn has(&self, code: &ErrorCode) -> bool {
        has_code(&self.errors, code)
    }

    pub fn says(&self, word: &str) -> bool {
        says(&self.errors, &self.text, word)
    }
}

/// ` (text)`, or nothing for blank text.
fn in_parentheses(text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(" ({})", text.trim())
    }
}

/// Whether any entry has `code`.
pub fn has_code(errors: &[ApiError], code: &ErrorCode) -> bool {
    errors.iter().any(|e| e.code == *code)
}

/// Whether an answer says `word` (in any case) in its entries' messages and details, or, for a
/// body that is not the envelope, in its text: for what no code tells (a full quota).
pub fn says(errors: &[ApiError], text: &str, word: &str) -> bool {
    let word = word.to_ascii_lowercase();
    let contains = |s: &str| s.to_ascii_lowercase().contains(&word);
    errors
        .iter()
        .any(|e| contains(&e.message) || contains(&e.detail))
        || (errors.is_empty() && contains(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_parsed_into_typed_codes_and_shown_as_written() {
        let body = ErrorBody::parse(
            r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:ab"},{"code":"denied","message":"requested access to the resource is denied","detail":null},{"code":"X_VENDOR","message":"m","detail":{"Size":3}}]}"#,
        );
        let codes: Vec<&ErrorCode> = body.errors.iter().map(|e| &e.code).collect();
        assert_eq!(
            codes,
            [
                &ErrorCode::ManifestBlobUnknown,
                &ErrorCode::Denied,
                &ErrorCode::Other("X_VENDOR".into())
            ]
        );
        assert_eq!(
            body.shown,
            r#" (MANIFEST_BLOB_UNKNOWN blob unknown to registry: sha256:ab; denied requested access to the resource is denied; X_VENDOR m: {"Size":3})"#
        );
        assert!(body.has(&ErrorCode::Denied));
        assert!(!body.has(&ErrorCode::BlobUnknown));
        assert!(body.says("ACCESS TO THE RESOURCE"));
        assert!(!body.says("quota"));
    }

    #[test]
    fn a_body_that_is_not_the_envelope_is_shown_by_its_start() {
        let body = ErrorBody::parse(&format!("upstream quota reached {}", "x".repeat(400)));
        assert!(body.errors.is_empty());
        assert_eq!(body.shown.chars().count(), 200 + 3);
        assert!(body.says("Quota"));
        assert_eq!(ErrorBody::parse("  ").shown, "");
        assert_eq!(ErrorBody::parse(r#"{"errors":[]}"#).shown, "");
        // A code alone, with an empty detail string, as written.
        assert_eq!(
            ErrorBody::parse(r#"{"errors":[{"code":"UNSUPPORTED","detail":""}]}"#).shown,
            " (UNSUPPORTED :)"
        );
    }
}
