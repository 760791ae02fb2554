//! What is printed for people, on stderr: status, detail, trace, warning and error lines at the
//! run's verbosity, progress bars on a terminal (plain lines otherwise, nothing with -q), and
//! the run's own error at the end. stdout carries only results (see `report`).
//!
//! A [`Shell`] is made once per run and handed down to the stages (as cargo's `Shell` is); it
//! is a cheap handle to shared state, so builders and publishers clone it onto their tasks and
//! threads. Every line has the userinfo of any address in it hidden. A shell can capture into a
//! buffer instead of stderr, so a test can see what a stage said.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::reference::redact_userinfo;

/// How much to say on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    Trace,
}

impl Verbosity {
    /// From -q and the number of -v given.
    pub fn from_flags(quiet: bool, verbose: u8) -> Verbosity {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Trace,
        }
    }
}

/// The run's stderr for people. Clones share the same bars and destination.
#[derive(Clone)]
pub struct Shell {
    inner: Arc<Inner>,
}

struct Inner {
    verbosity: Verbosity,
    out: Out,
}

enum Out {
    /// stderr, with progress bars drawn on it when it is a terminal (and not -q).
    Stderr { bars: Option<MultiProgress> },
    /// Everything that would have gone to stderr, kept for [`Shell::captured`].
    #[cfg(test)]
    Capture(std::sync::Mutex<String>),
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("verbosity", &self.inner.verbosity)
            .finish_non_exhaustive()
    }
}

impl Shell {
    /// The shell of a run given -q and `verbose` times -v: stderr, with bars on a terminal.
    pub fn new(quiet: bool, verbose: u8) -> Shell {
        let verbosity = Verbosity::from_flags(quiet, verbose);
        let bars = (verbosity >= Verbosity::Normal && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Shell::with(verbosity, Out::Stderr { bars })
    }

    /// A shell that keeps what it is told in memory (no bars), so a test can see what a stage
    /// said.
    #[cfg(test)]
    pub fn capture(verbosity: Verbosity) -> Shell {
        Shell::with(
            verbosity,
            Out::Capture(std::sync::Mutex::new(String::new())),
        )
    }

    fn with(verbosity: Verbosity, out: Out) -> Shell {
        Shell {
            inner: Arc::new(Inner { verbosity, out }),
        }
    }

    /// What a capturing shell was told so far, exactly as stderr would have shown it (empty for
    /// a shell on stderr).
    #[cfg(test)]
    pub fn captured(&self) -> String {
        match &self.inner.out {
            Out::Capture(text) => text.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Out::Stderr { .. } => String::new(),
        }
    }

    pub fn verbosity(&self) -> Verbosity {
        self.inner.verbosity
    }

    /// A step the user should see ("Building greeter").
    pub fn status(&self, verb: &str, text: &str) {
        self.line(Verbosity::Normal, &format!("{verb:>12} {text}"));
    }

    /// Detail shown with -v.
    pub fn detail(&self, text: &str) {
        self.line(Verbosity::Verbose, &format!("{:>12} {text}", "·"));
    }

    /// Protocol-level detail shown with -vv. Never pass secrets here.
    pub fn trace(&self, text: &str) {
        self.line(Verbosity::Trace, &format!("{:>12} {text}", "trace"));
    }

    /// Errors always show (one of several failures; the run's own error is [`print_error`]'s).
    ///
    /// [`print_error`]: Shell::print_error
    pub fn error(&self, text: &str) {
        self.line(Verbosity::Quiet, &format!("{:>12} {text}", "error:"));
    }

    /// Warnings show unless -q.
    pub fn warn(&self, text: &str) {
        self.line(Verbosity::Normal, &format!("{:>12} {text}", "warning:"));
    }

    fn line(&self, min: Verbosity, text: &str) {
        if self.inner.verbosity < min {
            return;
        }
        let text = &redact_userinfo(text);
        match &self.inner.out {
            Out::Stderr { bars: Some(bars) } => {
                let _ = bars.println(text);
            }
            _ => self.write_line(text),
        }
    }

    /// `text` and a newline, straight to the destination (past any bars).
    fn write_line(&self, text: &str) {
        match &self.inner.out {
            Out::Stderr { .. } => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
            #[cfg(test)]
            Out::Capture(captured) => {
                let mut captured = captured.lock().unwrap_or_else(|p| p.into_inner());
                captured.push_str(text);
                captured.push('\n');
            }
        }
    }

    /// The run's own error, with every address's userinfo hidden. The hidden parts are looked
    /// for in a rendering without line wrapping (a wrapped one could split a password across
    /// lines); when something had to be hidden, that rendering is the one shown.
    pub fn print_error(&self, report: &miette::Report) {
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
        self.write_line(&text);
    }

    /// Lets a child process (cargo, the engine's build output) write to stderr without bars in
    /// the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner.out {
            Out::Stderr { bars: Some(bars) } => bars.suspend(f),
            _ => f(),
        }
    }

    /// A bar for `total` bytes of upload on a terminal; a no-op otherwise.
    pub fn upload_progress(&self, label: &str, total: u64) -> Progress {
        self.progress("Uploading", label, total)
    }

    /// A bar for `total` bytes of work named by `verb` ("Uploading", "Compressing") on a
    /// terminal; a no-op otherwise.
    pub fn progress(&self, verb: &str, label: &str, total: u64) -> Progress {
        let Out::Stderr { bars: Some(bars) } = &self.inner.out else {
            return Progress { bar: None };
        };
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
        Progress { bar: Some(bar) }
    }
}

