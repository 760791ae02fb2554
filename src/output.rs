//! Progress, logs and warnings on stderr, through the process's [`Shell`]: bars on a terminal,
//! plain lines otherwise, nothing with -q. (The results on stdout are `report`'s.)

use std::sync::OnceLock;

use crate::publish::shell_events::ShellEvents;
use crate::registry;
use crate::shell::Shell;

pub use crate::shell::Verbosity;

/// The process's shell, until every stage is handed one.
static UI: OnceLock<Shell> = OnceLock::new();

/// Sets up stderr output once, at start-up.
pub fn init(quiet: bool, verbose: u8) {
    let _ = UI.set(Shell::new(quiet, verbose));
    registry::events::set_sink(Box::new(ShellEvents(ui().clone())));
}

fn ui() -> &'static Shell {
    UI.get_or_init(|| Shell::new(false, 0))
}

pub fn verbosity() -> Verbosity {
    ui().verbosity()
}

/// A step the user should see ("Building greeter").
pub fn status(verb: &str, text: &str) {
    ui().status(verb, text);
}

/// Detail shown with -v.
pub fn detail(text: &str) {
    ui().detail(text);
}

/// Protocol-level detail shown with -vv. Never pass secrets here.
pub fn trace(text: &str) {
    ui().trace(text);
}

/// The run's own error, on stderr, with every address's userinfo hidden.
pub fn print_error(report: &miette::Report) {
    ui().print_error(report);
}

/// Errors always show (one of several failures; the run's own error is printed by `main`).
pub fn error(text: &str) {
    ui().error(text);
}

/// Warnings show unless -q.
pub fn warn(text: &str) {
    ui().warn(text);
}

/// Lets a child process (cargo, the engine's build output) write to stderr without bars in the way.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    ui().suspend(f)
}

/// A byte-count progress bar on a terminal; a no-op otherwise.
#[derive(Clone)]
pub struct Progress(crate::shell::Progress);

impl Progress {
    pub fn bytes(label: &str, total: u64) -> Progress {
        Progress(ui().upload_progress(label, total))
    }

    /// A bar for `total` bytes of work named by `verb` ("Uploading", "Compressing").
    pub fn working(verb: &str, label: &str, total: u64) -> Progress {
        Progress(ui().progress(verb, label, total))
    }

    pub fn advance(&self, n: u64) {
        self.0.advance(n);
    }

    pub fn reset(&self) {
        self.0.reset();
    }

    pub fn finish(&self) {
        self.0.finish();
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

pub use crate::shell::human_bytes;
