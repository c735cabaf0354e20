//! One `ChaosExperiment`, run by the runner on a thread of its own, in the
//! order of a local run (chaos-user/src/experiment/run.rs) with the
//! cluster in place of the kernel:
//!
//! 1. the spec parsed by the experiment parser (`chaos validate`'s
//!    messages), then what a cluster cannot run refused
//!    ([`super::reconcile::refusals`]): verdict `invalid`, exit code 3;
//! 2. the steady state checked from the runner's pod: if it does not hold,
//!    nothing is created (`not-started`, 2);
//! 3. each step: its pods listed and drawn, one `ChaosAttack` per node
//!    created with the deadline `now + duration`, then watched until the
//!    step's end with the probes: a hypothesis probe out of tolerance
//!    (`violated`, 1), an abort condition, the max-duration, the experiment
//!    deleted, the runner stopping or an attack's pods gone (`aborted`, 2)
//!    delete every attack of the step at once — the rollback; so does an
//!    attack Refused or Failed by its agent, and the run ends with `error`
//!    (5), as a local run whose injection fails;
//! 4. after the method, every hypothesis probe must pass again within
//!    `recover-within`;
//! 5. the verdict and its exit code in the status, the JSON and JUnit
//!    reports in a ConfigMap owned by the experiment.
//!
//! The agents never need the runner: each attack ends at its deadline on
//! its node whatever happens here.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use chaos::{
    error::ExitCode,
    events::Events,
    experiment::{
        Experiment, Pick, Selector, Verdict,
        run::{failing, finish_probe_records, probe_records, recovery, steady_checks, steady_state},
    },
    probes::{Monitor, Probe, Role},
    report::{
        self, AbortRecord, AttackRecord, ExperimentInfo, RecoveryRecord, Report, SteadyState, StepRecord,
    },
    timebase::{monotonic_ns, rfc3339},
    units::format_duration,
};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Node, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::runtime::Handle;

use super::{
    pods::{self, Candidate, EXPERIMENT_LABEL},
    reconcile::refusals,
};
use crate::resources::{AttackPhase, ChaosAttack, ChaosAttackStatus, ChaosExperiment};

/// How often the run looks at its probes and the clock.
const TICK: Duration = Duration::from_millis(100);
/// How often it reads its attacks' statuses while a step runs.
const ATTACK_POLL: Duration = Duration::from_secs(1);
/// After a step's deadline, how long its attacks' agents have to report
/// them Ended (their counters) before the objects are deleted anyway.
const REPORT_GRACE: Duration = Duration::from_secs(10);

/// The API server, reached from the run's thread.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub handle: Handle,
}

impl Cluster {
    fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }
}

/// Asked of a run from outside: stop now, and why.
#[derive(Default)]
pub struct Stop {
    asked: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Stop {
    pub fn ask(&self, why: &str) {
        let mut w = self.why.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(why.to_owned());
        }
        self.asked.store(true, Ordering::SeqCst);
    }

    fn asked(&self) -> Option<String> {
        if !self.asked.load(Ordering::SeqCst) {
            return None;
        }
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How a run ends.
enum End {
    Verdict(Verdict, String),
    Invalid(String),
    Error(String),
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            Self::Verdict(v, _) => v.label(),
            Self::Invalid(_) => "invalid",
            Self::Error(_) => "error",
        }
    }

    fn code(&self) -> u8 {
        match self {
            Self::Verdict(v, _) => v.exit_code() as u8,
            Self::Invalid(_) => ExitCode::Invalid as u8,
            Self::Error(_) => ExitCode::Internal as u8,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Verdict(_, r) | Self::Invalid(r) | Self::Error(r) => r,
        }
    }
}

/// Why the method stopped early (as a local run's `Cause`).
struct Cut {
    /// `None`: an error (an attack refused or failed by its agent), exit 5.
    verdict: Option<Verdict>,
    cause: &'static str,
    probe: Option<String>,
    detail: String,
    decided_ns: u64,
}

/// A created attack, as the run follows it.
struct Created {
    name: String,
    node: String,
    /// Index into the report's step attacks.
    record: usize,
}

