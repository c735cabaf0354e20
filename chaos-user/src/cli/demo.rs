//! `chaos demo`, and the service it runs in its sandbox.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf};

use clap::Args;

use crate::{
    demo,
    error::{Error, ExitCode, Result},
};

/// Run the demo: a sandboxed HTTP service, an experiment from experiments/
/// against it, verdicts — in about half a minute.
///
/// The demo builds a sandbox (two network namespaces joined by a veth
/// pair, a cgroup, a small HTTP service inside both), then runs
/// experiments/lossy-link.yaml against the service twice, with --set
/// variables: 5% packet loss (the hypothesis should hold) and 90% (it
/// should not: chaos aborts at once and rolls the fault back). It prints
/// the verdicts and where the reports went, and removes the sandbox — on
/// success, on failure and on Ctrl-C. Needs root.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the reports go (JSON, JUnit XML, event lines) [default: a new
    /// private directory chaos-demo-XXXXXX in $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No live view, even on a terminal.
    #[arg(long)]
    pub no_live: bool,
}

impl DemoArgs {
    pub fn run(self) -> Result<ExitCode> {
        demo::run(self.out, !self.no_live && std::io::stderr().is_terminal())
    }
}

/// The demo's HTTP service (internal: `chaos demo` starts it in its sandbox).
#[derive(Debug, Args)]
pub struct DemoServiceArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
}

impl DemoServiceArgs {
    pub fn run(self) -> Result<ExitCode> {
        demo::service::serve(self.listen)
            .map_err(|e| Error::environment(format!("demo service on {}: {e}", self.listen)))?;
        Ok(ExitCode::Ok)
    }
}
