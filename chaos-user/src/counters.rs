//! Counters of one attack, read from the per-CPU maps and summed.
//!
//! Every fault family counts what matched its rule, what it injected and
//! what found the rule past its deadline; families add their own breakdown
//! (`egress_dropped`, ...), named by each family's injector. Events, reports and the Prometheus exporter use
//! these names.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Counters {
    /// Events (packets, calls, clock reads) of the target that matched the
    /// rule's filters while it was in force.
    pub matched: u64,
    /// ... of which the fault was injected into.
    pub injected: u64,
    /// Events that found the rule past its kernel-side deadline and were
    /// passed untouched: the kernel, not the controller, ended the fault.
    pub expired: u64,
    /// Family-specific breakdown, e.g. `egress_dropped`.
    #[serde(flatten)]
    pub detail: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// A named value: `matched`, `injected`, `expired` or a detail.
    pub fn get(&self, name: &str) -> u64 {
        match name {
            "matched" => self.matched,
            "injected" => self.injected,
            "expired" => self.expired,
            other => self.detail.get(other).copied().unwrap_or(0),
        }
    }
}
