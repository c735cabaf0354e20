//! `chaos doctor`: every mechanism chaos uses or plans, probed here, and
//! what each fault kind gets from them.

use clap::Args;
use serde_json::json;

use crate::{
    capabilities::{CapabilitySet, REQUIREMENTS},
    error::{ExitCode, Result},
    plan::{self, KINDS, Preferences},
};

/// Show which kernel mechanisms chaos can use here, each probed, and the
/// mechanism and safety layers each fault kind gets.
///
/// Each mechanism is probed by loading and attaching a tiny program (in a
/// throwaway network namespace or cgroup), installing a qdisc on a throwaway
/// device, or mounting a filesystem in a private mount namespace — never by
/// reading kernel configs. Nothing is left behind. The attack planner plans
/// from the same probes, so what `doctor` says is what `attack` and `run`
/// do. Without root only the privileges and cgroup v2 are probed; the rest
/// is reported unknown.
///
/// `--json` prints the capability set itself: the file that
/// `chaos attack --dry-run --capabilities FILE`, `chaos run --dry-run
/// --capabilities FILE` and `chaos validate --plan --capabilities FILE`
/// plan from, anywhere, unprivileged.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of a table: `kernel`, `capabilities` (one row per
    /// probe), `families` (each fault kind's plan) and `clock_skew`.
    #[arg(long)]
    pub json: bool,
}

impl DoctorArgs {
    pub fn run(self) -> Result<ExitCode> {
        let prefs = Preferences::from_env()?;
        let caps = CapabilitySet::detect_all();
        let families = families(&caps, &prefs);
        if self.json {
            println!(
                "{}",
                json!({
                    "kernel": caps.kernel,
                    "capabilities": caps.capabilities,
                    "families": families,
                    "clock_skew": plan::clock::doctor_summary(&caps),
                })
            );
        } else {
            println!("kernel {}\n", caps.kernel);
            let width = REQUIREMENTS.iter().map(|r| r.name.len()).max().unwrap_or(0);
            for p in &caps.capabilities {
                let r = p.capability.requirement();
                let answer = match (p.probed, p.available) {
                    (false, _) => "?",
                    (true, true) => "yes",
                    (true, false) => "no",
                };
                println!("{:width$}  {answer:3}  {}", r.name, p.detail);
                println!("{:width$}       used for: {}; needs: {}", "", r.used_for, r.needs);
            }
            println!("\nfaults:");
            for f in &families {
                let name = f["fault"].as_str().unwrap_or_default();
                match f["mechanism_text"].as_str() {
                    Some(m) => {
                        println!("  {name:13}  {m}");
                        println!("  {:13}  safety: {}", "", f["safety_text"].as_str().unwrap_or_default());
                    }
                    None => {
                        println!("  {name:13}  UNAVAILABLE: {}", f["reason"].as_str().unwrap_or_default())
                    }
                }
            }
            println!();
            for line in plan::clock::doctor_summary(&caps) {
                println!("{line}");
            }
        }
        Ok(ExitCode::Ok)
    }
}

/// Each fault kind planned from `caps`: its mechanism and the safety
/// layers that mechanism provides, or why it cannot be planned.
pub(crate) fn families(caps: &CapabilitySet, prefs: &Preferences) -> Vec<serde_json::Value> {
    KINDS
        .iter()
        .map(|(kind, demand)| match plan::plan_demand(kind, *demand, caps, prefs) {
            Ok(m) => json!({
                "fault": kind,
                "available": true,
                "mechanism": m,
                "mechanism_text": m.describe(),
                "safety": m.safety(),
                "safety_text": plan::safety_text(&m),
            }),
            Err(e) => json!({ "fault": kind, "available": false, "reason": e.to_string() }),
        })
        .collect()
}