pub struct Run {
    cluster: Cluster,
    exp: ChaosExperiment,
    me: String,
    stop: Arc<Stop>,
    report: Report,
    t0: Instant,
    wall0: SystemTime,
    rng: fastrand::Rng,
    /// Each attack's status as last listed: what the report keeps of an
    /// attack deleted before its status could be read again (a rollback
    /// does not wait for a list).
    seen: RefCell<BTreeMap<String, ChaosAttackStatus>>,
}

impl Run {
    pub fn new(cluster: Cluster, exp: ChaosExperiment, me: &str, stop: Arc<Stop>) -> Self {
        Self {
            cluster,
            exp,
            me: me.to_owned(),
            stop,
            report: Report::default(),
            t0: Instant::now(),
            wall0: SystemTime::now(),
            rng: fastrand::Rng::new(),
            seen: RefCell::default(),
        }
    }

    fn namespace(&self) -> String {
        self.exp.namespace().unwrap_or_else(|| "default".into())
    }

    fn experiments(&self) -> Api<ChaosExperiment> {
        Api::namespaced(self.cluster.client.clone(), &self.namespace())
    }

    fn attacks(&self) -> Api<ChaosAttack> {
        Api::namespaced(self.cluster.client.clone(), &self.namespace())
    }

    /// Merge `status` into the experiment's; failures are logged (the run
    /// goes on: the agents do not need the status).
    fn status(&self, status: Value) {
        let name = self.exp.name_any();
        let patch = Patch::Merge(json!({"status": status}));
        if let Err(e) =
            self.cluster.block(self.experiments().patch_status(&name, &PatchParams::default(), &patch))
        {
            tracing::warn!(experiment = name, "cannot write the status: {e}");
        }
    }

    /// Run to the end; every attack created is gone when this returns.
    pub fn run(mut self) {
        let name = self.exp.name_any();
        let end = self.execute();
        let (verdict, code) = (end.label(), end.code());
        tracing::info!(experiment = name, verdict, code, "{}", end.reason());
        self.report.verdict = verdict.into();
        self.report.exit_code = code;
        self.report.reason = end.reason().to_owned();
        self.report.started = rfc3339(self.wall0);
        self.report.ended = rfc3339(SystemTime::now());
        self.report.duration_seconds = self.t0.elapsed().as_secs_f64();
        // Deleted meanwhile: nothing to write a verdict or report into (a
        // ConfigMap it owned would only wait for the garbage collector).
        let api = self.experiments();
        if matches!(self.cluster.block(api.get_opt(&name)), Ok(None)) {
            return;
        }
        let report = self.write_report();
        self.status(json!({
            "phase": "Done",
            "verdict": verdict,
            "exitCode": code,
            "message": end.reason(),
            "step": null,
            "attacks": null,
            "report": report,
            "endedAt": Time(now()),
        }));
    }

