//! Command line: `cargo adapt-push [OPTIONS]`, also runnable as `cargo-adapt-push [OPTIONS]`.

use std::path::PathBuf;

use clap::builder::{EnumValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cargo::CargoOptions;
use crate::request::{
    Batch, Command as Run, Format as OutputFormat, Outputs, PushRequest, ResolveRequest,
    VerifyRequest,
};
use crate::{plan, spec};

/// Cargo invokes `cargo-adapt-push adapt-push ARGS`; the outer enum swallows that word.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", version, styles = clap::builder::Styles::styled())]
pub enum CargoCli {
    AdaptPush(TopArgs),
}

// The same options when run directly as `cargo-adapt-push`.
#[derive(Debug, Parser)]
#[command(name = "cargo-adapt-push", version)]
pub struct DirectCli {
    #[command(flatten)]
    pub args: TopArgs,
}

// Pushing is the default; `resolve`, `verify` and `completions` are subcommands.
#[derive(Debug, Clone, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    about = "Build a Rust crate's container image, push it to a split registry, print the digest-pinned pull reference",
    after_help = "Settings come from [package.metadata.cluster] (defaults from [workspace.metadata.cluster]).\nstdout carries only the pull references (or JSON); progress goes to stderr.\nExit status: 0 done, 1 failed, 2 bad command line, 3 some images done and others failed."
)]
pub struct TopArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub push: PushArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Replace `adapt://<package>[/<bin>]` in YAML manifests with pull references, building and
    /// pushing each image once; prints the YAML with every other byte kept
    Resolve(Box<ResolveArgs>),
    /// Check that an image has an SBOM and provenance attached that name it
    Verify(Box<VerifyArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ResolveArgs {
    /// A YAML file, a directory of .yaml/.yml files, or `-` for stdin (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Rewrite each file given with -f (and each file of a directory given) instead of printing
    /// the YAML; atomically, and only once every placeholder in every file resolved
    #[arg(long)]
    pub in_place: bool,
    #[command(flatten)]
    pub push: PushArgs,
}

/// Check that an image has an SBOM and provenance attached that name it
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The image: `host[:port]/repository@sha256:…` or `…:tag`
    pub reference: String,

    /// Output format on stdout
    #[arg(long, value_parser = output_format(), default_value = "text", env = "ADAPT_PUSH_FORMAT")]
    pub format: OutputFormat,

    /// Extra CA certificate (PEM) to trust for the registry
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// A registry (host:port) that may be spoken to over plain HTTP (loopback always may)
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,

    /// Do not require provenance (only the SBOM)
    #[arg(long)]
    pub no_provenance: bool,

    /// Do not require an SBOM (only the provenance)
    #[arg(long)]
    pub no_sbom: bool,
}

/// What the command line asks for.
pub enum Parsed {
    Run(Box<Run>),
    /// `completions SHELL`: nothing to run but printing the script.
    Completions(clap_complete::Shell),
}

/// Parses the process arguments in either form.
pub fn parse() -> Parsed {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let top = if args.get(1).is_some_and(|a| a == "adapt-push") {
        let CargoCli::AdaptPush(a) = CargoCli::parse_from(args);
        a
    } else {
        DirectCli::parse_from(args).args
    };
    match top.command {
        None => Parsed::Run(Box::new(Run::Push(top.push.into_request()))),
        Some(Command::Resolve(r)) => Parsed::Run(Box::new(Run::Resolve(r.into_request()))),
        Some(Command::Verify(v)) => Parsed::Run(Box::new(Run::Verify(v.into_request()))),
        Some(Command::Completions { shell }) => Parsed::Completions(shell),
    }
}

