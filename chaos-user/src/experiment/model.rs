//! An experiment, validated: what `parse` produces and `run` executes.
//! Nothing here refers to the machine (targets are not resolved yet), so a
//! file can be validated anywhere.

use std::{path::PathBuf, time::Duration};

use super::{diag::Span, vars::Vars};
use crate::{
    faults::Fault,
    probes::Probe,
    runtime::{PodQuery, Runtime},
};

#[derive(Clone, Debug)]
pub struct Experiment {
    /// A file, or `chaos attack`'s flags.
    pub origin: Origin,
    /// The file as the user named it (for messages and reports).
    pub file: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Every variable with the value used (default or `--set`).
    pub variables: Vars,
    pub targets: Vec<TargetSpec>,
    pub hypothesis: Hypothesis,
    pub method: Vec<Step>,
    /// Safety probes: when one turns unhealthy, everything stops (exit 2).
    pub abort: Vec<Probe>,
    /// The whole run, from the first probe to the verdict, is cut off here.
    pub max_duration: Duration,
}

/// Where an experiment comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An experiment file: a hypothesis, a method, abort conditions.
    File,
    /// `chaos attack`: one attack, no hypothesis (see
    /// [`Experiment::one_attack`]).
    Attack,
}

impl Origin {
    /// As reports name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::File => "experiment",
            Self::Attack => "attack",
        }
    }
}

/// How long past its method a `chaos attack` may run before the runner's
/// max-duration cuts it off: room for loading the programs on a slow
/// machine (seconds under TCG). The fault itself ends at its kernel-side
/// deadline whatever the runner does.
const ATTACK_SLACK: Duration = Duration::from_secs(60);

/// A named target, as the file gives it.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub name: String,
    pub selector: Selector,
    pub allow_host: bool,
    /// Which of the pods a `pod-selector` matches are attacked.
    pub pick: Pick,
    /// Only pods on nodes with all these labels (a cluster's runner;
    /// refused on one machine).
    pub node_selector: Vec<(String, String)>,
    pub span: Span,
}

/// How many of the pods a `pod-selector` matches an attack takes (`count`,
/// `percent`): drawn at random, in a cluster when each step starts (pods
/// come and go between steps), on one machine once, when the run resolves
/// its targets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Pick {
    #[default]
    All,
    Count(u32),
    /// Of the matching pods, rounded up: 25% of 3 pods is 1 pod.
    Percent(f64),
}

impl Pick {
    /// How many of `matched` pods: never more than matched, at least one
    /// when any matched (a percentage of a few pods must not round to
    /// none: the experiment would then test nothing).
    pub fn size(self, matched: usize) -> usize {
        match self {
            Self::All => matched,
            Self::Count(n) => (n as usize).min(matched),
            Self::Percent(p) => ((matched as f64 * p / 100.0).ceil() as usize).clamp(matched.min(1), matched),
        }
    }

    /// A sample of `items`, drawn with `rng`, in their original order.
    pub fn sample<T>(self, items: Vec<T>, rng: &mut fastrand::Rng) -> Vec<T> {
        let k = self.size(items.len());
        if k == items.len() {
            return items;
        }
        let mut chosen = rng.choose_multiple(0..items.len(), k);
        chosen.sort_unstable();
        let mut chosen = chosen.into_iter().peekable();
        let mut out = Vec::with_capacity(k);
        for (i, item) in items.into_iter().enumerate() {
            if chosen.next_if_eq(&i).is_some() {
                out.push(item);
            }
        }
        out
    }
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("every matching pod"),
            Self::Count(n) => write!(f, "{n} of the matching pods"),
            Self::Percent(p) => write!(f, "{p}% of the matching pods"),
        }
    }
}

/// How a target is found on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A cgroup v2 directory, absolute or relative to the cgroup2 mount.
    Cgroup(PathBuf),
    /// The cgroup a process is in.
    Pid(i32),
    /// A container by name or id, in one runtime or any (`container:`,
    /// `runtime:`).
    Container { name: String, runtime: Option<Runtime> },
    /// Pods through the CRI (`pod:`, `pod-uid:`, `pod-selector:`), or one
    /// container of each (`container:` beside them).
    Pod { query: PodQuery, container: Option<String> },
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cgroup(p) => write!(f, "cgroup {}", p.display()),
            Self::Pid(p) => write!(f, "the cgroup of pid {p}"),
            Self::Container { name, runtime: None } => write!(f, "container {name}"),
            Self::Container { name, runtime: Some(r) } => write!(f, "{r} container {name}"),
            Self::Pod { query, container: None } => write!(f, "{query}"),
            Self::Pod { query, container: Some(c) } => write!(f, "container {c} of {query}"),
        }
    }
}

