//! `ChaosAttack`: one fault on the pods of one node, until a deadline.
//!
//! Created by the runner (owned by its experiment) or by hand. The agent
//! of `spec.nodeName` runs it; deleting the object is the rollback. There
//! is no finalizer: one on an attack whose agent is gone would block the
//! deletion forever, and nothing needs the agent to end a fault (the
//! kernel-side deadline does, if the agent never hears of the deletion).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::step_schema;

/// One fault on the pods of one node, until `deadline`.
// One `printcolumn(...)` per column, each with `type_ = "string"` or the
// like: clippy takes the repeated arguments for repeated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "chaos.dev",
    version = "v1alpha1",
    kind = "ChaosAttack",
    namespaced,
    status = "ChaosAttackStatus",
    shortname = "cha",
    category = "chaos",
    doc = "One fault on the pods of one node until an absolute deadline; deleting it ends the fault.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Fault", type_ = "string", json_path = ".spec.fault.fault"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Deadline", type_ = "date", json_path = ".spec.deadline"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ChaosAttackSpec {
    /// The node whose agent runs the attack; the object also carries it as
    /// the label `chaos.dev/node`, which agents select on.
    pub node_name: String,
    /// The pods attacked: all on `nodeName`.
    pub pods: Vec<PodRef>,
    /// One container of each pod instead of the whole pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The fault: `fault` (the kind) and its fields, as in a step of an
    /// experiment file.
    #[schemars(schema_with = "step_schema::attack_fault")]
    pub fault: Map<String, Value>,
    /// When the fault ends, whatever happens: chosen by whoever creates the
    /// object, so that an agent that hears of it late, or restarts in the
    /// middle, never runs it longer.
    pub deadline: Time,
}

/// A pod, as the agent finds it through its node's CRI.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// The pod's uid: a pod made again under the same name is another pod.
    pub uid: String,
}

/// Where an attack is.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum AttackPhase {
    /// Seen by no agent yet.
    #[default]
    Pending,
    /// Injected on this node.
    Running,
    /// Ended: by its deadline, a deletion, or its target gone (`reason`).
    Ended,
    /// Not started: the fault, a pod or this kernel said no (`message`).
    Refused,
    /// Stopped by an error while injecting (`message`).
    Failed,
}

impl AttackPhase {
    /// Nothing more happens to an attack in this phase.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Ended | Self::Refused | Self::Failed)
    }
}

/// What the agent reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChaosAttackStatus {
    pub phase: AttackPhase,
    /// The pods found, with the cgroup each was attacked through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<AttackedPod>,
    /// The fault's counters (packets dropped, calls failed...), as in
    /// events and reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// Why it ended: `deadline`, `deleted`, `target gone`, `missed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A refusal's or failure's message, as `chaos attack` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many times the attack was resumed by an agent that restarted.
    #[serde(default)]
    pub agent_restarts: u32,
}

/// A pod and the cgroup its fault went through.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttackedPod {
    pub uid: String,
    pub cgroup_id: u64,
}
