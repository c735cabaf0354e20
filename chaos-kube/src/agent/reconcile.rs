//! The agent's decisions, as a pure function.
//!
//! Input: every `ChaosAttack` labelled for this node (a full snapshot, as
//! the watcher holds it after each event, and again after a reconnect),
//! what this process runs or has ended, and the time. Output: what to
//! start, stop, report and forget. Nothing here talks to the API server or
//! the kernel, so each rule below is a unit test on recorded objects.
//!
//! - An attack not yet run here, with its deadline ahead, starts for the
//!   time left (never longer: the deadline is its creator's). If its status
//!   says Running, an agent process died in the middle of it: it resumes,
//!   and the status counts the restart.
//! - An attack whose deadline passed before any agent ran it ends as
//!   `missed`; one left Running by a dead agent ends as `deadline` (the
//!   kernel-side deadline ended it, whatever happened to the agent).
//! - An attack running here that the API server no longer lists was
//!   deleted: it stops. While the API server cannot be reached there is no
//!   new snapshot, so nothing stops early and nothing new starts; running
//!   attacks end by their deadlines at the latest.
//! - An attack that ended here is reported until its status says so (the
//!   patch may have failed), then forgotten once its object is gone.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use chaos::units::{MAX_DURATION, format_duration};
use kube::ResourceExt;

use crate::resources::{AttackPhase, ChaosAttack};

/// What this agent process knows of an attack, by the object's uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// Injected by this process.
    Running,
    /// Ended in this process, for `reason` (`deadline`, `target gone`...).
    Ended { phase: AttackPhase, reason: String },
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Inject for `remaining`; `resume` when an earlier agent process had
    /// started it (count it in `agentRestarts`).
    Start { uid: String, remaining: Duration, resume: bool },
    /// Stop it: its object was deleted.
    Stop { uid: String },
    /// Write the status: a final `phase`, for `reason` or with `message`.
    Report { uid: String, phase: AttackPhase, reason: Option<String>, message: Option<String> },
    /// The object is gone and its end was reported: drop it from `local`.
    Forget { uid: String },
}

/// The decisions for one snapshot. `node` is this agent's node.
pub fn reconcile(
    seen: &[ChaosAttack],
    local: &BTreeMap<String, Local>,
    node: &str,
    now: SystemTime,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for attack in seen {
        let Some(uid) = attack.uid() else { continue };
        listed.insert(uid.clone());
        let phase = attack.status.as_ref().map_or(AttackPhase::Pending, |s| s.phase);
        match local.get(&uid) {
            Some(Local::Running) => {}
            Some(Local::Ended { phase: ended, reason }) => {
                if !phase.is_final() {
                    actions.push(Action::Report {
                        uid,
                        phase: *ended,
                        reason: Some(reason.clone()),
                        message: None,
                    });
                }
            }
            None if phase.is_final() => {}
            None => actions.push(decide(attack, uid, phase, node, now)),
        }
    }
    for (uid, l) in local {
        if listed.contains(uid) {
            continue;
        }
        actions.push(match l {
            Local::Running => Action::Stop { uid: uid.clone() },
            Local::Ended { .. } => Action::Forget { uid: uid.clone() },
        });
    }
    actions
}

