//! CLI + cargo metadata → a validated plan: which binary, which image, where it goes.
//! Everything a user can get wrong is checked here, before anything is built or pushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, Package, TargetKind};

use crate::cluster;
use crate::config::{ClusterConfig, ConfigError, Origin, RegistrySetting, Sourced};
use crate::reference::{ImageRef, Registry, RegistryLocation, Repository, Tag};

/// Everything needed to build and push, per package.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
}

/// One image to build and push.
#[derive(Debug, Clone)]
pub struct Target {
    /// What to build: all a builder sees.
    pub build: BuildSpec,
    /// Where it goes: all a publisher sees.
    pub destination: Destination,
    pub registry_options: RegistryOptions,
    /// Which supply-chain documents to attach to the pushed image.
    pub supply_chain: crate::supply_chain::SupplyChainSpec,
    /// `platforms` / `--platform`; empty: the host's platform, one image, no index.
    pub platforms: Vec<crate::platform::Platform>,
}

/// A builder's whole input. It says nothing about where the image will be pushed.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub package: String,
    pub version: String,
    pub manifest_path: PathBuf,
    pub bin: String,
    pub builder: BuilderKind,
    pub image: ImageSpec,
    pub docker: DockerSpec,
    /// Where compressed layers are kept between runs (under cargo's target directory).
    pub layer_cache: PathBuf,
    /// Building for another platform than the host's: set per platform before building.
    pub cross: Option<crate::platform::CrossBuild>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    Oci,
    Docker,
}

impl BuilderKind {
    pub fn name(self) -> &'static str {
        match self {
            BuilderKind::Oci => "oci",
            BuilderKind::Docker => "docker",
        }
    }
}

/// Where the image goes: pushed through `external`, pulled by the cluster through `internal`.
/// The two may name different paths (a pull-through cache or mirror rewrites the path but keeps
/// the digest), so the pull reference is always pinned by digest.
#[derive(Debug, Clone)]
pub struct Destination {
    pub external: Registry,
    pub internal: Registry,
    /// The repository pushed to, under `external` (its path prefix, then the image).
    pub repository: Repository,
    /// The repository the cluster pulls, under `internal` (its path prefix, then the image).
    pub pull_repository: Repository,
    pub tags: Vec<Tag>,
}

impl Destination {
    /// `external/repository`, the name pushes go to.
    pub fn push_name(&self) -> String {
        format!("{}/{}", self.external, self.repository)
    }

    /// `internal/pull_repository`, the name the cluster pulls.
    pub fn pull_name(&self) -> String {
        format!("{}/{}", self.internal, self.pull_repository)
    }
}

/// What goes into the image besides the binary.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub base: Base,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub user: Option<String>,
    pub includes: Vec<Include>,
    /// Seconds since the epoch for file mtimes and `created`: SOURCE_DATE_EPOCH, else 0.
    pub epoch: u64,
    /// Check that the base image can start the binary (`check-base`, default on).
    pub check_base: bool,
    /// Scratch images: add the host's /usr/share/zoneinfo (`tzdata`).
    pub tzdata: bool,
    /// `media-types` / `--media-types`; `None`: OCI, or the base image's family.
    pub media_types: Option<MediaTypes>,
    /// How our layers are compressed (`compression`).
    pub compression: crate::image::compress::Codec,
}

#[derive(Debug, Clone)]
pub enum Base {
    /// No base: the binary and, if dynamically linked, its runtime closure from the host.
    Scratch,
    /// Layers of this image, then ours.
    Image(ImageRef),
}

#[derive(Debug, Clone)]
pub struct Include {
    pub host_path: PathBuf,
    pub image_path: String,
}

/// Settings for the Docker engine builder.
#[derive(Debug, Clone)]
pub struct DockerSpec {
    /// `None` means generate one (the package has no Dockerfile).
    pub dockerfile: Option<PathBuf>,
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub pull: bool,
    pub platform: Option<String>,
    /// Build with BuildKit: `Some(true)` always, `Some(false)` never (classic builder), `None`
    /// when the engine has it.
    pub buildkit: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub insecure: Vec<Registry>,
    pub ca_cert: Option<PathBuf>,
    /// `--retry-attempts` / `--retry-timeout` (seconds); `None`: the client's defaults.
    pub retry_attempts: Option<u32>,
    pub retry_timeout: Option<u64>,
}

