//! `.dockerignore` with Docker's own rules (moby's `ignorefile` + `patternmatcher`), not
//! gitignore's:
//!
//! * patterns are paths relative to the context root (`target` is only `./target`; a leading
//!   `/` is dropped; `./`, `//` and `..` are cleaned the way Go's `filepath.Clean` does);
//! * `*` is any run of characters but `/`, `?` one character but `/`, `[...]` a class, `\` escapes;
//! * `**` matches any number of whole directories (`**/x`, `a/**/x`), and a trailing `**` anything;
//! * a pattern matching a directory matches everything under it;
//! * `!pattern` re-includes, and the last pattern that matches a path decides;
//! * lines starting with `#` are comments; blank lines are ignored.
//!
//! The context walker asks [`DockerIgnore::is_excluded`] for every path and, for an excluded
//! directory, [`DockerIgnore::may_reinclude_under`] whether it must still look inside it.

use std::fmt;

/// A syntax error in a pattern, with its 1-based line in `.dockerignore` (0 when added in code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: `{}`: {}", self.line, self.pattern, self.reason)
        } else {
            write!(f, "`{}`: {}", self.pattern, self.reason)
        }
    }
}

impl std::error::Error for PatternError {}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern, without `!`.
    text: String,
    exclusion: bool,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `?`: one character other than `/`.
    AnyChar,
    /// `[...]`, as a regular expression class (a negated class also matches `/`, as in Docker).
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
    /// `**` followed by more pattern: zero or more whole directories, `(.*/)?`.
    AnyDirs,
    /// A trailing `**`: anything at all, `.*`.
    Anything,
}

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    /// Parses a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Result<DockerIgnore, PatternError> {
        let mut ignore = DockerIgnore::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            // Comments are recognized before trimming, as Docker does.
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            ignore.add(line).map_err(|mut e| {
                e.line = index + 1;
                e
            })?;
        }
        Ok(ignore)
    }

    /// Appends one pattern line (`!` allowed), as if it were the next line of the file.
    pub fn add(&mut self, line: &str) -> Result<(), PatternError> {
        let error = |reason: &str| PatternError {
            line: 0,
            pattern: line.to_string(),
            reason: reason.to_string(),
        };
        let line = line.trim();
        let (exclusion, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if rest.is_empty() {
            if exclusion {
                return Err(error("`!` needs a pattern after it"));
            }
            return Ok(());
        }
        let mut text = go_clean(rest);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let tokens = compile(&text).map_err(|reason| error(&reason))?;
        self.patterns.push(Pattern {
            text,
            exclusion,
            tokens,
        });
        Ok(())
    }

    /// Is this context-relative path (`/`-separated, no leading `./`) left out? A pattern that
    /// matches one of its parent directories matches it too; the last matching pattern decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(end) => {
                let parent = &path[..end];
                parent
                    .match_indices('/')
                    .map(|(i, _)| &parent[..i])
                    .chain([parent])
                    .collect()
            }
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exception an included one.
            if pattern.exclusion != excluded {
                continue;
            }
            let matched = pattern.matches(path) || parents.iter().any(|p| pattern.matches(p));
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// For an excluded directory: could an exception re-include something inside it? Docker's
    /// rule: only when an exception's text starts with the directory's path, so `!dir/keep`
    /// looks inside `dir`, while `!*/keep` does not.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir_slash = format!("{}/", dir.trim_end_matches('/'));
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&dir_slash))
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.chars().collect();
        glob_match(&self.tokens, &path)
    }
}

/// Go's `path.Clean`: collapse `//`, drop `.`, resolve `..` lexically, no trailing `/`.
fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Translates a cleaned pattern the way moby's patternmatcher builds its regular expression.
fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is treated as `**`: the slash is part of "any number of directories".
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i == chars.len() {
                    Token::Anything
                } else {
                    Token::AnyDirs
                });
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::AnyChar),
            '\\' => match chars.get(i) {
                Some(&next) => {
                    tokens.push(Token::Literal(next));
                    i += 1;
                }
                None => return Err("a pattern cannot end with `\\`".into()),
            },
            '[' => {
                let (token, next) = compile_class(&chars, i)?;
                tokens.push(token);
                i = next;
            }
            other => tokens.push(Token::Literal(other)),
        }
    }
    Ok(tokens)
}

