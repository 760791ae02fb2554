//! The build context: what is sent to the engine (a directory filtered by `.dockerignore`, the
//! Dockerfile's name in the tar, the images it builds `FROM`), walked and written as Docker's
//! context tar, and streamed to the request body in chunks.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use miette::{IntoDiagnostic, Result, WrapErr};
use tokio::sync::mpsc;

use super::{DockerBuildError, dockerignore::DockerIgnore};
use crate::image::exact::ExactReader;
use crate::reference::ImageRef;
use crate::shell::{Progress, Shell, human_bytes};

/// Size of the pieces the context tar is sent in.
pub(super) const CHUNK: usize = 256 * 1024;
/// Contexts larger than this get progress lines even without a terminal.
pub(super) const LARGE_CONTEXT: u64 = 64 * 1024 * 1024;

/// What is sent to the engine: a directory, filtered, and the Dockerfile's name in the tar.
pub(super) struct BuildContext {
    pub(super) root: PathBuf,
    pub(super) ignore: DockerIgnore,
    /// The Dockerfile's path inside the tar.
    pub(super) dockerfile_name: String,
    /// A Dockerfile outside the context directory, added to the tar as `dockerfile_name`.
    pub(super) outside_dockerfile: Option<PathBuf>,
    /// Images the Dockerfile starts from, to send credentials for.
    pub(super) from_images: Vec<ImageRef>,
    /// Options that only make sense for the user's own Dockerfile (target, build args).
    pub(super) generated: bool,
    /// Keeps a generated context directory alive until the build is done.
    pub(super) _dir: Option<tempfile::TempDir>,
}

