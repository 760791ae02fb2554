//! The engine builder: the image is built by a Docker engine (classic builder) from
//!
//! * the package's Dockerfile, with its build context streamed as a tar that honours
//!   `.dockerignore` by Docker's rules (see [`super::dockerignore`]); or
//! * a generated context, when there is no Dockerfile: the binary is built on the host and put in
//!   the very layers the daemonless builder makes (runtime closure, includes, binary), which a
//!   generated Dockerfile `ADD`s on `scratch` or the configured base, with the same entrypoint,
//!   environment, user and labels.
//!
//! The result is an [`EngineImage`]; where it goes is the publisher's business.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::models::BuildInfo;
use bollard::query_parameters::BuildImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use miette::{Diagnostic, IntoDiagnostic, Result, WrapErr};
use tokio::sync::mpsc;

mod buildkit;

use super::dockerignore::DockerIgnore;
use super::oci;
use crate::cargo::CargoOptions;
use crate::engine::{self, Engine, EngineImage};
use crate::image::exact::ExactReader;
use crate::image::{BlobSource, Image};
use crate::output::{self, human_bytes};
use crate::plan::{Base, BuildSpec};
use crate::reference::ImageRef;
use crate::registry::error_chain;
use crate::registry::pool::Clients;

/// Size of the pieces the context tar is sent in.
const CHUNK: usize = 256 * 1024;
/// Contexts larger than this get progress lines even without a terminal.
const LARGE_CONTEXT: u64 = 64 * 1024 * 1024;
/// Build output lines kept for the error message when `-q` hides them.
const KEPT_LINES: usize = 40;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum DockerBuildError {
    #[error("{path}: {message}")]
    #[diagnostic(help(
        "Docker's rules: https://docs.docker.com/build/concepts/context/#dockerignore-files"
    ))]
    Ignore { path: PathBuf, message: String },

    #[error("reading the build context {context}: {message}")]
    Context { context: PathBuf, message: String },

    #[error("the Docker build failed: {message}{output}")]
    #[diagnostic(help("the build output shows the failing step; nothing was pushed"))]
    Failed { message: String, output: String },

    #[error("the Docker engine at {address} refused the build (HTTP {status}): {message}")]
    Refused {
        address: String,
        status: u16,
        message: String,
    },

    #[error("the build through the Docker engine at {address} broke off: {cause}")]
    Transport { address: String, cause: String },

    #[error("the Docker engine finished the build without naming the image it made")]
    NoImage,

    #[error("the generated Dockerfile cannot express {what}")]
    #[diagnostic(help("use --builder oci, which writes the image config directly"))]
    Inexpressible { what: String },
}

/// Builds the target's image in the engine `DOCKER_HOST` names.
pub async fn build(
    target: &BuildSpec,
    cargo_options: &CargoOptions,
    clients: &Clients,
) -> Result<EngineImage> {
    // Ask the engine first: a missing engine should not cost a cargo build.
    let engine = Engine::connect().await?;
    let context = match &target.docker.dockerfile {
        Some(dockerfile) => BuildContext::from_dockerfile(&target.docker.context, dockerfile)?,
        None => generate_context(target, cargo_options, clients).await?,
    };
    let id = run_build(&engine, target, &context).await?;
    output::detail(&format!(
        "built image {id} in the engine at {}",
        engine.address()
    ));
    Ok(EngineImage { id, engine })
}

/// What is sent to the engine: a directory, filtered, and the Dockerfile's name in the tar.
struct BuildContext {
    root: PathBuf,
    ignore: DockerIgnore,
    /// The Dockerfile's path inside the tar.
    dockerfile_name: String,
    /// A Dockerfile outside the context directory, added to the tar as `dockerfile_name`.
    outside_dockerfile: Option<PathBuf>,
    /// Images the Dockerfile starts from, to send credentials for.
    from_images: Vec<ImageRef>,
    /// Options that only make sense for the user's own Dockerfile (target, build args).
    generated: bool,
    /// Keeps a generated context directory alive until the build is done.
    _dir: Option<tempfile::TempDir>,
}

