//! Finding the `adapt://` placeholders of one input: the YAML parser's scalar events, each
//! located in the source text so that only its characters are replaced.

use saphyr_parser::{Event, Parser, ScalarStyle};

use super::{Input, ResolveError, SCHEME};

/// A placeholder found in an input: the byte range of its characters (inside any quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub range: std::ops::Range<usize>,
    pub line: usize,
    pub package: String,
    pub bin: Option<String>,
    pub text: String,
}

/// Every `adapt://` scalar of `input`, in order.
pub fn find_placeholders(input: &Input) -> Result<Vec<Placeholder>, ResolveError> {
    let text = input.text.as_str();
    let mut bytes = ByteOffsets::default();
    let mut found = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| ResolveError::Yaml {
            file: input.name.clone(),
            line: e.marker().line(),
            reason: e.info().to_string(),
        })?;
        let Event::Scalar(value, style, _, _) = event else {
            continue;
        };
        // Block scalars (`|`, `>`) are text such as scripts, not references.
        let flow = matches!(
            style,
            ScalarStyle::Plain | ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted
        );
        if !flow || !value.starts_with(SCHEME) {
            continue;
        }
        let fail = |line: usize, reason: &str, help: &str| ResolveError::Placeholder {
            file: input.name.clone(),
            line,
            placeholder: value.to_string(),
            reason: reason.into(),
            help: help.into(),
        };
        let (package, bin) = parse_placeholder(&value).map_err(|reason| {
            fail(
                span.start.line(),
                &reason,
                "write adapt://<package> or adapt://<package>/<bin>",
            )
        })?;
        let start = bytes.of(text, span.start.index()).ok_or_else(|| {
            fail(
                span.start.line(),
                "the YAML parser gave a position outside the file",
                "",
            )
        })?;
        let (begin, lines) = locate(text, start, &value, style).ok_or_else(|| {
            fail(
                span.start.line(),
                "a placeholder must be written on one line, plain or quoted, without escapes",
                "write it as image: adapt://api or image: \"adapt://api\"",
            )
        })?;
        found.push(Placeholder {
            range: begin..begin + value.len(),
            line: span.start.line() + lines,
            package,
            bin,
            text: value.to_string(),
        });
    }
    Ok(found)
}

/// Where the characters of a (valid) placeholder scalar are, and how many line breaks lie
/// between `start` and them. The parser's span of a scalar starts at its properties when it has
/// any (`&anchor`, `!tag`, in either order, separated from it by blanks, line breaks or
/// comments); neither holds a blank, so each is skipped up to the next one. `None` when the
/// source differs from `value` (escapes, a scalar folded over lines).
fn locate(text: &str, start: usize, value: &str, style: ScalarStyle) -> Option<(usize, usize)> {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut at = start;
    let mut lines = 0;
    loop {
        let rest = text.get(at..)?;
        match rest.chars().next()? {
            '\n' => {
                lines += 1;
                at += 1;
            }
            c if blank(c) => at += 1,
            '#' => at += rest.find('\n').unwrap_or(rest.len()),
            '&' | '!' => at += rest.find(blank).unwrap_or(rest.len()),
            _ => break,
        }
    }
    let rest = &text[at..];
    let quoted = |quote: char| {
        rest.strip_prefix(quote)?
            .strip_prefix(value)?
            .starts_with(quote)
            .then_some((at + 1, lines))
    };
    match style {
        ScalarStyle::Plain => rest.starts_with(value).then_some((at, lines)),
        ScalarStyle::SingleQuoted => quoted('\''),
        ScalarStyle::DoubleQuoted => quoted('"'),
        _ => None,
    }
}

/// The parser's markers count characters; edits need byte offsets. Scalars come in the order of
/// the text, so one cursor walks it once (a table of every character's offset would take eight
/// bytes per byte of input).
#[derive(Default)]
struct ByteOffsets {
    chars: usize,
    bytes: usize,
}

impl ByteOffsets {
    /// The byte offset of the `chars`-th character of `text` (or of its end).
    fn of(&mut self, text: &str, chars: usize) -> Option<usize> {
        if chars < self.chars {
            // Not expected (markers only move forward); start over rather than be wrong.
            *self = ByteOffsets::default();
        }
        let rest = text.get(self.bytes..)?;
        let offset = rest
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(rest.len()))
            .nth(chars - self.chars)?;
        self.chars = chars;
        self.bytes += offset;
        Some(self.bytes)
    }
}