impl BuildContext {
    /// The user's context and Dockerfile; a missing `.dockerignore` is told to `shell`.
    pub(super) fn from_dockerfile(
        context: &Path,
        dockerfile: &Path,
        shell: &Shell,
    ) -> Result<BuildContext> {
        let root = context
            .canonicalize()
            .into_diagnostic()
            .wrap_err_with(|| format!("the build context {}", context.display()))?;
        let dockerfile_abs = dockerfile
            .canonicalize()
            .into_diagnostic()
            .wrap_err_with(|| format!("the Dockerfile {}", dockerfile.display()))?;
        let dockerfile_text = std::fs::read_to_string(&dockerfile_abs)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", dockerfile_abs.display()))?;

        let ignore_path = root.join(".dockerignore");
        let mut ignore = match std::fs::read_to_string(&ignore_path) {
            Ok(text) => DockerIgnore::parse(&text).map_err(|e| DockerBuildError::Ignore {
                path: ignore_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Without a .dockerignore Docker would send cargo's target directory, often
                // gigabytes the build never reads. Leave it out and say so.
                let mut default = DockerIgnore::default();
                if root.join("target").is_dir() {
                    shell.warn(&format!(
                        "{} has no .dockerignore: leaving target/ out of the build context (write a .dockerignore to choose what is sent)",
                        root.display()
                    ));
                    default
                        .add("target")
                        .map_err(|e| DockerBuildError::Ignore {
                            path: ignore_path.clone(),
                            message: e.to_string(),
                        })?;
                }
                default
            }
            Err(e) => {
                return Err(DockerBuildError::Ignore {
                    path: ignore_path,
                    message: e.to_string(),
                }
                .into());
            }
        };

        let (dockerfile_name, outside_dockerfile) = match dockerfile_abs.strip_prefix(&root) {
            Ok(rel) => (slash_path(rel)?, None),
            Err(_) => (
                format!(".dockerfile.{:016x}", rand::random::<u64>()),
                Some(dockerfile_abs.clone()),
            ),
        };
        // Docker always sends the Dockerfile and .dockerignore, whatever the patterns say.
        for always in [".dockerignore".to_string(), dockerfile_name.clone()] {
            ignore
                .add(&format!("!{always}"))
                .map_err(|e| DockerBuildError::Ignore {
                    path: ignore_path.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(BuildContext {
            root,
            ignore,
            dockerfile_name,
            outside_dockerfile,
            from_images: from_images(&dockerfile_text),
            generated: false,
            _dir: None,
        })
    }
}

pub(super) fn slash_path(rel: &Path) -> Result<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| miette::miette!("{} is not a UTF-8 path", rel.display()))
}

/// The images a Dockerfile builds `FROM` (not `scratch`, earlier stages, or `$ARG` names).
pub(super) fn from_images(dockerfile: &str) -> Vec<ImageRef> {
    let mut stages: HashSet<String> = HashSet::new();
    let mut images = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let words: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = words.first() else { continue };
        if let [_, r#as, name] = words.as_slice()
            && r#as.eq_ignore_ascii_case("as")
        {
            stages.insert(name.to_ascii_lowercase());
        }
        if image.eq_ignore_ascii_case("scratch")
            || image.contains('$')
            || stages.contains(&image.to_ascii_lowercase())
        {
            continue;
        }
        if let Ok(r) = ImageRef::parse(image)
            && !images.contains(&r)
        {
            images.push(r);
        }
    }
    images
}

// ---------------------------------------------------------------------------------------------
// The context tar
// ---------------------------------------------------------------------------------------------

pub(super) enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

pub(super) struct Entry {
    /// Path in the tar, `/`-separated, relative to the context root.
    pub(super) name: String,
    pub(super) host: PathBuf,
    pub(super) kind: Kind,
    pub(super) mode: u32,
    pub(super) mtime: u64,
}

/// Everything that will be sent, found before sending so progress has a total.
pub(super) struct Listing {
    pub(super) entries: Vec<Entry>,
    pub(super) files: usize,
    /// Size of the tar stream, near enough for progress.
    pub(super) tar_bytes: u64,
    /// Special files (sockets, devices) that a tar cannot carry to the engine.
    pub(super) skipped_special: usize,
}

pub(super) fn list_context(
    root: &Path,
    ignore: &DockerIgnore,
    outside_dockerfile: Option<(&str, &Path)>,
    shell: &Shell,
) -> io::Result<Listing> {
    let mut listing = Listing {
        entries: Vec::new(),
        files: 0,
        tar_bytes: 1024,
        skipped_special: 0,
    };
    let mut dirs_written = HashSet::new();
    walk(root, "", ignore, &mut listing, &mut dirs_written, shell)?;
    if let Some((name, path)) = outside_dockerfile {
        let meta = std::fs::metadata(path).map_err(|e| at(path, e))?;
        listing.push(Entry {
            name: name.to_string(),
            host: path.to_path_buf(),
            kind: Kind::File { size: meta.len() },
            mode: 0o644,
            mtime: mtime_of(&meta),
        });
    }
    Ok(listing)
}

impl Listing {
    pub(super) fn push(&mut self, entry: Entry) {
        self.tar_bytes += 512 + if entry.name.len() > 99 { 1024 } else { 0 };
        if let Kind::File { size } = entry.kind {
            self.files += 1;
            self.tar_bytes += size.div_ceil(512) * 512;
        }
        self.entries.push(entry);
    }
}

pub(super) fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

pub(super) fn mtime_of(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

pub(super) fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Walks `rel_dir` sorted, the way Docker's context tar does: an excluded directory is skipped
/// whole unless an exception may re-include something inside it.
pub(super) fn walk(
    root: &Path,
    rel_dir: &str,
    ignore: &DockerIgnore,
    listing: &mut Listing,
    dirs_written: &mut HashSet<String>,
    shell: &Shell,
) -> io::Result<()> {
    let dir = if rel_dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel_dir)
    };
    for name in sorted_names(&dir)? {
        let rel = if rel_dir.is_empty() {
            name
        } else {
            format!("{rel_dir}/{name}")
        };
        let host = root.join(&rel);
        let meta = std::fs::symlink_metadata(&host).map_err(|e| at(&host, e))?;
        if ignore.is_excluded(&rel) {
            if meta.is_dir() && ignore.may_reinclude_under(&rel) {
                walk(root, &rel, ignore, listing, dirs_written, shell)?;
            }
            continue;
        }
        let Some(kind) = kind_of(&host, &meta)? else {
            shell.detail(&format!(
                "leaving out {} (not a file, directory or link)",
                host.display()
            ));
            listing.skipped_special += 1;
            continue;
        };
        list_parents(root, &rel, listing, dirs_written)?;
        let is_dir = matches!(kind, Kind::Dir);
        if is_dir {
            dirs_written.insert(rel.clone());
        }
        listing.push(Entry {
            name: rel.clone(),
            host,
            kind,
            mode: mode_of(&meta),
            mtime: mtime_of(&meta),
        });
        if is_dir {
            walk(root, &rel, ignore, listing, dirs_written, shell)?;
        }
    }
    Ok(())
}

/// The names in `dir`, sorted; a name that is not UTF-8 is an error.
fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| at(dir, e))? {
        let name = entry.map_err(|e| at(dir, e))?.file_name();
        let name = name.into_string().map_err(|raw| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: the file name is not UTF-8", dir.join(raw).display()),
            )
        })?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A directory, file or symlink; `None` for what a context cannot carry (sockets, devices…).
