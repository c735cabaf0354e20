//! Attacks: one fault on one target for a bounded duration.

use std::time::Duration;

use serde::Serialize;

pub use crate::plan::{Mechanism, Planned, plan};
use crate::{faults::Fault, targets::Target};

/// One fault on one target for a bounded duration.
#[derive(Clone, Debug, Serialize)]
pub struct Attack {
    /// Unique within a run, e.g. `net-loss-1`.
    pub id: String,
    #[serde(flatten)]
    pub fault: Fault,
    pub target: Target,
    #[serde(serialize_with = "serialize_duration")]
    pub duration: Duration,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::units::format_duration(*d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::fault_of_step;

    /// Events and reports show an attack as this JSON: `--interface` is a
    /// field of the network faults, and serializes at the attack's top
    /// level, only when given, as it did when it was a field of `Attack`.
    #[test]
    fn interfaces_serialize_at_the_top_level_when_given() {
        let attack = |step: &str| Attack {
            id: "a".into(),
            fault: fault_of_step(step).unwrap(),
            target: Target { path: "/a".into(), id: 7, level: 1, workload: None },
            duration: Duration::from_secs(60),
        };
        let given = attack("{fault: net-loss, percent: 5, duration: 1m, interfaces: [eth0]}");
        let json = serde_json::to_value(&given).unwrap();
        assert_eq!(json["interfaces"], serde_json::json!(["eth0"]), "{json}");
        assert_eq!(json["fault"], "net-loss");
        let not_given = attack("{fault: net-delay, delay: 5ms, duration: 1m}");
        let json = serde_json::to_value(&not_given).unwrap();
        assert!(json.get("interfaces").is_none(), "{json}");
    }
}