    fn execute(&mut self) -> End {
        let ns = self.namespace();
        let file = format!("{ns}/{}", self.exp.name_any());
        // 1. The parser of `chaos validate`, on the document as applied.
        let text = match envelope(&self.exp) {
            Ok(t) => t,
            Err(e) => return End::Invalid(e),
        };
        let exp = match chaos::experiment::parse(&file, &text, &[]) {
            Ok(e) => e,
            Err(d) => return End::Invalid(d.to_string()),
        };
        self.report.experiment = ExperimentInfo {
            kind: "experiment".into(),
            name: exp.name.clone(),
            description: exp.description.clone(),
            tags: exp.tags.clone(),
            file: file.clone(),
            variables: exp.variables.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
            overridden: Vec::new(),
        };
        self.report.chaos_version = env!("CARGO_PKG_VERSION").into();
        self.report.max_duration = format_duration(exp.max_duration);
        let refused = refusals(&exp, &ns);
        if !refused.is_empty() {
            return End::Invalid(refused.join("; "));
        }
        // Every target must match a pod now, as a local run resolves its
        // targets before anything: a typo in a selector is refused (3)
        // rather than found at its step. Each step draws its pods again.
        for t in exp.targets.iter().filter(|t| exp.attacks().any(|a| a.target == t.name)) {
            let Selector::Pod { query, .. } = &t.selector else { continue };
            match self.candidates(query, &t.node_selector) {
                Ok(found) if found.is_empty() => {
                    return End::Invalid(no_pods(&t.name, query, &t.node_selector, &ns));
                }
                Ok(_) => {}
                Err(e) => return End::Error(e),
            }
        }
        self.status(json!({
            "phase": "Running",
            "runner": self.me,
            "startedAt": Time(now()),
            "verdict": null, "exitCode": null, "message": "checking the steady state", "report": null,
        }));
        let deadline = self.t0 + exp.max_duration;
        let probes: Vec<(Probe, Role)> = exp
            .hypothesis
            .probes
            .iter()
            .map(|p| (p.clone(), Role::Hypothesis))
            .chain(exp.abort.iter().map(|p| (p.clone(), Role::Abort)))
            .collect();
        self.report.probes = probe_records(&probes);

        // 2. The steady state, before anything is created.
        if !probes.is_empty() {
            let refs: Vec<&Probe> = probes.iter().map(|(p, _)| p).collect();
            let stop = self.stop.clone();
            let Some(samples) = steady_state(&refs, |d| pause(&stop, d)) else {
                return End::Verdict(
                    Verdict::Aborted,
                    format!(
                        "{} before injecting; nothing was injected",
                        self.stop.asked().unwrap_or_default()
                    ),
                );
            };
            let checks = steady_checks(&probes, &samples);
            let held = checks.iter().all(|c| c.ok);
            let failed: Vec<String> =
                checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
            self.report.steady_state = Some(SteadyState { held, probes: checks });
            if !held {
                return End::Verdict(
                    Verdict::NotStarted,
                    format!(
                        "the steady state did not hold before injecting, so nothing was injected ({})",
                        failed.join("; ")
                    ),
                );
            }
        }

        // 3. The method, the probes watching.
        let me = thread::current();
        let mut monitor = Monitor::start(probes, Events::default(), Arc::new(move || me.unpark()));
        let cut = match self.method(&exp, &monitor, deadline) {
            Ok(cut) => cut,
            Err(e) => {
                monitor.stop();
                self.finish_probes(&monitor, None, None);
                return End::Error(e);
            }
        };
        if let Some(cut) = cut {
            monitor.stop();
            self.finish_probes(&monitor, Some(&cut), None);
            let why = format!("{}; every fault was rolled back (its ChaosAttacks deleted)", cut.detail);
            return match cut.verdict {
                Some(v) => End::Verdict(v, why),
                None => End::Error(why),
            };
        }
        if exp.hypothesis.probes.is_empty() {
            monitor.stop();
            self.finish_probes(&monitor, None, None);
            return End::Verdict(
                Verdict::Completed,
                "every attack ran to its end; no hypothesis was checked".into(),
            );
        }

        // 4. Recovery.
        self.status(
            json!({"step": null, "attacks": null, "picked": null, "message": "waiting for the recovery"}),
        );
        let ended = Instant::now();
        for w in monitor.watched.iter().filter(|w| w.role == Role::Hypothesis) {
            w.mark(ended);
        }
        let within = exp.hypothesis.recover_within;
        let recovered = |m: &Monitor| {
            m.watched
                .iter()
                .filter(|w| w.role == Role::Hypothesis)
                .all(|w| w.stats().first_ok_after_mark.is_some())
        };
        let until = (ended + within).min(deadline);
        if let Some(cut) = self.watch(&monitor, until, deadline, false, &[], recovered) {
            monitor.stop();
            self.record_cut(&cut);
            self.finish_probes(&monitor, Some(&cut), None);
            return End::Verdict(cut.verdict.unwrap_or(Verdict::Aborted), cut.detail);
        }
        monitor.stop();
        let (missing, after, detail) = recovery(&monitor, ended);
        self.report.recovery = Some(RecoveryRecord {
            within: format_duration(within),
            recovered: missing.is_empty(),
            after_ms: after.filter(|_| missing.is_empty()),
            detail,
        });
        self.finish_probes(&monitor, None, Some(&missing));
        if missing.is_empty() {
            End::Verdict(Verdict::Held, "the hypothesis held throughout, and the system recovered".into())
        } else {
            let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
            End::Verdict(
                Verdict::Violated,
                format!(
                    "the system did not recover within {}: {} still failing",
                    format_duration(within),
                    names.join(", ")
                ),
            )
        }
    }

