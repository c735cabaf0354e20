//! What a run of an experiment did, for people and for CI: the record the
//! runner fills in ([`Report`]), written as JSON ([`json`]), as JUnit XML
//! ([`junit`]) and as a short text summary ([`summary`]).

pub mod json;
pub mod junit;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::{counters::Counters, probes::Stats};

/// Everything a run did. Times named `*_monotonic_ns` are CLOCK_MONOTONIC,
/// the clock of the kernel-side deadlines, so they can be compared with
/// measurements taken outside chaos.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub chaos_version: String,
    pub experiment: ExperimentInfo,
    /// `held`, `violated`, `aborted`, `not-started`, `dry-run`, `completed`
    /// (an attack without a hypothesis ran to its end) or `error`.
    pub verdict: String,
    pub exit_code: u8,
    /// One sentence: why this verdict.
    pub reason: String,
    pub started: String,
    pub ended: String,
    pub duration_seconds: f64,
    pub max_duration: String,
    pub targets: Vec<TargetInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<SteadyState>,
    pub steps: Vec<StepRecord>,
    pub probes: Vec<ProbeRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryRecord>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExperimentInfo {
    /// `experiment` (a file) or `attack` (`chaos attack`: one attack, no
    /// hypothesis).
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub file: String,
    /// Name -> value used; `--set` ones are listed in `overridden`.
    pub variables: BTreeMap<String, String>,
    pub overridden: Vec<String>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TargetInfo {
    pub name: String,
    pub path: String,
    pub id: u64,
    /// The container it was named by, if it was (see the events' target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// The check before injecting.
#[derive(Clone, Debug, Serialize)]
pub struct SteadyState {
    pub held: bool,
    pub probes: Vec<ProbeCheck>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ProbeCheck {
    pub name: String,
    pub role: String,
    pub ok: bool,
    pub latency_ms: f64,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub delay: String,
    /// `planned`, `completed`, `aborted`, `failed` or `not-run`.
    pub status: String,
    pub attacks: Vec<AttackRecord>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AttackRecord {
    pub id: String,
    pub fault: String,
    /// The fault's parameters, as in the event lines.
    pub parameters: Value,
    pub target: String,
    pub duration: String,
    pub mechanism: Value,
    /// `planned`, `completed`, `aborted`, `failed` or `not-run`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_monotonic_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_monotonic_ns: Option<u64>,
    /// Why it ended: `deadline`, `SIGINT`, `abort: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inert_monotonic_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inert_after_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached_after_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeRecord {
    pub name: String,
    pub role: String,
    pub kind: String,
    pub check: String,
    pub interval: String,
    pub timeout: String,
    pub failures: u32,
    pub stats: Stats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms_avg: Option<f64>,
    /// `held`, `violated` (hypothesis), `triggered` (abort condition),
    /// `not-recovered`, `ok` or `not-run`.
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub outcome_detail: String,
}

/// Why and how fast the run stopped early.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct AbortRecord {
    /// `hypothesis`, `abort-condition`, `max-duration`, `signal` or `target-gone`
    /// (a target's cgroup went away: its container or unit stopped or restarted).
    pub cause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    pub detail: String,
    /// When the runner decided to abort.
    pub decided_monotonic_ns: u64,
    /// From that decision to every fault inert (rules deleted) and to every
    /// program detached; `None` when no attack was running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inert_after_decision_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached_after_decision_us: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecoveryRecord {
    pub within: String,
    pub recovered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    pub detail: String,
}

/// `k=v` pairs of a JSON object, numbers without a needless `.0`.
pub fn describe_value(v: &Value) -> String {
    let Value::Object(o) = v else { return v.to_string() };
    o.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                    _ => n.to_string(),
                },
                other => other.to_string(),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A few lines for a terminal: the verdict, what ran, what the probes saw.
pub fn summary(r: &Report) -> String {
    let mut out = format!(
        "{} `{}`: {} (exit {}) — {}\n",
        r.experiment.kind,
        r.experiment.name,
        r.verdict.to_uppercase(),
        r.exit_code,
        r.reason
    );
    if let Some(ss) = &r.steady_state {
        out += &format!(
            "  steady state before injecting: {}\n",
            if ss.held { "held".to_owned() } else { "did NOT hold — nothing was injected".to_owned() }
        );
        for p in ss.probes.iter().filter(|p| !p.ok) {
            out += &format!("    {} ({}): {}\n", p.name, p.role, p.detail);
        }
    }
    for step in &r.steps {
        for a in &step.attacks {
            let counters = a
                .counters
                .as_ref()
                .map(|c| format!("; injected into {} of {} matching events", c.injected, c.matched))
                .unwrap_or_default();
            out += &format!(
                "  {} {} on {} for {}: {}{counters}\n",
                a.id, a.fault, a.target, a.duration, a.status
            );
        }
    }
    for p in &r.probes {
        let lat = match (p.latency_ms_avg, p.stats.latency_ms_max) {
            (Some(avg), Some(max)) => format!(", latency avg {avg:.1}ms max {max:.1}ms"),
            _ => String::new(),
        };
        out += &format!(
            "  probe {} ({}): {} checks, {} failed{lat}{}\n",
            p.name,
            p.role,
            p.stats.checks,
            p.stats.failed,
            if p.stats.healthy { "" } else { " — UNHEALTHY" }
        );
    }
    if let Some(a) = &r.abort {
        out += &format!("  aborted ({}): {}\n", a.cause, a.detail);
        if let Some(us) = a.inert_after_decision_us {
            out += &format!(
                "  faults inert {:.2} ms after the abort decision, programs detached after {:.2} ms\n",
                us as f64 / 1000.0,
                a.detached_after_decision_us.unwrap_or(us) as f64 / 1000.0
            );
        }
    }
    if let Some(rec) = &r.recovery {
        out += &format!("  recovery (within {}): {}\n", rec.within, rec.detail);
    }
    out
}