fn kind_of(host: &Path, meta: &std::fs::Metadata) -> io::Result<Option<Kind>> {
    let file_type = meta.file_type();
    Ok(if file_type.is_dir() {
        Some(Kind::Dir)
    } else if file_type.is_file() {
        Some(Kind::File { size: meta.len() })
    } else if file_type.is_symlink() {
        Some(Kind::Symlink {
            target: std::fs::read_link(host).map_err(|e| at(host, e))?,
        })
    } else {
        None
    })
}

/// Parents skipped as excluded still need entries when something inside is sent.
fn list_parents(
    root: &Path,
    rel: &str,
    listing: &mut Listing,
    dirs_written: &mut HashSet<String>,
) -> io::Result<()> {
    let Some((parents, _)) = rel.rsplit_once('/') else {
        return Ok(());
    };
    let mut parent = String::new();
    for part in parents.split('/') {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(part);
        if dirs_written.insert(parent.clone()) {
            let parent_host = root.join(&parent);
            let parent_meta = std::fs::metadata(&parent_host).map_err(|e| at(&parent_host, e))?;
            listing.push(Entry {
                name: parent.clone(),
                host: parent_host,
                kind: Kind::Dir,
                mode: mode_of(&parent_meta),
                mtime: mtime_of(&parent_meta),
            });
        }
    }
    Ok(())
}

/// Writes the listed entries as a tar: owner root, modes and times from the files.
pub(super) fn write_tar(listing: &Listing, out: impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    for entry in &listing.entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(entry.mtime);
        header.set_mode(entry.mode);
        match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, format!("{}/", entry.name), io::empty())?;
            }
            Kind::File { size } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                let file = std::fs::File::open(&entry.host).map_err(|e| at(&entry.host, e))?;
                let reader = ExactReader::new(file, *size, &entry.host);
                tar.append_data(&mut header, &entry.name, reader)
                    .map_err(|e| at(&entry.host, e))?;
            }
            Kind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &entry.name, target)?;
            }
        }
    }
    tar.into_inner()?.flush()
}

/// The message a send fails with once the engine stopped reading (the build already failed).
pub(super) const ENGINE_STOPPED: &str = "the engine stopped reading the build context";

/// A `Write` that sends what is written, in chunks, to the request body; blocking.
pub(super) struct ChannelWriter {
    pub(super) tx: mpsc::Sender<io::Result<Bytes>>,
    pub(super) buffer: Vec<u8>,
    pub(super) progress: Progress,
    /// Where a large context's sending is reported.
    pub(super) shell: Shell,
    pub(super) sent: u64,
    pub(super) total: u64,
    pub(super) next_report: u64,
}

impl ChannelWriter {
    pub(super) fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        let n = chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, ENGINE_STOPPED))?;
        self.sent += n;
        self.progress.advance(n);
        if self.total >= LARGE_CONTEXT && self.sent >= self.next_report {
            let percent = (self.sent * 100 / self.total.max(1)).min(100);
            self.shell.status(
                "Sending",
                &format!(
                    "build context: {} of {} ({percent}%)",
                    human_bytes(self.sent),
                    human_bytes(self.total)
                ),
            );
            self.next_report += self.total / 4;
        }
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}