/// `completions SHELL`: the script for `cargo-adapt-push` on stdout.
pub fn print_completions(shell: clap_complete::Shell) {
    let mut command = <DirectCli as clap::CommandFactory>::command();
    clap_complete::generate(
        shell,
        &mut command,
        "cargo-adapt-push",
        &mut std::io::stdout(),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuilderChoice {
    /// The engine builder when the package has a Dockerfile, else the daemonless one.
    Auto,
    /// Daemonless: OCI layers assembled in-process, pushed over the registry API.
    Oci,
    /// Through a Docker engine (Dockerfile, or a generated one).
    Docker,
}

impl From<BuilderChoice> for plan::BuilderChoice {
    fn from(choice: BuilderChoice) -> Self {
        match choice {
            BuilderChoice::Auto => plan::BuilderChoice::Auto,
            BuilderChoice::Oci => plan::BuilderChoice::Oci,
            BuilderChoice::Docker => plan::BuilderChoice::Docker,
        }
    }
}

/// Media types of the manifest we push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MediaTypes {
    /// OCI image manifest (the default); Docker schema 2 if the registry refuses it.
    Oci,
    /// Docker image manifest v2, schema 2, for registries that take nothing else.
    Docker,
}

impl From<MediaTypes> for spec::MediaTypes {
    fn from(types: MediaTypes) -> Self {
        match types {
            MediaTypes::Oci => spec::MediaTypes::Oci,
            MediaTypes::Docker => spec::MediaTypes::Docker,
        }
    }
}

/// What stdout carries (`--format`); the request's is `request::Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

impl From<Format> for OutputFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Text => OutputFormat::Text,
            Format::Json => OutputFormat::Json,
        }
    }
}

/// `--format` parsed straight into `request::Format`, so commands hand it on as it is.
fn output_format() -> impl TypedValueParser<Value = OutputFormat> {
    EnumValueParser::<Format>::new().map(OutputFormat::from)
}

/// Which SBOM to attach (`--sbom`); the domain's is `spec::SbomFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormat {
    Spdx,
    Cyclonedx,
    None,
}

impl From<SbomFormat> for spec::SbomFormat {
    fn from(format: SbomFormat) -> Self {
        match format {
            SbomFormat::Spdx => spec::SbomFormat::Spdx,
            SbomFormat::Cyclonedx => spec::SbomFormat::Cyclonedx,
            SbomFormat::None => spec::SbomFormat::None,
        }
    }
}

/// Build a crate's container image, push it to a (split) registry, print the pull reference.
#[derive(Debug, Clone, Args)]
#[command(
    version,
    about = "Build a Rust crate's container image, push it to a split registry, print the digest-pinned pull reference",
    after_help = "Settings come from [package.metadata.cluster] (defaults from [workspace.metadata.cluster]).\nstdout carries only the pull references (or JSON); progress goes to stderr."
)]
pub struct PushArgs {
    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH", help_heading = "Package Selection")]
    pub manifest_path: Option<PathBuf>,

