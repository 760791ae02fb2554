//! What the registry client tells the world, without knowing who listens: transfer progress and
//! messages (detail, warnings, protocol trace). Each client sends its messages to the sink it was
//! made with; `output` implements both for the terminal.

use std::sync::Arc;

/// Progress of one transfer in bytes. The registry resets it when an upload starts over.
pub trait Progress: Send + Sync {
    fn advance(&self, n: u64);
    fn reset(&self);
    /// A handle to the same progress for a request body that outlives the borrow.
    fn share(&self) -> Box<dyn Progress>;
}

/// A message from the registry client. Never carries secrets.
pub enum Event {
    /// Shown with -v.
    Detail(String),
    /// Shown unless -q.
    Warn(String),
    /// Protocol-level detail, shown with -vv.
    Trace(String),
}

/// Where the registry client's events go.
pub trait Sink: Send + Sync {
    fn event(&self, event: Event);
    /// Whether trace events are shown (so costly trace text is only built when it is).
    fn tracing(&self) -> bool;
}

/// Where one client's events go: a sink the application passed in, or nowhere.
#[derive(Clone)]
pub struct Events(Arc<dyn Sink>);

impl Default for Events {
    /// Events dropped.
    fn default() -> Self {
        Events(Arc::new(Discard))
    }
}

impl Events {
    pub fn to(sink: Arc<dyn Sink>) -> Events {
        Events(sink)
    }

    pub(super) fn detail(&self, text: &str) {
        self.0.event(Event::Detail(text.to_string()));
    }

    pub(super) fn warn(&self, text: &str) {
        self.0.event(Event::Warn(text.to_string()));
    }

    pub(super) fn trace(&self, text: &str) {
        self.0.event(Event::Trace(text.to_string()));
    }

    pub(super) fn tracing(&self) -> bool {
        self.0.tracing()
    }
}

struct Discard;

impl Sink for Discard {
    fn event(&self, _: Event) {}

    fn tracing(&self) -> bool {
        false
    }
}
