//! The name parts of a reference: repository paths (`team/greeter`) and tags (`1.2.3`).

use std::fmt;

use super::{ReferenceError, err};

/// A repository path: `team/greeter`. Lowercase components joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository(String);

impl Repository {
    pub fn parse(path: &str) -> Result<Repository, ReferenceError> {
        validate_repository_path(path)?;
        Ok(Repository(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn validate_repository_path(path: &str) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return err("the repository path is empty");
    }
    if path.len() > 255 {
        return err(format!(
            "the repository path `{path}` is {} characters long; the limit is 255",
            path.len()
        ));
    }
    for component in path.split('/') {
        validate_path_component(component).map_err(|why| {
            ReferenceError(format!("`{path}` is not a valid repository path: {why}"))
        })?;
    }
    Ok(())
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn validate_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("it has an empty component (`//`, or a leading or trailing `/`)".into());
    }
    if let Some(c) = component.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "`{component}` has the uppercase letter `{c}`; repository paths are lowercase (try `{}`)",
            component.to_ascii_lowercase()
        ));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "`{component}` must start and end with a lowercase letter or digit"
        ));
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or any number of `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let valid = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !valid {
            return Err(format!(
                "`{component}` has `{sep}`; components may only use `.`, `_`, `__` or `-` between lowercase letters and digits"
            ));
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(tag: &str) -> Result<Tag, ReferenceError> {
        let valid_first = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let valid_rest = |c: char| valid_first(c) || c == '.' || c == '-';
        let mut chars = tag.chars();
        match chars.next() {
            None => return err("the tag is empty"),
            Some(c) if !valid_first(c) => {
                return err(format!(
                    "the tag `{tag}` must start with a letter, digit or `_`"
                ));
            }
            _ => {}
        }
        if let Some(c) = chars.find(|c| !valid_rest(*c)) {
            return err(format!(
                "the tag `{tag}` has `{c}`; tags use letters, digits, `_`, `.` and `-` only"
            ));
        }
        if tag.len() > 128 {
            return err(format!("the tag `{tag}` is longer than 128 characters"));
        }
        Ok(Tag(tag.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths() {
        for good in ["a", "team/greeter", "a.b_c__d---e/f0", "x/y/z/w", "0"] {
            Repository::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "", "Team/x", "a/", "/a", "a//b", "_a", "a_", "a___b", "a._b", "a b", "a:b", "é",
        ] {
            assert!(
                Repository::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(Repository::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        for good in ["latest", "1.2.3", "_x", "v1-rc.1", &"a".repeat(128)] {
            Tag::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", ".x", "-x", "1.0+build", "a/b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }
}
