//! `chaos-kube`: chaos's Kubernetes side. For now it writes the CRD
//! manifests; the node agent and the runner come next
//! (docs/kubernetes-plan.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chaos-kube",
    version,
    about = "chaos on Kubernetes: custom resources, node agent and runner"
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match chaos_kube::resources::crds_yaml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("chaos-kube: cannot render the CRDs: {e:#}");
                ExitCode::from(5)
            }
        },
    }
}
