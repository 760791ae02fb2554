//! What the registry client tells (messages and upload progress) shown on the run's [`Shell`],
//! like everyone else's lines. The registry knows nothing of the shell, nor the shell of the
//! registry: publishers, which hand the one to the other, join them here.

use crate::registry::events::{Event, Progress as RegistryProgress, Sink};
use crate::shell::{Progress, Shell, Verbosity};

/// The registry client's messages on a shell: detail with -v, warnings unless -q, the protocol
/// trace with -vv.
pub struct ShellEvents(pub Shell);

impl Sink for ShellEvents {
    fn event(&self, event: Event) {
        match event {
            Event::Detail(text) => self.0.detail(&text),
            Event::Warn(text) => self.0.warn(&text),
            Event::Trace(text) => self.0.trace(&text),
        }
    }

    fn tracing(&self) -> bool {
        self.0.verbosity() >= Verbosity::Trace
    }
}

/// An upload's bytes on the shell's bar for it.
impl RegistryProgress for Progress {
    fn advance(&self, n: u64) {
        Progress::advance(self, n);
    }

    fn reset(&self) {
        Progress::reset(self);
    }

    fn share(&self) -> Box<dyn RegistryProgress> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_events_show_at_the_shells_verbosity() {
        for (verbosity, expected, tracing) in [
            (Verbosity::Quiet, "", false),
            (Verbosity::Normal, "    warning: w\n", false),
            (
                Verbosity::Verbose,
                "           · d\n    warning: w\n",
                false,
            ),
            (
                Verbosity::Trace,
                "           · d\n    warning: w\n       trace t\n",
                true,
            ),
        ] {
            let shell = Shell::capture(verbosity);
            let sink = ShellEvents(shell.clone());
            sink.event(Event::Detail("d".into()));
            sink.event(Event::Warn("w".into()));
            sink.event(Event::Trace("t".into()));
            assert_eq!(shell.captured(), expected, "{verbosity:?}");
            assert_eq!(sink.tracing(), tracing, "{verbosity:?}");
        }
    }
}
