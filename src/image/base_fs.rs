//! A base image's filesystem as its layers leave it: path → kind, mode and owner, read from the
//! layers' tar headers (file contents skipped) with whiteouts applied. Our layers merge onto it
//! like `COPY`, and the base check looks up the loader and libraries in it.
//!
//! One layer's listing is cached under the target directory by the layer's digest, so a base is
//! read once per machine, not once per push.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// How many symlinks one lookup follows before giving up (the kernel's limit is 40).
const MAX_LINK_HOPS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
    Symlink(String),
    /// A hard link to another path of the same layer.
    Hardlink(String),
    /// Devices, fifos.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Index of the layer that wrote this entry last (set when layers are stacked).
    #[serde(skip)]
    pub layer: usize,
}

/// What one layer does to the filesystem below it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayerListing {
    /// `.wh.<name>`: these paths (and what is below them) are removed.
    pub whiteouts: Vec<String>,
    /// `.wh..wh..opq`: these directories lose everything lower layers put in them.
    pub opaque: Vec<String>,
    pub entries: Vec<(String, Node)>,
}

/// The merged filesystem of a base image. Paths are relative, without a leading `/`.
#[derive(Debug, Clone, Default)]
pub struct BaseFs {
    nodes: BTreeMap<String, Node>,
}

impl LayerListing {
    /// Reads a gzip'd (or plain) layer tar, headers only.
    pub fn read(blob: impl Read) -> io::Result<LayerListing> {
        let mut archive = tar::Archive::new(open_layer(blob)?);
        let mut listing = LayerListing::default();
        for entry in archive.entries()? {
            let entry = entry?;
            let header = entry.header();
            let path = normalize(&entry.path()?.to_string_lossy());
            if path.is_empty() {
                continue;
            }
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                listing.opaque.push(parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                listing.whiteouts.push(join(&parent, hidden));
                continue;
            }
            let link = || {
                entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let kind = match header.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Symlink => Kind::Symlink(link()),
                tar::EntryType::Link => Kind::Hardlink(normalize(&link())),
                _ => Kind::Other,
            };
            listing.entries.push((
                path,
                Node {
                    kind,
                    // Empty numeric fields (some tar writers) read as 0, as extractors do.
                    mode: header.mode().unwrap_or(0o755) & 0o7777,
                    uid: header.uid().unwrap_or(0),
                    gid: header.gid().unwrap_or(0),
                    layer: 0,
                },
            ));
            // The contents are skipped by the iterator without being kept.
        }
        Ok(listing)
    }

    /// The cached listing of layer `digest`, if an earlier run wrote a readable one.
    pub fn cached(dir: &Path, digest: &Digest) -> Option<LayerListing> {
        let bytes = std::fs::read(cache_file(dir, digest)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Best effort: a cache that cannot be written only costs time.
    pub fn store(&self, dir: &Path, digest: &Digest) {
        let Ok(bytes) = serde_json::to_vec(self) else {
            return;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let file = cache_file(dir, digest);
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn cache_file(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join(format!("{}.json", digest.hex()))
}

impl BaseFs {
    /// Puts one more layer on top. Whiteouts and opaque markers act on the layers below only.
    pub fn apply(&mut self, index: usize, listing: &LayerListing) {
        for gone in &listing.whiteouts {
            self.remove_tree(gone, true);
        }
        for dir in &listing.opaque {
            self.remove_tree(dir, false);
        }
        for (path, node) in &listing.entries {
            if node.kind != Kind::Dir {
                // A non-directory hides whatever was below it.
                self.remove_tree(path, false);
            }
            let mut node = node.clone();
            node.layer = index;
            self.nodes.insert(path.clone(), node);
        }
    }

    fn remove_tree(&mut self, path: &str, itself: bool) {
        if itself {
            self.nodes.remove(path);
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalize(path))
    }

    pub fn is_dir(&self, path: &str) -> bool {
        // The root always exists.
        normalize(path).is_empty() || self.get(path).is_some_and(|n| n.kind == Kind::Dir)
    }

    /// Where `path` really is: every symlink on the way followed (relative targets against
    /// their directory, `..` applied), the last component too when `follow_last`.
    /// `None` for a loop (more than 40 links).
    pub fn resolve(&self, path: &str, follow_last: bool) -> Option<String> {
        let mut pending: VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(component);
            let last = pending.is_empty();
            if last && !follow_last {
                break;
            }
            if let Some(Node {
                kind: Kind::Symlink(target),
                ..
            }) = self.nodes.get(&done.join("/"))
            {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return None;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for part in target.split('/').filter(|c| !c.is_empty()).rev() {
                    pending.push_front(part.to_string());
                }
            }
        }
        Some(done.join("/"))
    }

    /// Paths of the entries directly in directory `dir` (after following links), sorted.
    pub fn list_dir(&self, dir: &str) -> Vec<String> {
        let Some(dir) = self.resolve(dir, true) else {
            return Vec::new();
        };
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The regular file at `path` after following links, if there is one: (its path, its node).
    pub fn file(&self, path: &str) -> Option<(String, &Node)> {
        let resolved = self.resolve(path, true)?;
        let node = self.nodes.get(&resolved)?;
        match &node.kind {
            Kind::File => Some((resolved, node)),
            Kind::Hardlink(target) => {
                let target_node = self.nodes.get(target)?;
                matches!(target_node.kind, Kind::File).then(|| (resolved.clone(), node))
            }
            _ => None,
        }
    }
}

/// Reads the contents of the regular file at `path` (relative, normalized) from a layer tar, at
/// most `limit` bytes. `None` when the layer lacks it. (Hard links: pass the link's target.)
pub fn read_file_from_layer(
    blob: impl Read,
    path: &str,
    limit: u64,
) -> io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(open_layer(blob)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if normalize(&entry.path()?.to_string_lossy()) != path
            || !entry.header().entry_type().is_file()
        {
            continue;
        }
        if entry.size() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/{path} is larger than {limit} bytes"),
            ));
        }
        let mut bytes = Vec::new();
        entry.by_ref().take(limit).read_to_end(&mut bytes)?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// A layer blob as a tar stream: gzip is recognised by its magic bytes.
fn open_layer<'a>(blob: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    use std::io::BufRead;
    let mut buffered = io::BufReader::new(blob);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    })
}