/// What the command line asks of the plan, in plain terms: `cli` fills it from its arguments
/// (`resolve` narrows it to one package and binary per reference).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--workspace`: every member.
    pub workspace: bool,
    /// `-p`: package names or specs.
    pub packages: Vec<String>,
    pub bin: Option<String>,
    pub builder: Option<BuilderChoice>,
    pub media_types: Option<MediaTypes>,
    /// `--registry`, `--registry-external`, `--registry-internal`.
    pub registry: Option<String>,
    pub registry_external: Option<String>,
    pub registry_internal: Option<String>,
    /// `--registry-from-cluster`, asking the cluster of `kube_context`.
    pub registry_from_cluster: bool,
    pub kube_context: Option<String>,
    /// No registry is pushed to (`--no-push`, or only registry-less destinations).
    pub registry_less: bool,
    pub ca_cert: Option<PathBuf>,
    pub retry_attempts: Option<u32>,
    pub retry_timeout: Option<u64>,
    /// `--tag`: replaces `tags`.
    pub tags: Vec<String>,
    pub sbom: Option<crate::supply_chain::SbomFormat>,
    pub provenance: Option<bool>,
    pub platforms: Vec<String>,
}

/// Which builder was asked for (`--builder`, `builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderChoice {
    /// The engine builder when the package has a Dockerfile, else the daemonless one.
    Auto,
    Oci,
    Docker,
}

/// Media types of the manifest we push (`--media-types`, `media-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    Docker,
}

/// Builds the plan from the CLI and `cargo metadata`.
pub fn make_plan(
    request: &Request,
    metadata: &Metadata,
    manifest: &Path,
) -> Result<Plan, ConfigError> {
    let packages = select_packages(request, metadata, manifest)?;
    let workspace_manifest = metadata
        .workspace_root
        .join("Cargo.toml")
        .into_std_path_buf();
    let workspace_config = ClusterConfig::from_table(
        &metadata.workspace_metadata["cluster"],
        &Origin::workspace(&workspace_manifest),
    )?;
    let epoch = source_date_epoch()?;
    let mut targets = Vec::new();
    for package in packages {
        let manifest_path = package.manifest_path.clone().into_std_path_buf();
        let package_config = ClusterConfig::from_table(
            &package.metadata["cluster"],
            &Origin::package(&manifest_path),
        )?;
        let config = package_config.merged_over(workspace_config.clone());
        let layer_cache = metadata
            .target_directory
            .join("adapt-push")
            .join("layers")
            .into_std_path_buf();
        targets.push(plan_target(
            request,
            package,
            &config,
            epoch,
            layer_cache,
            metadata.workspace_root.as_std_path(),
        )?);
    }
    Ok(Plan { targets })
}

/// `-p` names packages; otherwise the package whose Cargo.toml was found (cargo's rule).
fn select_packages<'m>(
    request: &Request,
    metadata: &'m Metadata,
    manifest: &Path,
) -> Result<Vec<&'m Package>, ConfigError> {
    let members = metadata.workspace_packages();
    if request.workspace {
        return workspace_members(metadata);
    }
    if !request.packages.is_empty() {
        let mut chosen: Vec<&Package> = Vec::new();
        for spec in &request.packages {
            let (name, version) = match spec.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (spec.as_str(), None),
            };
            match members.iter().find(|p| p.name.as_str() == name) {
                Some(p) if version.is_some_and(|v| v != p.version.to_string()) => {
                    return Err(ConfigError::plain(
                        format!(
                            "-p {spec}: the workspace has `{name}` at version {}",
                            p.version
                        ),
                        None,
                    ));
                }
                Some(p) if chosen.iter().any(|c| c.id == p.id) => {}
                Some(p) => chosen.push(*p),
                None => {
                    let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
                    return Err(ConfigError::plain(
                        format!(
                            "package `{name}` is not a member of the workspace at {}",
                            metadata.workspace_root
                        ),
                        Some(format!("members: {}", names.join(", "))),
                    ));
                }
            }
        }
        if chosen.len() > 1 && request.bin.is_some() {
            return Err(ConfigError::plain(
                "--bin names one binary, but several packages were chosen with -p",
                Some("push one package at a time with --bin, or set `bin` in each package's [package.metadata.cluster]".into()),
            ));
        }
        return Ok(chosen);
    }
    let canonical = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    let here = members.iter().find(|p| {
        p.manifest_path
            .as_std_path()
            .canonicalize()
            .is_ok_and(|m| m == canonical)
    });
    if let Some(p) = here {
        return Ok(vec![*p]);
    }
    // A virtual workspace root: make the user choose, showing the packages that are set up.
    let with_settings: Vec<&str> = members
        .iter()
        .filter(|p| p.metadata.get("cluster").is_some())
        .map(|p| p.name.as_str())
        .collect();
    let help = if with_settings.is_empty() {
        format!(
            "no member has [package.metadata.cluster] yet; members: {}",
            members
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "packages with [package.metadata.cluster]: {}; run e.g. `cargo adapt-push -p {}`",
            with_settings.join(", "),
            with_settings[0]
        )
    };
    Err(ConfigError::plain(
        format!(
            "{} is a virtual workspace manifest: choose a package with -p, or run from inside a member's directory",
            manifest.display()
        ),
        Some(help),
    ))
}

