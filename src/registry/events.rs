//! What the registry client tells the world, without knowing who listens: transfer progress and
//! messages (detail, warnings, protocol trace). `output` implements both for the terminal.

use std::sync::OnceLock;

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

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Installs the process's sink (once; later calls are ignored). Without one, events are dropped.
pub fn set_sink(sink: Box<dyn Sink>) {
    let _ = SINK.set(sink);
}

fn emit(event: Event) {
    if let Some(sink) = SINK.get() {
        sink.event(event);
    }
}

pub(crate) fn detail(text: &str) {
    emit(Event::Detail(text.to_string()));
}

pub(crate) fn warn(text: &str) {
    emit(Event::Warn(text.to_string()));
}

pub(crate) fn trace(text: &str) {
    emit(Event::Trace(text.to_string()));
}

pub(crate) fn tracing() -> bool {
    SINK.get().is_some_and(|sink| sink.tracing())
}