/// An attack this process has not touched, not final.
fn decide(attack: &ChaosAttack, uid: String, phase: AttackPhase, node: &str, now: SystemTime) -> Action {
    let spec = &attack.spec;
    let refuse = |message: String| Action::Report {
        uid: uid.clone(),
        phase: AttackPhase::Refused,
        reason: None,
        message: Some(message),
    };
    if spec.node_name != node {
        // The label says this node, the spec another: whoever made the
        // object made a mistake, and running it on either node could be
        // the wrong one.
        return refuse(format!(
            "spec.nodeName is {:?} but the label {} says {node:?}: set both to the node whose pods are attacked",
            spec.node_name,
            crate::resources::NODE_LABEL
        ));
    }
    if spec.pods.is_empty() {
        return refuse("spec.pods is empty: name the pods to attack".into());
    }
    let deadline = SystemTime::from(spec.deadline.0);
    match deadline.duration_since(now) {
        Ok(remaining) if remaining > MAX_DURATION => refuse(format!(
            "spec.deadline is {} away, more than the longest attack ({}): set a deadline closer than that",
            format_duration(remaining),
            format_duration(MAX_DURATION)
        )),
        Ok(remaining) if !remaining.is_zero() => {
            Action::Start { uid, remaining, resume: phase == AttackPhase::Running }
        }
        _ => Action::Report {
            uid,
            phase: AttackPhase::Ended,
            // Pending: no agent ever ran it. Running: an agent did and died;
            // the kernel-side deadline ended the fault.
            reason: Some(if phase == AttackPhase::Running { "deadline" } else { "missed" }.into()),
            message: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::resources::ChaosAttackStatus;

    const NODE: &str = "node-a";

    /// A recorded object, as `kubectl get chaosattack -o yaml` shows it.
    fn recorded(uid: &str, phase: Option<&str>, deadline: &str) -> ChaosAttack {
        let status = phase.map_or(String::new(), |p| format!("status: {{phase: {p}}}\n"));
        let text = format!(
            "apiVersion: chaos.dev/v1alpha1\nkind: ChaosAttack\n\
             metadata: {{name: a-{uid}, namespace: shop, uid: {uid}, labels: {{chaos.dev/node: {NODE}}}}}\n\
             spec:\n  nodeName: {NODE}\n  pods: [{{namespace: shop, name: web-1, uid: p-1}}]\n\
             \x20 fault: {{fault: net-loss, percent: 5}}\n  deadline: \"{deadline}\"\n{status}"
        );
        serde_yaml_ng::from_str(&text).unwrap()
    }

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::from(serde_json::from_value::<Time>(serde_json::json!(rfc3339)).unwrap().0)
    }

    const NOW: &str = "2026-12-05T12:00:00Z";

    #[test]
    fn a_new_attack_starts_for_the_time_left() {
        let seen = [recorded("u1", None, "2026-12-05T12:00:30Z")];
        let actions = reconcile(&seen, &BTreeMap::new(), NODE, at(NOW));
        assert_eq!(
            actions,
            [Action::Start { uid: "u1".into(), remaining: Duration::from_secs(30), resume: false }]
        );
    }

    #[test]
    fn an_attack_left_running_by_a_dead_agent_resumes_for_what_is_left() {
        let seen = [recorded("u1", Some("Running"), "2026-12-05T12:00:10Z")];
        let actions = reconcile(&seen, &BTreeMap::new(), NODE, at(NOW));
        assert_eq!(
            actions,
            [Action::Start { uid: "u1".into(), remaining: Duration::from_secs(10), resume: true }]
        );
    }

    #[test]
    fn a_deadline_already_past_is_never_run() {
        let seen = [
            recorded("pending", Some("Pending"), "2026-12-05T11:59:59Z"),
            recorded("unseen", None, NOW),
            recorded("running", Some("Running"), "2026-12-05T11:00:00Z"),
        ];
        let actions = reconcile(&seen, &BTreeMap::new(), NODE, at(NOW));
        let ended = |uid: &str, reason: &str| Action::Report {
            uid: uid.into(),
            phase: AttackPhase::Ended,
            reason: Some(reason.into()),
            message: None,
        };
        assert_eq!(
            actions,
            [ended("pending", "missed"), ended("unseen", "missed"), ended("running", "deadline")]
        );
    }

    #[test]
    fn a_deleted_attack_stops_and_an_ended_one_is_forgotten() {
        let local = BTreeMap::from([
            ("gone".to_owned(), Local::Running),
            ("done".to_owned(), Local::Ended { phase: AttackPhase::Ended, reason: "deadline".into() }),
        ]);
        let actions = reconcile(&[], &local, NODE, at(NOW));
        assert_eq!(actions, [Action::Forget { uid: "done".into() }, Action::Stop { uid: "gone".into() }]);
    }

    #[test]
    fn running_and_final_attacks_are_left_alone() {
        let seen = [
            recorded("mine", Some("Running"), "2026-12-05T12:01:00Z"),
            recorded("over", Some("Ended"), "2026-12-05T12:01:00Z"),
            recorded("refused", Some("Refused"), "2026-12-05T12:01:00Z"),
        ];
        let local = BTreeMap::from([("mine".to_owned(), Local::Running)]);
        assert_eq!(reconcile(&seen, &local, NODE, at(NOW)), []);
    }

    #[test]
    fn an_end_whose_report_was_lost_is_reported_again() {
        let seen = [recorded("u1", Some("Running"), "2026-12-05T12:01:00Z")];
        let local = BTreeMap::from([(
            "u1".to_owned(),
            Local::Ended { phase: AttackPhase::Ended, reason: "target gone".into() },
        )]);
        assert_eq!(
            reconcile(&seen, &local, NODE, at(NOW)),
            [Action::Report {
                uid: "u1".into(),
                phase: AttackPhase::Ended,
                reason: Some("target gone".into()),
                message: None
            }]
        );
    }

    #[test]
    fn a_deadline_further_than_the_longest_attack_is_refused() {
        let seen =
            [recorded("u1", None, "2026-12-06T12:00:01Z"), recorded("u2", None, "2026-12-06T12:00:00Z")];
        let actions = reconcile(&seen, &BTreeMap::new(), NODE, at(NOW));
        assert!(
            matches!(&actions[0], Action::Report { phase: AttackPhase::Refused, message: Some(m), .. } if m.contains("longest attack (24h)")),
            "{actions:?}"
        );
        assert!(matches!(actions[1], Action::Start { .. }), "{actions:?}");
    }

    #[test]
    fn an_attack_for_another_node_or_no_pod_is_refused() {
        let mut other = recorded("u1", None, "2026-12-05T12:01:00Z");
        other.spec.node_name = "node-b".into();
        let mut empty = recorded("u2", None, "2026-12-05T12:01:00Z");
        empty.spec.pods.clear();
        let actions = reconcile(&[other, empty], &BTreeMap::new(), NODE, at(NOW));
        let messages: Vec<String> = actions
            .iter()
            .map(|a| match a {
                Action::Report { phase: AttackPhase::Refused, message: Some(m), .. } => m.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(messages[0].contains("\"node-b\"") && messages[0].contains(NODE), "{}", messages[0]);
        assert!(messages[1].contains("spec.pods is empty"), "{}", messages[1]);
    }

    /// The status written back reads as the recorded objects do.
    #[test]
    fn a_status_round_trips() {
        let status =
            ChaosAttackStatus { phase: AttackPhase::Running, agent_restarts: 1, ..Default::default() };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json, serde_json::json!({"phase": "Running", "agentRestarts": 1}));
    }
}
