//! The Kubernetes Events the agent records (events.k8s.io/v1, through
//! kube's `Recorder`): on each target pod when a fault reaches it and when
//! it ends there, so that `kubectl describe pod` and `kubectl get events`
//! show what chaos did to it; on the ChaosAttack itself when it is refused
//! or fails, as nothing reached a pod then. Pure: which events, on what.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource as _, ResourceExt as _,
    runtime::events::{Event, EventType},
};

use super::inject::Finished;
use crate::resources::{AttackPhase, ChaosAttack};

/// An event's note: at most 1 kB (the API's limit), cut at a character.
fn note(text: String) -> Option<String> {
    const MAX: usize = 1024;
    if text.len() <= MAX {
        return Some(text);
    }
    let mut end = MAX - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}...", &text[..end]))
}

fn pods(attack: &ChaosAttack) -> Vec<ObjectReference> {
    attack
        .spec
        .pods
        .iter()
        .map(|p| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(p.namespace.clone()),
            name: Some(p.name.clone()),
            uid: Some(p.uid.clone()),
            ..Default::default()
        })
        .collect()
}

fn fault_kind(attack: &ChaosAttack) -> String {
    attack.spec.fault.get("fault").and_then(|v| v.as_str()).unwrap_or("a fault").to_owned()
}

fn label(attack: &ChaosAttack) -> String {
    format!("ChaosAttack {}/{}", attack.namespace().unwrap_or_default(), attack.name_any())
}

/// A Normal event on each of `pods`, related to the attack.
fn on_pods(
    attack: &ChaosAttack,
    pods: impl IntoIterator<Item = ObjectReference>,
    reason: &str,
    action: &str,
    text: String,
) -> Vec<(Event, ObjectReference)> {
    pods.into_iter()
        .map(|pod| {
            let event = Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: note(text.clone()),
                action: action.into(),
                secondary: Some(attack.object_ref(&())),
            };
            (event, pod)
        })
        .collect()
}

/// The fault is in the kernel for the attack's pods.
pub fn injected(attack: &ChaosAttack) -> Vec<(Event, ObjectReference)> {
    let text = format!("{} from {}, until {}", fault_kind(attack), label(attack), attack.spec.deadline.0);
    on_pods(attack, pods(attack), "ChaosInjected", "Inject", text)
}

/// How the attack ended here.
pub fn finished(attack: &ChaosAttack, f: &Finished) -> Vec<(Event, ObjectReference)> {
    let why = f.message.clone().or_else(|| f.reason.clone()).unwrap_or_default();
    match f.phase {
        AttackPhase::Refused | AttackPhase::Failed => {
            let reason = if f.phase == AttackPhase::Refused { "ChaosRefused" } else { "ChaosFailed" };
            let event = Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: note(why),
                action: "Inject".into(),
                secondary: None,
            };
            vec![(event, attack.object_ref(&()))]
        }
        _ => {
            let text = format!("{} from {} ended: {why}", fault_kind(attack), label(attack));
            // Only the pods the fault reached.
            let reached = pods(attack)
                .into_iter()
                .filter(|pod| f.pods.iter().any(|p| Some(&p.uid) == pod.uid.as_ref()));
            on_pods(attack, reached, "ChaosEnded", "Restore", text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::AttackedPod;

    fn attack() -> ChaosAttack {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chaos.dev/v1alpha1", "kind": "ChaosAttack",
            "metadata": {"name": "pause-web", "namespace": "shop", "uid": "a-1"},
            "spec": {
                "nodeName": "node-a",
                "pods": [{"namespace": "shop", "name": "web-0", "uid": "p-0"},
                         {"namespace": "shop", "name": "web-1", "uid": "p-1"}],
                "fault": {"fault": "pause"},
                "deadline": "2026-12-05T12:00:00Z",
            },
        }))
        .expect("a ChaosAttack")
    }

    #[test]
    fn injected_and_ended_are_on_the_pods_the_fault_reached() {
        let a = attack();
        let on = injected(&a);
        assert_eq!(on.len(), 2);
        assert_eq!(on[0].1.uid.as_deref(), Some("p-0"));
        assert_eq!(on[0].1.kind.as_deref(), Some("Pod"));
        assert_eq!(on[0].0.reason, "ChaosInjected");
        assert_eq!(
            on[0].0.note.as_deref(),
            Some("pause from ChaosAttack shop/pause-web, until 2026-12-05T12:00:00Z")
        );
        assert_eq!(on[0].0.secondary.as_ref().and_then(|r| r.uid.as_deref()), Some("a-1"));
        // One pod was gone before the fault reached it: no event on it.
        let f = Finished {
            phase: AttackPhase::Ended,
            reason: Some("deadline".into()),
            pods: vec![AttackedPod { uid: "p-1".into(), cgroup_id: 9 }],
            ..Default::default()
        };
        let off = finished(&a, &f);
        assert_eq!(off.len(), 1);
        assert_eq!(off[0].1.uid.as_deref(), Some("p-1"));
        assert_eq!(off[0].0.note.as_deref(), Some("pause from ChaosAttack shop/pause-web ended: deadline"));
    }

    #[test]
    fn a_refusal_is_a_warning_on_the_attack() {
        let f =
            Finished { phase: AttackPhase::Refused, message: Some("x".repeat(2000)), ..Default::default() };
        let on = finished(&attack(), &f);
        assert_eq!(on.len(), 1);
        assert_eq!(on[0].1.kind.as_deref(), Some("ChaosAttack"));
        assert_eq!(on[0].0.reason, "ChaosRefused");
        assert!(matches!(on[0].0.type_, EventType::Warning));
        assert_eq!(on[0].0.note.as_ref().map(String::len), Some(1024));
    }
}