/// The steady-state hypothesis: probes that must stay healthy.
#[derive(Clone, Debug)]
pub struct Hypothesis {
    pub probes: Vec<Probe>,
    /// After the method, every probe must pass again within this.
    pub recover_within: Duration,
}

/// One step of the method: attacks that start together, after a delay.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub delay: Duration,
    pub attacks: Vec<AttackSpec>,
    pub span: Span,
}

impl Step {
    /// Delay plus the longest attack.
    pub fn length(&self) -> Duration {
        self.delay + self.attacks.iter().map(|a| a.duration).max().unwrap_or_default()
    }
}

/// One attack of a step, before its target is resolved.
#[derive(Clone, Debug)]
pub struct AttackSpec {
    /// Unique within the experiment: the step's `name`, or `<fault>-<n>`.
    pub id: String,
    pub fault: Fault,
    /// The fault as the step wrote it, variables substituted: `fault` and
    /// the kind's own fields (what a cluster's `ChaosAttack` carries to its
    /// agent, which parses it as this parser did). Empty for `chaos
    /// attack`'s flags.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// A key of `targets`.
    pub target: String,
    pub duration: Duration,
    pub span: Span,
}

impl Experiment {
    /// `chaos attack`: a one-step experiment on the same runner (events,
    /// reports, metrics, the live view), with one attack on one target and
    /// no hypothesis: nothing is checked before or after, and the verdict
    /// is `completed` or `aborted`.
    pub fn one_attack(fault: Fault, selector: Selector, allow_host: bool, duration: Duration) -> Self {
        let id = format!("{}-1", fault.kind());
        let mut exp = Self::one_fault_on(&id, fault, vec![("target".to_owned(), selector)], duration);
        exp.targets[0].allow_host = allow_host;
        exp
    }

    /// One fault on several targets at once, as `chaos attack` runs it on
    /// one: the Kubernetes agent's `ChaosAttack` (one target per pod). The
    /// attacks are `name` with one target, `name.1`, `name.2`... with more.
    pub fn one_fault_on(
        name: &str,
        fault: Fault,
        targets: Vec<(String, Selector)>,
        duration: Duration,
    ) -> Self {
        let many = targets.len() > 1;
        let attacks = targets
            .iter()
            .enumerate()
            .map(|(i, (target, _))| AttackSpec {
                id: if many { format!("{name}.{}", i + 1) } else { name.to_owned() },
                fault: fault.clone(),
                fields: serde_json::Map::new(),
                target: target.clone(),
                duration,
                span: Span::default(),
            })
            .collect();
        Self {
            origin: Origin::Attack,
            file: "(command line)".into(),
            name: name.to_owned(),
            description: None,
            tags: Vec::new(),
            variables: Vars::default(),
            targets: targets
                .into_iter()
                .map(|(name, selector)| TargetSpec {
                    name,
                    selector,
                    allow_host: false,
                    pick: Pick::All,
                    node_selector: Vec::new(),
                    span: Span::default(),
                })
                .collect(),
            hypothesis: Hypothesis { probes: Vec::new(), recover_within: Duration::ZERO },
            method: vec![Step {
                name: name.to_owned(),
                delay: Duration::ZERO,
                attacks,
                span: Span::default(),
            }],
            abort: Vec::new(),
            max_duration: duration + ATTACK_SLACK,
        }
    }

    /// How long the method takes when nothing goes wrong.
    pub fn method_length(&self) -> Duration {
        self.method.iter().map(Step::length).sum()
    }

    pub fn attacks(&self) -> impl Iterator<Item = &AttackSpec> {
        self.method.iter().flat_map(|s| &s.attacks)
    }

    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.iter().find(|t| t.name == name)
    }
}
