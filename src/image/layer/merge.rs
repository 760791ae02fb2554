//! Placing a layer's entries onto a base image's file system the way `COPY` does.

use super::{DEFAULT_DIR, Entry, LayerBuilder};
use crate::image::base_fs::{BaseFs, Kind};

impl LayerBuilder {
    /// Makes the layer merge with `base` the way `COPY` does: a destination below a base
    /// symlink lands at the link's target (`/bin/x` with `/bin -> usr/bin` is `/usr/bin/x`); no
    /// entry replaces a directory or a directory symlink the base has. Directories the base has
    /// are written with the base's own mode and owner: an extractor creates a parent missing from
    /// a layer with 0755, and that upper directory would hide the base's (`/tmp` 1777).
    pub fn merge_onto(&mut self, base: &BaseFs) {
        let entries = std::mem::take(&mut self.entries);
        for (path, entry) in entries {
            let is_dir = matches!(entry, Entry::Dir { .. });
            // A directory of ours follows a base link at its own name too; a file or link of
            // ours replaces a base link at its name (as COPY does), but not one above it.
            let resolved = base.resolve(&path, is_dir).unwrap_or_else(|| path.clone());
            if base.is_dir(&resolved) && !is_dir {
                // A file over a base directory would hide the directory: keep the directory.
                continue;
            }
            self.entries.insert(resolved, entry);
        }
        // Every parent, as the base has it, or ours when the base lacks it.
        let paths: Vec<String> = self.entries.keys().cloned().collect();
        for path in paths {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                parent = p;
                self.entries
                    .entry(parent.to_string())
                    .or_insert(DEFAULT_DIR);
            }
        }
        for (path, entry) in self.entries.iter_mut() {
            if let (Entry::Dir { .. }, Some(node)) = (&entry, base.get(path))
                && node.kind == Kind::Dir
            {
                *entry = Entry::Dir {
                    mode: node.mode,
                    uid: node.uid,
                    gid: node.gid,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::LayerBuilder;
    use super::super::test_support::entries;
    use bytes::Bytes;

    #[test]
    fn merge_onto_a_usr_merged_base_keeps_its_links_and_directories() {
        use crate::image::base_fs::{BaseFs, Kind, LayerListing, Node};
        let n = |kind: Kind, mode: u32| Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            layer: 0,
        };
        let mut base = BaseFs::default();
        base.apply(
            0,
            &LayerListing {
                entries: vec![
                    ("usr".into(), n(Kind::Dir, 0o750)),
                    ("usr/bin".into(), n(Kind::Dir, 0o755)),
                    ("bin".into(), n(Kind::Symlink("usr/bin".into()), 0o777)),
                    ("tmp".into(), n(Kind::Dir, 0o1777)),
                ],
                ..LayerListing::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        let mut b = LayerBuilder::new("t", 0);
        b.add_bytes("/bin/healthcheck", Bytes::from_static(b"#!"), 0o755);
        b.add_host_path("/tmp/seed", dir.path()).unwrap();
        b.add_bytes("/srv/new/file", Bytes::from_static(b"x"), 0o644);
        b.merge_onto(&base);
        let layer = b.finish().unwrap();
        let listed: Vec<(String, u32)> = entries(&layer).into_iter().map(|e| (e.0, e.1)).collect();
        // No entry at /bin (the base's link stays); parents the base has keep its modes.
        assert_eq!(
            listed,
            [
                ("srv/".to_string(), 0o755),
                ("srv/new/".to_string(), 0o755),
                ("srv/new/file".to_string(), 0o644),
                ("tmp/".to_string(), 0o1777),
                ("tmp/seed/".to_string(), 0o755),
                ("tmp/seed/a.txt".to_string(), 0o644),
                ("usr/".to_string(), 0o750),
                ("usr/bin/".to_string(), 0o755),
                ("usr/bin/healthcheck".to_string(), 0o755),
            ]
        );
    }
}