impl BuildContext {
    fn from_dockerfile(context: &Path, dockerfile: &Path) -> Result<BuildContext> {
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
                    output::warn(&format!(
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

fn slash_path(rel: &Path) -> Result<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| miette::miette!("{} is not a UTF-8 path", rel.display()))
}

/// The images a Dockerfile builds `FROM` (not `scratch`, earlier stages, or `$ARG` names).
fn from_images(dockerfile: &str) -> Vec<ImageRef> {
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

/// Generated mode: cargo builds the binary on the host, the daemonless builder's code makes its
/// layers, and a Dockerfile has the engine put them on the base with the same config.
async fn generate_context(
    target: &BuildSpec,
    cargo_options: &CargoOptions,
    clients: &Clients,
) -> Result<BuildContext> {
    let binary = super::build_binary(target, cargo_options).await?;
    // The whole daemonless image is assembled (the base's manifest and config fetched) though only
    // its layers and config are used: `oci` has no public way to make the layers alone.
    // `ADD` unpacks gzip tars, not zstd ones: the engine gets gzip layers whatever `compression`
    // says (it compresses the layers it pushes itself).
    let mut gzip_target = target.clone();
    gzip_target.image.compression = crate::image::compress::Codec::Gzip;
    let image = oci::assemble_for_binary(&gzip_target, &binary, clients).await?;

    let dir = tempfile::Builder::new()
        .prefix("adapt-push-context-")
        .tempdir()
        .into_diagnostic()
        .wrap_err("creating a directory for the generated build context")?;
    let (base, from_images) = match &target.image.base {
        Base::Scratch => (None, Vec::new()),
        Base::Image(r) => (Some(r.to_string()), vec![r.clone()]),
    };
    let mut layer_files = Vec::new();
    for blob in &image.layers {
        if let BlobSource::File(path) = &blob.source {
            let name = format!("layer-{}.tar.gz", layer_files.len() + 1);
            let to = dir.path().join(&name);
            // A hard link costs nothing; across file systems, a copy (streamed by the kernel).
            std::fs::hard_link(path, &to)
                .or_else(|_| std::fs::copy(path, &to).map(|_| ()))
                .into_diagnostic()
                .wrap_err_with(|| format!("writing {name} of the generated build context"))?;
            layer_files.push((name, blob.description.clone()));
        }
    }
    let dockerfile = generated_dockerfile(base.as_deref(), &layer_files, &image)?;
    output::trace(&format!("generated Dockerfile:\n{dockerfile}"));
    std::fs::write(dir.path().join("Dockerfile"), &dockerfile)
        .into_diagnostic()
        .wrap_err("writing the generated Dockerfile")?;

    let mut ignore = DockerIgnore::default();
    ignore.add("!Dockerfile").ok();
    Ok(BuildContext {
        root: dir.path().to_path_buf(),
        ignore,
        dockerfile_name: "Dockerfile".into(),
        outside_dockerfile: None,
        from_images,
        generated: true,
        _dir: Some(dir),
    })
}

/// A Dockerfile that rebuilds the daemonless builder's image: its layers `ADD`ed as the tars they
/// are (so modes, owners and times match), then its environment, labels, user and entrypoint.
///
/// The classic builder runs an intermediate container for every instruction after `FROM`, so the
/// environment and the labels are one instruction each, whatever their number.
fn generated_dockerfile(
    base: Option<&str>,
    layers: &[(String, String)],
    image: &Image,
) -> Result<String> {
    let BlobSource::Bytes(config_bytes) = &image.config.source else {
        return Err(miette::miette!("the image config is not in memory"));
    };
    let config: serde_json::Value = serde_json::from_slice(config_bytes).into_diagnostic()?;
    let process = &config["config"];

    let mut out = String::from(
        "# Generated by cargo adapt-push: the daemonless builder's layers, built by the engine.\n",
    );
    out.push_str(&format!("FROM {}\n", base.unwrap_or("scratch")));
    for (file, description) in layers {
        out.push_str(&format!("# {description}\nADD {file} /\n"));
    }

    let mut env = Vec::new();
    for entry in process["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
    {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        // Names go unquoted (Docker versions differ on whether ENV expands quotes in names).
        if name.is_empty()
            || name.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(c, '"' | '\'' | '\\' | '$' | '=' | '#')
            })
        {
            return Err(DockerBuildError::Inexpressible {
                what: format!("the environment variable name `{name}`"),
            }
            .into());
        }
        env.push(format!(
            "{name}={}",
            dockerfile_quote(value, &format!("env `{name}`"))?
        ));
    }
    instruction(&mut out, "ENV", &env);

    // The config's labels are the base's and the package's, as the daemonless builder merged them.
    let mut labels = Vec::new();
    let mut keys: Vec<(&String, &serde_json::Value)> = process["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in keys {
        // The Dockerfile parser splits `key=value` at the first `=`, quoted or not.
        if key.is_empty() || key.contains('=') {
            return Err(DockerBuildError::Inexpressible {
                what: format!("the label name `{key}`"),
            }
            .into());
        }
        let what = format!("label `{key}`");
        labels.push(format!(
            "{}={}",
            dockerfile_quote(key, &what)?,
            dockerfile_quote(value.as_str().unwrap_or_default(), &what)?
        ));
    }
    instruction(&mut out, "LABEL", &labels);

    if let Some(user) = process["User"].as_str().filter(|u| !u.is_empty()) {
        out.push_str(&format!("USER {}\n", dockerfile_quote(user, "user")?));
    }
    let entrypoint = process["Entrypoint"].clone();
    if !entrypoint.is_null() {
        out.push_str(&format!("ENTRYPOINT {entrypoint}\n"));
    }
    Ok(out)
}

/// One `ENV` or `LABEL` instruction with every `key=value` pair, a pair per line.
fn instruction(out: &mut String, keyword: &str, pairs: &[String]) {
    if pairs.is_empty() {
        return;
    }
    out.push_str(keyword);
    for (i, pair) in pairs.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { " \\\n    " });
        out.push_str(pair);
    }
    out.push('\n');
}

