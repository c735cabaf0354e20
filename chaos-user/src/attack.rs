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
