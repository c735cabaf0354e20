//! What the runner does about each `ChaosExperiment` it sees, and what it
//! refuses in one before anything runs: pure functions, unit-tested on
//! recorded objects.

use std::collections::BTreeSet;

use chaos::{
    experiment::{Experiment, Selector},
    probes::Check,
    runtime::PodQuery,
};
use kube::ResourceExt;

use crate::resources::ChaosExperiment;

/// What to do about one experiment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// New: validate it and run it.
    Start,
    /// Marked Running by a runner that does not run it any more (this
    /// process restarted, or another replica lost the lease): its probe
    /// history is gone with that runner, so it is not resumed but rolled
    /// back (its attacks deleted) and ended `aborted`.
    Orphaned { runner: String },
    /// Running here, or done.
    Nothing,
}

/// `running` holds the uids of the experiments this process runs.
pub fn decide(exp: &ChaosExperiment, running: &BTreeSet<String>) -> Decision {
    let uid = exp.uid().unwrap_or_default();
    if running.contains(&uid) {
        return Decision::Nothing;
    }
    let status = exp.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        None | Some("" | "Pending") => Decision::Start,
        Some("Running") => Decision::Orphaned {
            runner: status.and_then(|s| s.runner.clone()).unwrap_or_else(|| "an earlier runner".into()),
        },
        Some(_) => Decision::Nothing,
    }
}

/// What a cluster cannot run of an experiment that a machine could, each
/// as a sentence naming the thing and the fix. An experiment attacks only
/// pods of its own namespace: who may create a ChaosExperiment in a
/// namespace may then attack that namespace and no other.
pub fn refusals(exp: &Experiment, namespace: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in &exp.targets {
        match &t.selector {
            Selector::Pod { query: PodQuery::Name { namespace: ns, name }, .. } if ns != namespace => {
                out.push(format!(
                    "target `{}`: pod {ns}/{name} is in namespace {ns}, and this experiment in {namespace}: \
                     an experiment attacks only pods of its own namespace; create it in {ns}",
                    t.name
                ));
            }
            Selector::Pod { .. } => {}
            other => out.push(format!(
                "target `{}` names {other}, a thing of one machine: in a cluster a target is `pod`, \
                 `pod-uid` or `pod-selector` (run the file with `chaos run` on that machine instead)",
                t.name
            )),
        }
    }
    let probes = exp.hypothesis.probes.iter().chain(&exp.abort);
    for p in probes {
        if matches!(p.check, Check::Command(_)) {
            out.push(format!(
                "probe `{}` runs a command, which in a cluster would run in the runner's container: \
                 use an `http`, `tcp` or `prometheus` probe",
                p.name
            ));
        }
        if p.netns.is_some() {
            out.push(format!(
                "probe `{}` names a network namespace of one machine (`netns`): in a cluster probes run \
                 from the runner's pod; drop `netns` and probe an address the runner reaches",
                p.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn recorded(status: serde_json::Value) -> ChaosExperiment {
        serde_json::from_value(json!({
            "apiVersion": "chaos.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "e", "namespace": "shop", "uid": "u1"},
            "spec": {"targets": {}, "hypothesis": {}, "method": []},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn new_experiments_start_and_others_runs_are_rolled_back() {
        let none = BTreeSet::new();
        let here = BTreeSet::from(["u1".to_owned()]);
        assert_eq!(decide(&recorded(json!(null)), &none), Decision::Start);
        assert_eq!(decide(&recorded(json!({})), &none), Decision::Start);
        assert_eq!(decide(&recorded(json!({"phase": "Running", "runner": "me"})), &here), Decision::Nothing);
        assert_eq!(
            decide(&recorded(json!({"phase": "Running", "runner": "runner-7"})), &none),
            Decision::Orphaned { runner: "runner-7".into() }
        );
        assert_eq!(decide(&recorded(json!({"phase": "Done", "verdict": "held"})), &none), Decision::Nothing);
        // Started here a moment ago, its Running status not seen yet.
        assert_eq!(decide(&recorded(json!(null)), &here), Decision::Nothing);
    }

    fn parsed(targets: &str, probe: &str) -> Experiment {
        let text = format!(
            "name: e\ntargets: {{{targets}}}\nhypothesis:\n  probes:\n    - name: p\n{probe}\nmethod:\n  - {{fault: net-loss, percent: 5, duration: 10s}}\n"
        );
        chaos::experiment::parse("e.yaml", &text, &[]).unwrap()
    }

    #[test]
    fn things_of_one_machine_and_other_namespaces_are_refused() {
        let tcp = "      tcp: {address: 'web:80'}";
        assert!(refusals(&parsed("web: {pod-selector: app=web}", tcp), "shop").is_empty());
        assert!(refusals(&parsed("web: {pod: shop/web-0}", tcp), "shop").is_empty());
        let r = refusals(&parsed("web: {pod: bank/vault-0}", tcp), "shop");
        assert_eq!(r.len(), 1);
        assert!(
            r[0].contains("pod bank/vault-0 is in namespace bank") && r[0].contains("create it in bank"),
            "{r:?}"
        );
        let r = refusals(&parsed("web: {cgroup: /system.slice/x.service}", tcp), "shop");
        assert!(
            r[0].contains("target `web` names cgroup /system.slice/x.service, a thing of one machine"),
            "{r:?}"
        );
        let r = refusals(&parsed("web: {pod-selector: a=b}", "      command: {run: [true]}"), "shop");
        assert!(r[0].contains("probe `p` runs a command"), "{r:?}");
        let r = refusals(&parsed("web: {pod-selector: a=b}", &format!("{tcp}\n      netns: blue")), "shop");
        assert!(r[0].contains("probe `p` names a network namespace"), "{r:?}");
    }
}
