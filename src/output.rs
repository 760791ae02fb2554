//! Everything the user sees. stdout carries only the result (pull references or JSON); progress,
//! logs and warnings go to stderr: bars on a terminal, plain lines otherwise, nothing with -q.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::plan::Plan;
use crate::reference::redact_userinfo;
use crate::registry;

/// What stdout carries: text lines or one JSON document (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// How much to say on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    Trace,
}

struct Ui {
    verbosity: Verbosity,
    bars: Option<MultiProgress>,
}

static UI: OnceLock<Ui> = OnceLock::new();

/// Sets up stderr output once, at start-up.
pub fn init(quiet: bool, verbose: u8) {
    let verbosity = match (quiet, verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        (false, 1) => Verbosity::Verbose,
        (false, _) => Verbosity::Trace,
    };
    let bars = (verbosity >= Verbosity::Normal && std::io::stderr().is_terminal())
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let _ = UI.set(Ui { verbosity, bars });
    crate::file_lock::on_waiting(|dir| {
        status(
            "Waiting",
            &format!(
                "for the lock on {} (another adapt-push run is writing it)",
                dir.display()
            ),
        )
    });
}

/// The registry client's messages, shown on the terminal like everyone else's (each client is
/// made with it, see `publish::registry::hooks`).
pub struct Terminal;

impl registry::events::Sink for Terminal {
    fn event(&self, event: registry::events::Event) {
        match event {
            registry::events::Event::Detail(text) => detail(&text),
            registry::events::Event::Warn(text) => warn(&text),
            registry::events::Event::Trace(text) => trace(&text),
        }
    }

    fn tracing(&self) -> bool {
        verbosity() >= Verbosity::Trace
    }
}

fn ui() -> &'static Ui {
    UI.get_or_init(|| Ui {
        verbosity: Verbosity::Normal,
        bars: None,
    })
}

pub fn verbosity() -> Verbosity {
    ui().verbosity
}

fn line(min: Verbosity, text: &str) {
    let ui = ui();
    if ui.verbosity < min {
        return;
    }
    let text = &redact_userinfo(text);
    match &ui.bars {
        Some(bars) => {
            let _ = bars.println(text);
        }
        None => {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }
}

/// A step the user should see ("Building greeter").
pub fn status(verb: &str, text: &str) {
    line(Verbosity::Normal, &format!("{verb:>12} {text}"));
}

/// Detail shown with -v.
pub fn detail(text: &str) {
    line(Verbosity::Verbose, &format!("{:>12} {text}", "·"));
}

/// Protocol-level detail shown with -vv. Never pass secrets here.
pub fn trace(text: &str) {
    line(Verbosity::Trace, &format!("{:>12} {text}", "trace"));
}

/// The run's own error, on stderr, with every address's userinfo hidden. The hidden parts are
/// looked for in a rendering without line wrapping (a wrapped one could split a password across
/// lines); when something had to be hidden, that rendering is the one shown.
pub fn print_error(report: &miette::Report) {
    struct Unwrapped<'a>(&'a miette::Report);
    impl std::fmt::Debug for Unwrapped<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            use miette::ReportHandler as _;
            let handler = miette::MietteHandlerOpts::new().wrap_lines(false).build();
            handler.debug(self.0.as_ref(), f)
        }
    }
    let plain = format!("{:?}", Unwrapped(report));
    let redacted = redact_userinfo(&plain);
    let text = if redacted == plain {
        format!("{report:?}")
    } else {
        redacted
    };
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Errors always show (one of several failures; the run's own error is printed by `main`).
pub fn error(text: &str) {
    line(Verbosity::Quiet, &format!("{:>12} {text}", "error:"));
}

/// Warnings show unless -q.
pub fn warn(text: &str) {
    line(Verbosity::Normal, &format!("{:>12} {text}", "warning:"));
}

/// The plan's warnings (settings that are allowed but worth knowing about), once per target.
pub fn plan_warnings(plan: &Plan) {
    for warning in plan.targets.iter().flat_map(|t| &t.warnings) {
        warn(warning);
    }
}

/// Lets a child process (cargo, the engine's build output) write to stderr without bars in the way.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match &ui().bars {
        Some(bars) => bars.suspend(f),
        None => f(),
    }
}

/// A byte-count progress bar on a terminal; a no-op otherwise.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn bytes(label: &str, total: u64) -> Progress {
        Progress::working("Uploading", label, total)
    }

    /// A bar for `total` bytes of work named by `verb` ("Uploading", "Compressing").
    pub fn working(verb: &str, label: &str, total: u64) -> Progress {
        let bar = ui().bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12.cyan.bold} {msg:30!} [{bar:25}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(verb.to_string());
            bar.set_message(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn reset(&self) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl registry::events::Progress for Progress {
    fn advance(&self, n: u64) {
        Progress::advance(self, n);
    }

    fn reset(&self) {
        Progress::reset(self);
    }

    fn share(&self) -> Box<dyn registry::events::Progress> {
        Box::new(self.clone())
    }
}

/// One pushed (or built, with `--no-push` and the registry-less destinations) image, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub package: String,
    pub bin: String,
    /// `None` when the image did not go to a registry.
    pub push_ref: Option<String>,
    pub pull_ref: Option<String>,
    pub digest: String,
    pub tags: Vec<String>,
    pub builder: String,
    /// The SBOM attached as a referrer of the image, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Referrer>,
    /// The provenance attached as a referrer of the image, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Referrer>,
    /// For an image index: each platform's image and its documents.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformPushed>,
}

/// One platform's image inside a pushed index.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformPushed {
    pub platform: String,
    pub digest: String,
    pub pull_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Referrer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Referrer>,
}

