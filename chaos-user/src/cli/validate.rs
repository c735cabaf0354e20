//! `chaos validate FILE...`: check experiment files without running them.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use crate::{
    capabilities::{Capabilities, CapabilitySet, Findings},
    error::{ExitCode, Result},
    experiment::{self, Experiment, vars::parse_set},
    plan::{self, Demand, Preferences},
    units::format_duration,
};

/// Check experiment files: every problem at once, each with
/// file:line:column and what to write instead.
///
/// Validation is pure: targets are not resolved and nothing is probed or
/// injected, so it runs anywhere, unprivileged (e.g. in CI before
/// deploying). With --plan it also plans every attack (the mechanism each
/// gets, and the safety layers that provides) from a capability set:
/// --capabilities FILE (`chaos doctor --json` of the machine that will run
/// it), else what can be probed here. `chaos run --dry-run FILE` goes
/// further on the machine itself: it resolves targets too.
/// Exit code 0 when every file is valid (and, with --plan, every attack
/// can be planned), 3 otherwise.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Experiment files.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Set a variable the files declare (repeatable), as `chaos run` would.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,

    /// One JSON object per problem on stdout
    /// (`{"file", "line", "column", "message", "hint"}`), for editors.
    #[arg(long)]
    pub json: bool,

    /// Also plan every attack, step by step: the mechanism chosen and the
    /// safety layers it provides (with --json, one object per attack).
    #[arg(long)]
    pub plan: bool,

    /// Plan from this capability set (`chaos doctor --json` of the machine
    /// that will run the experiment) instead of probing this kernel.
    #[arg(long, value_name = "FILE", requires = "plan")]
    pub capabilities: Option<PathBuf>,
}

impl ValidateArgs {
    pub fn run(self) -> Result<ExitCode> {
        let recorded = match (self.plan, &self.capabilities) {
            (true, Some(file)) => Some(CapabilitySet::load(file)?),
            _ => None,
        };
        let prefs = if self.plan { Some(Preferences::from_env()?) } else { None };
        // Probes as the planner asks, once for every file.
        let probing = Capabilities::new();
        let mut invalid = 0;
        for path in &self.files {
            let name = path.display().to_string();
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    invalid += 1;
                    if self.json {
                        println!(
                            "{}",
                            json!({ "file": name, "line": 0, "column": 0, "message": format!("cannot read: {e}") })
                        );
                    } else {
                        eprintln!("{name}: error: cannot read: {e}");
                    }
                    continue;
                }
            };
            match experiment::parse(&name, &text, &self.set) {
                Ok(exp) => {
                    if let Some(prefs) = &prefs {
                        let caps: &dyn Findings = match &recorded {
                            Some(set) => set,
                            None => &probing,
                        };
                        if !print_plan(&name, &exp, caps, prefs, self.capabilities.as_deref(), self.json) {
                            invalid += 1;
                        }
                    }
                    if !self.json {
                        let attacks = exp.attacks().count();
                        let probes = exp.hypothesis.probes.len() + exp.abort.len();
                        println!(
                            "{name}: ok — `{}`: {} step{}, {attacks} attack{}, {probes} probe{}, method {}, max-duration {}",
                            exp.name,
                            exp.method.len(),
                            plural(exp.method.len()),
                            plural(attacks),
                            plural(probes),
                            format_duration(exp.method_length()),
                            format_duration(exp.max_duration),
                        );
                    }
                }
                Err(diags) => {
                    invalid += 1;
                    if self.json {
                        for d in &diags.list {
                            println!(
                                "{}",
                                json!({
                                    "file": name,
                                    "line": d.span.start.line,
                                    "column": d.span.start.col,
                                    "message": d.message,
                                    "hint": d.hint,
                                })
                            );
                        }
                    } else {
                        eprint!("{diags}");
                        eprintln!("{name}: {} problem{}\n", diags.len(), plural(diags.len()));
                    }
                }
            }
        }
        Ok(if invalid == 0 { ExitCode::Ok } else { ExitCode::Invalid })
    }
}

/// Plan every attack of `exp` from `caps`, step by step, on stdout; false
/// when one cannot be planned (its reason is printed).
fn print_plan(
    name: &str,
    exp: &Experiment,
    caps: &dyn Findings,
    prefs: &Preferences,
    file: Option<&Path>,
    json: bool,
) -> bool {
    let mut ok = true;
    if !json {
        match file {
            Some(f) => println!("{name}: plan from {} (kernel {}):", f.display(), caps.kernel()),
            None => println!("{name}: plan from the capabilities probed here (kernel {}):", caps.kernel()),
        }
        let unknown: Vec<String> = exp
            .attacks()
            .flat_map(|a| Demand::of(&a.fault).consults().iter().copied())
            .filter(|c| caps.is_unknown(*c))
            .map(|c| c.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !unknown.is_empty() {
            println!(
                "  unknown (not probed without root): {}; planned as missing: give --capabilities FILE (from \
                 `chaos doctor --json`) to plan with them",
                unknown.join(", ")
            );
        }
    }
    for (i, step) in exp.method.iter().enumerate() {
        if !json {
            println!("  step {} `{}`:", i + 1, step.name);
        }
        for a in &step.attacks {
            let subject = format!("attack `{}` ({})", a.id, a.fault.kind());
            let planned = plan::plan_demand(&subject, Demand::of(&a.fault), caps, prefs);
            if planned.is_err() {
                ok = false;
            }
            match (json, planned) {
                (true, Ok(m)) => println!(
                    "{}",
                    json!({ "file": name, "step": step.name, "attack": a.id, "fault": a.fault.kind(),
                            "mechanism": m, "safety": m.safety() })
                ),
                (true, Err(e)) => println!(
                    "{}",
                    json!({ "file": name, "step": step.name, "attack": a.id, "fault": a.fault.kind(),
                            "line": a.span.start.line, "column": a.span.start.col, "message": e.to_string() })
                ),
                (false, Ok(m)) => {
                    println!("    {} ({}): {}", a.id, a.fault.kind(), m.describe());
                    println!("      safety: {}", plan::safety_text(&m));
                }
                (false, Err(e)) => {
                    println!("    {} ({}): cannot be planned: {e}", a.id, a.fault.kind());
                }
            }
        }
    }
    ok
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
