//! One package's target: its cluster settings checked and turned into what to build and
//! where it goes (`plan_target`), and base images read through the external address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::Package;

use super::facts::{Facts, GitInfo};
use super::include::plan_includes;
use super::platforms::plan_platforms;
use super::supply_chain::plan_supply_chain;
use super::{
    Request, Target, builder::choose_builder, builder::docker_spec, registry::registry_split,
    select::select_bins, tags::render_tags,
};
use crate::config::{ClusterConfig, ConfigError, Origin, Sourced};
use crate::reference::{ImageRef, Registry, RegistryLocation, Repository};
use crate::spec::{Base, BuildSpec, Destination, ImageSpec, MediaTypes, RegistryOptions};

/// One package's targets: one per binary it puts in an image. `several_packages`: the run chose
/// more than one package, so `--bin`s missing from this one belong to another.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_targets(
    request: &Request,
    package: &Package,
    config: &ClusterConfig,
    several_packages: bool,
    epoch: u64,
    layer_cache: PathBuf,
    workspace_root: &Path,
    facts: &dyn Facts,
) -> Result<Vec<Target>, ConfigError> {
    let manifest_path = package.manifest_path.clone().into_std_path_buf();
    let origin = Origin::package(&manifest_path);
    let bins = select_bins(request, package, config, &origin, several_packages)?;
    // Several images under one fixed name would overwrite each other's tags.
    if let Some(image) = &config.image
        && bins.len() > 1
        && !image.value.contains("{bin}")
    {
        return Err(image.error(
            format!(
                "\"{}\" is one name for the {} binaries of package `{}` ({}); each needs its own image",
                image.value,
                bins.len(),
                package.name,
                bins.join(", ")
            ),
            Some(format!(
                "put {{bin}} in it, e.g. image = \"{}-{{bin}}\", or choose one binary with --bin",
                image.value
            )),
        ));
    }
    bins.iter()
        .map(|bin| {
            plan_target(
                request,
                package,
                config,
                bin,
                epoch,
                layer_cache.clone(),
                workspace_root,
                facts,
            )
        })
        .collect()
}

