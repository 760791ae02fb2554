//! The map in ARCHITECTURE.md, held against the code: its "Layers" list names every top-level
//! module of `src/`, and a module may import only modules of the layers below its own. Reads the
//! source as text: `crate::x` paths, also inside `use crate::{…}` groups. (The registry client
//! checks its own files, in `src/registry/mod.rs`: no import cycle among them, nothing of the
//! crate but `reference` and `media_type`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers of ARCHITECTURE.md's "## Layers" section, top first: each numbered line's
/// backticked names.
fn layers() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let mut layers = Vec::new();
    for line in section.lines() {
        let line = line.trim_start();
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        // The names before the first colon: `a`, `b`: what they are.
        let names_part = rest.split(':').next().unwrap_or("");
        let names: Vec<String> = names_part
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        assert!(!names.is_empty(), "a layer with no module names: {line}");
        layers.push(names);
    }
    assert!(layers.len() > 3, "too few layers read from ARCHITECTURE.md");
    layers
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Source text without comments (so `crate::x` in a doc comment is not an import).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            // Not inside a string: good enough for this tree, whose strings hold no `//`
            // before a `crate::` path.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment after each occurrence of `prefix` (`crate::`, `super::`), including
/// each item of a `prefix{a, b::c}` group.
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.remove("");
    found
}

fn first_segment(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level module a file of `src/` belongs to (`src/push/mod.rs` → `push`).
fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

#[test]
fn every_import_points_down_the_layers_of_architecture_md() {
    let src = root().join("src");
    let layers = layers();
    let mut layer_of = BTreeMap::new();
    for (i, names) in layers.iter().enumerate() {
        for name in names {
            assert!(
                layer_of.insert(name.clone(), i).is_none(),
                "`{name}` is listed twice in ARCHITECTURE.md's layers"
            );
        }
    }
    let mut modules = BTreeSet::new();
    let mut upward = Vec::new();
    for file in rust_files(&src) {
        let module = top_module(&src, &file);
        if module == "main" {
            continue; // the binary: it sees the library from outside
        }
        modules.insert(module.clone());
        let Some(&own) = layer_of.get(&module) else {
            continue; // reported below
        };
        for target in paths_after(&code_of(&file), "crate::") {
            if target == module {
                continue;
            }
            match layer_of.get(&target) {
                Some(&layer) if layer > own => {}
                Some(_) => upward.push(format!(
                    "{} imports `{target}`, which is not below `{module}`",
                    file.strip_prefix(root()).unwrap().display()
                )),
                // `crate::some_fn` defined in lib.rs.
                None => {}
            }
        }
    }
    let listed: BTreeSet<String> = layer_of.keys().cloned().collect();
    let unlisted: Vec<_> = modules.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&modules).collect();
    assert!(
        unlisted.is_empty(),
        "modules missing from ARCHITECTURE.md's layers: {unlisted:?}"
    );
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md's layers name modules that do not exist: {stale:?}"
    );
    assert!(
        upward.is_empty(),
        "imports that point up (or sideways) the layers:\n{}",
        upward.join("\n")
    );
}