/// `--workspace`: members with cluster settings (their own, or the workspace's) and a binary
/// target, in the workspace's order.
fn workspace_members(metadata: &Metadata) -> Result<Vec<&Package>, ConfigError> {
    let inherited = metadata.workspace_metadata.get("cluster").is_some();
    let members = metadata.workspace_packages();
    let mut chosen: Vec<&Package> = members
        .iter()
        .filter(|p| inherited || p.metadata.get("cluster").is_some())
        .filter(|p| p.targets.iter().any(|t| t.kind.contains(&TargetKind::Bin)))
        .copied()
        .collect();
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    if chosen.is_empty() {
        return Err(ConfigError::plain(
            format!(
                "--workspace: no member of the workspace at {} has cluster settings and a binary target",
                metadata.workspace_root
            ),
            Some("add [package.metadata.cluster] to the members to push, or [workspace.metadata.cluster] to the workspace root".into()),
        ));
    }
    Ok(chosen)
}

fn plan_target(
    request: &Request,
    package: &Package,
    config: &ClusterConfig,
    epoch: u64,
    layer_cache: PathBuf,
    workspace_root: &Path,
) -> Result<Target, ConfigError> {
    let manifest_path = package.manifest_path.clone().into_std_path_buf();
    let package_dir = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let origin = Origin::package(&manifest_path);

    let bin = select_bin(request, package, config, &origin)?;
    let (external, internal) = registry_split(request, config, &origin)?;

    let image_name = match &config.image {
        Some(image) => image.clone(),
        // One binary: the package's name. Several: one repository per binary, so images of
        // different binaries never overwrite each other's tags.
        None => Sourced {
            value: if package.targets.iter().filter(|t| t.is_bin()).count() > 1 {
                format!("{}-{}", package.name, bin).to_ascii_lowercase()
            } else {
                package.name.to_ascii_lowercase()
            },
            origin: origin.clone(),
            key: vec!["image".into()],
        },
    };
    let repository = external.repository(&image_name.value).map_err(|e| {
        let help = Some("set `image` to a lowercase path like \"team/service\"".into());
        if config.image.is_some() {
            image_name.error(e.0, help)
        } else {
            ConfigError::at(
                &origin,
                &[],
                format!(
                    "the package name `{}` is not a valid image name: {}",
                    package.name, e.0
                ),
                help,
            )
        }
    })?;
    // The image path was checked under `external`; under `internal` only the prefix differs.
    let pull_repository = internal.repository(&image_name.value).map_err(|e| {
        ConfigError::plain(
            format!(
                "the image `{}` under the internal address {internal} is not a valid repository: {}",
                image_name.value, e.0
            ),
            None,
        )
    })?;

    let git = GitInfo::read(&package_dir);
    let tags = render_tags(request, config, package, &bin, &git, &origin)?;
    let builder = choose_builder(request, config, &package_dir)?;
    let base = match &config.base {
        None => Base::Scratch,
        Some(b) if b.value == "scratch" => Base::Scratch,
        Some(b) => Base::Image(ImageRef::parse(&b.value).map_err(|e| {
            b.error(
                format!("`{}` is not an image reference: {}", b.value, e.0),
                Some("use \"scratch\" or a reference like \"localhost:5000/base:1\"".into()),
            )
        })?),
    };

    // The tool never contacts `internal`: a base named by the internal address is read through
    // the external one (same registry), which also lets its layers be mounted, not copied.
    let base = match base {
        Base::Image(r) => Base::Image(through_external(r, &external, &internal)),
        other => other,
    };
    if let Some(u) = &config.user
        && (u.value.trim().is_empty() || u.value.contains(char::is_whitespace))
    {
        return Err(u.error(
            "`user` must be a user name or id, optionally with a group: \"65532\", \"app:app\"",
            None,
        ));
    }
    // A scratch image's /etc/passwd and /etc/group know root, nonroot and nobody.
    let known = |part: &str| {
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            || crate::build::scratch::USERS
                .iter()
                .any(|(name, _)| *name == part)
    };
    if let (Base::Scratch, Some(u)) = (&base, &config.user)
        && !u.value.split(':').all(known)
    {
        return Err(u.error(
            format!("`user`: \"{}\" is not in the scratch image's /etc/passwd (it has root, nonroot and nobody)", u.value),
            Some("use \"nonroot\", a numeric id like \"65532\" or \"65532:65532\", or a `base` image that defines the user".into()),
        ));
    }
    let media_types = match (request.media_types, &config.media_types) {
        (Some(m), _) => Some(m),
        (None, Some(m)) => Some(match m.value.as_str() {
            "oci" => MediaTypes::Oci,
            "docker" => MediaTypes::Docker,
            other => {
                return Err(m.error(
                    format!("unknown media types `{other}`"),
                    Some("use \"oci\" or \"docker\"".into()),
                ));
            }
        }),
        (None, None) => None,
    };

    let mut env = Vec::new();
    for (name, value) in &config.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(value.error(
                format!("`{name}` is not a valid environment variable name"),
                None,
            ));
        }
        env.push((name.clone(), value.value.clone()));
    }

    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.title".to_string(),
        package.name.to_string(),
    );
    annotations.insert(
        "org.opencontainers.image.version".to_string(),
        package.version.to_string(),
    );
    if let Some(d) = &package.description {
        annotations.insert(
            "org.opencontainers.image.description".into(),
            d.trim().to_string(),
        );
    }
    if let Some(l) = &package.license {
        annotations.insert("org.opencontainers.image.licenses".into(), l.clone());
    }
    if let Some(r) = &package.repository {
        annotations.insert("org.opencontainers.image.source".into(), r.clone());
    }
    if let Some(sha) = &git.sha {
        annotations.insert("org.opencontainers.image.revision".into(), sha.clone());
    }
    // Annotations double as labels so `docker inspect` shows them; the user's labels win.
    let mut labels = annotations.clone();
    for (k, v) in &config.labels {
        if k.trim().is_empty() {
            return Err(v.error("a label needs a non-empty name", None));
        }
        labels.insert(k.clone(), v.value.clone());
    }

    let user = config.user.as_ref().map(|u| u.value.clone());

    let mut includes = Vec::new();
    if let Some(inc) = &config.include {
        for item in &inc.value {
            // A symlink named in `include` is followed, as `COPY` does; links inside a
            // directory stay links.
            let host_path = inc.origin.resolve(&item.from);
            let host_path = host_path.canonicalize().map_err(|e| {
                inc.error(
                    match e.kind() {
                        std::io::ErrorKind::NotFound => format!(
                            "`{}` does not exist (looked for {})",
                            item.from,
                            host_path.display()
                        ),
                        _ => format!("`{}` cannot be read: {e}", item.from),
                    },
                    Some(
                        "paths in `include` are relative to the Cargo.toml that names them".into(),
                    ),
                )
            })?;
            let components: Vec<&str> = item
                .to
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            if !item.to.starts_with('/') || components.contains(&"..") || components.is_empty() {
                return Err(inc.error(
                    format!(
                        "`{}` would land at `{}` in the image; the path there must be absolute, below `/`, without `..`",
                        item.from, item.to
                    ),
                    Some("write it as { from = \"assets\", to = \"/srv/assets\" }".into()),
                ));
            }
            // `to` ending in `/` means "into this directory", as with COPY.
            let image_path = match host_path.file_name() {
                Some(name) if item.to.ends_with('/') && host_path.is_file() => {
                    format!("{}{}", item.to, name.to_string_lossy())
                }
                _ => item.to.clone(),
            };
            warn_about_include(&item.from, &host_path, &[&package_dir, workspace_root]);
            includes.push(Include {
                host_path,
                image_path,
            });
        }
    }

    let mut insecure = Vec::new();
    if let Some(list) = &config.insecure {
        for entry in &list.value {
            insecure.push(
                Registry::parse(entry)
                    .map_err(|e| list.error(e.0, None))?
                    .without_scheme(),
            );
        }
    }
    // Plain HTTP only to loopback or to a registry listed in `insecure`: refused here, before
    // anything is built or sent (the registry client checks again).
    let registry = &external.registry;
    if registry.scheme() == Some(crate::reference::Scheme::Http)
        && !registry.is_loopback()
        && !insecure.contains(&registry.without_scheme())
    {
        let plain = registry.without_scheme();
        let message = format!(
            "{registry} is plain HTTP to a host that is not loopback; refusing to talk to it"
        );
        let help = Some(format!(
            "if {plain} really serves plain HTTP, add `insecure = [\"{plain}\"]` to [package.metadata.cluster] (credentials are never sent over plain HTTP); otherwise use https://"
        ));
        let from_flags = request.registry.is_some() || request.registry_external.is_some();
        return Err(match &config.registry {
            Some(r) if !from_flags => r.error(message, help),
            _ => ConfigError::plain(message, help),
        });
    }
    let ca_cert = match (&request.ca_cert, &config.ca_cert) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(c)) => Some(c.origin.resolve(&c.value)),
        (None, None) => None,
    };
    if let Some(path) = &ca_cert
        && !path.is_file()
    {
        let message = format!("the CA certificate {} does not exist", path.display());
        return Err(match (&request.ca_cert, &config.ca_cert) {
            (None, Some(c)) => c.error(message, None),
            _ => ConfigError::plain(format!("--ca-cert: {message}"), None),
        });
    }

    let docker = docker_spec(config, &package_dir)?;
    let supply_chain = crate::supply_chain::plan_spec(request, config)?;
    let platforms = crate::platform::plan_platforms(request, config, builder)?;
    let compression = match &config.compression {
        None => crate::image::compress::Codec::Gzip,
        Some(c) => match c.value.as_str() {
            "gzip" => crate::image::compress::Codec::Gzip,
            "zstd" => crate::image::compress::Codec::Zstd,
            other => {
                return Err(c.error(
                    format!("compression `{other}` is not one we write"),
                    Some("use \"gzip\" (the default, every runtime reads it) or \"zstd\" (containerd 1.5+, CRI-O, podman)".into()),
                ));
            }
        },
    };

    Ok(Target {
        build: BuildSpec {
            package: package.name.to_string(),
            version: package.version.to_string(),
            manifest_path,
            bin,
            builder,
            image: ImageSpec {
                base,
                env,
                labels,
                annotations,
                user,
                includes,
                epoch,
                check_base: config.check_base.as_ref().is_none_or(|c| c.value),
                tzdata: config.tzdata.as_ref().is_some_and(|t| t.value),
                media_types,
                compression,
            },
            docker,
            layer_cache,
            cross: None,
        },
        destination: Destination {
            external: external.registry,
            internal: internal.registry,
            repository,
            pull_repository,
            tags,
        },
        registry_options: RegistryOptions {
            insecure,
            ca_cert,
            retry_attempts: request.retry_attempts,
            retry_timeout: request.retry_timeout,
        },
        supply_chain,
        platforms,
    })
}

