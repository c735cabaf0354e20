//! `chaos demo`, and the service it runs in its sandbox.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf};

use clap::Args;

use crate::{
    demo,
    error::{Error, ExitCode, Result},
    runtime::Runtime,
};

/// Run the demo: a sandboxed HTTP service, an experiment from experiments/
/// against it, verdicts — in about half a minute.
///
/// The demo builds a sandbox: a small HTTP service and a client network
/// namespace joined to it by a veth pair. Where docker or podman runs
/// containers, the service is a real container (busybox httpd, from an
/// image the demo imports: no registry needed) and the experiment names
/// it by its container name; elsewhere it is a process in a cgroup and a
/// network namespace of the demo's own. Then it runs
/// experiments/lossy-link.yaml against the service twice, with --set
/// variables: 5% packet loss (the hypothesis should hold) and 90% (it
/// should not: chaos aborts at once and rolls the fault back). It prints
/// the verdicts and where the reports went, and removes the sandbox, the
/// container and its image — on success, on failure and on Ctrl-C. Needs
/// root.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the reports go (JSON, JUnit XML, event lines) [default: a new
    /// private directory chaos-demo-XXXXXX in $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No live view, even on a terminal.
    #[arg(long)]
    pub no_live: bool,

    /// Run the service in a container of this runtime, or fail [default:
    /// the first of docker and podman that runs one, else a process].
    #[arg(long, value_name = "RUNTIME", value_parser = ["docker", "podman"], conflicts_with = "no_container")]
    pub runtime: Option<String>,

    /// Run the service as a process in a cgroup of the demo's, even where
    /// a container runtime works.
    #[arg(long)]
    pub no_container: bool,
}

impl DemoArgs {
    pub fn run(self) -> Result<ExitCode> {
        let host = match (self.no_container, self.runtime.as_deref()) {
            (true, _) => demo::Host::Process,
            (false, Some("docker")) => demo::Host::Runtime(Runtime::Docker),
            (false, Some(_)) => demo::Host::Runtime(Runtime::Podman),
            (false, None) => demo::Host::Any,
        };
        demo::run(self.out, !self.no_live && std::io::stderr().is_terminal(), host)
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
