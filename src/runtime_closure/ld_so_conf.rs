//! `/etc/ld.so.conf` and the files it includes (with glob(3)-style wildcards): the library
//! directories the host's `ld.so.cache` was made from.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::search::normalize_lexically;

pub(super) const LD_SO_CONF: &str = "/etc/ld.so.conf";

/// Library directories listed in `conf` and the files it includes, in order,
/// without duplicates. A missing file just contributes nothing.
pub(super) fn ld_so_conf_dirs(conf: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_ld_so_conf(conf, &mut dirs, &mut HashSet::new());
    let mut seen = HashSet::new();
    dirs.retain(|dir| seen.insert(dir.clone()));
    dirs
}

pub(super) fn read_ld_so_conf(
    conf: &Path,
    dirs: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) {
    // Guards against include cycles.
    if !visited.insert(conf.to_path_buf()) {
        return;
    }
    let Ok(text) = fs::read_to_string(conf) else {
        return;
    };
    let conf_dir = conf.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(patterns) = strip_keyword(line, "include") {
            for pattern in patterns.split_whitespace() {
                // Relative includes are relative to the including file, as in ldconfig.
                for included in glob_file_name(&conf_dir.join(pattern)) {
                    read_ld_so_conf(&included, dirs, visited);
                }
            }
        } else if line.is_empty() || strip_keyword(line, "hwcap").is_some() {
            continue;
        } else {
            // Legacy "dir=libtype" entries: the type is irrelevant here.
            let dir = line.split('=').next().unwrap_or_default().trim_end();
            let dir = Path::new(dir);
            if dir.is_absolute() {
                dirs.push(normalize_lexically(dir));
            }
        }
    }
}

/// The rest of `line` if it starts with `keyword` followed by whitespace.
pub(super) fn strip_keyword<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    line.strip_prefix(keyword)
        .filter(|rest| rest.starts_with(char::is_whitespace))
}

/// Expands `*` and `?` in the last component of `pattern`, sorted like glob(3).
/// Wildcards in directory components and `[...]` classes are not supported.
pub(super) fn glob_file_name(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name_pattern)) = (
        pattern.parent(),
        pattern.file_name().and_then(|name| name.to_str()),
    ) else {
        return Vec::new();
    };
    if !name_pattern.contains(['*', '?']) {
        return vec![pattern.to_path_buf()];
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut matches: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| wildcard_matches(name_pattern, name))
        })
        .map(|entry| entry.path())
        .collect();
    matches.sort();
    matches
}

/// Shell-style matching of `*` and `?`; like glob(3), a leading '.' must be
/// matched explicitly.
pub(super) fn wildcard_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Position of the last '*' and the name position it currently stands for.
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack {
                // Let the last '*' swallow one more character.
                Some((star, star_n)) => {
                    backtrack = Some((star, star_n + 1));
                    p = star + 1;
                    n = star_n + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_closure::test_support::{canonical_tempdir, write_file};

    #[test]
    fn ld_so_conf_includes_are_followed_in_order() {
        let (_dir, root) = canonical_tempdir();
        let conf_d = root.join("conf.d");
        fs::create_dir(&conf_d).expect("mkdir");
        let conf = write_file(
            &root,
            "ld.so.conf",
            b"# comment\ninclude conf.d/*.conf\n/opt/first # trailing\nhwcap 0 nosegneg\n\
              /opt/legacy=libc6\nrelative/dir\ninclude ld.so.conf\n",
        );
        write_file(&conf_d, "b.conf", b"/opt/b\n/opt/first\n");
        write_file(&conf_d, "a.conf", b"/opt/a/\n");
        write_file(&conf_d, ".hidden.conf", b"/opt/hidden\n");
        write_file(&conf_d, "c.txt", b"/opt/txt\n");

        let dirs = ld_so_conf_dirs(&conf);
        let expected: Vec<PathBuf> = ["/opt/a", "/opt/b", "/opt/first", "/opt/legacy"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, expected);
        assert!(ld_so_conf_dirs(&root.join("absent.conf")).is_empty());
    }

    #[test]
    fn wildcards_match_like_glob() {
        assert!(wildcard_matches("*.conf", "libc.conf"));
        assert!(!wildcard_matches("*.conf", "libc.con"));
        assert!(!wildcard_matches("*.conf", ".hidden.conf"));
        assert!(wildcard_matches("a*b*c", "aXXbYc"));
        assert!(wildcard_matches("*a", "aaa"));
        assert!(wildcard_matches("lib?.conf", "libx.conf"));
        assert!(!wildcard_matches("lib?.conf", "lib.conf"));
        assert!(wildcard_matches("exact", "exact"));
    }
}