/// Warns about an `include` source that resolves (through a symlink named in `include`)
/// outside the package's directory and the workspace root, and about files in it that other
/// users of the host cannot read: in the image they become readable by every user.
fn warn_about_include(from: &str, resolved: &Path, roots: &[&Path]) {
    let inside = roots.iter().any(|root| {
        let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        resolved.starts_with(root)
    });
    if !inside {
        crate::output::warn(&format!(
            "`include` entry `{from}` resolves to {}, outside the package's directory and the workspace root; it goes into the image",
            resolved.display()
        ));
    }
    let mut private = Vec::new();
    find_private(resolved, &mut private, 10_000);
    if let Some(first) = private.first() {
        crate::output::warn(&format!(
            "`include` entry `{from}`: {}{} not readable by every user on this host, but becomes world-readable in the image",
            first.display(),
            match private.len() {
                1 => " is".to_string(),
                n => format!(" and {} more are", n - 1),
            }
        ));
    }
}

/// Files and directories under `path` (itself included; links not followed below it) without
/// the world-read bit, at most `budget` entries looked at.
fn find_private(path: &Path, found: &mut Vec<PathBuf>, budget: usize) -> usize {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return budget;
        };
        if meta.file_type().is_symlink() || budget == 0 {
            return budget.saturating_sub(1);
        }
        if meta.permissions().mode() & 0o004 == 0 {
            found.push(path.to_path_buf());
        }
        let mut budget = budget - 1;
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(path)
        {
            let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            children.sort();
            for child in children {
                budget = find_private(&child, found, budget);
            }
        }
        budget
    }
    #[cfg(not(unix))]
    {
        let _ = (path, found);
        budget
    }
}