/// A double-quoted Dockerfile word whose value is exactly `value`.
///
/// JSON's quoting looks right but is not: the Dockerfile lexer knows no `\n`, `\t` or `\u` escapes
/// (it would keep the backslash) and would expand `$NAME`. Inside double quotes it takes `\"`,
/// `\\` and `\$` as escapes and every other character as itself, so those three are escaped and
/// line breaks (which end the instruction) and other control characters are refused.
fn dockerfile_quote(value: &str, what: &str) -> Result<String> {
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(DockerBuildError::Inexpressible {
            what: format!("the control character {c:?} in {what}"),
        }
        .into());
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

// ---------------------------------------------------------------------------------------------
// The context tar
// ---------------------------------------------------------------------------------------------

enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: PathBuf },
}

struct Entry {
    /// Path in the tar, `/`-separated, relative to the context root.
    name: String,
    host: PathBuf,
    kind: Kind,
    mode: u32,
    mtime: u64,
}

/// Everything that will be sent, found before sending so progress has a total.
struct Listing {
    entries: Vec<Entry>,
    files: usize,
    /// Size of the tar stream, near enough for progress.
    tar_bytes: u64,
    /// Special files (sockets, devices) that a tar cannot carry to the engine.
    skipped_special: usize,
}

fn list_context(
    root: &Path,
    ignore: &DockerIgnore,
    outside_dockerfile: Option<(&str, &Path)>,
) -> io::Result<Listing> {
    let mut listing = Listing {
        entries: Vec::new(),
        files: 0,
        tar_bytes: 1024,
        skipped_special: 0,
    };
    let mut dirs_written = HashSet::new();
    walk(root, "", ignore, &mut listing, &mut dirs_written)?;
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
    fn push(&mut self, entry: Entry) {
        self.tar_bytes += 512 + if entry.name.len() > 99 { 1024 } else { 0 };
        if let Kind::File { size } = entry.kind {
            self.files += 1;
            self.tar_bytes += size.div_ceil(512) * 512;
        }
        self.entries.push(entry);
    }
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn mtime_of(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Walks `rel_dir` sorted, the way Docker's context tar does: an excluded directory is skipped
/// whole unless an exception may re-include something inside it.
fn walk(
    root: &Path,
    rel_dir: &str,
    ignore: &DockerIgnore,
    listing: &mut Listing,
    dirs_written: &mut HashSet<String>,
) -> io::Result<()> {
    let dir = if rel_dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel_dir)
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| at(&dir, e))? {
        let name = entry.map_err(|e| at(&dir, e))?.file_name();
        let name = name.into_string().map_err(|raw| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: the file name is not UTF-8", dir.join(raw).display()),
            )
        })?;
        names.push(name);
    }
    names.sort();
    for name in names {
        let rel = if rel_dir.is_empty() {
            name
        } else {
            format!("{rel_dir}/{name}")
        };
        let host = root.join(&rel);
        let meta = std::fs::symlink_metadata(&host).map_err(|e| at(&host, e))?;
        if ignore.is_excluded(&rel) {
            if meta.is_dir() && ignore.may_reinclude_under(&rel) {
                walk(root, &rel, ignore, listing, dirs_written)?;
            }
            continue;
        }
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_file() {
            Kind::File { size: meta.len() }
        } else if file_type.is_symlink() {
            Kind::Symlink {
                target: std::fs::read_link(&host).map_err(|e| at(&host, e))?,
            }
        } else {
            output::detail(&format!(
                "leaving out {} (not a file, directory or link)",
                host.display()
            ));
            listing.skipped_special += 1;
            continue;
        };
        // Parents skipped as excluded still need entries when something inside is sent.
        let mut parent = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if dirs_written.insert(parent.clone()) {
                let parent_host = root.join(&parent);
                let parent_meta =
                    std::fs::metadata(&parent_host).map_err(|e| at(&parent_host, e))?;
                listing.push(Entry {
                    name: parent.clone(),
                    host: parent_host,
                    kind: Kind::Dir,
                    mode: mode_of(&parent_meta),
                    mtime: mtime_of(&parent_meta),
                });
            }
        }
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
            walk(root, &rel, ignore, listing, dirs_written)?;
        }
    }
    Ok(())
}

