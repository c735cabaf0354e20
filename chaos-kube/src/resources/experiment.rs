//! `ChaosExperiment`: an experiment file, applied to a cluster.
//!
//! The spec is the experiment document itself, field for field (kebab-case
//! as in files, not Kubernetes' camelCase), and `metadata.name` is its
//! `name`: `chaos run` reads this envelope too, so one file serves both.
//! The schema types what a structural schema can; the experiment parser
//! checks the rest, with the same messages as `chaos validate`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{apis::meta::v1::Time, util::intstr::IntOrString};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::step_schema;

/// An experiment: steady-state hypothesis, method, abort conditions and a
/// maximum duration, as in an experiment file (experiments/README.md).
// One `printcolumn(...)` per column, each with `type_ = "string"` or the
// like: clippy takes the repeated arguments for repeated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "chaos.dev",
    version = "v1alpha1",
    kind = "ChaosExperiment",
    namespaced,
    status = "ChaosExperimentStatus",
    shortname = "chx",
    category = "chaos",
    doc = "A chaos experiment: the document of an experiment file (experiments/README.md), whose name is metadata.name.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.step"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "kebab-case")]
pub struct ChaosExperimentSpec {
    /// What the experiment checks, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels for reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Names and defaults substituted as `${name}` in every other value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "step_schema::values")]
    pub variables: BTreeMap<String, Value>,
    /// Names for the attacks to use, each a set of pods.
    pub targets: BTreeMap<String, ClusterTarget>,
    /// The steady state: probes that must stay healthy, and how soon they
    /// must recover after the method.
    #[schemars(schema_with = "step_schema::anything")]
    pub hypothesis: Value,
    /// Attacks, in sequence or `parallel`.
    #[schemars(schema_with = "step_schema::method_step")]
    pub method: Vec<Value>,
    /// Probes whose failure stops everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "step_schema::objects")]
    pub abort: Vec<Value>,
    /// The whole run is cut off here (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// A target, as an experiment file names one: the pod keys are what a
/// cluster uses; `cgroup`, `pid` and `container` alone name things of one
/// machine, and are refused on a cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterTarget {
    /// `NAMESPACE/NAME` of one pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod with this uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Every ready pod whose labels match all of `KEY=VALUE,...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<String>,
    /// One container of each pod (without a pod key: a container of one
    /// machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A cgroup v2 directory of one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The cgroup of a process of one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<IntOrString>,
    /// With `container` alone: the runtime to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Allow a cgroup that stands for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host: Option<bool>,
    /// With `pod-selector`: only pods on nodes with all the labels
    /// `KEY=VALUE,...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// With `pod-selector`: this many of the matching pods, drawn at random
    /// when each step starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "step_schema::anything")]
    pub count: Option<Value>,
    /// With `pod-selector`: this percentage of the matching pods (rounded
    /// up, at least one), drawn at random when each step starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "step_schema::anything")]
    pub percent: Option<Value>,
}

/// What the runner reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChaosExperimentStatus {
    /// Pending, Running or Done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// held, violated, aborted, not-started, invalid or error: as a local
    /// run's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The exit code `chaos run` gives for this verdict (README, "Exit
    /// codes"): what `chaos-kube run` exits with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    /// The runner running it (its pod), so that another one knows it was
    /// left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// The pods each attack of the step running was drawn from and took,
    /// one line per attack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub picked: Vec<String>,
    /// The ChaosAttacks of the step running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attacks: Vec<String>,
    /// The ConfigMap holding the report (`report.json`, `junit.xml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// The step running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why it ended, or why the spec was refused (the parser's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
}