/// A base image named under the internal address (and its path prefix), read through the
/// external one instead; any other reference is left as written.
fn through_external(
    reference: ImageRef,
    external: &RegistryLocation,
    internal: &RegistryLocation,
) -> ImageRef {
    if reference.registry.without_scheme() != internal.registry.without_scheme()
        || external.registry == internal.registry
    {
        return reference;
    }
    let path = reference.repository.as_str();
    let rest = match &internal.namespace {
        None => Some(path),
        Some(ns) => path
            .strip_prefix(ns.as_str())
            .and_then(|r| r.strip_prefix('/')),
    };
    let rewritten = rest.and_then(|rest| match &external.namespace {
        None => Repository::parse(rest).ok(),
        Some(ns) => Repository::parse(&format!("{ns}/{rest}")).ok(),
    });
    match rewritten {
        Some(repository) => ImageRef {
            registry: external.registry.clone(),
            repository,
            ..reference
        },
        None => reference,
    }
}

fn select_bin(
    request: &Request,
    package: &Package,
    config: &ClusterConfig,
    origin: &Origin,
) -> Result<String, ConfigError> {
    let bins: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect();
    if bins.is_empty() {
        return Err(ConfigError::at(
            origin,
            &[],
            format!(
                "package `{}` has no binary target to put in an image",
                package.name
            ),
            Some("add src/main.rs or a [[bin]] target".into()),
        ));
    }
    let requested = match (&request.bin, &config.bin) {
        (Some(b), _) => Some((b.clone(), None)),
        (None, Some(b)) => Some((b.value.clone(), Some(b))),
        (None, None) => None,
    };
    match requested {
        Some((name, sourced)) => {
            if bins.contains(&name.as_str()) {
                Ok(name)
            } else {
                let message = format!(
                    "package `{}` has no binary named `{name}`; it has: {}",
                    package.name,
                    bins.join(", ")
                );
                Err(match sourced {
                    Some(s) => s.error(message, None),
                    None => ConfigError::plain(format!("--bin: {message}"), None),
                })
            }
        }
        None if bins.len() == 1 => Ok(bins[0].to_string()),
        None => match &package.default_run {
            Some(d) => Ok(d.clone()),
            None => Err(ConfigError::at(
                origin,
                &[],
                format!(
                    "package `{}` has several binaries ({}); say which one goes in the image",
                    package.name,
                    bins.join(", ")
                ),
                Some(format!(
                    "set bin = \"{}\" in [package.metadata.cluster], or pass --bin",
                    bins[0]
                )),
            )),
        },
    }
}

