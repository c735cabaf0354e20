//! `chaos run FILE`: run an experiment file and give a verdict.

use std::path::PathBuf;

use clap::Args;

use crate::{
    capabilities::CapabilitySet,
    error::{Error, ExitCode, Result},
    events::Events,
    experiment::{self, Experiment, Options, vars::parse_set},
    report,
    signals::SignalWatch,
};

use super::output::OutputArgs;

/// Run an experiment: check the steady state, inject, watch, verdict
///
/// An experiment file (YAML) states a hypothesis about a system — probes
/// that stay within their tolerances — and a method: attacks, in sequence
/// or in parallel, each after an optional delay. chaos checks the
/// hypothesis before injecting (and refuses to start when it does not
/// hold), probes continuously while attacks run, aborts at once when a
/// probe goes out of tolerance or an abort condition trips (rules deleted
/// first, programs detached, the time it took recorded), and after the
/// method checks that the system recovers within `recover-within`.
///
///   name: lossy-link
///   variables: {target: /system.slice/app.service, loss: 5}
///   targets:
///     app: {cgroup: "${target}"}         # or pid: 1234
///   hypothesis:
///     recover-within: 30s
///     probes:
///       - name: health
///         http: {url: "http://127.0.0.1:8080/health"}   # or tcp, command, prometheus
///         tolerance: {status: 2xx, max-latency: 500ms}
///         interval: 1s
///         timeout: 2s
///         failures: 3                    # consecutive failures = unhealthy
///   method:
///     - fault: net-loss                  # one attack ...
///       percent: ${loss}
///       duration: 1m
///     - start-after: 10s                 # ... then several at once
///       parallel:
///         - {fault: net-loss, percent: 20, port: 5432, duration: 30s}
///   abort:                               # safety probes: unhealthy = stop (exit 2)
///     - name: errors
///       prometheus: {url: "http://prometheus:9090", query: "sum(rate(http_errors_total[1m]))"}
///       tolerance: {below: 5}
///   max-duration: 5m
///
/// The whole format, with every field and default: experiments/README.md.
/// Check files without running them: `chaos validate FILE`.
///
/// Output: on a terminal, a live view and a summary (stderr); piped, the
/// events as JSON lines on stdout (--output; the schema is
/// docs/events.schema.json); --events FILE for the JSON lines in a file;
/// --report (JSON) and --junit (JUnit XML) for CI; --metrics-addr for
/// Prometheus.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The experiment file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Set a variable the file declares (repeatable): --set loss=20.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,

    /// Validate, resolve targets and plan a mechanism for every attack,
    /// print the plan, and inject nothing. Works without root: what cannot
    /// be probed unprivileged is unknown, and attacks that need it are
    /// refused naming --capabilities.
    #[arg(long)]
    pub dry_run: bool,

    /// Plan from this capability set (`chaos doctor --json` of the machine
    /// that will run it) instead of probing this kernel; with --dry-run.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub capabilities: Option<PathBuf>,

    /// Run it on the Kubernetes cluster of the kubeconfig instead of this
    /// machine, with the same exit codes: its targets are pods, the runner
    /// (`chaos-kube controller`) runs it. This runs `chaos-kube run`
    /// (found next to chaos, else in PATH), which says more.
    #[arg(long, conflicts_with_all = ["dry_run", "capabilities"])]
    pub kube: bool,

    /// With --kube: the namespace to run in and whose pods are the targets
    /// (default: the file's, else the kubeconfig's).
    #[arg(long, value_name = "NAMESPACE", requires = "kube")]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,
}

impl RunArgs {
    pub fn run(self) -> Result<ExitCode> {
        if self.kube {
            return Err(self.on_kube());
        }
        let exp = experiment::load(&self.file, &self.set)?;
        let capabilities = self.capabilities.as_deref().map(CapabilitySet::load).transpose()?;
        let output = self.output.open()?;
        let signals = SignalWatch::install().map_err(|e| Error::kernel("installing signal handlers", e))?;
        let options = self.output.run_options(&output, self.dry_run, capabilities);
        execute(&exp, &options, &output.events, &signals).map(|(code, _)| code)
    }

    /// `--kube`: become `chaos-kube run` with the same file, variables and
    /// report paths; returns only when that cannot be started. The binary
    /// lives in a separate crate so that chaos does not carry a Kubernetes
    /// client.
    fn on_kube(&self) -> Error {
        use std::os::unix::process::CommandExt;
        let beside =
            std::env::current_exe().ok().map(|p| p.with_file_name("chaos-kube")).filter(|p| p.is_file());
        let program = beside.unwrap_or_else(|| PathBuf::from("chaos-kube"));
        let mut cmd = std::process::Command::new(&program);
        cmd.arg("run").arg(&self.file);
        for (k, v) in &self.set {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
        if let Some(ns) = &self.namespace {
            cmd.arg("--namespace").arg(ns);
        }
        if let Some(p) = &self.output.report {
            cmd.arg("--report").arg(p);
        }
        if let Some(p) = &self.output.junit {
            cmd.arg("--junit").arg(p);
        }
        let e = cmd.exec();
        Error::environment(format!(
            "--kube runs `chaos-kube run`, and {} cannot be started ({e}): install chaos-kube next to chaos or in PATH",
            program.display()
        ))
    }
}

/// Run `exp` and print its summary and where the reports went (stderr).
/// Shared with `chaos demo`.
pub fn execute(
    exp: &Experiment,
    options: &Options,
    events: &Events,
    signals: &SignalWatch,
) -> Result<(ExitCode, report::Report)> {
    let outcome = experiment::run(exp, options, events, signals);
    let wrote: Vec<String> =
        [&options.report, &options.junit].into_iter().flatten().map(|p| p.display().to_string()).collect();
    match outcome {
        Ok(o) => {
            if !options.dry_run {
                eprint!("{}", report::summary(&o.report));
            }
            if !wrote.is_empty() {
                eprintln!("  reports: {}", wrote.join(", "));
            }
            Ok((o.verdict.exit_code(), o.report))
        }
        Err(e) => {
            if !wrote.is_empty() {
                eprintln!("chaos: reports (verdict: error): {}", wrote.join(", "));
            }
            Err(e)
        }
    }
}