/// Parses a class whose `[` is just before `start`; returns it and the index after its `]`.
fn compile_class(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    loop {
        let lo = match chars.get(i) {
            None => return Err("`[` without a closing `]`".into()),
            Some(']') if !items.is_empty() => return Ok((Token::Class { negated, items }, i + 1)),
            Some(']') => return Err("empty character class `[]`".into()),
            Some('\\') => {
                i += 1;
                *chars.get(i).ok_or("`[` without a closing `]`")?
            }
            Some(&c) => c,
        };
        i += 1;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            hi = match chars.get(i) {
                Some('\\') => {
                    i += 1;
                    *chars.get(i).ok_or("`[` without a closing `]`")?
                }
                Some(&c) => c,
                None => return Err("`[` without a closing `]`".into()),
            };
            i += 1;
            if hi < lo {
                return Err(format!("character range `{lo}-{hi}` is backwards"));
            }
        }
        items.push((lo, hi));
    }
}

/// Whole-string match of `tokens` against `path`, by dynamic programming (no backtracking blowup).
fn glob_match(tokens: &[Token], path: &[char]) -> bool {
    let (n, m) = (tokens.len(), path.len());
    // matches[t][p]: tokens[t..] match path[p..]. `slash_then[t][p]`: some q >= p has path[q] == '/'
    // and tokens[t..] match path[q+1..] (for `(.*/)?`).
    let mut matches = vec![vec![false; m + 1]; n + 1];
    let mut slash_then = vec![vec![false; m + 2]; n + 1];
    matches[n][m] = true;
    for t in (0..=n).rev() {
        for p in (0..=m).rev() {
            if t < n {
                let next = &matches[t + 1];
                matches[t][p] = match &tokens[t] {
                    Token::Literal(c) => p < m && path[p] == *c && next[p + 1],
                    Token::AnyChar => p < m && path[p] != '/' && next[p + 1],
                    Token::Class { negated, items } => {
                        p < m
                            && items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&path[p]))
                                != *negated
                            && next[p + 1]
                    }
                    Token::Star => next[p] || (p < m && path[p] != '/' && matches[t][p + 1]),
                    Token::Anything => next[p] || (p < m && matches[t][p + 1]),
                    Token::AnyDirs => next[p] || slash_then[t + 1][p],
                };
            }
            slash_then[t][p] =
                p < m && ((path[p] == '/' && matches[t][p + 1]) || slash_then[t][p + 1]);
        }
    }
    matches[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(lines: &[&str]) -> DockerIgnore {
        DockerIgnore::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn single_patterns() {
        // (pattern, path, matches)
        let table: &[(&str, &str, bool)] = &[
            ("target", "target", true),
            ("target", "target/debug/app", true),
            ("target", "sub/target", false),
            ("target", "targets", false),
            ("/target", "target/x", true),
            ("./target/", "target/x", true),
            ("target//debug", "target/debug/x", true),
            ("a/../target", "target", true),
            ("*.log", "app.log", true),
            ("*.log", "logs/app.log", false),
            ("*/*.log", "logs/app.log", true),
            ("*", "anything/at/all", true),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("?", "/", false),
            ("**/secret.txt", "secret.txt", true),
            ("**/secret.txt", "a/b/secret.txt", true),
            ("**/secret.txt", "a/b/not-secret.txt", false),
            ("docs/**", "docs/a/b", true),
            ("docs/**", "docs", false),
            ("docs/**/*.md", "docs/x.md", true),
            ("docs/**/*.md", "docs/a/b/x.md", true),
            ("docs/**/*.md", "docs/a/b/x.txt", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "ab", false),
            ("**", "x/y", true),
            ("**foo", "a/foo", true),
            ("**foo", "afoo", false),
            ("[abc].txt", "b.txt", true),
            ("[a-c].txt", "d.txt", false),
            ("[^a-c].txt", "d.txt", true),
            ("[^a-c].txt", "a.txt", false),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("a.b", "axb", false),
            ("file (1).txt", "file (1).txt", true),
            ("weird$name", "weird$name", true),
            ("x]", "x]", true),
            ("ünïcödé/*", "ünïcödé/ß", true),
        ];
        for (pattern, path, expected) in table {
            let i = ignore(&[pattern]);
            assert_eq!(
                i.is_excluded(path),
                *expected,
                "pattern {pattern:?} on {path:?}"
            );
        }
    }

    #[test]
    fn exceptions_and_order() {
        // (lines, path, excluded)
        let table: &[(&[&str], &str, bool)] = &[
            (&["*.log", "!keep.log"], "keep.log", false),
            (&["*.log", "!keep.log"], "other.log", true),
            // The last matching pattern wins.
            (&["!keep.log", "*.log"], "keep.log", true),
            (&["*.log", "!keep.log", "keep.log"], "keep.log", true),
            // An exception for a directory re-includes what is under it.
            (&["docs", "!docs/public"], "docs/public/index.md", false),
            (&["docs", "!docs/public"], "docs/private.md", true),
            (&["docs/**", "!docs/public"], "docs/public", false),
            // A file under an excluded directory stays out unless re-included itself.
            (&["target", "!target/keep.txt"], "target/keep.txt", false),
            (&["target", "!target/keep.txt"], "target/debug/app", true),
            // Exceptions with wildcards.
            (&["secrets/*", "!secrets/*.pub"], "secrets/id.pub", false),
            (&["secrets/*", "!secrets/*.pub"], "secrets/id", true),
            (&["**/*.key", "!**/test.key"], "a/b/test.key", false),
            (&["**/*.key", "!**/test.key"], "a/b/real.key", true),
            // Nothing matches: sent.
            (&["target"], "src/main.rs", false),
            // Comments and blank lines.
            (&["# target", "", "   "], "# target", false),
            (&["  # not a comment"], "# not a comment", true),
        ];
        for (lines, path, expected) in table {
            assert_eq!(
                ignore(lines).is_excluded(path),
                *expected,
                "{lines:?} on {path:?}"
            );
        }
    }

    #[test]
    fn looking_inside_excluded_directories() {
        let i = ignore(&["docs", "!docs/public", "target", "a", "!*/keep"]);
        assert!(i.may_reinclude_under("docs"));
        assert!(!i.may_reinclude_under("target"));
        // Docker's rule looks at the exception's text only: `!*/keep` does not open `a`.
        assert!(!i.may_reinclude_under("a"));
        assert!(!i.may_reinclude_under("doc"));
        assert!(ignore(&["x", "!x"]).may_reinclude_under("x"));
    }

    #[test]
    fn parsing() {
        let i = DockerIgnore::parse("\u{feff}target\r\n!  keep \n").unwrap();
        assert_eq!(i.patterns.len(), 2);
        assert_eq!(i.patterns[1].text, "keep");
        assert!(i.patterns[1].exclusion);
        let cases: &[(&str, &str)] = &[
            ("", "."),
            ("a//b/", "a/b"),
            ("./a", "a"),
            ("a/../..", ".."),
            ("/..", "/"),
            ("/a/./b", "/a/b"),
        ];
        for (input, cleaned) in cases {
            assert_eq!(go_clean(input), *cleaned, "{input:?}");
        }
        for bad in ["!", "[abc", "a\\", "[]", "[z-a]"] {
            let e = DockerIgnore::parse(&format!("ok\n{bad}")).unwrap_err();
            assert_eq!(e.line, 2, "{bad:?}: {e}");
        }
        let mut i = DockerIgnore::default();
        i.add("Dockerfile").unwrap();
        assert!(i.is_excluded("Dockerfile"));
        i.add("!Dockerfile").unwrap();
        assert!(!i.is_excluded("Dockerfile"));
    }
}
