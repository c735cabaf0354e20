//! `--output` and `--events`: where the run-event stream goes, as kubectl
//! and docker do it. A person at a terminal reads the live view and the
//! summary (stderr); a program reading stdout gets JSON lines. The two never
//! share a terminal, where they would garble each other.

use std::{io::IsTerminal, path::PathBuf};

use clap::{Args, ValueEnum};

use crate::{
    error::{Error, Result},
    events::{Events, JsonLines},
};

/// What stdout carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// `json` when stdout is not a terminal (a pipe, a file) and no
    /// --events FILE takes the events; `human` otherwise.
    Auto,
    /// The events, one JSON object per line (docs/events.schema.json).
    Json,
    /// Nothing on stdout: the live view and the summary are on stderr.
    Human,
}

/// The flags, shared by `chaos run` and `chaos attack`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// What stdout carries: the events as JSON lines (`json`), or nothing
    /// but what a person reads on stderr (`human`: live view, summary).
    /// `auto`: json when stdout is not a terminal, unless --events takes
    /// them.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = OutputMode::Auto)]
    pub output: OutputMode,

    /// Write the events as JSON lines to FILE, whatever --output says. An
    /// existing FILE is replaced (a symlink there too, not followed).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

/// Where the events go, decided.
pub struct Output {
    pub events: Events,
    /// JSON lines go to the terminal: nothing else may draw on it.
    pub json_on_terminal: bool,
}

impl Output {
    /// Whether a view may redraw itself on stderr: it is a terminal, and
    /// no JSON lines are being written to that terminal.
    pub fn live(&self) -> bool {
        std::io::stderr().is_terminal() && !self.json_on_terminal
    }
}

impl OutputArgs {
    /// Whether stdout carries the JSON lines, given whether it is a terminal.
    fn json_on_stdout(&self, stdout_is_terminal: bool) -> bool {
        match self.output {
            OutputMode::Json => true,
            OutputMode::Human => false,
            // Before --output, --events FILE meant "instead of stdout".
            OutputMode::Auto => !stdout_is_terminal && self.events.is_none(),
        }
    }

    pub fn open(&self) -> Result<Output> {
        let events = Events::default();
        if let Some(p) = &self.events {
            let file = crate::safe_fs::create_replacing(p)
                .map_err(|e| Error::invalid(format!("--events {}: {e}", p.display())))?;
            events.subscribe(Box::new(JsonLines::new(Box::new(file))));
        }
        let terminal = std::io::stdout().is_terminal();
        let json = self.json_on_stdout(terminal);
        if json {
            events.subscribe(Box::new(JsonLines::new(Box::new(std::io::stdout()))));
        }
        Ok(Output { events, json_on_terminal: json && terminal })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(output: OutputMode, events: bool) -> OutputArgs {
        OutputArgs { output, events: events.then(|| PathBuf::from("e.jsonl")) }
    }

    #[test]
    fn auto_is_json_only_off_a_terminal_without_events_file() {
        assert!(args(OutputMode::Auto, false).json_on_stdout(false));
        assert!(!args(OutputMode::Auto, false).json_on_stdout(true));
        assert!(!args(OutputMode::Auto, true).json_on_stdout(false));
        assert!(args(OutputMode::Json, true).json_on_stdout(true));
        assert!(!args(OutputMode::Human, false).json_on_stdout(false));
    }
}
