//! The engine builder: the image is built by a Docker engine (classic builder) from
//!
//! * the package's Dockerfile, with its build context streamed as a tar that honours
//!   `.dockerignore` by Docker's rules (see [`dockerignore`]); or
//! * a generated context, when there is no Dockerfile: the binary compiled on the host is put in
//!   the very layers the daemonless builder makes (runtime closure, includes, binary), which a
//!   generated Dockerfile `ADD`s on `scratch` or the configured base, with the same entrypoint,
//!   environment, user and labels.
//!
//! The result is an [`EngineImage`]; where it goes is the publisher's business.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::BuildImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use miette::{Diagnostic, IntoDiagnostic, Result};
use tokio::sync::mpsc;

mod buildkit;
mod context;
mod dockerignore;
mod generated;
mod log;

use crate::engine::{self, Engine, EngineImage};
use crate::reference::ImageRef;
use crate::registry::error_chain;
use crate::registry::pool::Clients;
use crate::shell::{Progress, Shell, human_bytes};
use crate::spec::BuildSpec;
use context::{
    BuildContext, CHUNK, ChannelWriter, ENGINE_STOPPED, Listing, list_context, write_tar,
};
use dockerignore::DockerIgnore;
use generated::generate_context;
use log::BuildOutput;

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

/// Builds the target's image in `engine` (connected before anything was compiled): from the
/// package's Dockerfile, or around the `binary` compiled on the host.
pub async fn build(
    target: &BuildSpec,
    engine: Engine,
    binary: Option<&Path>,
    clients: &Clients,
    shell: &Shell,
) -> Result<EngineImage> {
    let (context, contents) = match (&target.docker.dockerfile, binary) {
        (Some(dockerfile), _) => (
            BuildContext::from_dockerfile(&target.docker.context, dockerfile, shell)?,
            None,
        ),
        (None, Some(binary)) => {
            let (context, contents) = generate_context(target, binary, clients, shell).await?;
            (context, Some(contents))
        }
        (None, None) => return Err(super::no_binary(target)),
    };
    let id = run_build(&engine, target, &context).await?;
    shell.detail(&format!(
        "built image {id} in the engine at {}",
        engine.address()
    ));
    Ok(EngineImage {
        id,
        engine,
        contents,
    })
}

// ---------------------------------------------------------------------------------------------
// The build request
// ---------------------------------------------------------------------------------------------

async fn run_build(engine: &Engine, target: &BuildSpec, context: &BuildContext) -> Result<String> {
    let shell = engine.shell();
    let listing = list_for_sending(context, shell).await?;
    announce(engine, target, context, &listing);
    let credentials = build_credentials(&context.from_images, shell).await?;
    let options = build_options(target, context);
    let progress = shell.upload_progress("build context", listing.tar_bytes);
    let (body, writer) = send_context(listing, progress.clone(), shell);
    let mut shown = BuildOutput::new(shell);
    let (image_id, failure) =
        if let Some(endpoint) = with_buildkit(engine, target.docker.buildkit, context).await {
            build_with_buildkit(engine, &endpoint, &options, credentials, body, &mut shown).await
        } else {
            build_classic(engine, options, credentials, body, &mut shown).await
        };
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
        return Err(build_error(engine, e, &shown).into());
    }
    image_id.ok_or_else(|| DockerBuildError::NoImage.into())
}

/// The context's files, listed off the async runtime.
async fn list_for_sending(context: &BuildContext, shell: &Shell) -> Result<Listing> {
    let (root, ignore) = (context.root.clone(), context.ignore.clone());
    let name = context.dockerfile_name.clone();
    let outside = context.outside_dockerfile.clone();
    let shell = shell.clone();
    let listing = tokio::task::spawn_blocking(move || {
        list_context(
            &root,
            &ignore,
            outside.as_deref().map(|p| (name.as_str(), p)),
            &shell,
        )
    })
    .await
    .into_diagnostic()?
    .map_err(|e| DockerBuildError::Context {
        context: context.root.clone(),
        message: e.to_string(),
    })?;
    Ok(listing)
}