/// A document attached to a pushed image.
#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    /// Digest of the referrer's artifact manifest.
    pub digest: String,
    pub artifact_type: String,
    /// `internal/repository@digest` of the artifact manifest.
    pub pull_ref: String,
    /// `referrers API` or `referrers tag` (the OCI 1.1 fallback).
    pub listed_via: String,
}

#[derive(Serialize)]
struct Report<'a> {
    images: &'a [Pushed],
}

impl Pushed {
    /// What stdout says about the image: the pull reference, or the digest when not pushed.
    pub fn result_line(&self) -> &str {
        self.pull_ref.as_deref().unwrap_or(&self.digest)
    }
}

/// Writes the result to stdout (and the refs file when asked).
pub fn report(images: &[Pushed], format: Format, image_refs: Option<&Path>) -> miette::Result<()> {
    use miette::{IntoDiagnostic, WrapErr};
    let mut out = std::io::stdout().lock();
    match format {
        Format::Text => {
            for image in images {
                writeln!(out, "{}", image.result_line()).into_diagnostic()?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &Report { images }).into_diagnostic()?;
            writeln!(out).into_diagnostic()?;
        }
    }
    out.flush()
        .into_diagnostic()
        .wrap_err("writing to stdout")?;
    if let Some(path) = image_refs {
        let text: String = images
            .iter()
            .map(|i| format!("{}\n", i.result_line()))
            .collect();
        std::fs::write(path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("writing --image-refs {}", path.display()))?;
    }
    Ok(())
}

/// One planned image, for `--dry-run --format json`: the fields of a real push's report that are
/// known before building (no digest yet).
#[derive(Serialize)]
struct PlannedImage<'a> {
    package: &'a str,
    version: &'a str,
    bin: &'a str,
    builder: &'a str,
    base: String,
    push_name: String,
    pull_name: String,
    tags: Vec<String>,
    /// Empty: the host's platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<String>,
    /// `spdx`, `cyclonedx` or `none`.
    sbom: &'static str,
    provenance: bool,
}

#[derive(Serialize)]
struct PlanReport<'a> {
    images: Vec<PlannedImage<'a>>,
}

/// `--dry-run`: the plan on stdout, as text or JSON.
pub fn print_plan(plan: &Plan, format: Format) -> std::io::Result<()> {
    let images: Vec<PlannedImage> = plan
        .targets
        .iter()
        .map(|t| PlannedImage {
            package: &t.build.package,
            version: &t.build.version,
            bin: &t.build.bin,
            builder: t.build.builder.name(),
            base: match &t.build.image.base {
                crate::spec::Base::Scratch => "scratch".to_string(),
                crate::spec::Base::Image(r) => r.to_string(),
            },
            push_name: t.destination.push_name(),
            pull_name: t.destination.pull_name(),
            tags: t.destination.tags.iter().map(|t| t.to_string()).collect(),
            platforms: t.platforms.iter().map(|p| p.to_string()).collect(),
            sbom: match t.supply_chain.sbom {
                crate::spec::SbomFormat::Spdx => "spdx",
                crate::spec::SbomFormat::Cyclonedx => "cyclonedx",
                crate::spec::SbomFormat::None => "none",
            },
            provenance: t.supply_chain.provenance,
        })
        .collect();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &PlanReport { images })?;
            writeln!(out)?;
        }
        Format::Text => {
            for i in &images {
                writeln!(out, "{} {} (bin {})", i.package, i.version, i.bin)?;
                writeln!(out, "  builder   {}", i.builder)?;
                writeln!(out, "  base      {}", i.base)?;
                writeln!(
                    out,
                    "  push to   {} (tags: {})",
                    i.push_name,
                    i.tags.join(", ")
                )?;
                writeln!(
                    out,
                    "  pull as   {}@sha256:<digest of the pushed manifest>",
                    i.pull_name
                )?;
                if !i.platforms.is_empty() {
                    writeln!(out, "  platforms {}", i.platforms.join(", "))?;
                }
                writeln!(
                    out,
                    "  attach    sbom {}, provenance {}",
                    i.sbom,
                    if i.provenance { "yes" } else { "no" }
                )?;
            }
        }
    }
    out.flush()
}

/// `1.2 MiB`, for progress and summaries.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
