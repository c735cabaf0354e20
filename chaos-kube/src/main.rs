//! `chaos-kube`: chaos's Kubernetes side (docs/kubernetes-plan.md): the
//! CRD manifests and the node agent. The runner comes next.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chaos-kube", version, about = "chaos on Kubernetes: custom resources and the node agent")]
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
        Command::Guardian => chaos::guardian::run().map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-kube: {e:#}");
            ExitCode::from(5)
        }
    }
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
