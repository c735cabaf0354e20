//! Running an experiment:
//!
//! 1. resolve targets and plan a mechanism for every attack (errors: exit 3);
//!    `--dry-run` stops here and prints the plan;
//! 2. check the steady state: every probe until it passes, at most its
//!    `failures` times in a row; if one never does, inject nothing
//!    (verdict `not-started`, exit 2);
//! 3. claim every attack of the run at once (exit 4 if a target is busy);
//! 4. run the method step by step, probes watching all along: a hypothesis
//!    probe that turns unhealthy aborts at once (`violated`, exit 1); an
//!    abort condition, the maximum duration or a signal abort too
//!    (`aborted`, exit 2) — rules deleted first, links detached, and the
//!    time from the decision to the fault inert recorded;
//! 5. after the method, wait for every hypothesis probe to pass again
//!    within `recover-within` (else `violated`);
//! 6. report: JSON, JUnit, a summary, and the verdict.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

use super::{
    describe::{dur, fault_parameters, plan_text, step_line},
    model::{Experiment, Origin},
    view::{LiveView, Screen},
};
use crate::{
    attack::{Attack, Planned, plan},
    capabilities::{Capabilities, CapabilitySet, Findings},
    controller::{self, EndReason, Ended, GroupOptions},
    error::{Error, ExitCode, Result},
    events::{AttackProgress, Events, Phase, ProbeProgress, Progress, RunEvent},
    injector::{self, Injector, Running},
    metrics::{self, Metrics},
    plan::Ancestry,
    probes::{self, Monitor, Probe, Role, Sample},
    report::{
        self, AbortRecord, AttackRecord, ExperimentInfo, ProbeCheck, ProbeRecord, RecoveryRecord, Report,
        SteadyState, StepRecord, TargetInfo,
    },
    session,
    signals::{self, SignalWatch, Wake},
    targets::{AllowHost, CgroupFs, Target},
    timebase::{monotonic_ns, rfc3339},
};

/// How often the live view and the metrics refresh outside attacks (the
/// controller ticks at the same rate during them).
const TICK: Duration = Duration::from_millis(100);

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Validate, resolve and plan; print the plan; inject nothing.
    pub dry_run: bool,
    /// Plan from this capability set (`--capabilities FILE`, with
    /// `dry_run`) instead of probing this kernel.
    pub capabilities: Option<CapabilitySet>,
    /// Write the JSON report here.
    pub report: Option<PathBuf>,
    /// Write the JUnit XML report here.
    pub junit: Option<PathBuf>,
    /// Serve Prometheus metrics here while running.
    pub metrics_addr: Option<SocketAddr>,
    /// Redraw a live view on stderr (a terminal).
    pub live: bool,
    /// No attack runs past this time of day, however late it starts: each
    /// is shortened, when its rule is written, to what is left (see
    /// [`Injector::ends_by`]). The Kubernetes agent's `ChaosAttack` carries
    /// such a deadline, chosen by its creator.
    pub ends_by: Option<SystemTime>,
}

/// The outcome of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The hypothesis held throughout, and the system recovered.
    Held,
    /// A hypothesis probe went out of tolerance, or did not recover.
    Violated,
    /// A signal, an abort condition or the maximum duration stopped it.
    Aborted,
    /// The steady state did not hold before injecting: nothing was injected.
    NotStarted,
    /// `--dry-run`: planned, not injected.
    DryRun,
    /// No hypothesis to check (`chaos attack`): every attack ran to its end.
    Completed,
}

impl Verdict {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Held | Self::DryRun | Self::Completed => ExitCode::Ok,
            Self::Violated => ExitCode::HypothesisViolated,
            Self::Aborted | Self::NotStarted => ExitCode::Aborted,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Violated => "violated",
            Self::Aborted => "aborted",
            Self::NotStarted => "not-started",
            Self::DryRun => "dry-run",
            Self::Completed => "completed",
        }
    }
}

pub struct Outcome {
    pub verdict: Verdict,
    pub report: Report,
}

/// Run `exp`. Errors (exit codes 3, 4, 5) come back as `Err`, after the
/// reports were written with verdict `error`.
pub fn run(exp: &Experiment, opts: &Options, events: &Events, signals: &SignalWatch) -> Result<Outcome> {
    let mut runner = Runner::new(exp, opts, events, signals);
    let result = runner.execute();
    let (verdict, code, reason) = match &result {
        Ok((v, reason)) => (v.label(), v.exit_code(), reason.clone()),
        Err(e) => ("error", e.exit_code(), e.to_string()),
    };
    runner.finish(verdict, code, reason);
    if runner.started {
        runner.bus.emit(RunEvent::Phase { phase: Phase::Done });
        runner.bus.emit(RunEvent::Verdict {
            experiment: exp.name.clone(),
            verdict: verdict.into(),
            exit_code: code as u8,
            reason: runner.report.reason.clone(),
        });
    }
    let written = runner.write_reports();
    let (verdict, _) = result?;
    written?;
    Ok(Outcome { verdict, report: runner.report })
}

