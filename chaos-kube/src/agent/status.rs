//! The status patches the agent writes (JSON merge patches on the status
//! subresource): pure, so their shape is unit-tested.

use std::time::SystemTime;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::{Value, json};

use super::inject::Finished;
use crate::resources::AttackPhase;

fn time(at: SystemTime) -> Value {
    Timestamp::try_from(at).map_or(Value::Null, |t| json!(Time(t)))
}

/// Started (or resumed) by this agent: `restarts` is the count to write.
pub fn running(at: SystemTime, restarts: u32) -> Value {
    json!({"status": {
        "phase": AttackPhase::Running, "startedAt": time(at), "agentRestarts": restarts,
        "endedAt": null, "reason": null, "message": null,
    }})
}

/// Ended in this agent, with what it did.
pub fn finished(at: SystemTime, f: &Finished) -> Value {
    json!({"status": {
        "phase": f.phase, "endedAt": time(at), "reason": f.reason, "message": f.message,
        "counters": f.counters, "pods": f.pods,
    }})
}

/// A final phase decided without running anything (refused, missed).
pub fn decided(at: SystemTime, phase: AttackPhase, reason: Option<&str>, message: Option<&str>) -> Value {
    json!({"status": {"phase": phase, "endedAt": time(at), "reason": reason, "message": message}})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::resources::{AttackedPod, ChaosAttackStatus};

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_472_000)
    }

    /// What the agent writes reads back as the status type.
    #[test]
    fn patches_are_statuses() {
        let f = Finished {
            phase: AttackPhase::Ended,
            reason: Some("deadline".into()),
            counters: [("injected".to_owned(), 7)].into(),
            pods: vec![AttackedPod { uid: "u".into(), cgroup_id: 42 }],
            ..Default::default()
        };
        let patch = finished(at(), &f);
        assert_eq!(patch["status"]["endedAt"], "2026-12-05T12:00:00Z");
        let mut status = patch["status"].clone();
        status.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        let s: ChaosAttackStatus = serde_json::from_value(status).unwrap();
        assert_eq!((s.phase, s.counters["injected"], s.pods[0].cgroup_id), (AttackPhase::Ended, 7, 42));
        let r = running(at(), 2);
        assert_eq!(
            (r["status"]["phase"].as_str(), r["status"]["agentRestarts"].as_u64()),
            (Some("Running"), Some(2))
        );
        // A merge patch's null removes what an earlier run left.
        assert!(r["status"]["reason"].is_null() && r["status"].get("reason").is_some());
    }
}