/// The target of one binary of `package`.
#[allow(clippy::too_many_arguments)]
fn plan_target(
    request: &Request,
    package: &Package,
    config: &ClusterConfig,
    bin: &str,
    epoch: u64,
    layer_cache: PathBuf,
    workspace_root: &Path,
    facts: &dyn Facts,
) -> Result<Target, ConfigError> {
    let manifest_path = package.manifest_path.clone().into_std_path_buf();
    let package_dir = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let origin = Origin::package(&manifest_path);

    let bin = bin.to_string();
    let (external, internal) = registry_split(request, config, &origin, facts)?;
    let (repository, pull_repository) =
        repositories(package, config, &bin, &origin, &external, &internal)?;
    let git = facts.git(&package_dir);
    let tags = render_tags(request, config, package, &bin, &git, &origin)?;
    let builder = choose_builder(request, config, &package_dir)?;
    let base = plan_base(config, &external, &internal)?;
    check_user(config, &base)?;
    let media_types = plan_media_types(request, config)?;
    let env = plan_env(config)?;
    let annotations = annotations(package, &git);
    let labels = labels(config, &annotations)?;
    let user = plan_user(config, &base);
    let mut warnings = Vec::new();
    let includes = plan_includes(config, &[&package_dir, workspace_root], &mut warnings)?;
    let registry_options = plan_registry_options(request, config, &external.registry)?;
    let docker = docker_spec(config, &package_dir)?;
    let supply_chain = plan_supply_chain(request, config)?;
    let platforms = plan_platforms(request, config, builder)?;
    let compression = plan_compression(config)?;

    Ok(Target {
        build: BuildSpec {
            package_id: package.id.clone(),
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
        registry_options,
        supply_chain,
        platforms,
        warnings,
    })
}

/// The image's repository under the external address and under the internal one: `image` (with
/// `{package}` and `{bin}` filled in), else [`default_image_name`].
fn repositories(
    package: &Package,
    config: &ClusterConfig,
    bin: &str,
    origin: &Origin,
    external: &RegistryLocation,
    internal: &RegistryLocation,
) -> Result<(Repository, Repository), ConfigError> {
    let image_name = match &config.image {
        Some(image) => Sourced {
            value: render_image(&image.value, package.name.as_str(), bin)
                .map_err(|message| image.error(message, None))?,
            ..image.clone()
        },
        None => Sourced {
            value: default_image_name(package, bin),
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
                origin,
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
    Ok((repository, pull_repository))
}

/// The image name when `image` is not set. A package with one binary: the package's name. With
/// several, one repository per binary (so their tags never overwrite each other's): the
/// binary's name when it is the package's or starts with `<package>-` (mini-redis's
/// `mini-redis-server`), else `<package>-<binary>`. Lowercased, as repositories must be.
pub(super) fn default_image_name(package: &Package, bin: &str) -> String {
    let package_name = package.name.as_str();
    let several = package.targets.iter().filter(|t| t.is_bin()).count() > 1;
    let name = if !several {
        package_name.to_string()
    } else if bin == package_name || bin.starts_with(&format!("{package_name}-")) {
        bin.to_string()
    } else {
        format!("{package_name}-{bin}")
    };
    name.to_ascii_lowercase()
}

/// `image` with `{package}` and `{bin}` replaced by the (lowercased) names.
fn render_image(template: &str, package: &str, bin: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{template}` has a `{{` that is never closed"));
        };
        match &after[..end] {
            "package" => out.push_str(&package.to_ascii_lowercase()),
            "bin" => out.push_str(&bin.to_ascii_lowercase()),
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` in `{template}`; `image` knows {{package}} and {{bin}}"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `base`: scratch, or an image read through the external address.
fn plan_base(
    config: &ClusterConfig,
    external: &RegistryLocation,
    internal: &RegistryLocation,
) -> Result<Base, ConfigError> {
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
        Base::Image(r) => Base::Image(through_external(r, external, internal)),
        other => other,
    };
    Ok(base)
}

/// The image's user: `user`; unset on scratch, nonroot by number (Kubernetes' `runAsNonRoot`
/// can only verify a numeric user); unset on a base, the base's. `user = "root"` on scratch is
/// no user at all, the image earlier releases made by default.
fn plan_user(config: &ClusterConfig, base: &Base) -> Option<String> {
    match (&config.user, base) {
        (Some(u), Base::Scratch) if u.value == "root" => None,
        (Some(u), _) => Some(u.value.clone()),
        (None, Base::Scratch) => Some(DEFAULT_SCRATCH_USER.to_string()),
        (None, Base::Image(_)) => None,
    }
}

/// nonroot in the scratch image's /etc/passwd, as ko's and distroless' images run.
const DEFAULT_SCRATCH_USER: &str = "65532:65532";

/// `user` is one word; on scratch, one the scratch image's /etc/passwd knows.
fn check_user(config: &ClusterConfig, base: &Base) -> Result<(), ConfigError> {
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
            || crate::image::scratch::USERS
                .iter()
                .any(|(name, _)| *name == part)
    };
    if let (Base::Scratch, Some(u)) = (base, &config.user)
        && !u.value.split(':').all(known)
    {
        return Err(u.error(
            format!("`user`: \"{}\" is not in the scratch image's /etc/passwd (it has root, nonroot and nobody)", u.value),
            Some("use \"nonroot\", a numeric id like \"65532\" or \"65532:65532\", or a `base` image that defines the user".into()),
        ));
    }
    Ok(())
}

/// `--media-types` over `media-types`.
fn plan_media_types(
    request: &Request,
    config: &ClusterConfig,
) -> Result<Option<MediaTypes>, ConfigError> {
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
    Ok(media_types)
}

/// `env`, with names the runtime accepts.
fn plan_env(config: &ClusterConfig) -> Result<Vec<(String, String)>, ConfigError> {
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
    Ok(env)
}

/// The OCI annotations the package's metadata and its git commit give.
fn annotations(package: &Package, git: &GitInfo) -> BTreeMap<String, String> {
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
    annotations
}

/// The annotations as labels, with the user's `labels` over them.
fn labels(
    config: &ClusterConfig,
    annotations: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    // Annotations double as labels so `docker inspect` shows them; the user's labels win.
    let mut labels = annotations.clone();
    for (k, v) in &config.labels {
        if k.trim().is_empty() {
            return Err(v.error("a label needs a non-empty name", None));
        }
        labels.insert(k.clone(), v.value.clone());
    }
    Ok(labels)
}

/// How to speak to the registry: `insecure`, `ca_cert`, retries; plain HTTP is checked here.
fn plan_registry_options(
    request: &Request,
    config: &ClusterConfig,
    registry: &Registry,
) -> Result<RegistryOptions, ConfigError> {
    let insecure = plan_insecure(config)?;
    check_plain_http(request, config, registry, &insecure)?;
    let ca_cert = plan_ca_cert(request, config)?;
    Ok(RegistryOptions {
        insecure,
        ca_cert,
        retry_attempts: request.retry_attempts,
        retry_timeout: request.retry_timeout,
    })
}

/// `insecure`: registries that may be spoken to over plain HTTP.
fn plan_insecure(config: &ClusterConfig) -> Result<Vec<Registry>, ConfigError> {
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
    Ok(insecure)
}

/// Plain HTTP only to loopback or to a registry listed in `insecure`.
fn check_plain_http(
    request: &Request,
    config: &ClusterConfig,
    registry: &Registry,
    insecure: &[Registry],
) -> Result<(), ConfigError> {
    // Plain HTTP only to loopback or to a registry listed in `insecure`: refused here, before
    // anything is built or sent (the registry client checks again).
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
    Ok(())
}

/// `--ca-cert` over `ca-cert`, which must exist.
fn plan_ca_cert(request: &Request, config: &ClusterConfig) -> Result<Option<PathBuf>, ConfigError> {
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
    Ok(ca_cert)
}

/// `compression`: gzip (the default) or zstd.
fn plan_compression(config: &ClusterConfig) -> Result<crate::spec::Codec, ConfigError> {
    let compression = match &config.compression {
        None => crate::spec::Codec::Gzip,
        Some(c) => match c.value.as_str() {
            "gzip" => crate::spec::Codec::Gzip,
            "zstd" => crate::spec::Codec::Zstd,
            other => {
                return Err(c.error(
                    format!("compression `{other}` is not one we write"),
                    Some("use \"gzip\" (the default, every runtime reads it) or \"zstd\" (containerd 1.5+, CRI-O, podman)".into()),
                ));
            }
        },
    };
    Ok(compression)
}

/// A base image named under the internal address (and its path prefix), read through the
/// external one instead; any other reference is left as written.
pub(super) fn through_external(
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{FakeFacts, Member, Workspace, member};
    use super::*;

    /// The target of `package`, whose settings get `registry = "localhost:5000"` unless they
    /// name one.
    fn target_of(package: Member, facts: &FakeFacts) -> Result<Target, String> {
        Workspace::single(package).target(&Request::default(), facts)
    }

    fn target(cluster: Value) -> Result<Target, String> {
        let mut cluster = cluster;
        if cluster.get("registry").is_none() {
            cluster["registry"] = json!("localhost:5000");
        }
        target_of(member("app", cluster), &FakeFacts::default())
    }

    #[test]
    fn the_image_is_named_after_the_package_and_with_several_binaries_the_binary() {
        let repository = |package: Member| {
            target_of(package, &FakeFacts::default()).map(|t| t.destination.repository.to_string())
        };
        let registry = || json!({ "registry": "localhost:5000/team" });
        assert_eq!(repository(member("app", registry())).unwrap(), "team/app");
        assert_eq!(
            repository(
                member("app", registry())
                    .bins(&["Server", "cli"])
                    .default_run("Server")
            )
            .unwrap(),
            "team/app-server"
        );
        // Several binaries: the binary's name when it is the package's or starts with
        // `<package>-`, else `<package>-<bin>`.
        let several = |bin: &'static str| {
            repository(
                member("mini-redis", registry())
                    .bins(&[
                        "mini-redis-server",
                        "mini-redis-cli",
                        "mini-redis",
                        "tool",
                        "mini-redisx",
                    ])
                    .default_run(bin),
            )
            .unwrap()
        };
        assert_eq!(several("mini-redis-server"), "team/mini-redis-server");
        assert_eq!(several("mini-redis"), "team/mini-redis");
        assert_eq!(several("tool"), "team/mini-redis-tool");
        assert_eq!(several("mini-redisx"), "team/mini-redis-mini-redisx");
        // One binary: the package's name, whatever the binary is called.
        assert_eq!(
            repository(member("app", registry()).bins(&["server"])).unwrap(),
            "team/app"
        );
        let named = json!({ "registry": "localhost:5000/team", "image": "platform/greeter" });
        assert_eq!(
            repository(member("app", named)).unwrap(),
            "team/platform/greeter"
        );
        let said = target(json!({ "image": "Platform/Greeter" })).unwrap_err();
        assert!(
            said.contains("[package.metadata.cluster] `image`: ")
                && said.ends_with("help: set `image` to a lowercase path like \"team/service\""),
            "{said}"
        );
    }

    #[test]
    fn several_binaries_are_one_target_each_and_a_fixed_image_name_is_refused() {
        let plan = |cluster: Value, request: Request| {
            Workspace::single(member("app", cluster).bins(&["server", "cli", "admin"]))
                .plan(&request, &FakeFacts::default())
                .map(|p| {
                    p.targets
                        .iter()
                        .map(|t| format!("{} {}", t.build.bin, t.destination.repository))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| super::super::testing::said(&e))
        };
        let flags = |bins: &[&str]| Request {
            bins: bins.iter().map(|b| b.to_string()).collect(),
            ..Request::default()
        };
        let registry = json!({ "registry": "localhost:5000" });
        assert_eq!(
            plan(registry.clone(), flags(&["server", "cli"])).unwrap(),
            ["server app-server", "cli app-cli"]
        );
        assert_eq!(
            plan(
                json!({ "registry": "localhost:5000", "bins": ["admin", "cli"] }),
                Request::default()
            )
            .unwrap(),
            ["admin app-admin", "cli app-cli"]
        );
        // `image` with {bin} (and {package}) names each binary's image.
        assert_eq!(
            plan(
                json!({ "registry": "localhost:5000", "image": "team/{package}/{bin}" }),
                flags(&["server", "cli"])
            )
            .unwrap(),
            ["server team/app/server", "cli team/app/cli"]
        );
        // Without it, one name for several images is refused, naming the key.
        let said = plan(
            json!({ "registry": "localhost:5000", "image": "team/app" }),
            flags(&["server", "cli"]),
        )
        .unwrap_err();
        assert!(
            said.contains("[package.metadata.cluster] `image`: \"team/app\" is one name for the 2 binaries of package `app` (server, cli); each needs its own image")
                && said.ends_with("help: put {bin} in it, e.g. image = \"team/app-{bin}\", or choose one binary with --bin"),
            "{said}"
        );
        // One binary: a fixed name is fine.
        assert_eq!(
            plan(
                json!({ "registry": "localhost:5000", "image": "team/app" }),
                flags(&["cli"])
            )
            .unwrap(),
            ["cli team/app"]
        );
        let said = plan(
            json!({ "registry": "localhost:5000", "image": "team/{version}" }),
            flags(&["cli"]),
        )
        .unwrap_err();
        assert!(
            said.contains("[package.metadata.cluster]: unknown placeholder `{version}` in `team/{version}`; `image` knows {package} and {bin}"),
            "{said}"
        );
        // `bin` and `bins` in one table: an error naming both.
        let said = plan(
            json!({ "registry": "localhost:5000", "bin": "cli", "bins": ["cli"] }),
            Request::default(),
        )
        .unwrap_err();
        assert!(
            said.contains("[package.metadata.cluster]: `bin` and `bins` are both set; they name the same thing"),
            "{said}"
        );
    }

    #[test]
    fn a_member_s_bin_replaces_the_workspace_s_bins() {
        let ws = Workspace::members(
            json!({ "registry": "localhost:5000", "bins": ["server", "cli"] }),
            vec![
                member("api", json!({ "bin": "cli" })).bins(&["server", "cli"]),
                member("web", json!({})).bins(&["server", "cli"]),
            ],
        );
        let request = Request {
            workspace: true,
            ..Request::default()
        };
        let plan = ws.plan(&request, &FakeFacts::default()).unwrap();
        let images: Vec<String> = plan
            .targets
            .iter()
            .map(|t| t.destination.repository.to_string())
            .collect();
        assert_eq!(images, ["api-cli", "web-server", "web-cli"]);
    }

    #[test]
    fn a_base_under_the_internal_address_is_read_through_the_external_one() {
        let external = RegistryLocation::parse_destination("localhost:5001/ext").unwrap();
        let internal = RegistryLocation::parse_destination("registry:5000/int").unwrap();
        let read_as = |base: &str| {
            through_external(ImageRef::parse(base).unwrap(), &external, &internal).to_string()
        };
        assert_eq!(
            read_as("registry:5000/int/base:1"),
            "localhost:5001/ext/base:1"
        );
        assert_eq!(
            read_as(
                "registry:5000/int/team/base@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            "localhost:5001/ext/team/base@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Outside the internal address's path, or elsewhere: left as written.
        assert_eq!(
            read_as("registry:5000/other/base:1"),
            "registry:5000/other/base:1"
        );
        assert_eq!(read_as("ghcr.io/acme/base:1"), "ghcr.io/acme/base:1");

        // Planned: `base` is checked and rewritten; scratch is no image.
        let split = json!({ "external": "localhost:5001", "internal": "registry:5000" });
        let planned = target(json!({ "registry": split, "base": "registry:5000/base:1" })).unwrap();
        assert!(
            matches!(&planned.build.image.base, Base::Image(r) if r.to_string() == "localhost:5001/base:1"),
            "{:?}",
            planned.build.image.base
        );
        assert!(matches!(
            target(json!({ "base": "scratch" }))
                .unwrap()
                .build
                .image
                .base,
            Base::Scratch
        ));
        let said = target(json!({ "base": "localhost:5000/Debian" })).unwrap_err();
        assert!(
            said.contains("`base`: `localhost:5000/Debian` is not an image reference: "),
            "{said}"
        );
    }

    #[test]
    fn on_scratch_the_user_is_nonroot_by_number_unless_set_and_root_is_no_user() {
        let user = |cluster: Value| target(cluster).map(|t| t.build.image.user);
        assert_eq!(user(json!({})), Ok(Some("65532:65532".into())));
        assert_eq!(
            user(json!({ "base": "scratch" })),
            Ok(Some("65532:65532".into()))
        );
        // "root": the config earlier releases wrote by default, with no User.
        assert_eq!(user(json!({ "user": "root" })), Ok(None));
        // A base keeps its own user unless `user` says otherwise; there "root" is written.
        let base = "localhost:5000/debian:12";
        assert_eq!(user(json!({ "base": base })), Ok(None));
        assert_eq!(
            user(json!({ "base": base, "user": "root" })),
            Ok(Some("root".into()))
        );
    }

    #[test]
    fn on_scratch_the_user_is_one_its_passwd_knows() {
        let user = |cluster: Value| target(cluster).map(|t| t.build.image.user);
        for known in ["nonroot", "65532", "65532:65532", "nobody:nobody", "0"] {
            assert_eq!(user(json!({ "user": known })), Ok(Some(known.to_string())));
        }
        let said = user(json!({ "user": "app" })).unwrap_err();
        assert!(
            said.contains("`user`: \"app\" is not in the scratch image's /etc/passwd (it has root, nonroot and nobody)"),
            "{said}"
        );
        // A base image has its own users.
        assert_eq!(
            user(json!({ "user": "app:app", "base": "localhost:5000/debian:12" })),
            Ok(Some("app:app".into()))
        );
        for blank in ["", "app user"] {
            let said =
                user(json!({ "user": blank, "base": "localhost:5000/debian:12" })).unwrap_err();
            assert!(said.contains("`user` must be a user name or id"), "{said}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback_or_a_registry_listed_as_insecure() {
        let said = target(json!({ "registry": "http://registry.lan:5000" })).unwrap_err();
        assert!(
            said.contains("`registry`: registry.lan:5000 is plain HTTP to a host that is not loopback; refusing to talk to it")
                && said.contains("help: if registry.lan:5000 really serves plain HTTP, add `insecure = [\"registry.lan:5000\"]`"),
            "{said}"
        );
        let listed = target(
            json!({ "registry": "http://registry.lan:5000", "insecure": ["registry.lan:5000"] }),
        )
        .unwrap();
        assert_eq!(
            listed.registry_options.insecure,
            [Registry::parse("registry.lan:5000").unwrap()]
        );
        assert!(target(json!({ "registry": "http://localhost:5000" })).is_ok());

        // Given on the command line, the error has no line of Cargo.toml to point at.
        let ws = Workspace::single(member("app", json!({ "registry": "localhost:5000" })));
        let request = Request {
            registry_external: Some("http://registry.lan:5000".into()),
            ..Request::default()
        };
        let said = ws.target(&request, &FakeFacts::default()).unwrap_err();
        assert!(
            said.starts_with("registry.lan:5000 is plain HTTP"),
            "{said}"
        );
    }

    #[test]
    fn annotations_come_from_the_package_and_its_commit_and_labels_over_them() {
        let package = member("app", json!({ "registry": "localhost:5000", "labels": { "org.opencontainers.image.title": "Greeter", "team": "a" } }))
            .version("2.0.0")
            .package_fields(json!({ "description": "  Says hello.\n", "license": "MIT", "repository": "https://example.com/app" }));
        let at_commit = FakeFacts::at_commit("0123456789abcdef0123456789abcdef01234567");
        let image = target_of(package, &at_commit).unwrap().build.image;
        let annotation = |k: &str| {
            image
                .annotations
                .get(&format!("org.opencontainers.image.{k}"))
                .map(String::as_str)
        };
        assert_eq!(annotation("title"), Some("app"));
        assert_eq!(annotation("version"), Some("2.0.0"));
        assert_eq!(annotation("description"), Some("Says hello."));
        assert_eq!(annotation("licenses"), Some("MIT"));
        assert_eq!(annotation("source"), Some("https://example.com/app"));
        assert_eq!(
            annotation("revision"),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(image.labels["org.opencontainers.image.title"], "Greeter");
        assert_eq!(image.labels["org.opencontainers.image.licenses"], "MIT");
        assert_eq!(image.labels["team"], "a");

        // Outside git: no revision.
        let image = target(json!({})).unwrap().build.image;
        assert!(
            !image
                .annotations
                .contains_key("org.opencontainers.image.revision")
        );
        assert!(
            !image
                .annotations
                .contains_key("org.opencontainers.image.description")
        );
    }

    #[test]
    fn image_settings_are_read_and_wrong_values_named() {
        let image = target(json!({
            "env": { "RUST_LOG": "info" },
            "compression": "zstd",
            "media-types": "docker",
            "check-base": false,
            "tzdata": true,
        }))
        .unwrap()
        .build
        .image;
        assert_eq!(image.env, [("RUST_LOG".to_string(), "info".to_string())]);
        assert_eq!(image.compression, crate::spec::Codec::Zstd);
        assert_eq!(image.media_types, Some(MediaTypes::Docker));
        assert!(!image.check_base && image.tzdata);
        let defaults = target(json!({})).unwrap().build.image;
        assert_eq!(defaults.compression, crate::spec::Codec::Gzip);
        assert_eq!(defaults.media_types, None);
        assert!(defaults.check_base && !defaults.tzdata);

        for (cluster, fragment) in [
            (
                json!({ "env": { "A=B": "1" } }),
                "`env.A=B`: `A=B` is not a valid environment variable name",
            ),
            (
                json!({ "labels": { " ": "x" } }),
                "a label needs a non-empty name",
            ),
            (
                json!({ "compression": "xz" }),
                "`compression`: compression `xz` is not one we write",
            ),
            (
                json!({ "media-types": "v1" }),
                "`media-types`: unknown media types `v1` | help: use \"oci\" or \"docker\"",
            ),
            (json!({ "insecure": ["http://"] }), "`insecure`: "),
            (
                json!({ "ca-cert": "ca.pem" }),
                "`ca-cert`: the CA certificate ",
            ),
        ] {
            let said = target(cluster.clone()).unwrap_err();
            assert!(said.contains(fragment), "{cluster}: {said}");
        }
    }

    #[test]
    fn the_ca_certificate_flag_is_over_the_setting_and_must_exist() {
        let ws = Workspace::single(member(
            "app",
            json!({ "registry": "localhost:5000", "ca-cert": "ca.pem" }),
        ));
        std::fs::write(ws.root.join("ca.pem"), "").unwrap();
        let planned = ws
            .target(&Request::default(), &FakeFacts::default())
            .unwrap();
        assert_eq!(
            planned.registry_options.ca_cert,
            Some(ws.root.join("ca.pem"))
        );
        let request = Request {
            ca_cert: Some(ws.root.join("other.pem")),
            retry_attempts: Some(3),
            ..Request::default()
        };
        let said = ws.target(&request, &FakeFacts::default()).unwrap_err();
        assert_eq!(
            said,
            format!(
                "--ca-cert: the CA certificate {} does not exist",
                ws.root.join("other.pem").display()
            )
        );
        std::fs::write(ws.root.join("other.pem"), "").unwrap();
        let options = ws
            .target(&request, &FakeFacts::default())
            .unwrap()
            .registry_options;
        assert_eq!(options.ca_cert, Some(ws.root.join("other.pem")));
        assert_eq!(options.retry_attempts, Some(3));
    }
}