/// Why the method stopped early.
#[derive(Clone, Debug)]
enum Cause {
    Hypothesis {
        probe: String,
        detail: String,
    },
    AbortCondition {
        probe: String,
        detail: String,
    },
    MaxDuration,
    Signal(i32),
    /// A target's cgroup went away: its container or unit stopped or
    /// restarted.
    TargetGone(String),
}

struct Decision {
    cause: Cause,
    decided_ns: u64,
}

impl Cause {
    fn describe(&self, max: Duration) -> String {
        match self {
            Self::Hypothesis { probe, detail } => {
                format!("hypothesis probe `{probe}` out of tolerance: {detail}")
            }
            Self::AbortCondition { probe, detail } => format!("abort condition `{probe}` tripped: {detail}"),
            Self::MaxDuration => {
                format!("the experiment's max-duration ({}) was reached", dur(max))
            }
            Self::Signal(sig) => format!("{} received", signals::name(*sig)),
            Self::TargetGone(why) => why.clone(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Hypothesis { .. } => "hypothesis",
            Self::AbortCondition { .. } => "abort-condition",
            Self::MaxDuration => "max-duration",
            Self::Signal(_) => "signal",
            Self::TargetGone(_) => "target-gone",
        }
    }

    fn probe(&self) -> Option<String> {
        match self {
            Self::Hypothesis { probe, .. } | Self::AbortCondition { probe, .. } => Some(probe.clone()),
            _ => None,
        }
    }

    fn verdict(&self) -> Verdict {
        match self {
            Self::Hypothesis { .. } => Verdict::Violated,
            _ => Verdict::Aborted,
        }
    }
}

struct Runner<'a> {
    exp: &'a Experiment,
    opts: &'a Options,
    /// The run's own bus: the caller's (JSON lines), the metrics and the
    /// live view subscribe to it.
    bus: Events,
    signals: &'a SignalWatch,
    report: Report,
    t0: Instant,
    wall0: SystemTime,
    /// `t0 + max-duration`.
    deadline: Instant,
    metrics: Metrics,
    /// Lasting messages, above the live view.
    screen: Screen,
    /// "step 2/3" and the like, for the live view.
    phase: String,
    /// `experiment-start` was emitted: the run's events end with a verdict.
    /// A run refused before it (bad input, an unknown target) emits none.
    started: bool,
}

impl<'a> Runner<'a> {
    /// [`steady_state`], interrupted by a signal: `Err(signal)`.
    fn steady_state(&self, probes: &[&Probe]) -> std::result::Result<Vec<Sample>, i32> {
        let mut signal = None;
        let pause = |pause: Duration| {
            let until = Instant::now() + pause;
            loop {
                match self.signals.wait(until, pause) {
                    Wake::Signal(sig) => {
                        signal = Some(sig);
                        return false;
                    }
                    Wake::Deadline => return true,
                    Wake::Tick => {}
                }
            }
        };
        steady_state(probes, pause).ok_or_else(|| signal.unwrap_or(libc::SIGTERM))
    }

    /// Step 2, the steady state before anything is injected: `Some`
    /// verdict when the run must stop here (a probe never passed, a signal).
    fn before_injecting(&mut self, probes: &[(Probe, Role)]) -> Option<(Verdict, String)> {
        self.bus.emit(RunEvent::Phase { phase: Phase::SteadyState });
        self.phase = "steady state".into();
        self.screen.say(&format!("`{}`: checking the steady state ({} probes)", self.exp.name, probes.len()));
        let refs: Vec<&Probe> = probes.iter().map(|(p, _)| p).collect();
        let samples = match self.steady_state(&refs) {
            Ok(samples) => samples,
            Err(sig) => {
                return Some((
                    Verdict::Aborted,
                    format!("{} received before injecting; nothing was injected", signals::name(sig)),
                ));
            }
        };
        let checks = steady_checks(probes, &samples);
        let held = checks.iter().all(|c| c.ok);
        self.bus.emit(RunEvent::SteadyState { phase: "before".into(), held, probes: checks.clone() });
        self.report.steady_state = Some(SteadyState { held, probes: checks.clone() });
        if let Some(sig) = self.signals.pending() {
            return Some((
                Verdict::Aborted,
                format!("{} received before injecting; nothing was injected", signals::name(sig)),
            ));
        }
        if !held {
            let failed: Vec<String> =
                checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
            self.screen.say("the steady state does not hold: refusing to inject");
            return Some((
                Verdict::NotStarted,
                format!(
                    "the steady state did not hold before injecting, so nothing was injected ({})",
                    failed.join("; ")
                ),
            ));
        }
        self.screen.say("steady state holds");
        None
    }