    /// Package to build (repeat for several)
    #[arg(
        short,
        long = "package",
        value_name = "SPEC",
        help_heading = "Package Selection"
    )]
    pub packages: Vec<String>,

    /// Every workspace member with cluster settings (its own or the workspace's) and a binary
    /// target; one member failing does not stop the others
    #[arg(long, conflicts_with_all = ["packages", "bins"], help_heading = "Package Selection")]
    pub workspace: bool,

    /// Binary target to put in an image (repeat for several: one image each)
    #[arg(long = "bin", value_name = "NAME", help_heading = "Package Selection")]
    pub bins: Vec<String>,

    /// Features to activate (space or comma separated)
    #[arg(
        short = 'F',
        long,
        value_name = "FEATURES",
        help_heading = "Feature Selection"
    )]
    pub features: Vec<String>,

    /// Activate all available features
    #[arg(long, help_heading = "Feature Selection")]
    pub all_features: bool,

    /// Do not activate the `default` feature
    #[arg(long, help_heading = "Feature Selection")]
    pub no_default_features: bool,

    /// Cargo profile to build with
    #[arg(
        long,
        value_name = "NAME",
        default_value = "release",
        help_heading = "Compilation Options"
    )]
    pub profile: String,

    /// Assert that Cargo.lock will remain unchanged
    #[arg(long, help_heading = "Manifest Options")]
    pub locked: bool,

    /// Equivalent to --locked and --offline
    #[arg(long, help_heading = "Manifest Options")]
    pub frozen: bool,

    /// Run without accessing the network (for cargo)
    #[arg(long, help_heading = "Manifest Options")]
    pub offline: bool,

    /// Registry to push to and pull from (replaces `registry`; both addresses the same)
    #[arg(long, env = "ADAPT_PUSH_REGISTRY", value_name = "HOST[:PORT][/PATH]")]
    pub registry: Option<String>,

    /// Address to push through (overrides the `external` side of `registry`)
    #[arg(
        long,
        env = "ADAPT_PUSH_REGISTRY_EXTERNAL",
        value_name = "HOST[:PORT][/PATH]"
    )]
    pub registry_external: Option<String>,

    /// Address the cluster pulls through (overrides the `internal` side of `registry`)
    #[arg(
        long,
        env = "ADAPT_PUSH_REGISTRY_INTERNAL",
        value_name = "HOST[:PORT][/PATH]"
    )]
    pub registry_internal: Option<String>,

    /// Read the registry from the cluster's `kube-public/local-registry-hosting` ConfigMap
    /// (KEP-1755): `host` to push, `hostFromContainerRuntime` to pull
    #[arg(long, conflicts_with = "registry")]
    pub registry_from_cluster: bool,

    /// The kubeconfig context whose cluster is asked (default: the current context)
    #[arg(long, value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Tag to push (repeatable; replaces `tags`)
    #[arg(
        long = "tag",
        short = 't',
        value_name = "TAG",
        env = "ADAPT_PUSH_TAGS",
        value_delimiter = ','
    )]
    pub tags: Vec<String>,

    /// Which builder to use
    #[arg(long, value_enum, env = "ADAPT_PUSH_BUILDER", value_name = "BUILDER")]
    pub builder: Option<BuilderChoice>,

    /// Manifest media types: oci (default; falls back to docker when the registry refuses
    /// OCI) or docker
    #[arg(long, value_enum, env = "ADAPT_PUSH_MEDIA_TYPES", value_name = "TYPES")]
    pub media_types: Option<MediaTypes>,

    /// Output format on stdout
    #[arg(long, value_parser = output_format(), default_value = "text", env = "ADAPT_PUSH_FORMAT")]
    pub format: OutputFormat,

    /// Also write the pull references to this file, one per line
    #[arg(long, value_name = "FILE", env = "ADAPT_PUSH_IMAGE_REFS")]
    pub image_refs: Option<PathBuf>,

    /// Extra CA certificate (PEM) to trust for the registry
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Attempts per registry request (the first included) before giving up
    #[arg(long, env = "ADAPT_PUSH_RETRY_ATTEMPTS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retry_attempts: Option<u32>,

    /// Seconds to keep retrying one registry request; a dead registry is given up on within
    /// this [default: 25, so within 30 s in all]
    #[arg(long, env = "ADAPT_PUSH_RETRY_TIMEOUT", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub retry_timeout: Option<u64>,

    /// Print nothing on stderr but errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More detail on stderr (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Also write the images to this file, a tar that `docker load` accepts (tagged with the
    /// pull reference's repository and first tag); skips the registry unless --push
    #[arg(long, value_name = "FILE", help_heading = "Destinations")]
    pub tarball: Option<PathBuf>,

    /// Also write the images to this OCI image layout (added to if it exists); skips the
    /// registry unless --push
    #[arg(long, value_name = "DIR", help_heading = "Destinations")]
    pub oci_layout: Option<PathBuf>,

    /// Also load the images into the Docker engine (DOCKER_HOST or the current context), with
    /// every tag; skips the registry unless --push
    #[arg(long, help_heading = "Destinations")]
    pub load: bool,

    /// Build only; print the digest (with --tarball, --oci-layout or --load: do not push either)
    #[arg(long, conflicts_with = "push", help_heading = "Destinations")]
    pub no_push: bool,

    /// Push to the registry even when --tarball, --oci-layout or --load is given
    #[arg(long, help_heading = "Destinations")]
    pub push: bool,

    /// After the push, fetch the manifest by digest through the internal address (catches a
    /// wrong `internal` here instead of in the cluster)
    #[arg(long)]
    pub check_pull: bool,

    /// Resolve and print the plan; build and push nothing
    #[arg(long)]
    pub dry_run: bool,

    /// SBOM to attach to the image as a referrer (replaces `sbom`) [default: spdx]
    #[arg(long, value_enum, env = "ADAPT_PUSH_SBOM", value_name = "FORMAT")]
    pub sbom: Option<SbomFormat>,

    /// Platform to build for, e.g. linux/arm64 (repeatable; replaces `platforms`); two or more
    /// make an image index [default: linux on the host's architecture]
    #[arg(
        long = "platform",
        value_name = "OS/ARCH",
        env = "ADAPT_PUSH_PLATFORMS",
        value_delimiter = ','
    )]
    pub platforms: Vec<String>,

    /// Attach SLSA provenance to the image (replaces `provenance`) [default: true]
    #[arg(long, env = "ADAPT_PUSH_PROVENANCE", value_name = "BOOL")]
    pub provenance: Option<bool>,
}