pub fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: Kind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            layer: 0,
        }
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_size(0);
                b.append_link(&mut h, path, link).unwrap();
            } else {
                let data = link.as_bytes();
                h.set_size(if kind.is_file() { data.len() as u64 } else { 0 });
                b.append_data(&mut h, path, if kind.is_file() { data } else { &[][..] })
                    .unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(raw: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(raw).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn layers_stack_with_whiteouts_and_opaque_directories() {
        use tar::EntryType::*;
        let lower = tar_of(&[
            ("usr/", Directory, "", 0o755),
            ("usr/bin/", Directory, "", 0o755),
            ("usr/bin/busybox", Regular, "bb", 0o755),
            ("usr/bin/sh", Symlink, "busybox", 0o777),
            ("bin", Symlink, "usr/bin", 0o777),
            ("tmp/", Directory, "", 0o1777),
            ("opt/", Directory, "", 0o755),
            ("opt/a", Regular, "a", 0o644),
            ("etc/", Directory, "", 0o755),
            ("etc/old", Regular, "x", 0o644),
        ]);
        let upper = tar_of(&[
            ("etc/.wh.old", Regular, "", 0o644),
            ("opt/.wh..wh..opq", Regular, "", 0o644),
            ("opt/b", Regular, "b", 0o644),
        ]);
        let mut fs = BaseFs::default();
        fs.apply(0, &LayerListing::read(&gzip(&lower)[..]).unwrap());
        fs.apply(1, &LayerListing::read(&upper[..]).unwrap());
        assert!(fs.get("etc/old").is_none());
        assert!(fs.get("opt/a").is_none());
        assert_eq!(fs.get("opt/b").unwrap().layer, 1);
        assert_eq!(fs.get("tmp").unwrap().mode, 0o1777);
        assert_eq!(fs.resolve("/bin/x", false).as_deref(), Some("usr/bin/x"));
        assert_eq!(fs.resolve("/bin", true).as_deref(), Some("usr/bin"));
        assert_eq!(fs.resolve("/bin", false).as_deref(), Some("bin"));
        let (path, n) = fs.file("/bin/sh").unwrap();
        assert_eq!((path.as_str(), &n.kind), ("usr/bin/busybox", &Kind::File));
        assert!(!fs.is_dir("/bin/") && fs.is_dir("usr/bin"));
        assert!(fs.file("/bin/missing").is_none());
    }

    #[test]
    fn chained_relative_links_and_loops() {
        let mut fs = BaseFs::default();
        fs.apply(
            0,
            &LayerListing {
                entries: vec![
                    ("usr".into(), node(Kind::Dir, 0o755)),
                    ("usr/lib".into(), node(Kind::Dir, 0o755)),
                    ("usr/lib/x86_64-linux-gnu".into(), node(Kind::Dir, 0o755)),
                    (
                        "usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                        node(Kind::File, 0o755),
                    ),
                    ("lib".into(), node(Kind::Symlink("usr/lib".into()), 0o777)),
                    (
                        "lib64".into(),
                        node(Kind::Symlink("./lib/../lib".into()), 0o777),
                    ),
                    ("loop".into(), node(Kind::Symlink("/loop".into()), 0o777)),
                ],
                ..LayerListing::default()
            },
        );
        assert_eq!(
            fs.file("/lib64/x86_64-linux-gnu/libc.so.6").map(|f| f.0),
            Some("usr/lib/x86_64-linux-gnu/libc.so.6".into())
        );
        assert_eq!(fs.resolve("/loop/x", true), None);
    }

    #[test]
    fn a_file_is_read_from_a_layer_by_path() {
        use tar::EntryType::*;
        let raw = gzip(&tar_of(&[
            ("lib/", Directory, "", 0o755),
            ("lib/libc.so.6", Regular, "ELF...", 0o755),
        ]));
        assert_eq!(
            read_file_from_layer(&raw[..], "lib/libc.so.6", 100).unwrap(),
            Some(b"ELF...".to_vec())
        );
        assert_eq!(read_file_from_layer(&raw[..], "lib/x", 100).unwrap(), None);
        assert!(read_file_from_layer(&raw[..], "lib/libc.so.6", 3).is_err());
    }
}