    fn new(exp: &'a Experiment, opts: &'a Options, events: &'a Events, signals: &'a SignalWatch) -> Self {
        let t0 = Instant::now();
        let report = Report {
            chaos_version: env!("CARGO_PKG_VERSION").into(),
            experiment: ExperimentInfo {
                kind: exp.origin.label().into(),
                name: exp.name.clone(),
                description: exp.description.clone(),
                tags: exp.tags.clone(),
                file: exp.file.clone(),
                variables: exp.variables.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect(),
                overridden: exp
                    .variables
                    .iter()
                    .filter(|(_, v)| v.overridden)
                    .map(|(k, _)| k.clone())
                    .collect(),
            },
            max_duration: dur(exp.max_duration),
            ..Default::default()
        };
        let metrics = Metrics::new(&exp.name);
        let screen = Screen::new(opts.live);
        let bus = Events::default();
        bus.subscribe(Box::new(events.clone()));
        bus.subscribe(Box::new(metrics.clone()));
        bus.subscribe(Box::new(LiveView {
            screen: screen.clone(),
            experiment: exp.name.clone(),
            planned: exp.method_length(),
            max: exp.max_duration,
        }));
        Self {
            exp,
            opts,
            bus,
            signals,
            report,
            t0,
            wall0: SystemTime::now(),
            deadline: t0 + exp.max_duration,
            metrics,
            screen,
            phase: "planning".into(),
            started: false,
        }
    }

