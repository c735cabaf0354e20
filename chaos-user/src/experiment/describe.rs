//! How an experiment's parts read for people: the `--dry-run` plan, one-line
//! descriptions of faults, probes and steps, and durations.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use super::model::Experiment;
use crate::{
    attack::{Attack, Planned},
    probes::Probe,
    report::describe_value,
    targets::Target,
    units::format_duration,
};

/// The plan, for `--dry-run`.
pub fn plan_text(
    e: &Experiment,
    targets: &BTreeMap<String, Vec<Target>>,
    plan: &[Vec<(Attack, Planned)>],
) -> String {
    let mut s = format!("experiment `{}` ({})\n", e.name, e.file);
    if let Some(d) = &e.description {
        s += &format!("  {}\n", d.trim().replace('\n', "\n  "));
    }
    if !e.variables.is_empty() {
        let vars: Vec<String> = e
            .variables
            .iter()
            .map(|(k, v)| format!("{k}={}{}", v.value, if v.overridden { " (--set)" } else { "" }))
            .collect();
        s += &format!("variables: {}\n", vars.join(", "));
    }
    s += "targets:\n";
    for (name, matched) in targets {
        for t in matched {
            s += &format!("  {name}: {t} (level {})\n", t.level);
        }
    }
    s += &format!(
        "hypothesis (must pass again within {} after the method):\n",
        dur(e.hypothesis.recover_within)
    );
    for p in &e.hypothesis.probes {
        s += &probe_line(p);
    }
    if e.abort.is_empty() {
        s += "abort conditions: none\n";
    } else {
        s += "abort conditions:\n";
        for p in &e.abort {
            s += &probe_line(p);
        }
    }
    s += &format!(
        "method ({} when nothing goes wrong; max-duration {}):\n",
        dur(e.method_length()),
        dur(e.max_duration)
    );
    let mut at = Duration::ZERO;
    for (step, group) in e.method.iter().zip(plan) {
        at += step.delay;
        for (a, m) in group {
            s += &format!(
                "  at +{:<7} {} for {} on {}\n      {}\n      mechanism: {}\n      safety: {}\n",
                dur(at),
                a.id,
                dur(a.duration),
                a.target,
                describe_fault(a),
                describe_value(&serde_json::to_value(m).unwrap_or(Value::Null)),
                crate::plan::safety_text(&m.mechanism()),
            );
        }
        at += step.attacks.iter().map(|a| a.duration).max().unwrap_or_default();
    }
    s += "dry run: nothing was injected\n";
    s
}

fn probe_line(p: &Probe) -> String {
    let netns = p.netns.as_deref().map(|n| format!(", in netns {n}")).unwrap_or_default();
    format!(
        "  {}: {} {}\n      every {}, timeout {}, unhealthy after {} failed check{} in a row{netns}\n",
        p.name,
        p.check.kind(),
        p.check.describe(),
        dur(p.interval),
        dur(p.timeout),
        p.failures,
        if p.failures == 1 { "" } else { "s" }
    )
}

pub fn step_line(group: &[(Attack, Planned)]) -> String {
    let parts: Vec<String> = group
        .iter()
        .map(|(a, _)| format!("{} for {} on {}", describe_fault(a), dur(a.duration), a.target.path.display()))
        .collect();
    parts.join(" + ")
}

/// The fault's parameters (everything the events say but the target).
pub fn fault_parameters(a: &Attack) -> Value {
    let mut v = serde_json::to_value(&a.fault).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.remove("fault");
    }
    v
}

/// `net-loss percent=5 direction=both protocol=any`
pub fn describe_fault(a: &Attack) -> String {
    let params = describe_value(&fault_parameters(a));
    if params.is_empty() { a.fault.kind().to_owned() } else { format!("{} {params}", a.fault.kind()) }
}

/// A duration as files spell it; zero is `0s`.
pub fn dur(d: Duration) -> String {
    if d.is_zero() { "0s".into() } else { format_duration(d) }
}

/// `1:05` for a duration.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_and_durations_read_compactly() {
        let v = json!({"percent": 5.0, "direction": "both", "port": 53, "ratio": 0.5});
        assert_eq!(describe_value(&v), "direction=both percent=5 port=53 ratio=0.5");
        assert_eq!(clock(Duration::from_secs(65)), "1:05");
        assert_eq!(dur(Duration::ZERO), "0s");
        assert_eq!(dur(Duration::from_millis(1500)), "1500ms");
    }
}