/// Writes the listed entries as a tar: owner root, modes and times from the files.
fn write_tar(listing: &Listing, out: impl Write) -> io::Result<()> {
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
const ENGINE_STOPPED: &str = "the engine stopped reading the build context";

/// A `Write` that sends what is written, in chunks, to the request body; blocking.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
    progress: output::Progress,
    sent: u64,
    total: u64,
    next_report: u64,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
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
            output::status(
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

// ---------------------------------------------------------------------------------------------
// The build request
// ---------------------------------------------------------------------------------------------

async fn run_build(engine: &Engine, target: &BuildSpec, context: &BuildContext) -> Result<String> {
    let listing = {
        let (root, ignore) = (context.root.clone(), context.ignore.clone());
        let name = context.dockerfile_name.clone();
        let outside = context.outside_dockerfile.clone();
        tokio::task::spawn_blocking(move || {
            list_context(
                &root,
                &ignore,
                outside.as_deref().map(|p| (name.as_str(), p)),
            )
        })
        .await
        .into_diagnostic()?
        .map_err(|e| DockerBuildError::Context {
            context: context.root.clone(),
            message: e.to_string(),
        })?
    };
    if !context.generated {
        output::status(
            "Building",
            &format!(
                "{} v{} with the Docker engine at {} ({})",
                target.package,
                target.version,
                engine.address(),
                context.dockerfile_name
            ),
        );
    }
    output::status(
        "Sending",
        &format!(
            "build context {} ({} files, {})",
            context.root.display(),
            listing.files,
            human_bytes(listing.tar_bytes)
        ),
    );

    let credentials = build_credentials(&context.from_images).await;
    let spec = &target.docker;
    let mut options = BuildImageOptions {
        dockerfile: context.dockerfile_name.clone(),
        rm: true,
        forcerm: true,
        pull: spec.pull.then(|| "1".to_string()),
        platform: spec.platform.clone().unwrap_or_default(),
        ..BuildImageOptions::default()
    };
    if !context.generated {
        // The classic builder adds a LABEL step per label given here; the generated Dockerfile
        // has them all in one instruction instead.
        options.labels = Some(
            target
                .image
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        options.buildargs = Some(
            spec.build_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        options.target = spec.target.clone().unwrap_or_default();
    }

    // The tar is written on a blocking thread into a small channel that the request body reads:
    // at most a few chunks are in memory at once.
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let progress = output::Progress::bytes("build context", listing.tar_bytes);
    let writer = {
        let progress = progress.clone();
        let total = listing.tar_bytes;
        tokio::task::spawn_blocking(move || {
            let error_tx = tx.clone();
            let mut out = ChannelWriter {
                tx,
                buffer: Vec::with_capacity(CHUNK),
                progress,
                sent: 0,
                total,
                next_report: total / 4,
            };
            let result = write_tar(&listing, &mut out).and_then(|()| out.flush());
            if let Err(e) = &result
                && e.to_string() != ENGINE_STOPPED
            {
                // Make the request fail too, so the engine never builds from a partial context.
                let _ = error_tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            result
        })
    };
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut shown = BuildOutput::new();
    let mut image_id = None;
    let mut failure = None;
    if let Some(endpoint) = with_buildkit(engine, spec.buildkit, context).await {
        output::detail("building with BuildKit");
        let mut query = vec![
            ("version", "2".to_string()),
            ("dockerfile", options.dockerfile.clone()),
            ("rm", "1".to_string()),
            ("forcerm", "1".to_string()),
        ];
        for (key, value) in [
            ("pull", options.pull.clone()),
            ("platform", Some(options.platform.clone())),
            ("target", Some(options.target.clone())),
            ("networkmode", endpoint.1.map(str::to_string)),
            (
                "labels",
                options
                    .labels
                    .as_ref()
                    .and_then(|l| serde_json::to_string(l).ok()),
            ),
            (
                "buildargs",
                options
                    .buildargs
                    .as_ref()
                    .and_then(|a| serde_json::to_string(a).ok()),
            ),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                query.push((key, v));
            }
        }
        let registry_config = credentials
            .as_ref()
            .and_then(|c| serde_json::to_vec(c).ok())
            .map(|json| base64::engine::general_purpose::URL_SAFE.encode(json));
        match buildkit::build(
            &endpoint.0,
            &engine.api_version(),
            &query,
            registry_config,
            body,
            &mut shown,
        )
        .await
        {
            Ok(id) => image_id = id,
            Err(buildkit::Failure::Failed(message)) => {
                failure = Some(bollard::errors::Error::DockerStreamError { error: message })
            }
            Err(buildkit::Failure::Refused(status_code, message)) => {
                failure = Some(bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message,
                })
            }
            Err(buildkit::Failure::Transport(cause)) => {
                failure = Some(bollard::errors::Error::IOError {
                    err: io::Error::other(cause),
                })
            }
        }
    } else {
        let mut stream =
            engine
                .docker()
                .build_image(options, credentials, Some(bollard::body_try_stream(body)));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
                        image_id = Some(id);
                    }
                    shown.show(&info);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    shown.finish();
    progress.finish();
    let written = writer.await.into_diagnostic()?;

    // A context that could not be read is the real story, whatever the engine said after.
    if let Err(e) = written
        && e.to_string() != ENGINE_STOPPED
    {
        return Err(DockerBuildError::Context {
            context: context.root.clone(),
            message: e.to_string(),
        }
        .into());
    }
    if let Some(e) = failure {
        return Err(match e {
            bollard::errors::Error::DockerStreamError { error } => DockerBuildError::Failed {
                message: error.trim().to_string(),
                output: shown.kept_for_error(),
            },
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => DockerBuildError::Refused {
                address: engine.address().to_string(),
                status: status_code,
                message,
            },
            other => DockerBuildError::Transport {
                address: engine.address().to_string(),
                cause: error_chain(&other),
            },
        }
        .into());
    }
    image_id.ok_or_else(|| DockerBuildError::NoImage.into())
}

/// Whether to build with BuildKit, and where to send the build: the engine's endpoint and the
/// network mode RUN steps need. `choice` is the `buildkit` key (None: when the engine has it).
async fn with_buildkit(
    engine: &Engine,
    choice: Option<bool>,
    context: &BuildContext,
) -> Option<(buildkit::Endpoint, Option<&'static str>)> {
    if choice == Some(false) {
        return None;
    }
    // The classic builder drops a Dockerfile (and .dockerignore) that `.dockerignore` excludes,
    // or that came from outside the context, once it has read them; BuildKit, given the context
    // as a tar, keeps them, so `COPY . /app` would copy them into the image.
    // (`context.ignore` re-includes both, as Docker sends them: read the user's patterns again.)
    let users_patterns = std::fs::read_to_string(context.root.join(".dockerignore"))
        .ok()
        .and_then(|text| DockerIgnore::parse(&text).ok());
    let dockerfile_not_in_context = context.outside_dockerfile.is_some()
        || users_patterns.is_some_and(|p| {
            p.is_excluded(&context.dockerfile_name) || p.is_excluded(".dockerignore")
        });
    if dockerfile_not_in_context {
        let why = "the Dockerfile is outside the context or excluded by .dockerignore, and \
                   BuildKit given a context tar would keep it in the context";
        if choice == Some(true) {
            output::warn(&format!(
                "{why}; building with BuildKit as `buildkit = true` says"
            ));
        } else {
            output::status("Note", &format!("{why}; building with the classic builder"));
            return None;
        }
    }
    let fallback = |why: &str| {
        let text = format!("{why}; building with the classic builder");
        if choice == Some(true) {
            output::warn(&text);
        } else {
            output::status("Note", &text);
        }
    };
    // Podman's Docker-compatible service builds with Buildah and answers a BuildKit request
    // with Buildah's own progress, which names no image the BuildKit way.
    if engine.is_podman() {
        fallback(&format!(
            "the engine at {} is Podman's service, which has no BuildKit",
            engine.address()
        ));
        return None;
    }
    let Some(endpoint) = buildkit::Endpoint::of(engine.address(), engine.tls()) else {
        fallback(&format!(
            "BuildKit builds are sent over unix:// or plain tcp:// engine addresses, not {}",
            engine.address()
        ));
        return None;
    };
    if choice.is_none() {
        // BuildKit is in Linux engines since 18.09 (API 1.39); Windows engines have none.
        let version = engine.docker().version().await.ok();
        let linux = version
            .as_ref()
            .and_then(|v| v.os.as_deref())
            .is_some_and(|os| os == "linux");
        let api = engine.api_version();
        let new_enough = api
            .split_once('.')
            .and_then(|(major, minor)| {
                Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
            })
            .is_some_and(|v| v >= (1, 39));
        if !linux || !new_enough {
            fallback(&format!(
                "the engine at {} has no BuildKit (API {api}, {})",
                engine.address(),
                version
                    .as_ref()
                    .and_then(|v| v.os.clone())
                    .unwrap_or_else(|| "unknown OS".into())
            ));
            return None;
        }
    }
    // An engine without its default bridge network (dockerd --bridge=none) cannot give BuildKit's
    // RUN steps the default network; give them none, as the classic builder does there.
    let bridge = engine
        .docker()
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .is_ok();
    Some((endpoint, (!bridge).then_some("none")))
}

/// Credentials for the registries the build pulls from, as `X-Registry-Config`.
async fn build_credentials(images: &[ImageRef]) -> Option<HashMap<String, DockerCredentials>> {
    let mut all = HashMap::new();
    for image in images {
        let key = engine::server_address(&image.registry);
        if !all.contains_key(&key)
            && let Some(c) = engine::credentials_for(&image.registry, false).await
        {
            all.insert(key, c);
        }
    }
    (!all.is_empty()).then_some(all)
}

/// Shows the engine's build output on stderr as it comes (or keeps its tail under `-q`).
struct BuildOutput {
    quiet: bool,
    kept: VecDeque<String>,
    partial: String,
    /// Last status shown per layer id while pulling, to skip repeated progress.
    statuses: BTreeMap<String, String>,
}

impl BuildOutput {
    fn new() -> BuildOutput {
        BuildOutput {
            quiet: output::verbosity() == output::Verbosity::Quiet,
            kept: VecDeque::new(),
            partial: String::new(),
            statuses: BTreeMap::new(),
        }
    }

    fn show(&mut self, info: &BuildInfo) {
        if let Some(text) = &info.stream {
            self.text(text);
        }
        if let Some(status) = &info.status {
            // Pull progress: one line per layer and state, not every byte count.
            let line = match &info.id {
                Some(id) => {
                    if self.statuses.get(id) == Some(status) {
                        return;
                    }
                    self.statuses.insert(id.clone(), status.clone());
                    format!("{id}: {status}\n")
                }
                None => format!("{status}\n"),
            };
            self.text(&line);
        }
    }

    fn text(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
    }

    fn line(&mut self, line: &str) {
        if self.quiet {
            if self.kept.len() == KEPT_LINES {
                self.kept.pop_front();
            }
            self.kept.push_back(line.to_string());
        } else {
            output::suspend(|| eprintln!("{line}"));
        }
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
    }

    /// Under `-q` the output was not shown: put its tail in the error.
    fn kept_for_error(&self) -> String {
        if self.kept.is_empty() {
            return String::new();
        }
        let mut text = String::from("\n\nlast lines of the build output:");
        for line in &self.kept {
            text.push_str("\n  ");
            text.push_str(line);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;

    fn listing(context: &BuildContext) -> Listing {
        let outside = context
            .outside_dockerfile
            .as_deref()
            .map(|p| (context.dockerfile_name.as_str(), p));
        list_context(&context.root, &context.ignore, outside).unwrap()
    }

    fn names(context: &BuildContext) -> Vec<String> {
        listing(context)
            .entries
            .iter()
            .map(|e| match e.kind {
                Kind::Dir => format!("{}/", e.name),
                _ => e.name.clone(),
            })
            .collect()
    }

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn context_honours_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        write(
            root,
            ".dockerignore",
            "target\nsecret.txt\n*.log\n!keep.log\ndocs\n!docs/public\nDockerfile\n",
        );
        write(root, "src/main.rs", "fn main() {}");
        write(root, "secret.txt", "hunter2");
        write(root, "app.log", "");
        write(root, "keep.log", "");
        write(root, "target/debug/app", "binary");
        write(root, "docs/private.md", "");
        write(root, "docs/public/index.md", "");
        write(root, "sub/secret.txt", "only the top-level one is ignored");
        std::os::unix::fs::symlink("src/main.rs", root.join("link")).unwrap();

        let context = BuildContext::from_dockerfile(root, &root.join("Dockerfile")).unwrap();
        assert_eq!(context.dockerfile_name, "Dockerfile");
        assert_eq!(
            names(&context),
            [
                ".dockerignore",
                "Dockerfile",
                "docs/",
                "docs/public/",
                "docs/public/index.md",
                "keep.log",
                "link",
                "src/",
                "src/main.rs",
                "sub/",
                "sub/secret.txt",
            ]
        );
    }

    #[test]
    fn without_dockerignore_target_stays_home() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        write(root, "target/release/app", "binary");
        write(root, "a.txt", "");
        let context = BuildContext::from_dockerfile(root, &root.join("Dockerfile")).unwrap();
        assert_eq!(names(&context), ["Dockerfile", "a.txt"]);
    }

    #[test]
    fn dockerfile_outside_the_context_is_added() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "docker/app.Dockerfile", "FROM scratch\n");
        write(dir.path(), "ctx/a.txt", "a");
        let context = BuildContext::from_dockerfile(
            &dir.path().join("ctx"),
            &dir.path().join("docker/app.Dockerfile"),
        )
        .unwrap();
        assert!(context.dockerfile_name.starts_with(".dockerfile."));
        assert_eq!(
            names(&context),
            ["a.txt".to_string(), context.dockerfile_name.clone()]
        );
    }

    #[test]
    fn tar_stream_has_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\nCOPY . /\n");
        write(root, "deep/er/file.txt", "content");
        let long = "x".repeat(120);
        write(root, &format!("{long}/f"), "long name");
        let context = BuildContext::from_dockerfile(root, &root.join("Dockerfile")).unwrap();
        let listing = listing(&context);
        let mut tar_bytes = Vec::new();
        write_tar(&listing, &mut tar_bytes).unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().uid().unwrap(), 0);
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            seen.push((path, content));
        }
        assert!(
            seen.contains(&("deep/er/file.txt".into(), "content".into())),
            "{seen:?}"
        );
        assert!(seen.contains(&(format!("{long}/f"), "long name".into())));
        assert!(seen.iter().any(|(p, _)| p == "deep/er/" || p == "deep/er"));
    }

    #[test]
    fn from_lines() {
        let images = from_images(
            "ARG V=1\nFROM --platform=$BUILDPLATFORM localhost:5000/rust:1 AS build\nRUN x\nfrom build AS again\nFROM scratch\nFROM ghcr.io/acme/base@sha256:0000000000000000000000000000000000000000000000000000000000000000\nFROM img:$V\n",
        );
        let names: Vec<String> = images.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            names,
            [
                "localhost:5000/rust:1",
                "ghcr.io/acme/base@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(dockerfile_quote("a b", "x").unwrap(), "\"a b\"");
        assert_eq!(
            dockerfile_quote(r#"$HOME "q" \"#, "x").unwrap(),
            r#""\$HOME \"q\" \\""#
        );
        assert!(dockerfile_quote("a\nb", "x").is_err());
        assert!(dockerfile_quote("a\u{7}b", "x").is_err());
        assert_eq!(dockerfile_quote("a\tb", "x").unwrap(), "\"a\tb\"");
    }

    fn image_with_config(config: serde_json::Value) -> Image {
        let bytes = Bytes::from(serde_json::to_vec(&config).unwrap());
        let config = crate::image::Blob {
            digest: crate::reference::Digest::sha256_of(&bytes),
            size: bytes.len() as u64,
            media_type: crate::image::OCI_CONFIG.into(),
            source: BlobSource::Bytes(bytes),
            description: "config".into(),
        };
        Image {
            manifest: Bytes::new(),
            manifest_media_type: crate::image::OCI_MANIFEST.into(),
            digest: config.digest.clone(),
            config,
            layers: Vec::new(),
        }
    }

    #[test]
    fn generated_dockerfile_has_one_env_and_one_label_instruction() {
        let image = image_with_config(serde_json::json!({
            "config": {
                "Env": ["PATH=/usr/local/bin:/bin", "GREETING=hi \"you\" $HOME \\", "EMPTY="],
                "Labels": {
                    "org.opencontainers.image.version": "0.1.0",
                    "com.example.team": "platform $TEAM",
                    "a b": "",
                },
                "User": "1000:1000",
                "Entrypoint": ["/usr/local/bin/greeter"],
            }
        }));
        let layers = [
            ("layer-1.tar.gz".to_string(), "runtime".to_string()),
            ("layer-2.tar.gz".to_string(), "binary greeter".to_string()),
        ];
        let dockerfile = generated_dockerfile(Some("debian:12"), &layers, &image).unwrap();
        let expected = concat!(
            "# Generated by cargo adapt-push: the daemonless builder's layers, built by the engine.\n",
            "FROM debian:12\n",
            "# runtime\nADD layer-1.tar.gz /\n",
            "# binary greeter\nADD layer-2.tar.gz /\n",
            "ENV PATH=\"/usr/local/bin:/bin\" \\\n",
            "    GREETING=\"hi \\\"you\\\" \\$HOME \\\\\" \\\n",
            "    EMPTY=\"\"\n",
            "LABEL \"a b\"=\"\" \\\n",
            "    \"com.example.team\"=\"platform \\$TEAM\" \\\n",
            "    \"org.opencontainers.image.version\"=\"0.1.0\"\n",
            "USER \"1000:1000\"\n",
            "ENTRYPOINT [\"/usr/local/bin/greeter\"]\n",
        );
        assert_eq!(dockerfile, expected, "\n{dockerfile}");
        // Steps after FROM: two ADDs, ENV, LABEL, USER, ENTRYPOINT.
        let steps = dockerfile
            .lines()
            .filter(|l| !l.starts_with(['#', ' ']) && !l.starts_with("FROM"))
            .count();
        assert_eq!(steps, 6);

        let bare = image_with_config(serde_json::json!({
            "config": { "Entrypoint": ["/x"] }
        }));
        assert_eq!(
            generated_dockerfile(None, &[], &bare)
                .unwrap()
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            ["FROM scratch", "ENTRYPOINT [\"/x\"]"]
        );

        for config in [
            serde_json::json!({ "config": { "Env": ["BAD NAME=1"] } }),
            serde_json::json!({ "config": { "Env": ["LINES=a\nb"] } }),
            serde_json::json!({ "config": { "Labels": { "a=b": "c" } } }),
        ] {
            let e = generated_dockerfile(None, &[], &image_with_config(config)).unwrap_err();
            assert!(e.to_string().contains("cannot express"), "{e}");
        }
    }
}
