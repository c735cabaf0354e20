//! `--output`, `--events`, the reports and the metrics: where a run's
//! events and records go, for `chaos run` and `chaos attack` alike. The
//! events follow kubectl and docker: a person at a terminal reads the live
//! view and the summary (stderr); a program reading stdout gets JSON lines.
//! The two never share a terminal, where they would garble each other.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};

use crate::{
    capabilities::CapabilitySet,
    error::{Error, Result},
    events::{Events, JsonLines},
    experiment::Options,
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

    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write a JUnit XML report to FILE, for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// While running, serve counters in the Prometheus text format on
    /// ADDR (e.g. 127.0.0.1:9464), at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// No live view on stderr, even on a terminal.
    #[arg(long)]
    pub no_live: bool,
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

    /// Check the output paths, then open --events and stdout. A missing
    /// directory is refused before anything is injected, rather than the
    /// verdict lost at the end.
    pub fn open(&self) -> Result<Output> {
        for (flag, path) in [("--report", &self.report), ("--junit", &self.junit), ("--events", &self.events)]
        {
            let Some(path) = path else { continue };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(Error::invalid(format!(
                    "{flag} {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
        }
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

    /// The runner's options: these outputs, for a run that `out` opened.
    pub fn run_options(&self, out: &Output, dry_run: bool, capabilities: Option<CapabilitySet>) -> Options {
        Options {
            dry_run,
            capabilities,
            report: self.report.clone(),
            junit: self.junit.clone(),
            metrics_addr: self.metrics_addr,
            live: !self.no_live && out.live(),
            ends_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(output: OutputMode, events: bool) -> OutputArgs {
        OutputArgs {
            output,
            events: events.then(|| PathBuf::from("e.jsonl")),
            report: None,
            junit: None,
            metrics_addr: None,
            no_live: false,
        }
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
