//! Writing the resolved YAML: to stdout as one stream, or back into each file (`--in-place`).
//! Either way the text is written piece by piece from the input, never copied whole.

use std::collections::BTreeSet;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use miette::{IntoDiagnostic, Result, WrapErr, miette};

use super::input::{Identity, Input};
use crate::shell::Shell;

/// One input and its edits: each placeholder's byte range and its pull reference, in order.
pub struct Resolved<'a> {
    pub input: &'a Input,
    pub edits: Vec<(Range<usize>, &'a str)>,
}

/// Writes `text` with each range of `edits` replaced by its text.
pub fn resolved(
    out: &mut impl Write,
    text: &str,
    edits: &[(Range<usize>, &str)],
) -> io::Result<()> {
    let mut at = 0;
    for (range, replacement) in edits {
        out.write_all(&text.as_bytes()[at..range.start])?;
        out.write_all(replacement.as_bytes())?;
        at = range.end;
    }
    out.write_all(&text.as_bytes()[at..])
}

/// Writes the resolved inputs as one YAML stream: a `---` between files unless the next one
/// starts with its own.
pub fn stream(out: &mut impl Write, files: &[Resolved]) -> io::Result<()> {
    // The last text written did not end its line.
    let mut line_open = false;
    for (i, file) in files.iter().enumerate() {
        let text = file.input.text.as_str();
        if i > 0 {
            if line_open {
                out.write_all(b"\n")?;
            }
            if !text.starts_with("---") {
                out.write_all(b"---\n")?;
            }
            line_open = false;
        }
        resolved(out, text, &file.edits)?;
        if !text.is_empty() {
            // A reference never ends a line, so the output ends as the input does.
            line_open = !text.ends_with('\n');
        }
    }
    Ok(())
}

pub fn to_stdout(files: &[Resolved]) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    stream(&mut out, files)
        .and_then(|()| out.flush())
        .into_diagnostic()
        .wrap_err("writing to stdout")
}

/// A resolved file written beside its input, not yet renamed over it.
struct Staged<'a> {
    name: &'a str,
    temp: tempfile::NamedTempFile,
    target: std::path::PathBuf,
    edits: usize,
}

/// Rewrites each input that has placeholders: a temporary file in the same directory (with the
/// input's mode, and its owner where allowed), fsynced, then renamed over the input, so a reader
/// sees the old file or the new one, never a part. A symlink given with `-f` keeps pointing at
/// its file, which is the one rewritten. Every file is staged before the first rename, so a
/// failure while staging (a full disk, a file edited since it was read) changes no file.
/// What was rewritten is told to `shell`.
pub fn in_place(files: &[Resolved], shell: &Shell) -> Result<()> {
    let mut staged = Vec::new();
    let mut seen = BTreeSet::new();
    for file in files.iter().filter(|f| !f.edits.is_empty()) {
        let input = file.input;
        let (Some(path), Some(read)) = (&input.path, &input.identity) else {
            // Stdin is refused before anything is read.
            return Err(miette!("--in-place: {} is not a file", input.name));
        };
        // The same file given twice (directly and through a directory or a symlink) is
        // written once.
        if !seen.insert((read.dev, read.ino)) {
            continue;
        }
        staged.push(stage(&input.name, path, read, file)?);
    }
    let mut rewritten = Vec::new();
    let mut dirs = BTreeSet::new();
    for s in staged {
        let dir = s.target.parent().map(Path::to_path_buf);
        if let Err(e) = s.temp.persist(&s.target) {
            let done = if rewritten.is_empty() {
                "no file was rewritten".to_string()
            } else {
                format!("already rewritten: {}", rewritten.join(", "))
            };
            return Err(miette!(
                help = "fix the cause and run resolve again on the files not rewritten",
                "--in-place: cannot replace {} ({}): {}; {done}",
                s.name,
                s.target.display(),
                e.error
            ));
        }
        shell.status(
            "Rewrote",
            &format!(
                "{} ({} placeholder{})",
                s.name,
                s.edits,
                if s.edits == 1 { "" } else { "s" }
            ),
        );
        rewritten.push(s.name.to_string());
        dirs.extend(dir);
    }
    if rewritten.is_empty() {
        shell.status("Unchanged", "no adapt:// placeholder in the inputs");
    }
    // The renames last across a crash only once their directories are synced.
    for dir in dirs {
        if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
            shell.warn(&format!("syncing directory {}: {e}", dir.display()));
        }
    }
    Ok(())
}

/// Writes the resolved text of `file` to a temporary file beside `path`'s target.
fn stage<'a>(name: &'a str, path: &Path, read: &Identity, file: &Resolved) -> Result<Staged<'a>> {
    let cannot = |e: io::Error| {
        miette!(
            help = "--in-place writes a new file beside each input and renames it over the input: its directory must be writable",
            "--in-place: cannot write {name}'s new text in a temporary file beside {}: {e}",
            path.display()
        )
    };
    // Beside the file a symlink names (the link stays), so the rename is atomic; locked while
    // open, so that one a killed run left is swept (as here) like the other outputs'.
    crate::publish::local::sweep_beside(path);
    let (target, mut temp) = crate::publish::local::temp_beside(path).map_err(cannot)?;
    let meta = std::fs::metadata(&target)
        .into_diagnostic()
        .wrap_err_with(|| format!("--in-place: {name}"))?;
    let now = Identity::of(&meta);
    if !now.same_file(read) || now.len != read.len || now.modified != read.modified {
        return Err(miette!(
            help = "run resolve again; no file was rewritten",
            "--in-place: {name} changed while its images were pushed (it was edited or replaced)"
        ));
    }
    let mut out = BufWriter::with_capacity(1 << 16, temp.as_file_mut());
    resolved(&mut out, &file.input.text, &file.edits)
        .and_then(|()| out.flush())
        .map_err(cannot)?;
    drop(out);
    let f = temp.as_file();
    f.set_permissions(meta.permissions()).map_err(cannot)?;
    let mine = f.metadata().map_err(cannot)?;
    if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
        // Only root may give a file away; like `sed -i`, keep at least the group if allowed,
        // else the file becomes the caller's.
        let _ = std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid()))
            .or_else(|_| std::os::unix::fs::fchown(f, None, Some(meta.gid())));
    }
    f.sync_all().map_err(cannot)?;
    Ok(Staged {
        name,
        temp,
        target,
        edits: file.edits.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_joined_as_one_stream() {
        let inputs = [
            Input::from_text("a: 1"),
            Input::from_text(""),
            Input::from_text("b: adapt://x\n"),
            Input::from_text("---\nc: 3\n"),
        ];
        let files: Vec<Resolved> = inputs
            .iter()
            .map(|input| Resolved {
                input,
                edits: input
                    .text
                    .find("adapt://x")
                    .map(|i| (i..i + 9, "R@sha256:1"))
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut out = Vec::new();
        stream(&mut out, &files).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a: 1\n---\n---\nb: R@sha256:1\n---\nc: 3\n"
        );
    }
}