/// CLI flags over config: `--registry` sets both sides, `--registry-external/-internal` one side.
fn registry_split(
    request: &Request,
    config: &ClusterConfig,
    origin: &Origin,
) -> Result<(RegistryLocation, RegistryLocation), ConfigError> {
    let parse_flag = |flag: &str, value: &str| {
        RegistryLocation::parse_destination(value)
            .map_err(|e| ConfigError::plain(format!("{flag}: {}", e.0), None))
    };
    let (mut external, mut internal) = match (&request.registry, &config.registry) {
        (Some(r), _) => {
            let loc = parse_flag("--registry (or ADAPT_PUSH_REGISTRY)", r)?;
            (Some(loc.clone()), Some(loc))
        }
        (None, _) if request.registry_from_cluster => {
            let source = cluster::Source::Cluster {
                context: request.kube_context.clone(),
            };
            let hosting = cluster::Lookups::global().get(&source).map_err(|e| {
                ConfigError::plain(format!("--registry-from-cluster: {e}"), Some(e.help()))
            })?;
            let side = |value: &str| {
                parse_flag(
                    &format!("--registry-from-cluster: the cluster's {}", cluster::KEY),
                    value,
                )
            };
            (
                Some(side(&hosting.external)?),
                Some(side(&hosting.internal)?),
            )
        }
        (None, Some(setting))
            if matches!(setting.value, RegistrySetting::LocalRegistryHosting(_)) =>
        {
            let RegistrySetting::LocalRegistryHosting(from) = &setting.value else {
                unreachable!("matched above")
            };
            let source = if from == "cluster" {
                cluster::Source::Cluster {
                    context: request.kube_context.clone(),
                }
            } else {
                cluster::Source::File(setting.origin.resolve(from))
            };
            let hosting = cluster::Lookups::global()
                .get(&source)
                .map_err(|e| setting.error(e.to_string(), Some(e.help())))?;
            let side = |value: &str| {
                RegistryLocation::parse_destination(value).map_err(|e| {
                    setting.error(
                        format!("the address {}'s {} gives: {}", from, cluster::KEY, e.0),
                        None,
                    )
                })
            };
            (
                Some(side(&hosting.external)?),
                Some(side(&hosting.internal)?),
            )
        }
        (None, Some(setting)) => {
            let parse_side = |side: &str, value: &str| {
                RegistryLocation::parse_destination(value).map_err(|e| {
                    let mut s = setting.clone();
                    if side != "registry" {
                        s.key.push(side.to_string());
                    }
                    s.error(e.0, None)
                })
            };
            match &setting.value {
                RegistrySetting::Same(s) => {
                    let loc = parse_side("registry", s)?;
                    (Some(loc.clone()), Some(loc))
                }
                RegistrySetting::Split { external, internal } => (
                    Some(parse_side("external", external)?),
                    Some(parse_side("internal", internal)?),
                ),
                RegistrySetting::LocalRegistryHosting(_) => (None, None),
            }
        }
        (None, None) => (None, None),
    };
    if let Some(e) = &request.registry_external {
        external = Some(parse_flag(
            "--registry-external (or ADAPT_PUSH_REGISTRY_EXTERNAL)",
            e,
        )?);
    }
    if let Some(i) = &request.registry_internal {
        internal = Some(parse_flag(
            "--registry-internal (or ADAPT_PUSH_REGISTRY_INTERNAL)",
            i,
        )?);
    }
    match (external, internal) {
        (Some(e), Some(i)) => Ok((e, i)),
        (Some(e), None) => Ok((e.clone(), e)),
        (None, Some(_)) => Err(ConfigError::plain(
            "--registry-internal is set but there is no external address to push through",
            Some("set --registry-external, or `registry` in [package.metadata.cluster]".into()),
        )),
        // Nothing goes to a registry: the image is named as Docker names an unqualified one.
        (None, None) if request.registry_less => {
            let hub = RegistryLocation {
                registry: Registry::docker_hub(),
                namespace: None,
            };
            Ok((hub.clone(), hub))
        }
        (None, None) => Err(ConfigError::at(
            origin,
            &[],
            "no registry to push to",
            Some(
                "add registry = { external = \"localhost:5001\", internal = \"registry:5000\" } (or registry = \"host:port\") to [package.metadata.cluster], or pass --registry"
                    .into(),
            ),
        )),
    }
}

