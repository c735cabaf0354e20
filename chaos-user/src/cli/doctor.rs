//! `chaos doctor`: every mechanism chaos uses or plans, probed here.

use clap::Args;

use crate::{
    capabilities::{Capabilities, REQUIREMENTS},
    error::{ExitCode, Result},
};

/// Show which kernel mechanisms chaos can use here, each probed.
///
/// Each mechanism is probed by loading and attaching a tiny program (in a
/// throwaway network namespace or cgroup), installing a qdisc on a throwaway
/// device, or mounting a filesystem in a private mount namespace — never by
/// reading kernel configs. Nothing is left behind. The attack planner uses
/// the same probes, so what `doctor` says is what `attack` and `run` do.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl DoctorArgs {
    pub fn run(self) -> Result<ExitCode> {
        let mut caps = Capabilities::new();
        let probes = caps.probe_all();
        let kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        if self.json {
            let rows: Vec<_> = probes
                .iter()
                .map(|p| {
                    let r = p.capability.requirement();
                    serde_json::json!({
                        "capability": p.capability,
                        "name": r.name,
                        "available": p.available,
                        "detail": p.detail,
                        "used_for": r.used_for,
                        "needs": r.needs,
                    })
                })
                .collect();
            let clock_skew = crate::plan::clock::doctor_summary(&mut caps);
            println!(
                "{}",
                serde_json::json!({ "kernel": kernel, "capabilities": rows, "clock_skew": clock_skew })
            );
        } else {
            println!("kernel {kernel}\n");
            let width = REQUIREMENTS.iter().map(|r| r.name.len()).max().unwrap_or(0);
            for p in &probes {
                let r = p.capability.requirement();
                println!("{:width$}  {:3}  {}", r.name, if p.available { "yes" } else { "no" }, p.detail);
                println!("{:width$}       used for: {}; needs: {}", "", r.used_for, r.needs);
            }
            println!();
            for line in crate::plan::clock::doctor_summary(&mut caps) {
                println!("{line}");
            }
        }
        Ok(ExitCode::Ok)
    }
}