/// A byte-count progress bar (see [`Shell::progress`]); clones move the same bar.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each kind of line, as a stage would say them.
    fn say_everything(shell: &Shell) {
        shell.status("Building", "greeter v0.1.0");
        shell.detail("statically linked");
        shell.trace("GET /v2/");
        shell.warn("the base image is for arm64");
        shell.error("greeter: failed");
    }

    #[test]
    fn each_verbosity_shows_its_lines_and_those_above() {
        let expect = [
            (Verbosity::Quiet, vec!["      error: greeter: failed"]),
            (
                Verbosity::Normal,
                vec![
                    "    Building greeter v0.1.0",
                    "    warning: the base image is for arm64",
                    "      error: greeter: failed",
                ],
            ),
            (
                Verbosity::Verbose,
                vec![
                    "    Building greeter v0.1.0",
                    "           · statically linked",
                    "    warning: the base image is for arm64",
                    "      error: greeter: failed",
                ],
            ),
            (
                Verbosity::Trace,
                vec![
                    "    Building greeter v0.1.0",
                    "           · statically linked",
                    "       trace GET /v2/",
                    "    warning: the base image is for arm64",
                    "      error: greeter: failed",
                ],
            ),
        ];
        for (verbosity, lines) in expect {
            let shell = Shell::capture(verbosity);
            say_everything(&shell);
            assert_eq!(shell.captured(), lines.join("\n") + "\n", "{verbosity:?}");
        }
    }

    #[test]
    fn two_shells_in_one_process_keep_their_own_verbosity_and_lines() {
        // The old process-global output kept the first verbosity it was given for good.
        let quiet = Shell::capture(Verbosity::Quiet);
        let verbose = Shell::capture(Verbosity::Verbose);
        let quiet_clone = quiet.clone();
        std::thread::spawn(move || quiet_clone.status("Pushing", "a"))
            .join()
            .unwrap();
        verbose.detail("b");
        assert_eq!(quiet.captured(), "");
        assert_eq!(verbose.captured(), "           · b\n");
        assert_eq!(
            (quiet.verbosity(), verbose.verbosity()),
            (Verbosity::Quiet, Verbosity::Verbose)
        );
    }

    #[test]
    fn every_line_and_the_final_error_hide_userinfo() {
        let shell = Shell::capture(Verbosity::Trace);
        shell.trace("GET https://user:TopSecret@registry.example/v2/");
        shell.print_error(&miette::miette!(
            "cannot reach https://user:TopSecret@registry.example"
        ));
        let text = shell.captured();
        assert!(!text.contains("TopSecret"), "{text}");
        assert!(text.contains("registry.example/v2/"), "{text}");
    }

    #[test]
    fn verbosity_from_flags() {
        assert_eq!(Verbosity::from_flags(true, 2), Verbosity::Quiet);
        assert_eq!(Verbosity::from_flags(false, 0), Verbosity::Normal);
        assert_eq!(Verbosity::from_flags(false, 1), Verbosity::Verbose);
        assert_eq!(Verbosity::from_flags(false, 3), Verbosity::Trace);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