fn choose_builder(
    request: &Request,
    config: &ClusterConfig,
    package_dir: &Path,
) -> Result<BuilderKind, ConfigError> {
    let choice = match (request.builder, &config.builder) {
        (Some(b), _) => b,
        (None, Some(b)) => match b.value.as_str() {
            "auto" => BuilderChoice::Auto,
            "oci" => BuilderChoice::Oci,
            "docker" => BuilderChoice::Docker,
            other => {
                return Err(b.error(
                    format!("unknown builder `{other}`"),
                    Some("use \"auto\", \"oci\" or \"docker\"".into()),
                ));
            }
        },
        (None, None) => BuilderChoice::Auto,
    };
    Ok(match choice {
        BuilderChoice::Oci => BuilderKind::Oci,
        BuilderChoice::Docker => BuilderKind::Docker,
        BuilderChoice::Auto => {
            let has_dockerfile = match &config.dockerfile {
                Some(d) => d.origin.resolve(&d.value).is_file(),
                None => package_dir.join("Dockerfile").is_file(),
            };
            if has_dockerfile {
                BuilderKind::Docker
            } else {
                BuilderKind::Oci
            }
        }
    })
}

fn docker_spec(config: &ClusterConfig, package_dir: &Path) -> Result<DockerSpec, ConfigError> {
    let dockerfile = match &config.dockerfile {
        Some(d) => {
            let path = d.origin.resolve(&d.value);
            if !path.is_file() {
                return Err(d.error(
                    format!("the Dockerfile {} does not exist", path.display()),
                    None,
                ));
            }
            Some(path)
        }
        None => Some(package_dir.join("Dockerfile")).filter(|p| p.is_file()),
    };
    let context = match &config.context {
        Some(c) => {
            let path = c.origin.resolve(&c.value);
            if !path.is_dir() {
                return Err(c.error(
                    format!("the build context {} is not a directory", path.display()),
                    None,
                ));
            }
            path
        }
        None => package_dir.to_path_buf(),
    };
    if let Some(p) = &config.platform
        && !p.value.starts_with("linux/")
    {
        return Err(p.error(
            format!("platform `{}` is not a Linux platform", p.value),
            Some("use e.g. \"linux/amd64\"".into()),
        ));
    }
    Ok(DockerSpec {
        dockerfile,
        context,
        build_args: config
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        target: config.target.as_ref().map(|t| t.value.clone()),
        pull: config.pull.as_ref().is_some_and(|p| p.value),
        platform: config.platform.as_ref().map(|p| p.value.clone()),
        buildkit: config.buildkit.as_ref().and_then(|b| b.value),
    })
}

