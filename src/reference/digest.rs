//! Content digests: `sha256:<64 hex>` or `sha512:<128 hex>`.

use std::fmt;

use super::{ReferenceError, err};

/// A content digest: `sha256:<64 hex>` (or sha512 with 128).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(digest: &str) -> Result<Digest, ReferenceError> {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return err(format!(
                "`{digest}` is not a digest; expected `sha256:` followed by 64 hex digits"
            ));
        };
        let expected = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return err(format!(
                    "`{digest}`: unsupported digest algorithm `{algorithm}` (sha256 or sha512)"
                ));
            }
        };
        if hex.len() != expected || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return err(format!(
                "`{digest}`: a {algorithm} digest is {expected} lowercase hex digits"
            ));
        }
        Ok(Digest(digest.to_string()))
    }

    /// The sha256 digest of some bytes.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        use sha2::{Digest as _, Sha256};
        Digest::from_sha256_bytes(&Sha256::digest(bytes))
    }

    pub fn from_sha256_bytes(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, for file names.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let hex64 = "a".repeat(64);
        Digest::parse(&format!("sha256:{hex64}")).unwrap();
        for bad in [
            "sha256:abc".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("md5:{hex64}"),
            hex64.clone(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::sha256_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
