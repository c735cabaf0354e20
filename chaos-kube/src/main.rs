//! `chaos-kube`: chaos's Kubernetes side (docs/kubernetes-plan.md): the
//! CRD manifests, the node agent and the experiment runner.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chaos-kube",
    version,
    about = "chaos on Kubernetes: custom resources, the node agent and the experiment runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of ChaosExperiment and ChaosAttack
    /// as YAML (what deploy/crds.yaml holds): `chaos-kube crds | kubectl apply -f -`.
    Crds,
    /// Run the node agent: watch the ChaosAttacks labelled
    /// `chaos.dev/node=NODE` in every namespace and run each on this node's
    /// pods until its deadline (deleting one stops it).
    ///
    /// The API server is found as kubectl finds it: $KUBECONFIG,
    /// ~/.kube/config, or the pod's service account in a cluster. Before
    /// anything else the agent recovers what an earlier agent process left
    /// (as `chaos recover`); an attack it left Running is resumed for the
    /// time left before its deadline, never longer.
    Agent {
        /// This node's name (in a DaemonSet: the downward API's
        /// spec.nodeName).
        #[arg(long, env = "NODE_NAME", value_name = "NODE")]
        node: String,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
        /// 0.0.0.0:9464): each attack's counters (matched, injected,
        /// expired) by attack, fault and pod, live while it runs.
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Run the experiment runner: watch ChaosExperiments and run each new
    /// one as `chaos run` runs a file — the steady state checked from here,
    /// one ChaosAttack per node and step (owned by the experiment, with
    /// its deadline), the probes watched, the attacks deleted to roll back,
    /// the verdict and exit code in the status and the reports in the
    /// ConfigMap `chaos-report-NAME`.
    ///
    /// Replicas share the work through a Lease: one runs experiments, the
    /// others wait to take over. An experiment left Running by a runner
    /// that stopped is rolled back (its attacks deleted) and ends
    /// `aborted`, never resumed half-checked.
    Controller {
        /// Only this namespace's experiments (default: every namespace's).
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// The namespace of the Lease (in a Deployment: the pod's own,
        /// from the downward API).
        #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE", default_value = "chaos-system")]
        lease_namespace: String,
        /// The Lease's name: replicas with the same one share the work.
        #[arg(long, value_name = "NAME", default_value = "chaos-runner")]
        lease: String,
        /// This replica's name in the Lease and the statuses (in a
        /// Deployment: the pod's name; default: HOSTNAME-PID).
        #[arg(long, env = "POD_NAME", value_name = "NAME")]
        identity: Option<String>,
    },
    /// Run an experiment file on the cluster and exit as `chaos run` does
    /// (0 held, 1 violated, 2 aborted or not started, 3 invalid, 5 an
    /// error): the file (an experiment, or a ChaosExperiment object) is
    /// validated here, created as the ChaosExperiment `NAME-xxxxx`, and
    /// followed until the runner's verdict. Ctrl-C deletes it, which rolls
    /// its faults back.
    Run {
        /// The experiment file.
        file: std::path::PathBuf,
        /// Set a variable: `--set loss=5` (repeatable).
        #[arg(long, value_name = "NAME=VALUE", value_parser = chaos::experiment::vars::parse_set)]
        set: Vec<(String, String)>,
        /// The namespace to run in (default: the file's, else the
        /// kubeconfig's); the targets are pods of this namespace.
        #[arg(long, short = 'n', value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// Write the JSON report here.
        #[arg(long, value_name = "FILE")]
        report: Option<std::path::PathBuf>,
        /// Write the JUnit XML report here.
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// An attack's guardian: the limit families (pause, cpu-starve,
    /// memory-pressure, io-throttle) start one from the binary that runs
    /// the attack (chaos-user/src/guardian.rs), which is this one here.
    #[command(hide = true)]
    Guardian,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("CHAOS_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Crds => chaos_kube::resources::crds_yaml().map(|text| print!("{text}")),
        Command::Agent { node, metrics_addr } => agent(node, metrics_addr),
        Command::Controller { namespace, lease_namespace, lease, identity } => {
            controller(chaos_kube::runner::Options {
                namespace,
                lease_namespace,
                lease_name: lease,
                identity: identity.unwrap_or_else(default_identity),
            })
        }
        Command::Run { file, set, namespace, report, junit } => {
            let submit = chaos_kube::submit::Submit { file, set, namespace, report, junit };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(e.into()),
            };
            return match runtime.block_on(chaos_kube::submit::run(submit)) {
                Ok(code) => code,
                Err(e) => fail(e),
            };
        }
        Command::Guardian => chaos::guardian::run().map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("chaos-kube: {e:#}");
    ExitCode::from(5)
}

fn agent(node: String, metrics_addr: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    chaos::session::require_root("chaos-kube agent")?;
    // First, with one thread (it may setns into the node's cgroup namespace).
    let checked = chaos_kube::agent::preflight::check();
    for m in &checked.missing {
        tracing::warn!("{}", m.what);
    }
    if let Some(dir) = &checked.guardians {
        chaos::guardian::place_in(dir.clone());
    }
    if let Some(dir) = &checked.home {
        chaos::capabilities::scratch_in(dir.clone());
    }
    if let Some(state) = &checked.state {
        for a in chaos::recover::recover(state)? {
            tracing::info!(object = a.object, outcome = a.outcome, "recovered what an earlier process left");
        }
    }
    // Every attack's events feed one exposition (chaos's own metrics).
    let metrics = chaos::metrics::Metrics::new("chaos-agent");
    let _server = match metrics_addr {
        Some(addr) => {
            let server = chaos::metrics::serve(addr, metrics.clone())?;
            tracing::info!("metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ran = runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        chaos_kube::agent::run(client, node, checked.missing, metrics).await
    });
    if let Some(dir) = &checked.guardians {
        chaos_kube::agent::preflight::remove_guardians(dir);
    }
    ran
}

fn controller(opts: chaos_kube::runner::Options) -> anyhow::Result<()> {
    // Worker threads: each experiment's run blocks on its API calls from a
    // thread of its own, which the runtime's workers serve.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        chaos_kube::runner::run(client, opts).await
    })
}

/// `HOSTNAME-PID`: unique on a machine, readable in a status.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}