impl PushArgs {
    /// The plain request these arguments make. Whether the registry is pushed to is decided
    /// once, in `Outputs::from_flags`; the plan hears it from there.
    fn into_request(self) -> PushRequest {
        let cargo = self.cargo_options();
        let outputs = Outputs::from_flags(
            self.push,
            self.no_push,
            self.tarball.clone(),
            self.oci_layout.clone(),
            self.load,
            self.check_pull,
        );
        PushRequest {
            plan: self.plan_request(!outputs.registry),
            manifest_path: self.manifest_path,
            cargo,
            batch: if self.workspace {
                Batch::Independent
            } else {
                Batch::Sequential
            },
            outputs,
            format: self.format,
            image_refs: self.image_refs,
            dry_run: self.dry_run,
            quiet: self.quiet,
            verbose: self.verbose,
        }
    }

    /// What the plan needs of these arguments.
    fn plan_request(&self, registry_less: bool) -> plan::Request {
        plan::Request {
            workspace: self.workspace,
            packages: self.packages.clone(),
            bins: self.bins.clone(),
            builder: self.builder.map(Into::into),
            media_types: self.media_types.map(Into::into),
            registry: self.registry.clone(),
            registry_external: self.registry_external.clone(),
            registry_internal: self.registry_internal.clone(),
            registry_from_cluster: self.registry_from_cluster,
            kube_context: self.kube_context.clone(),
            registry_less,
            ca_cert: self.ca_cert.clone(),
            retry_attempts: self.retry_attempts,
            retry_timeout: self.retry_timeout,
            tags: self.tags.clone(),
            sbom: self.sbom.map(Into::into),
            provenance: self.provenance,
            platforms: self.platforms.clone(),
        }
    }

    /// The options every cargo command we run is given.
    fn cargo_options(&self) -> CargoOptions {
        CargoOptions {
            features: self.features.clone(),
            all_features: self.all_features,
            no_default_features: self.no_default_features,
            profile: self.profile.clone(),
            locked: self.locked,
            frozen: self.frozen,
            offline: self.offline,
        }
    }
}

impl ResolveArgs {
    fn into_request(self) -> ResolveRequest {
        ResolveRequest {
            files: self.files,
            in_place: self.in_place,
            push: self.push.into_request(),
        }
    }
}

impl VerifyArgs {
    fn into_request(self) -> VerifyRequest {
        VerifyRequest {
            reference: self.reference,
            format: self.format,
            ca_cert: self.ca_cert,
            insecure: self.insecure,
            sbom: !self.no_sbom,
            provenance: !self.no_provenance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definitions_are_consistent() {
        CargoCli::command().debug_assert();
        DirectCli::command().debug_assert();
    }

    #[test]
    fn parses_cargo_form() {
        let CargoCli::AdaptPush(TopArgs { push: a, .. }) = CargoCli::parse_from([
            "cargo-adapt-push",
            "adapt-push",
            "-p",
            "greeter",
            "--tag",
            "v1",
            "--tag",
            "latest",
            "--builder",
            "oci",
            "-vv",
        ]);
        assert_eq!(a.packages, vec!["greeter"]);
        assert_eq!(a.tags, vec!["v1", "latest"]);
        assert_eq!(a.builder, Some(BuilderChoice::Oci));
        assert_eq!(a.verbose, 2);
        assert_eq!(a.profile, "release");
    }
}