    /// The steps; `Ok(Some)` when one was cut short (its attacks deleted).
    fn method(
        &mut self,
        exp: &Experiment,
        monitor: &Monitor,
        deadline: Instant,
    ) -> Result<Option<Cut>, String> {
        let steps = exp.method.len();
        for (i, step) in exp.method.iter().enumerate() {
            self.report.steps.push(StepRecord {
                name: step.name.clone(),
                delay: format_duration(step.delay),
                status: "running".into(),
                attacks: Vec::new(),
            });
            self.status(json!({
                "step": step.name,
                "message": format!("step {}/{steps} `{}`", i + 1, step.name),
            }));
            if !step.delay.is_zero()
                && let Some(cut) =
                    self.watch(monitor, Instant::now() + step.delay, deadline, true, &[], |_| false)
            {
                self.report.steps[i].status = "aborted".into();
                self.record_cut(&cut);
                return Ok(Some(cut));
            }
            let (created, until) = match self.create_step(exp, i) {
                Ok(c) => c,
                Err(e) => {
                    self.report.steps[i].status = "failed".into();
                    return Err(e);
                }
            };
            let cut = self.watch(monitor, until, deadline, true, &created, |_| false);
            // At the deadline the agents end the faults themselves; read
            // what they report, then delete the objects.
            if cut.is_none() {
                self.wait_final(&created);
            }
            // A cut deletes first (the rollback waits for nothing) and
            // keeps the statuses last listed, at most ATTACK_POLL old;
            // otherwise one list request for every node's final status,
            // then the deletions. Either way all at once.
            let failed = if cut.is_some() {
                self.delete(&created);
                self.collect(i, &created, cut.as_ref())
            } else {
                let failed = self.collect(i, &created, cut.as_ref());
                self.delete(&created);
                failed
            };
            if let Some(cut) = cut {
                self.report.steps[i].status = "aborted".into();
                self.record_cut(&cut);
                return Ok(Some(cut));
            }
            if let Some(e) = failed {
                self.report.steps[i].status = "failed".into();
                return Err(e);
            }
            self.report.steps[i].status = "completed".into();
        }
        Ok(None)
    }

    /// Create the step's attacks; their names and when the longest ends.
    fn create_step(&mut self, exp: &Experiment, i: usize) -> Result<(Vec<Created>, Instant), String> {
        let step = &exp.method[i];
        let mut created = Vec::new();
        let mut picked_lines = Vec::new();
        let mut until = Instant::now();
        // Resolve every attack's pods first: a step starts whole or not at all.
        let mut plans = Vec::new();
        for a in &step.attacks {
            let target = exp
                .target(&a.target)
                .ok_or_else(|| format!("attack `{}` names unknown target `{}`", a.id, a.target))?;
            let Selector::Pod { query, container } = &target.selector else {
                return Err(format!("target `{}` is not a pod target", target.name));
            };
            let matched = self.candidates(query, &target.node_selector)?;
            if matched.is_empty() {
                return Err(no_pods(&target.name, query, &target.node_selector, &self.namespace()));
            }
            let total = matched.len();
            let chosen = target.pick.sample(matched, &mut self.rng);
            picked_lines.push(picked_line(&a.id, &target.name, target.pick, total, &chosen));
            plans.push((a, container.clone(), chosen));
        }
        self.status(json!({"picked": picked_lines}));
        for (a, container, chosen) in plans {
            let deadline = SystemTime::now() + a.duration;
            until = until.max(Instant::now() + a.duration);
            for object in pods::attacks_for(&self.exp, a, container.as_deref(), &chosen, deadline) {
                let node = object.spec.node_name.clone();
                let pods: Vec<String> =
                    object.spec.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
                let mut parameters = Value::Object(object.spec.fault.clone());
                if let Value::Object(o) = &mut parameters {
                    o.remove("fault");
                }
                let name = object.name_any();
                let posted = self.cluster.block(self.attacks().create(&PostParams::default(), &object));
                if let Err(e) = posted {
                    // Nothing half-made is left: the ones created go too.
                    self.delete(&created);
                    return Err(format!("cannot create ChaosAttack {name}: {e}"));
                }
                tracing::info!(experiment = self.exp.name_any(), attack = name, node, "created");
                let records = &mut self.report.steps[i].attacks;
                records.push(AttackRecord {
                    id: name.clone(),
                    fault: a.fault.kind().into(),
                    parameters,
                    target: format!("{} on {node}", pods.join(", ")),
                    duration: format_duration(a.duration),
                    mechanism: json!({"chaosAttack": name, "node": node}),
                    status: "running".into(),
                    started_monotonic_ns: Some(monotonic_ns()),
                    deadline_monotonic_ns: Some(monotonic_ns() + a.duration.as_nanos() as u64),
                    ..AttackRecord::default()
                });
                created.push(Created { name, node, record: records.len() - 1 });
            }
        }
        let names: Vec<&str> = created.iter().map(|c| c.name.as_str()).collect();
        self.status(json!({"attacks": names}));
        Ok((created, until))
    }

