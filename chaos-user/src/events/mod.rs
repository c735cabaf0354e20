//! The run-event stream: every start, stop and abort of an attack and every
//! turn of an experiment, as one typed value ([`RunEvent`]) that the code
//! emits once to a bus ([`Events`]); the JSON lines (so that on-call can
//! tell an injected failure from a cascading one), the Prometheus metrics
//! and the live view subscribe to it.
//!
//! The JSON form of a line is a public interface: `{"time": RFC 3339,
//! "event": NAME, ...fields}`, with the schema in `docs/events.schema.json`
//! (generated from these types; see [`schema`]). Names and fields only
//! grow: a consumer that reads today's lines reads tomorrow's.

mod bus;
mod jsonl;
pub mod schema;

use std::collections::BTreeMap;

pub use bus::{AttackProgress, Events, ProbeProgress, Progress, Subscriber};
pub use jsonl::JsonLines;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    attack::Attack,
    counters::Counters,
    injector::{Running, Stopped},
    probes::Role,
    report::{AbortRecord, ProbeCheck, TargetInfo},
    units::format_duration,
};

/// One event of a run. The variant names are the `event` field of a line.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunEvent {
    /// An attack started: its rule is in the kernel, with its deadline.
    Start {
        #[serde(flatten)]
        attack: AttackFields,
        /// How the fault is injected (the planner's choice; its fields
        /// depend on the fault family).
        mechanism: Value,
        /// CLOCK_MONOTONIC deadline written into the rule: the kernel ends
        /// the fault then even if chaos is killed.
        deadline_monotonic_ns: u64,
    },
    /// An attack ended at its deadline.
    Stop(Ending),
    /// An attack was stopped before its deadline (a signal, an abort).
    Abort(Ending),
    /// Targets resolved and planned; the steady state is next (`chaos
    /// run`), or the attack (`chaos attack`, a one-step experiment with no
    /// hypothesis, whose `file` is `(command line)`).
    ExperimentStart {
        experiment: String,
        file: String,
        variables: BTreeMap<String, String>,
        targets: Vec<TargetInfo>,
        max_duration: String,
        method_length: String,
    },
    /// The phase the run enters (`steady-state`, `method`, `recovery`,
    /// `done`; an attack only `method` and `done`), as exported in the
    /// `chaos_phase` metric.
    Phase { phase: Phase },
    /// `chaos run`: the steady state before injecting (each probe until it
    /// passes, at most its `failures` times in a row).
    SteadyState {
        /// Always `before` (the check after the method is `recovery`).
        phase: String,
        held: bool,
        probes: Vec<ProbeCheck>,
    },
    /// A watched probe crossed its tolerance of consecutive failures.
    ProbeUnhealthy { probe: String, role: Role, detail: String, failures: u32 },
    /// A probe that was unhealthy passed a check again.
    ProbeHealthy { probe: String, role: Role, detail: String },
    /// The run stopped its method early, and why.
    ExperimentAbort(AbortRecord),
    /// `chaos run`: whether the hypothesis passed again after the method.
    Recovery {
        recovered: bool,
        /// From the end of the method to the last probe passing again.
        after_ms: Option<u64>,
        detail: String,
    },
    /// The verdict and exit code (not on `--dry-run`).
    Verdict {
        experiment: String,
        /// `held`, `violated`, `aborted`, `not-started`, `completed` (`chaos
        /// attack`, which has no hypothesis, ran to its end) or `error`.
        verdict: String,
        exit_code: u8,
        reason: String,
    },
}

/// The phases of `chaos run`, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    SteadyState,
    Method,
    Recovery,
    Done,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Self::SteadyState => "steady-state",
            Self::Method => "method",
            Self::Recovery => "recovery",
            Self::Done => "done",
        }
    }
}

/// What injected where: the attack's id, its fault and parameters, its
/// target.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AttackFields {
    /// Unique within a run, e.g. `net-loss-1`.
    pub attack: String,
    /// The fault kind, e.g. `net-loss`.
    pub fault: String,
    pub target: TargetFields,
    /// e.g. `30s`.
    pub duration: String,
    /// Devices acted on (network faults); on `start`, always present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// The fault's own parameters (`percent`, `port`, ...), as the
    /// experiment file and the `chaos attack` flags name them. Left open
    /// here: each family defines its own.
    #[serde(flatten)]
    pub parameters: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TargetFields {
    /// The cgroup's directory.
    pub path: String,
    /// The cgroup id.
    pub id: u64,
    /// Depth below the hierarchy root (root = 0).
    pub level: u32,
    /// What the user named, when it was not the cgroup itself: e.g.
    /// `docker container web (3f2a1b0c9d8e)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// How an attack ended.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Ending {
    #[serde(flatten)]
    pub attack: AttackFields,
    /// `deadline`, a signal's name, or `abort: WHY`.
    pub reason: String,
    pub counters: Counters,
    /// From the stop call to the fault inert (its rule deleted).
    pub inert_after_us: u64,
    /// From the stop call to every program detached.
    pub detached_after_us: u64,
}

impl AttackFields {
    pub fn of(attack: &Attack) -> Self {
        // The fault serializes as `{"fault": KIND, ...parameters}`; the
        // family owns that shape, this only splits it.
        let mut parameters = match serde_json::to_value(&attack.fault) {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        };
        parameters.remove("fault");
        // A network fault's `--interface`s, when given, are a field of
        // their own here, as on `start`.
        let interfaces = parameters.remove("interfaces").and_then(|v| serde_json::from_value(v).ok());
        Self {
            attack: attack.id.clone(),
            fault: attack.fault.kind().to_owned(),
            target: TargetFields {
                path: attack.target.path.display().to_string(),
                id: attack.target.id,
                level: attack.target.level,
                workload: attack.target.workload.clone(),
            },
            duration: format_duration(attack.duration),
            interfaces,
            parameters,
        }
    }
}

impl RunEvent {
    pub fn start(running: &Running) -> Self {
        let mut attack = AttackFields::of(&running.attack);
        attack.interfaces = Some(running.interfaces().to_vec());
        Self::Start {
            attack,
            mechanism: serde_json::to_value(running.mechanism).unwrap_or(Value::Null),
            deadline_monotonic_ns: running.deadline_ns,
        }
    }

    /// `stop` when the attack reached its deadline (`reason` is
    /// `deadline`), `abort` otherwise.
    pub fn end(stopped: &Stopped, reason: String) -> Self {
        let deadline = reason == "deadline";
        let ending = Ending {
            attack: AttackFields::of(&stopped.attack),
            reason,
            counters: stopped.counters.clone(),
            inert_after_us: stopped.inert_after.as_micros() as u64,
            detached_after_us: stopped.detached_after.as_micros() as u64,
        };
        if deadline { Self::Stop(ending) } else { Self::Abort(ending) }
    }
}

/// One line of the stream: the event and when it was emitted.
#[derive(Serialize, JsonSchema)]
#[schemars(title = "chaos run event", description = "One line of `chaos run`/`chaos attack` JSON output.")]
pub struct Line<'a> {
    /// When the event was emitted (RFC 3339, UTC).
    pub time: String,
    #[serde(flatten)]
    pub event: &'a RunEvent,
}
