//! One attack, run in a thread of the agent by chaos's experiment runner,
//! exactly as `chaos attack` runs one: the same plan, refusals, kernel-side
//! deadline, events (on the agent's stdout, the pod's log) and report.

use std::{
    collections::BTreeMap,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use chaos::{
    error::ExitCode,
    events::{Events, RunEvent, Subscriber},
    experiment::{Experiment, Options, Selector, Verdict, step_fault},
    metrics::Metrics,
    runtime::PodQuery,
    signals::SignalWatch,
};
use kube::ResourceExt;
use serde_json::Value;

use super::preflight::{self, Missing};
use crate::resources::{AttackPhase, AttackedPod, ChaosAttack};

/// How an attack ended here, for its status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Finished {
    pub phase: AttackPhase,
    /// `deadline`, `deleted`, `target gone`...
    pub reason: Option<String>,
    /// A refusal's or failure's message.
    pub message: Option<String>,
    /// Each counter summed over the pods.
    pub counters: BTreeMap<String, u64>,
    pub pods: Vec<AttackedPod>,
}

/// A running attack: stop it, or wait for its thread.
pub struct Injection {
    stop: Box<dyn Fn() + Send + Sync>,
    thread: JoinHandle<()>,
}

impl Injection {
    /// Ask it to stop, as SIGTERM stops `chaos attack`.
    pub fn stop(&self) {
        (self.stop)();
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Calls its function at the first attack's `start` event: the fault is in
/// the kernel, with its deadline.
struct OnStart(Option<Box<dyn FnOnce() + Send>>);

impl Subscriber for OnStart {
    fn on(&mut self, _: SystemTime, event: &RunEvent) {
        if matches!(event, RunEvent::Start { .. })
            && let Some(f) = self.0.take()
        {
            f();
        }
    }
}

/// Start `attack` until its deadline, from a thread of its own:
/// `injected` is called once the fault is in the kernel, `done` with how it
/// ended. The deadline is the spec's, as a time of day: what the thread
/// spends before the rule is written (finding the pods, loading programs)
/// comes out of the attack.
pub fn start(
    attack: &ChaosAttack,
    missing: Arc<Vec<Missing>>,
    metrics: Metrics,
    injected: impl FnOnce() + Send + 'static,
    done: impl FnOnce(Finished) + Send + 'static,
) -> std::io::Result<Injection> {
    let (signals, stop) = SignalWatch::detached();
    let attack = attack.clone();
    let thread = std::thread::Builder::new()
        .name(format!("attack {}", attack.name_any()))
        .spawn(move || done(run(&attack, &missing, metrics, &signals, Box::new(injected))))?;
    Ok(Injection { stop: Box::new(stop), thread })
}

fn run(
    attack: &ChaosAttack,
    missing: &[Missing],
    metrics: Metrics,
    signals: &SignalWatch,
    injected: Box<dyn FnOnce() + Send>,
) -> Finished {
    let refused = |message: String| Finished {
        phase: AttackPhase::Refused,
        message: Some(message),
        ..Default::default()
    };
    let fault = match step_fault(&attack.spec.fault) {
        Ok(f) => f,
        Err(e) => return refused(format!("spec.fault: {e}")),
    };
    if let Some(why) = preflight::refusal(fault.kind(), missing) {
        return refused(why);
    }
    // One target per pod, named NAMESPACE/NAME; found by uid through the
    // node's CRI, as `--pod-uid` finds one.
    let targets: Vec<(String, Selector)> = attack
        .spec
        .pods
        .iter()
        .map(|p| {
            let selector = Selector::Pod {
                query: PodQuery::Uid(p.uid.clone()),
                container: attack.spec.container.clone(),
            };
            (format!("{}/{}", p.namespace, p.name), selector)
        })
        .collect();
    let deadline = SystemTime::from(attack.spec.deadline.0);
    let remaining =
        deadline.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_millis(1));
    let exp = Experiment::one_fault_on(&attack.name_any(), fault, targets, remaining);
    let events = Events::new(Box::new(std::io::stdout()));
    events.subscribe(Box::new(OnStart(Some(injected))));
    events.subscribe(Box::new(metrics));
    let options = Options { ends_by: Some(deadline), ..Options::default() };
    match chaos::experiment::run(&exp, &options, &events, signals) {
        Ok(outcome) => {
            let report = &outcome.report;
            let records: Vec<_> = report.steps.iter().flat_map(|s| &s.attacks).collect();
            let mut counters = BTreeMap::new();
            for c in records.iter().filter_map(|r| r.counters.as_ref()) {
                if let Ok(Value::Object(map)) = serde_json::to_value(c) {
                    for (k, v) in map {
                        if let Some(n) = v.as_u64() {
                            *counters.entry(k).or_insert(0) += n;
                        }
                    }
                }
            }
            let pods = report
                .targets
                .iter()
                .filter_map(|t| {
                    let pod =
                        attack.spec.pods.iter().find(|p| format!("{}/{}", p.namespace, p.name) == t.name)?;
                    Some(AttackedPod { uid: pod.uid.clone(), cgroup_id: t.id })
                })
                .collect();
            // Why it ended: the first attack that did not reach its deadline
            // says it (a stop is our deletion), else the deadline.
            let ended = records.iter().filter_map(|r| r.ended.as_deref()).find(|e| *e != "deadline");
            let reason = match (outcome.verdict, ended) {
                (_, Some("SIGTERM")) => "deleted".to_owned(),
                (Verdict::Completed, _) => "deadline".to_owned(),
                (_, Some(other)) => other.to_owned(),
                (_, None) => report.reason.clone(),
            };
            Finished { phase: AttackPhase::Ended, reason: Some(reason), counters, pods, ..Default::default() }
        }
        Err(e) => match e.exit_code() {
            ExitCode::Invalid | ExitCode::Busy => refused(e.to_string()),
            _ => Finished { phase: AttackPhase::Failed, message: Some(e.to_string()), ..Default::default() },
        },
    }
}