    /// The pods `query` names in this experiment's namespace, on the nodes
    /// `node_selector` matches.
    fn candidates(
        &self,
        query: &chaos::runtime::PodQuery,
        node_selector: &[(String, String)],
    ) -> Result<Vec<Candidate>, String> {
        let client = self.cluster.client.clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace());
        let mut params = ListParams::default();
        if let chaos::runtime::PodQuery::Selector(pairs) = query {
            params = params.labels(&label_selector(pairs));
        }
        let listed = self.cluster.block(pods.list(&params)).map_err(|e| format!("cannot list pods: {e}"))?;
        let nodes = if node_selector.is_empty() {
            None
        } else {
            let api: Api<Node> = Api::all(client);
            let params = ListParams::default().labels(&label_selector(node_selector));
            let listed =
                self.cluster.block(api.list(&params)).map_err(|e| format!("cannot list nodes: {e}"))?;
            Some(pods::nodes_matching(&listed.items, node_selector))
        };
        Ok(pods::candidates(&listed.items, query, nodes.as_ref()))
    }

    /// Wait until `until` or `done`, watching the probes, the clock, the
    /// stop flag and (`created`) the attacks' phases.
    fn watch(
        &self,
        monitor: &Monitor,
        until: Instant,
        deadline: Instant,
        hypothesis_aborts: bool,
        created: &[Created],
        done: impl Fn(&Monitor) -> bool,
    ) -> Option<Cut> {
        let mut polled = Instant::now();
        loop {
            if done(monitor) {
                return None;
            }
            let cut = |verdict, cause, probe: Option<String>, detail: String| {
                Some(Cut { verdict: Some(verdict), cause, probe, detail, decided_ns: monotonic_ns() })
            };
            if let Some((w, s)) = monitor.unhealthy(Role::Hypothesis).filter(|_| hypothesis_aborts) {
                return cut(
                    Verdict::Violated,
                    "hypothesis",
                    Some(w.probe.name.clone()),
                    format!(
                        "hypothesis probe `{}` out of tolerance: {}",
                        w.probe.name,
                        failing(&s, w.probe.failures)
                    ),
                );
            }
            if let Some((w, s)) = monitor.unhealthy(Role::Abort) {
                return cut(
                    Verdict::Aborted,
                    "abort-condition",
                    Some(w.probe.name.clone()),
                    format!("abort condition `{}` tripped: {}", w.probe.name, failing(&s, w.probe.failures)),
                );
            }
            if let Some(why) = self.stop.asked() {
                return cut(Verdict::Aborted, "signal", None, why);
            }
            let now = Instant::now();
            if now >= deadline {
                let max = format_duration(deadline - self.t0);
                return cut(
                    Verdict::Aborted,
                    "max-duration",
                    None,
                    format!("the experiment's max-duration ({max}) was reached"),
                );
            }
            if now >= until {
                return None;
            }
            if !created.is_empty() && now >= polled + ATTACK_POLL {
                polled = now;
                match self.attack_refused(created) {
                    // As a local run whose target's cgroup went away.
                    Some((false, gone)) => return cut(Verdict::Aborted, "target-gone", None, gone),
                    // As a local run whose injection failed: an error.
                    Some((true, why)) => {
                        return Some(Cut {
                            verdict: None,
                            cause: "error",
                            probe: None,
                            detail: why,
                            decided_ns: monotonic_ns(),
                        });
                    }
                    None => {}
                }
            }
            thread::park_timeout(TICK.min(until - now));
        }
    }

    /// An attack its agent refused or failed (`true`: an error), or ended
    /// early because its pods went away (`false`): the step cannot go on as
    /// planned.
    fn attack_refused(&self, created: &[Created]) -> Option<(bool, String)> {
        let statuses = self.statuses()?;
        for c in created {
            let Some(s) = statuses.get(&c.name) else { continue };
            match s.phase {
                AttackPhase::Refused | AttackPhase::Failed => {
                    return Some((
                        true,
                        format!(
                            "ChaosAttack {} on node {} was {}: {}",
                            c.name,
                            c.node,
                            if s.phase == AttackPhase::Refused { "refused" } else { "failed" },
                            s.message.as_deref().unwrap_or("no message")
                        ),
                    ));
                }
                AttackPhase::Ended if s.reason.as_deref() == Some("target gone") => {
                    return Some((
                        false,
                        format!("ChaosAttack {} on node {} ended: its pods went away", c.name, c.node),
                    ));
                }
                _ => {}
            }
        }
        None
    }

    /// The statuses of this experiment's attacks, by name: one list
    /// request, however many nodes (`None`: the list failed). Kept in
    /// `seen`.
    fn statuses(&self) -> Option<BTreeMap<String, ChaosAttackStatus>> {
        let params = ListParams::default()
            .labels(&format!("{EXPERIMENT_LABEL}={}", self.exp.uid().unwrap_or_default()));
        match self.cluster.block(self.attacks().list(&params)) {
            Ok(list) => {
                let statuses: BTreeMap<_, _> =
                    list.into_iter().map(|a| (a.name_any(), a.status.unwrap_or_default())).collect();
                self.seen.borrow_mut().extend(statuses.clone());
                Some(statuses)
            }
            Err(e) => {
                tracing::warn!(experiment = self.exp.name_any(), "cannot list its attacks: {e}");
                None
            }
        }
    }

    /// Until every attack is in a final phase, or [`REPORT_GRACE`].
    fn wait_final(&self, created: &[Created]) {
        let until = Instant::now() + REPORT_GRACE;
        while Instant::now() < until && !self.stop.asked.load(Ordering::SeqCst) {
            // Unreadable, or gone: nothing more to wait for.
            let Some(statuses) = self.statuses() else { return };
            if created.iter().all(|c| statuses.get(&c.name).is_none_or(|s| s.phase.is_final())) {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each attack's final status into the report (as listed now, else as
    /// last listed); `Some(message)` when one was refused or failed.
    fn collect(&mut self, i: usize, created: &[Created], cut: Option<&Cut>) -> Option<String> {
        let mut failed = None;
        // A list now refreshes `seen`; what it no longer shows (deleted)
        // stays as last listed.
        let _ = self.statuses();
        let statuses = self.seen.take();
        for c in created {
            let record = &mut self.report.steps[i].attacks[c.record];
            let status = statuses.get(&c.name).cloned().unwrap_or_default();
            record.mechanism["phase"] = json!(status.phase);
            record.mechanism["counters"] = json!(status.counters);
            record.mechanism["pods"] = json!(status.pods);
            record.ended = status.reason.clone().or_else(|| cut.map(|c| format!("abort: {}", c.cause)));
            record.status = match (status.phase, cut) {
                (AttackPhase::Refused | AttackPhase::Failed, _) => {
                    let msg = status.message.clone().unwrap_or_default();
                    record.error = Some(msg.clone());
                    failed.get_or_insert(format!("ChaosAttack {} on node {}: {msg}", c.name, c.node));
                    "failed"
                }
                (_, Some(_)) => "aborted",
                _ => "completed",
            }
            .into();
        }
        failed
    }

    /// Delete the attacks: the rollback. The agents stop each fault when
    /// they see it deleted; its deadline ends it if one never does.
    /// All at once: a rollback on a hundred nodes takes one round trip.
    fn delete(&self, created: &[Created]) {
        let api = self.attacks();
        let params = DeleteParams::background();
        let deletions = created.iter().map(|c| api.delete(&c.name, &params));
        let results = self.cluster.block(futures_util::future::join_all(deletions));
        for (c, result) in created.iter().zip(results) {
            match result {
                Ok(_) => tracing::info!(experiment = self.exp.name_any(), attack = c.name, "deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(attack = c.name, "cannot delete (it ends at its deadline): {e}"),
            }
        }
    }

    /// An abort, in the report (an error is in its reason instead).
    fn record_cut(&mut self, cut: &Cut) {
        if cut.verdict.is_none() {
            return;
        }
        self.report.abort = Some(AbortRecord {
            cause: cut.cause.into(),
            probe: cut.probe.clone(),
            detail: cut.detail.clone(),
            decided_monotonic_ns: cut.decided_ns,
            inert_after_decision_us: None,
            detached_after_decision_us: None,
        });
    }

    fn finish_probes(&mut self, monitor: &Monitor, cut: Option<&Cut>, missing: Option<&[(String, String)]>) {
        let tripped = cut.and_then(|c| c.probe.as_deref());
        finish_probe_records(&mut self.report.probes, monitor, tripped, missing);
    }

    /// The reports in the ConfigMap `chaos-report-<experiment>`, owned by
    /// the experiment (deleted with it); its name, or `None` if it could not
    /// be written (logged).
    fn write_report(&self) -> Option<String> {
        let name =
            pods::attack_name("chaos-report", &self.exp.name_any(), "").trim_end_matches('-').to_owned();
        let json = match serde_json::to_string_pretty(&self.report) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("cannot write the report: {e}");
                return None;
            }
        };
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.exp.namespace(),
                owner_references: self.exp.controller_owner_ref(&()).map(|o| vec![o]),
                labels: Some(BTreeMap::from([(
                    EXPERIMENT_LABEL.to_owned(),
                    self.exp.uid().unwrap_or_default(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                ("report.json".to_owned(), json),
                ("junit.xml".to_owned(), report::junit::render(&self.report)),
                ("summary.txt".to_owned(), report::summary(&self.report)),
            ])),
            ..ConfigMap::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(self.cluster.client.clone(), &self.namespace());
        let params = PatchParams::apply("chaos-runner").force();
        match self.cluster.block(api.patch(&name, &params, &Patch::Apply(&map))) {
            Ok(_) => Some(name),
            Err(e) => {
                tracing::warn!(configmap = name, "cannot write the report: {e}");
                None
            }
        }
    }
}

/// Sleep `d` unless asked to stop: false when asked.
fn pause(stop: &Stop, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.asked.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        thread::park_timeout(TICK.min(until - now));
    }
}

fn now() -> Timestamp {
    Timestamp::try_from(SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The object as `chaos run` reads a file: `apiVersion`, `kind`, the name
/// and namespace, and the spec, as YAML; the parser's messages quote the
/// line they point at, so they read without the text.
fn envelope(exp: &ChaosExperiment) -> Result<String, String> {
    let doc = json!({
        "apiVersion": ChaosExperiment::api_version(&()),
        "kind": ChaosExperiment::kind(&()),
        "metadata": {"name": exp.name_any(), "namespace": exp.namespace()},
        "spec": exp.spec,
    });
    serde_yaml_ng::to_string(&doc).map_err(|e| format!("the spec cannot be read back: {e}"))
}

/// `a=b,c=d`.
fn label_selector(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Target `web` (pods labelled app=web on nodes labelled zone=a) ...
fn no_pods(
    target: &str,
    query: &chaos::runtime::PodQuery,
    nodes: &[(String, String)],
    namespace: &str,
) -> String {
    let on = if nodes.is_empty() {
        String::new()
    } else {
        format!(" on nodes labelled {}", label_selector(nodes))
    };
    format!(
        "target `{target}` ({query}{on}) matches no running, ready pod in namespace {namespace}: nothing to \
         attack (`kubectl -n {namespace} get pods --show-labels` lists them)"
    )
}

/// `loss: target web, 2 of 5 pods (count 2): shop/web-0 on n1, ...`
fn picked_line(attack: &str, target: &str, pick: Pick, total: usize, chosen: &[Candidate]) -> String {
    let how = match pick {
        Pick::All => String::new(),
        other => format!(" ({other})"),
    };
    let names: Vec<String> = chosen.iter().map(ToString::to_string).collect();
    format!("{attack}: target {target}, {} of {total} matching pods{how}: {}", chosen.len(), names.join(", "))
}
