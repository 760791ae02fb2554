//! The engine's build output: shown on stderr as it comes, or its tail kept for the error
//! message under `-q`.

use std::collections::{BTreeMap, VecDeque};

use bollard::models::BuildInfo;

use crate::shell::{Shell, Verbosity};

/// Build output lines kept for the error message when `-q` hides them.
pub(super) const KEPT_LINES: usize = 40;
/// Shows the engine's build output on stderr as it comes (or keeps its tail under `-q`).
pub(super) struct BuildOutput {
    pub(super) shell: Shell,
    pub(super) quiet: bool,
    pub(super) kept: VecDeque<String>,
    pub(super) partial: String,
    /// Last status shown per layer id while pulling, to skip repeated progress.
    pub(super) statuses: BTreeMap<String, String>,
}

impl BuildOutput {
    pub(super) fn new(shell: &Shell) -> BuildOutput {
        BuildOutput {
            shell: shell.clone(),
            quiet: shell.verbosity() == Verbosity::Quiet,
            kept: VecDeque::new(),
            partial: String::new(),
            statuses: BTreeMap::new(),
        }
    }

    pub(super) fn show(&mut self, info: &BuildInfo) {
        if let Some(text) = &info.stream {
            self.text(text);
        }
        if let Some(status) = &info.status {
            // Pull progress: one line per layer and state, not every byte count.
            let line = match &info.id {
                Some(id) => {
                    if self.statuses.get(id) == Some(status) {
                        return;
                    }
                    self.statuses.insert(id.clone(), status.clone());
                    format!("{id}: {status}\n")
                }
                None => format!("{status}\n"),
            };
            self.text(&line);
        }
    }

    pub(super) fn text(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(line.trim_end_matches(['\n', '\r']));
        }
    }

    pub(super) fn line(&mut self, line: &str) {
        if self.quiet {
            if self.kept.len() == KEPT_LINES {
                self.kept.pop_front();
            }
            self.kept.push_back(line.to_string());
        } else {
            self.shell.suspend(|| eprintln!("{line}"));
        }
    }

    pub(super) fn finish(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
    }

    /// Under `-q` the output was not shown: put its tail in the error.
    pub(super) fn kept_for_error(&self) -> String {
        if self.kept.is_empty() {
            return String::new();
        }
        let mut text = String::from("\n\nlast lines of the build output:");
        for line in &self.kept {
            text.push_str("\n  ");
            text.push_str(line);
        }
        text
    }
}