fn parse_placeholder(value: &str) -> Result<(String, Option<String>), String> {
    let rest = &value[SCHEME.len()..];
    let (package, bin) = match rest.split_once('/') {
        Some((p, b)) => (p, Some(b)),
        None => (rest, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !valid(package) || bin.is_some_and(|b| !valid(b)) {
        return Err("not a package name (and optional binary)".into());
    }
    Ok((package.to_string(), bin.map(String::from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::write::resolved;

    fn replace(text: &str, found: &[Placeholder], to: impl Fn(&Placeholder) -> String) -> String {
        let refs: Vec<String> = found.iter().map(to).collect();
        let edits: Vec<(std::ops::Range<usize>, &str)> = found
            .iter()
            .zip(&refs)
            .map(|(p, r)| (p.range.clone(), r.as_str()))
            .collect();
        let mut out = Vec::new();
        resolved(&mut out, text, &edits).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn placeholders_in_every_style_are_replaced_and_nothing_else_changes() {
        let text = "# adapt://not-this, a comment\n---\nkind: Pod # ünïcode\nspec:\n  containers:\n  - image: adapt://api\n  - image: 'adapt://web/server'   # quoted\n  - {name: x, image: \"adapt://api\"}\n  - args: [\"run adapt://api later\"]\n---\nnote: |\n  adapt://in-a-block\n...\n";
        let found = find_placeholders(&Input::from_text(text)).unwrap();
        let names: Vec<(&str, Option<&str>, usize)> = found
            .iter()
            .map(|p| (p.package.as_str(), p.bin.as_deref(), p.line))
            .collect();
        assert_eq!(
            names,
            vec![
                ("api", None, 6),
                ("web", Some("server"), 7),
                ("api", None, 8)
            ]
        );
        let out = replace(text, &found, |p| format!("R/{}@sha256:1", p.package));
        assert_eq!(
            out,
            text.replace("adapt://api\n", "R/api@sha256:1\n")
                .replace("'adapt://web/server'", "'R/web@sha256:1'")
                .replace("\"adapt://api\"}", "\"R/api@sha256:1\"}")
        );
    }

    #[test]
    fn anchors_and_tags_on_a_placeholder_are_kept_and_aliases_follow() {
        let text = "a: &img adapt://api   # anchored\nb: *img\nc: !!str adapt://web\nd: !!str \"adapt://w/x\"\ne: &q !!str 'adapt://api'\nf: !!str &r adapt://web\ng: [&s adapt://api, !!str \"adapt://web\", *s]\nh: !<tag:yaml.org,2002:str> adapt://api\ni: &t # the image\n  !!str\n  adapt://web\nj: &adapt adapt://api\n";
        let found = find_placeholders(&Input::from_text(text)).unwrap();
        let lines: Vec<usize> = found.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 3, 4, 5, 6, 7, 7, 8, 11, 12]);
        let out = replace(text, &found, |p| format!("R/{}@sha256:1", p.package));
        assert_eq!(
            out,
            text.replace("adapt://api", "R/api@sha256:1")
                .replace("adapt://web", "R/web@sha256:1")
                .replace("adapt://w/x", "R/w@sha256:1")
        );
        // An anchor named like the scheme is a name, not a value; the output is still YAML, and
        // each alias is the pinned reference.
        assert!(out.contains("j: &adapt R/api@sha256:1\n"), "{out}");
        let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(doc["b"], doc["a"]);
        assert_eq!(doc["a"].as_str(), Some("R/api@sha256:1"));
        assert_eq!(doc["g"][2].as_str(), Some("R/api@sha256:1"));
        assert_eq!(doc["i"].as_str(), Some("R/web@sha256:1"));
        assert_eq!(doc["j"].as_str(), Some("R/api@sha256:1"));
    }

    #[test]
    fn bad_placeholders_and_yaml_name_the_line() {
        let err = find_placeholders(&Input::from_text("a: 1\nb: adapt://Not OK\n")).unwrap_err();
        assert!(err.to_string().starts_with("m.yaml:2:"), "{err}");
        let err = find_placeholders(&Input::from_text("a: [\n")).unwrap_err();
        assert!(err.to_string().contains("not valid YAML"), "{err}");
        let err = find_placeholders(&Input::from_text("a: \"adapt://\\x61pi\"\n")).unwrap_err();
        assert!(err.to_string().contains("without escapes"), "{err}");
        let err = find_placeholders(&Input::from_text("a: &x \"adapt://\\x61pi\"\n")).unwrap_err();
        assert!(err.to_string().contains("without escapes"), "{err}");
    }

    #[test]
    fn byte_offsets_follow_multibyte_text() {
        let text = "ü: é\nx: adapt://api\n€: 'adapt://web'\n";
        let found = find_placeholders(&Input::from_text(text)).unwrap();
        assert_eq!(&text[found[0].range.clone()], "adapt://api");
        assert_eq!(&text[found[1].range.clone()], "adapt://web");
        let mut offsets = ByteOffsets::default();
        assert_eq!(offsets.of(text, 3), Some(4));
        assert_eq!(offsets.of(text, 1), Some(2), "backwards starts over");
        assert_eq!(offsets.of(text, text.chars().count()), Some(text.len()));
        assert_eq!(offsets.of(text, text.chars().count() + 1), None);
    }
}