/// What is built from where, and what is sent.
fn announce(engine: &Engine, target: &BuildSpec, context: &BuildContext, listing: &Listing) {
    let shell = engine.shell();
    if !context.generated {
        shell.status(
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
    shell.status(
        "Sending",
        &format!(
            "build context {} ({} files, {})",
            context.root.display(),
            listing.files,
            human_bytes(listing.tar_bytes)
        ),
    );
}

/// The classic builder's options; the BuildKit request is made from the same.
fn build_options(target: &BuildSpec, context: &BuildContext) -> BuildImageOptions {
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
    options
}

/// A build's outcome: the image ID the engine reported, or what went wrong.
type BuildResult = (Option<String>, Option<bollard::errors::Error>);

/// Starts writing the context tar for the request body.
fn send_context(
    listing: Listing,
    progress: Progress,
    shell: &Shell,
) -> (
    impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    // The tar is written on a blocking thread into a small channel that the request body reads:
    // at most a few chunks are in memory at once.
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let writer = {
        let total = listing.tar_bytes;
        let shell = shell.clone();
        tokio::task::spawn_blocking(move || {
            let error_tx = tx.clone();
            let mut out = ChannelWriter {
                tx,
                buffer: Vec::with_capacity(CHUNK),
                progress,
                shell,
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
    (body, writer)
}

/// Sends the build to the engine's BuildKit endpoint.
async fn build_with_buildkit(
    engine: &Engine,
    endpoint: &(buildkit::Endpoint, Option<&'static str>),
    options: &BuildImageOptions,
    credentials: Option<HashMap<String, DockerCredentials>>,
    body: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    shown: &mut BuildOutput,
) -> BuildResult {
    engine.shell().detail("building with BuildKit");
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
    let failure = match buildkit::build(
        &endpoint.0,
        &engine.api_version(),
        &query,
        registry_config,
        body,
        shown,
    )
    .await
    {
        Ok(id) => return (id, None),
        Err(buildkit::Failure::Failed(message)) => {
            bollard::errors::Error::DockerStreamError { error: message }
        }
        Err(buildkit::Failure::Refused(status_code, message)) => {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }
        }
        Err(buildkit::Failure::Transport(cause)) => bollard::errors::Error::IOError {
            err: io::Error::other(cause),
        },
    };
    (None, Some(failure))
}

/// Sends the build to the classic builder through bollard.
async fn build_classic(
    engine: &Engine,
    options: BuildImageOptions,
    credentials: Option<HashMap<String, DockerCredentials>>,
    body: impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static,
    shown: &mut BuildOutput,
) -> BuildResult {
    let mut image_id = None;
    let mut failure = None;
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
    (image_id, failure)
}

/// The engine's error, as ours.
fn build_error(
    engine: &Engine,
    e: bollard::errors::Error,
    shown: &BuildOutput,
) -> DockerBuildError {
    match e {
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
    if dockerfile_not_in_context(context) {
        let why = "the Dockerfile is outside the context or excluded by .dockerignore, and \
                   BuildKit given a context tar would keep it in the context";
        if choice == Some(true) {
            engine.shell().warn(&format!(
                "{why}; building with BuildKit as `buildkit = true` says"
            ));
        } else {
            engine
                .shell()
                .status("Note", &format!("{why}; building with the classic builder"));
            return None;
        }
    }
    // Podman's Docker-compatible service builds with Buildah and answers a BuildKit request
    // with Buildah's own progress, which names no image the BuildKit way.
    if engine.is_podman() {
        classic_after_all(
            engine.shell(),
            choice,
            &format!(
                "the engine at {} is Podman's service, which has no BuildKit",
                engine.address()
            ),
        );
        return None;
    }
    let Some(endpoint) = buildkit::Endpoint::of(engine.address(), engine.tls()) else {
        classic_after_all(
            engine.shell(),
            choice,
            &format!(
                "BuildKit builds are sent over unix:// or plain tcp:// engine addresses, not {}",
                engine.address()
            ),
        );
        return None;
    };
    if choice.is_none()
        && let Some(why) = no_buildkit_in(engine).await
    {
        classic_after_all(engine.shell(), choice, &why);
        return None;
    }
    Some((endpoint, run_network(engine).await))
}

/// The classic builder drops a Dockerfile (and .dockerignore) that `.dockerignore` excludes,
/// or that came from outside the context, once it has read them; BuildKit, given the context
/// as a tar, keeps them, so `COPY . /app` would copy them into the image.
/// (`context.ignore` re-includes both, as Docker sends them: read the user's patterns again.)
fn dockerfile_not_in_context(context: &BuildContext) -> bool {
    let users_patterns = std::fs::read_to_string(context.root.join(".dockerignore"))
        .ok()
        .and_then(|text| DockerIgnore::parse(&text).ok());
    context.outside_dockerfile.is_some()
        || users_patterns.is_some_and(|p| {
            p.is_excluded(&context.dockerfile_name) || p.is_excluded(".dockerignore")
        })
}

/// Says why the classic builder builds after all: a warning when BuildKit was asked for.
fn classic_after_all(shell: &Shell, choice: Option<bool>, why: &str) {
    let text = format!("{why}; building with the classic builder");
    if choice == Some(true) {
        shell.warn(&text);
    } else {
        shell.status("Note", &text);
    }
}

/// Why the engine has no BuildKit, if it has none: BuildKit is in Linux engines since 18.09
/// (API 1.39); Windows engines have none.
async fn no_buildkit_in(engine: &Engine) -> Option<String> {
    let version = engine.docker().version().await.ok();
    let linux = version
        .as_ref()
        .and_then(|v| v.os.as_deref())
        .is_some_and(|os| os == "linux");
    let api = engine.api_version();
    let new_enough = api
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)))
        .is_some_and(|v| v >= (1, 39));
    if linux && new_enough {
        return None;
    }
    Some(format!(
        "the engine at {} has no BuildKit (API {api}, {})",
        engine.address(),
        version
            .as_ref()
            .and_then(|v| v.os.clone())
            .unwrap_or_else(|| "unknown OS".into())
    ))
}

/// An engine without its default bridge network (dockerd --bridge=none) cannot give BuildKit's
/// RUN steps the default network; give them none, as the classic builder does there.
async fn run_network(engine: &Engine) -> Option<&'static str> {
    let bridge = engine
        .docker()
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .is_ok();
    (!bridge).then_some("none")
}

/// Credentials for the registries the build pulls from, as `X-Registry-Config`.
async fn build_credentials(
    images: &[ImageRef],
    shell: &Shell,
) -> Result<Option<HashMap<String, DockerCredentials>>> {
    let mut all = HashMap::new();
    for image in images {
        let key = engine::server_address(&image.registry);
        if !all.contains_key(&key)
            && let Some(c) = engine::credentials_for(&image.registry, false, shell).await?
        {
            all.insert(key, c);
        }
    }
    Ok((!all.is_empty()).then_some(all))
}

#[cfg(test)]
mod tests {
    use super::context::{Kind, from_images};
    use super::generated::{dockerfile_quote, generated_dockerfile};
    use super::*;
    use crate::image::{BlobSource, Image};
    use std::fs;
    use std::io::Read;
    use std::path::Path;

    fn listing(context: &BuildContext) -> Listing {
        let outside = context
            .outside_dockerfile
            .as_deref()
            .map(|p| (context.dockerfile_name.as_str(), p));
        list_context(&context.root, &context.ignore, outside, &quiet()).unwrap()
    }

    /// A shell for tests that do not look at what is said.
    fn quiet() -> Shell {
        Shell::capture(crate::shell::Verbosity::Quiet)
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

        let context =
            BuildContext::from_dockerfile(root, &root.join("Dockerfile"), &quiet()).unwrap();
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
        let shell = Shell::capture(crate::shell::Verbosity::Normal);
        let context =
            BuildContext::from_dockerfile(root, &root.join("Dockerfile"), &shell).unwrap();
        assert_eq!(names(&context), ["Dockerfile", "a.txt"]);
        // Said unless -q, to the run's own shell.
        let root = root.canonicalize().unwrap();
        assert_eq!(
            shell.captured(),
            format!(
                "    warning: {} has no .dockerignore: leaving target/ out of the build context (write a .dockerignore to choose what is sent)\n",
                root.display()
            )
        );
        let quiet = quiet();
        BuildContext::from_dockerfile(&root, &root.join("Dockerfile"), &quiet).unwrap();
        assert_eq!(quiet.captured(), "");
    }

    #[test]
    fn dockerfile_outside_the_context_is_added() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "docker/app.Dockerfile", "FROM scratch\n");
        write(dir.path(), "ctx/a.txt", "a");
        let context = BuildContext::from_dockerfile(
            &dir.path().join("ctx"),
            &dir.path().join("docker/app.Dockerfile"),
            &quiet(),
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
        let context =
            BuildContext::from_dockerfile(root, &root.join("Dockerfile"), &quiet()).unwrap();
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
            contents: Default::default(),
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