    fn execute(&mut self) -> Result<(Verdict, String)> {
        // A dry run plans from what can be probed unprivileged, or from
        // --capabilities; the planner refuses what it does not know.
        if !self.opts.dry_run {
            session::require_root("chaos run")?;
        }
        let targets = self.resolve_targets()?;
        let plan = self.plan(&targets)?;
        if !self.opts.dry_run {
            // Refused now rather than after the steady state: a state
            // directory chaos cannot trust, a device that is not there.
            crate::state::checked_state_dir()?;
            // Needs root (it enters the target's network namespace).
            for ((a, planned), spec) in plan.iter().flatten().zip(self.exp.attacks()) {
                injector::preflight(a, planned)
                    .map_err(|e| self.at(spec.span, &format!("attack `{}`", a.id), e))?;
            }
        }
        let probes = self.probes();
        for (p, _) in &probes {
            p.check_environment().map_err(Error::environment)?;
        }
        self.record_plan(&plan);
        if self.opts.dry_run {
            print!("{}", plan_text(self.exp, &targets, &plan));
            return Ok((
                Verdict::DryRun,
                "dry run: validated, resolved and planned; nothing was injected".into(),
            ));
        }
        let _server = match self.opts.metrics_addr {
            Some(addr) => {
                let s = metrics::serve(addr, self.metrics.clone())?;
                self.screen.say(&format!("metrics at http://{}/metrics", s.addr));
                Some(s)
            }
            None => None,
        };
        self.started = true;
        self.bus.emit(RunEvent::ExperimentStart {
            experiment: self.exp.name.clone(),
            file: self.exp.file.clone(),
            variables: self.report.experiment.variables.clone(),
            targets: self.report.targets.clone(),
            max_duration: dur(self.exp.max_duration),
            method_length: dur(self.exp.method_length()),
        });

        // 2. The steady state, before anything is injected. With no probe
        // (`chaos attack`) there is nothing to check.
        if !probes.is_empty()
            && let Some(stop) = self.before_injecting(&probes)
        {
            return Ok(stop);
        }

        // 3. Claim every attack of the run, then 4. the method.
        let attacks: Vec<Attack> = plan.iter().flatten().map(|(a, _)| a.clone()).collect();
        let ancestry = Ancestry::of(plan.iter().flatten().map(|(_, p)| p));
        let mut injector = session::open(&attacks, ancestry)?;
        injector.ends_by = self.opts.ends_by;
        let wake = self.signals.waker();
        let mut monitor = Monitor::start(probes, self.bus.clone(), Arc::new(wake));
        self.bus.emit(RunEvent::Phase { phase: Phase::Method });
        let result = self.method(&mut injector, &mut monitor, plan);
        let decision = match result {
            Ok(d) => d,
            Err(e) => {
                monitor.stop();
                self.finish_probes(&monitor, None, None);
                return Err(e);
            }
        };
        drop(injector);
        if let Some(d) = decision {
            monitor.stop();
            self.finish_probes(&monitor, Some(&d), None);
            let verdict = d.cause.verdict();
            let tail = if verdict == Verdict::Violated {
                "; the faults were rolled back"
            } else {
                "; every fault was rolled back"
            };
            return Ok((verdict, format!("{}{tail}", d.cause.describe(self.exp.max_duration))));
        }

        if self.exp.hypothesis.probes.is_empty() {
            monitor.stop();
            self.finish_probes(&monitor, None, None);
            return Ok((Verdict::Completed, "every attack ran to its end; no hypothesis was checked".into()));
        }

        // 5. Recovery.
        self.bus.emit(RunEvent::Phase { phase: Phase::Recovery });
        let recovery = self.recover(&monitor);
        monitor.stop();
        match recovery {
            Err(d) => {
                self.finish_probes(&monitor, Some(&d), None);
                Ok((d.cause.verdict(), d.cause.describe(self.exp.max_duration)))
            }
            Ok(missing) if missing.is_empty() => {
                self.finish_probes(&monitor, None, None);
                Ok((Verdict::Held, "the hypothesis held throughout, and the system recovered".into()))
            }
            Ok(missing) => {
                let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
                self.finish_probes(&monitor, None, Some(&missing));
                Ok((
                    Verdict::Violated,
                    format!(
                        "the system did not recover within {}: {} still failing",
                        dur(self.exp.hypothesis.recover_within),
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    /// Each named target's cgroups: one, but for a pod selector matching
    /// several pods (each then gets the step's attack).
    fn resolve_targets(&mut self) -> Result<BTreeMap<String, Vec<Target>>> {
        let fs = CgroupFs::discover()?;
        let mut out = BTreeMap::new();
        let mut rng = fastrand::Rng::new();
        for t in &self.exp.targets {
            if !t.node_selector.is_empty() {
                return Err(self.at(
                    t.span,
                    &format!("target `{}`", t.name),
                    Error::invalid(
                        "`node-selector` chooses among the nodes of a cluster, and on one machine every pod is on \
                         this node: drop it, or run the experiment on the cluster (`kubectl apply -f FILE`, \
                         `chaos-kube run FILE`)",
                    ),
                ));
            }
            let resolved = crate::runtime::resolve(&t.selector, &fs, AllowHost(t.allow_host))
                .map_err(|e| self.at(t.span, &format!("target `{}`", t.name), e))?;
            let resolved = t.pick.sample(resolved, &mut rng);
            for target in &resolved {
                self.report.targets.push(TargetInfo {
                    name: t.name.clone(),
                    path: target.path.display().to_string(),
                    id: target.id,
                    workload: target.workload.clone(),
                });
            }
            out.insert(t.name.clone(), resolved);
        }
        Ok(out)
    }

    /// Prefix an error with the file position it comes from, keeping its
    /// kind (and so its exit code).
    fn at(&self, span: super::diag::Span, what: &str, e: Error) -> Error {
        if self.exp.origin == Origin::Attack {
            // The flags are the attack's whole context: its own messages
            // name them.
            return e;
        }
        let msg = format!("{}:{}:{}: {what}: {e}", self.exp.file, span.start.line, span.start.col);
        match e.exit_code() {
            ExitCode::Invalid if matches!(e, Error::Environment(_)) => Error::environment(msg),
            ExitCode::Invalid => Error::invalid(msg),
            _ => Error::kernel(msg, anyhow::anyhow!("{e}")),
        }
    }

    fn plan(&mut self, targets: &BTreeMap<String, Vec<Target>>) -> Result<Vec<Vec<(Attack, Planned)>>> {
        // Probed as the planner asks: only what the plans read.
        let probing = Capabilities::new();
        let caps: &dyn Findings = match &self.opts.capabilities {
            Some(set) => set,
            None => &probing,
        };
        let mut out = Vec::new();
        for step in &self.exp.method {
            let mut group: Vec<(Attack, Planned)> = Vec::new();
            for a in &step.attacks {
                let matched = targets.get(&a.target).ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: attack {} names unknown target {}",
                        self.exp.file, a.id, a.target
                    ))
                })?;
                // One attack per cgroup the target names; several (a pod
                // selector) are told apart by a suffix: `net-loss-1.2`.
                for (i, target) in matched.iter().enumerate() {
                    let id = if matched.len() == 1 { a.id.clone() } else { format!("{}.{}", a.id, i + 1) };
                    let attack =
                        Attack { id, fault: a.fault.clone(), target: target.clone(), duration: a.duration };
                    if let Some((other, _)) = group.iter().find(|(o, _)| {
                        o.target.id == attack.target.id && o.fault.family() == attack.fault.family()
                    }) {
                        return Err(self.at(
                        a.span,
                        &format!("attack `{}`", a.id),
                        Error::invalid(format!(
                            "{} also gets attack `{}` of the same family in this parallel step; a target carries one {} fault at a time: combine them, or run them one after the other",
                            attack.target,
                            other.id,
                            attack.fault.family().name()
                        )),
                    ));
                    }
                    let mechanism =
                        plan(&attack, caps).map_err(|e| self.at(a.span, &format!("attack `{}`", a.id), e))?;
                    group.push((attack, mechanism));
                }
            }
            out.push(group);
        }
        Ok(out)
    }

    fn probes(&self) -> Vec<(Probe, Role)> {
        let h = self.exp.hypothesis.probes.iter().map(|p| (p.clone(), Role::Hypothesis));
        h.chain(self.exp.abort.iter().map(|p| (p.clone(), Role::Abort))).collect()
    }

    fn record_plan(&mut self, plan: &[Vec<(Attack, Planned)>]) {
        self.report.steps = self
            .exp
            .method
            .iter()
            .zip(plan)
            .map(|(step, group)| StepRecord {
                name: step.name.clone(),
                delay: dur(step.delay),
                status: if self.opts.dry_run { "planned" } else { "not-run" }.into(),
                attacks: group
                    .iter()
                    .map(|(a, m)| AttackRecord {
                        id: a.id.clone(),
                        fault: a.fault.kind().into(),
                        parameters: fault_parameters(a),
                        target: a.target.path.display().to_string(),
                        duration: dur(a.duration),
                        mechanism: serde_json::to_value(m).unwrap_or(Value::Null),
                        status: if self.opts.dry_run { "planned" } else { "not-run" }.into(),
                        ..AttackRecord::default()
                    })
                    .collect(),
            })
            .collect();
        self.report.probes = probe_records(&self.probes());
    }

    /// Run the method's steps; `Some` when something stopped it early.
    fn method(
        &mut self,
        injector: &mut Injector,
        monitor: &mut Monitor,
        plan: Vec<Vec<(Attack, Planned)>>,
    ) -> Result<Option<Decision>> {
        let exp = self.exp;
        let steps = exp.method.len();
        for (i, (step, group)) in exp.method.iter().zip(plan).enumerate() {
            self.phase = format!("step {}/{steps} `{}`", i + 1, step.name);
            if !step.delay.is_zero() {
                self.screen.say(&format!(
                    "step {}/{steps} `{}`: waiting {}",
                    i + 1,
                    step.name,
                    dur(step.delay)
                ));
                if let Some(d) = self.wait(Instant::now() + step.delay, monitor, true, |_| false) {
                    self.record_abort(&d, &[]);
                    self.screen.say(&format!("ABORT: {}", d.cause.describe(exp.max_duration)));
                    return Ok(Some(d));
                }
            }
            let step_of = match self.exp.origin {
                Origin::File => format!("step {}/{steps} ", i + 1),
                Origin::Attack => String::new(),
            };
            self.screen.say(&format!("{step_of}`{}`: {}", step.name, step_line(&group)));
            self.report.steps[i].status = "running".into();
            let mut decision: Option<Decision> = None;
            let (bus, signals) = (self.bus.clone(), self.signals);
            // The live view shows starts and stops; log lines would garble it.
            let options = GroupOptions { quiet: self.opts.live };
            let result = controller::run_group(injector, group, &bus, signals, options, |inj, running| {
                self.note_started(i, running);
                self.tick(monitor, Some((inj, running)));
                let d = self.decide(monitor, true)?;
                let why = d.cause.describe(self.exp.max_duration);
                decision = Some(d);
                Some(why)
            });
            let (reason, ended) = match result {
                Ok(r) => r,
                Err(e) => {
                    self.report.steps[i].status = "failed".into();
                    for a in &mut self.report.steps[i].attacks {
                        a.status = "failed".into();
                        a.error = Some(e.to_string());
                    }
                    return Err(e);
                }
            };
            match reason {
                EndReason::Signal(sig) => {
                    decision = Some(Decision { cause: Cause::Signal(sig), decided_ns: monotonic_ns() });
                }
                EndReason::TargetGone { why, at_ns } => {
                    decision = Some(Decision { cause: Cause::TargetGone(why), decided_ns: at_ns });
                }
                EndReason::Deadline | EndReason::Abort(_) => {}
            }
            self.record_step(i, &ended, decision.is_some());
            if let Some(d) = decision {
                self.record_abort(&d, &ended);
                self.screen.say(&format!("ABORT: {}", d.cause.describe(self.exp.max_duration)));
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Note when the running attacks of step `i` started and end (their
    /// kernel-side deadlines).
    fn note_started(&mut self, i: usize, running: &[Running]) {
        for r in running {
            if let Some(a) = self.report.steps[i].attacks.iter_mut().find(|a| a.id == r.attack.id)
                && a.deadline_monotonic_ns.is_none()
            {
                a.deadline_monotonic_ns = Some(r.deadline_ns);
                a.started_monotonic_ns =
                    Some(r.deadline_ns.saturating_sub(r.attack.duration.as_nanos() as u64));
            }
        }
    }

    fn record_step(&mut self, i: usize, ended: &[Ended], aborted: bool) {
        let step = &mut self.report.steps[i];
        step.status = if aborted { "aborted" } else { "completed" }.into();
        // The metrics took the final counters from the stop events.
        for e in ended {
            let s = &e.stopped;
            if let Some(a) = step.attacks.iter_mut().find(|a| a.id == s.attack.id) {
                let deadline_reached = e.stop_called_ns >= a.deadline_monotonic_ns.unwrap_or(u64::MAX);
                a.status = if aborted && !deadline_reached { "aborted" } else { "completed" }.into();
                a.counters = Some(s.counters.clone());
                a.inert_after_us = Some(s.inert_after.as_micros() as u64);
                a.detached_after_us = Some(s.detached_after.as_micros() as u64);
                a.inert_monotonic_ns = Some(e.stop_called_ns + s.inert_after.as_nanos() as u64);
            }
        }
    }

    fn record_abort(&mut self, d: &Decision, ended: &[Ended]) {
        // Only the attacks the abort stopped: those that ended at their
        // deadline earlier in the step do not count.
        let stopped_by_abort: Vec<&Ended> =
            ended.iter().filter(|e| e.stop_called_ns >= d.decided_ns).collect();
        let inert =
            stopped_by_abort.iter().map(|e| e.stop_called_ns + e.stopped.inert_after.as_nanos() as u64).max();
        let detached = stopped_by_abort
            .iter()
            .map(|e| e.stop_called_ns + e.stopped.detached_after.as_nanos() as u64)
            .max();
        let since = |t: u64| t.saturating_sub(d.decided_ns) / 1000;
        let record = AbortRecord {
            cause: d.cause.label().into(),
            probe: d.cause.probe(),
            detail: d.cause.describe(self.exp.max_duration),
            decided_monotonic_ns: d.decided_ns,
            inert_after_decision_us: inert.map(since),
            detached_after_decision_us: detached.map(since),
        };
        self.bus.emit(RunEvent::ExperimentAbort(record.clone()));
        self.report.abort = Some(record);
    }

    /// After the method: every hypothesis probe must pass a check that
    /// started after it, within `recover-within`. Returns the probes that
    /// did not, or the decision that cut the wait short.
    fn recover(&mut self, monitor: &Monitor) -> std::result::Result<Vec<(String, String)>, Decision> {
        let end = Instant::now();
        let within = self.exp.hypothesis.recover_within;
        for w in monitor.watched.iter().filter(|w| w.role == Role::Hypothesis) {
            w.mark(end);
        }
        self.phase = "recovery".into();
        self.screen
            .say(&format!("method done; waiting up to {} for the hypothesis to pass again", dur(within)));
        let recovered = |m: &Monitor| {
            m.watched
                .iter()
                .filter(|w| w.role == Role::Hypothesis)
                .all(|w| w.stats().first_ok_after_mark.is_some())
        };
        let until = (end + within).min(self.deadline);
        if let Some(d) = self.wait(until, monitor, false, recovered) {
            self.record_abort(&d, &[]);
            self.screen.say(&format!("ABORT: {}", d.cause.describe(self.exp.max_duration)));
            return Err(d);
        }
        let (missing, after, detail) = recovery(monitor, end);
        let recovered = missing.is_empty();
        self.screen.say(&detail);
        self.bus.emit(RunEvent::Recovery { recovered, after_ms: after, detail: detail.clone() });
        self.report.recovery = Some(RecoveryRecord {
            within: dur(within),
            recovered,
            after_ms: after.filter(|_| recovered),
            detail,
        });
        Ok(missing)
    }

    /// Wait until `until` (or `done`), watching probes, signals and the
    /// maximum duration.
    fn wait(
        &mut self,
        until: Instant,
        monitor: &Monitor,
        hypothesis_aborts: bool,
        done: impl Fn(&Monitor) -> bool,
    ) -> Option<Decision> {
        loop {
            if done(monitor) {
                return None;
            }
            match self.signals.wait(until, TICK) {
                Wake::Signal(sig) => {
                    return Some(Decision { cause: Cause::Signal(sig), decided_ns: monotonic_ns() });
                }
                Wake::Deadline => return None,
                Wake::Tick => {}
            }
            self.tick(monitor, None);
            if let Some(d) = self.decide(monitor, hypothesis_aborts) {
                return Some(d);
            }
        }
    }

    /// Whether to abort now, and why.
    fn decide(&self, monitor: &Monitor, hypothesis_aborts: bool) -> Option<Decision> {
        let cause = if let Some((w, s)) = monitor.unhealthy(Role::Hypothesis).filter(|_| hypothesis_aborts) {
            Cause::Hypothesis { probe: w.probe.name.clone(), detail: failing(&s, w.probe.failures) }
        } else if let Some((w, s)) = monitor.unhealthy(Role::Abort) {
            Cause::AbortCondition { probe: w.probe.name.clone(), detail: failing(&s, w.probe.failures) }
        } else if Instant::now() >= self.deadline {
            Cause::MaxDuration
        } else {
            return None;
        };
        Some(Decision { cause, decided_ns: monotonic_ns() })
    }

    /// Publish the progress between events (the metrics and the live view
    /// show it).
    fn tick(&mut self, monitor: &Monitor, attacks: Option<(&Injector, &[Running])>) {
        let mut progress =
            Progress { phase: self.phase.clone(), elapsed: self.t0.elapsed(), ..Default::default() };
        if let Some((inj, running)) = attacks {
            progress.attacks = running
                .iter()
                .map(|r| AttackProgress {
                    id: r.attack.id.clone(),
                    fault: r.attack.fault.kind().into(),
                    target: r.attack.target.path.display().to_string(),
                    done: r.started.elapsed().min(r.attack.duration),
                    duration: r.attack.duration,
                    counters: inj.counters(r).unwrap_or_default(),
                })
                .collect();
        }
        progress.probes = monitor
            .watched
            .iter()
            .map(|w| ProbeProgress {
                name: w.probe.name.clone(),
                role: w.role,
                failures: w.probe.failures,
                stats: w.stats(),
            })
            .collect();
        self.bus.progress(&progress);
    }

    /// Probe outcomes and statistics for the report.
    fn finish_probes(
        &mut self,
        monitor: &Monitor,
        decision: Option<&Decision>,
        missing: Option<&[(String, String)]>,
    ) {
        let tripped = decision.and_then(|d| d.cause.probe());
        finish_probe_records(&mut self.report.probes, monitor, tripped.as_deref(), missing);
    }

    fn finish(&mut self, verdict: &str, code: ExitCode, reason: String) {
        self.screen.clear();
        let r = &mut self.report;
        r.verdict = verdict.into();
        r.exit_code = code as u8;
        r.reason = reason;
        r.started = rfc3339(self.wall0);
        r.ended = rfc3339(SystemTime::now());
        r.duration_seconds = self.t0.elapsed().as_secs_f64();
    }

    fn write_reports(&self) -> Result<()> {
        if let Some(p) = &self.opts.report {
            report::json::write(p, &self.report)?;
        }
        if let Some(p) = &self.opts.junit {
            report::junit::write(p, &self.report)?;
        }
        Ok(())
    }
}

/// The steady state before injecting: every probe, in parallel, until it
/// passes or has failed `failures` checks in a row, `interval` apart — the
/// threshold that makes it unhealthy while it is watched, so one slow
/// answer does not refuse a run that the same answer would not abort. The
/// last sample of each; `None` when `pause` (between rounds) says to stop.
/// The Kubernetes runner checks a cluster's steady state with it too.
pub fn steady_state(probes: &[&Probe], mut pause: impl FnMut(Duration) -> bool) -> Option<Vec<Sample>> {
    let mut samples = probes::run_all_once(probes);
    let mut failed: Vec<Vec<String>> = vec![Vec::new(); probes.len()];
    let mut round: Vec<usize> = (0..probes.len()).collect();
    loop {
        for &i in &round {
            if !samples[i].ok {
                failed[i].push(samples[i].detail.clone());
            }
        }
        round.retain(|&i| !samples[i].ok && (failed[i].len() as u32) < probes[i].failures);
        let Some(wait) = round.iter().map(|&i| probes[i].interval).min() else { break };
        if !pause(wait) {
            return None;
        }
        let again: Vec<&Probe> = round.iter().map(|&i| probes[i]).collect();
        for (&i, s) in round.iter().zip(probes::run_all_once(&again)) {
            samples[i] = s;
        }
    }
    for (s, f) in samples.iter_mut().zip(&failed) {
        s.detail = steady_detail(&s.detail, s.ok, f);
    }
    Some(samples)
}

/// The steady state's checks, as events and reports give them.
pub fn steady_checks(probes: &[(Probe, Role)], samples: &[Sample]) -> Vec<ProbeCheck> {
    probes
        .iter()
        .zip(samples)
        .map(|((p, role), s)| ProbeCheck {
            name: p.name.clone(),
            role: role.label().into(),
            ok: s.ok,
            latency_ms: s.latency.as_secs_f64() * 1000.0,
            detail: s.detail.clone(),
        })
        .collect()
}

/// The report's record of each probe, before it runs.
pub fn probe_records(probes: &[(Probe, Role)]) -> Vec<ProbeRecord> {
    probes
        .iter()
        .map(|(p, role)| ProbeRecord {
            name: p.name.clone(),
            role: match role {
                Role::Hypothesis => "hypothesis",
                Role::Abort => "abort",
            }
            .into(),
            kind: p.check.kind().into(),
            check: p.check.describe(),
            interval: dur(p.interval),
            timeout: dur(p.timeout),
            failures: p.failures,
            stats: Default::default(),
            latency_ms_avg: None,
            outcome: "not-run".into(),
            outcome_detail: String::new(),
        })
        .collect()
}

/// Each probe's outcome and statistics into its record: `tripped` names
/// the probe that stopped the run, `missing` those that did not recover.
pub fn finish_probe_records(
    records: &mut [ProbeRecord],
    monitor: &Monitor,
    tripped: Option<&str>,
    missing: Option<&[(String, String)]>,
) {
    for w in &monitor.watched {
        let s = w.stats();
        let Some(rec) = records.iter_mut().find(|p| p.name == w.probe.name) else { continue };
        rec.latency_ms_avg = s.latency_ms_avg();
        let tripped = tripped == Some(w.probe.name.as_str());
        let not_recovered = missing.and_then(|m| m.iter().find(|(n, _)| *n == w.probe.name));
        (rec.outcome, rec.outcome_detail) = match (w.role, tripped, not_recovered) {
            (Role::Hypothesis, true, _) => ("violated".into(), failing(&s, w.probe.failures)),
            (Role::Abort, true, _) => ("triggered".into(), failing(&s, w.probe.failures)),
            (_, _, Some((_, detail))) => ("not-recovered".into(), detail.clone()),
            (Role::Hypothesis, false, None) => ("held".into(), String::new()),
            (Role::Abort, false, None) => ("ok".into(), String::new()),
        };
        rec.stats = s;
    }
}

/// After the method ended at `end` (the hypothesis probes marked then):
/// the probes that have not passed since, with their last detail; how
/// long after `end` the last of the others passed; and a sentence.
pub fn recovery(monitor: &Monitor, end: Instant) -> (Vec<(String, String)>, Option<u64>, String) {
    let missing: Vec<(String, String)> = monitor
        .watched
        .iter()
        .filter(|w| w.role == Role::Hypothesis)
        .filter_map(|w| {
            let s = w.stats();
            s.first_ok_after_mark.is_none().then(|| (w.probe.name.clone(), s.last_detail.clone()))
        })
        .collect();
    let after = monitor
        .watched
        .iter()
        .filter_map(|w| w.stats().first_ok_after_mark)
        .max()
        .map(|t| t.saturating_duration_since(end).as_millis() as u64);
    let detail = if missing.is_empty() {
        format!("recovered {}ms after the method", after.unwrap_or(0))
    } else {
        let m: Vec<String> = missing.iter().map(|(n, d)| format!("{n}: {d}")).collect();
        format!("not recovered: {}", m.join("; "))
    };
    (missing, after, detail)
}

/// "3 failed checks in a row (tolerated: 2); last: timed out ..."
pub fn failing(s: &probes::Stats, failures: u32) -> String {
    let what = s.violation.as_ref().map_or(s.last_detail.as_str(), |v| v.detail.as_str());
    if failures <= 1 {
        what.to_owned()
    } else {
        format!(
            "{} failed checks in a row (tolerated: {}); last: {what}",
            s.consecutive_failures.max(failures),
            failures - 1
        )
    }
}

/// A probe's steady-state detail: its last check's, and what the checks
/// before it saw (`failed`: the failures in a row, the last one included
/// when the probe never passed).
fn steady_detail(last: &str, ok: bool, failed: &[String]) -> String {
    if ok && !failed.is_empty() {
        return format!("{last} (after {} failed: {})", failed.len(), failed.join("; "));
    }
    if ok || failed.len() < 2 {
        return last.to_owned();
    }
    // The earlier failures, when they differ from the last: a timeout
    // followed by a bad exit code are two stories.
    let mut earlier: Vec<&str> = Vec::new();
    for d in &failed[..failed.len() - 1] {
        if d != last && !earlier.contains(&d.as_str()) {
            earlier.push(d);
        }
    }
    if earlier.is_empty() {
        format!("{last} ({} checks in a row failed)", failed.len())
    } else {
        format!("{last} ({} checks in a row failed; before: {})", failed.len(), earlier.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_to_documented_exit_codes() {
        assert_eq!(Verdict::Held.exit_code() as u8, 0);
        assert_eq!(Verdict::Violated.exit_code() as u8, 1);
        assert_eq!(Verdict::Aborted.exit_code() as u8, 2);
        assert_eq!(Verdict::NotStarted.exit_code() as u8, 2);
        assert_eq!(Verdict::DryRun.exit_code() as u8, 0);
    }

    #[test]
    fn steady_detail_says_what_earlier_checks_saw() {
        let timeout = "`x` timed out after 1000ms".to_owned();
        let exit1 = "`x` exited with 1 (expected 0)".to_owned();
        assert_eq!(
            steady_detail(&exit1, false, &[timeout.clone(), exit1.clone()]),
            "`x` exited with 1 (expected 0) (2 checks in a row failed; before: `x` timed out after 1000ms)"
        );
        assert_eq!(
            steady_detail(&exit1, false, &[exit1.clone(), exit1.clone(), exit1.clone()]),
            "`x` exited with 1 (expected 0) (3 checks in a row failed)"
        );
        assert_eq!(steady_detail(&exit1, false, std::slice::from_ref(&exit1)), exit1);
        assert_eq!(
            steady_detail("200 in 12ms", true, std::slice::from_ref(&timeout)),
            "200 in 12ms (after 1 failed: `x` timed out after 1000ms)"
        );
        assert_eq!(steady_detail("200 in 12ms", true, &[]), "200 in 12ms");
    }
}