/// The commit the package's source is at, for `{git_sha}` tags and the revision annotation.
#[derive(Debug, Default)]
struct GitInfo {
    sha: Option<String>,
    /// Why there is no sha, when git said something other than "not a repository".
    problem: Option<String>,
}

impl GitInfo {
    fn read(dir: &Path) -> GitInfo {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--verify", "-q", "HEAD"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let sha = String::from_utf8_lossy(&o.stdout).trim().to_string();
                GitInfo {
                    sha: (!sha.is_empty()).then_some(sha),
                    problem: None,
                }
            }
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
                let problem = (!stderr.is_empty() && !stderr.contains("not a git repository"))
                    .then(|| format!("git says: {stderr}"));
                GitInfo { sha: None, problem }
            }
            Err(e) => GitInfo {
                sha: None,
                problem: Some(format!("git could not be run: {e}")),
            },
        }
    }
}

fn render_tags(
    request: &Request,
    config: &ClusterConfig,
    package: &Package,
    bin: &str,
    git: &GitInfo,
    origin: &Origin,
) -> Result<Vec<Tag>, ConfigError> {
    let (templates, sourced): (Vec<String>, Option<&Sourced<Vec<String>>>) =
        if !request.tags.is_empty() {
            (request.tags.clone(), None)
        } else if let Some(t) = &config.tags {
            (t.value.clone(), Some(t))
        } else {
            (vec!["latest".into()], None)
        };
    let fail = |message: String, help: Option<String>| match sourced {
        Some(s) => s.error(message, help),
        None if !request.tags.is_empty() => {
            ConfigError::plain(format!("--tag (or ADAPT_PUSH_TAGS): {message}"), help)
        }
        None => ConfigError::at(origin, &[], message, help),
    };
    if templates.is_empty() {
        return Err(fail(
            "`tags` is empty; at least one tag is needed".into(),
            Some("tags = [\"latest\"]".into()),
        ));
    }
    let mut tags: Vec<Tag> = Vec::new();
    for template in &templates {
        let rendered = render_template(template, package, bin, git).map_err(|m| fail(m, None))?;
        // `+build` metadata is legal in versions but not in tags; Helm uses `_` the same way.
        let rendered = rendered.replace('+', "_");
        let tag = Tag::parse(&rendered).map_err(|e| {
            fail(
                format!(
                    "`{template}` gives the tag `{rendered}`, which is not valid: {}",
                    e.0
                ),
                None,
            )
        })?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

fn render_template(
    template: &str,
    package: &Package,
    bin: &str,
    git: &GitInfo,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{template}` has a `{{` that is never closed"));
        };
        let name = &after[..end];
        let need_git = || {
            git.sha.clone().ok_or_else(|| match &git.problem {
                Some(problem) => {
                    format!("`{{{name}}}` in `{template}` needs the git commit, but {problem}")
                }
                None => format!(
                    "`{{{name}}}` in `{template}` needs a git checkout, and {} is not in one",
                    package.manifest_path
                ),
            })
        };
        let value = match name {
            "version" => package.version.to_string(),
            "package" => package.name.to_string(),
            "bin" => bin.to_string(),
            "git_sha" => need_git()?,
            "git_short_sha" => need_git()?.chars().take(7).collect(),
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` in `{template}`; known: {{version}}, {{package}}, {{bin}}, {{git_sha}}, {{git_short_sha}}"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else the Unix epoch.
fn source_date_epoch() -> Result<u64, ConfigError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(s) if s.is_empty() => Ok(0),
        // Beyond year 9999 `created` could not be written as RFC 3339.
        Ok(s) => s.trim().parse::<u64>().ok().filter(|n| *n <= 253_402_300_799).ok_or_else(|| {
            ConfigError::plain(
                format!("SOURCE_DATE_EPOCH=`{s}` is not a whole number of seconds since 1970 (up to year 9999)"),
                Some("unset it, or set it to e.g. `git log -1 --format=%ct`".into()),
            )
        }),
    }
}
