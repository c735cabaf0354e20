//! The method: steps of attacks, in sequence or in parallel.

use std::{collections::BTreeSet, time::Duration};

use super::{
    Conv, Fields,
    fault_kinds::{PLANNED, STEP_FIELDS, all_params, find, kinds, params},
    origin,
};
use crate::experiment::{
    diag::did_you_mean,
    model::{AttackSpec, Step, TargetSpec},
    yaml::Node,
};

impl Conv {
    pub(super) fn method(&mut self, node: &Node, targets: Option<&[TargetSpec]>) -> Option<Vec<Step>> {
        let items = self.list(node, "method")?;
        if items.is_empty() {
            self.err(
                node.span,
                "the method is empty: there is nothing to inject".into(),
                Some("add an attack, e.g.\n  - fault: net-loss\n    percent: 5\n    duration: 30s".into()),
            );
            return None;
        }
        let mut ids = BTreeSet::new();
        let mut n = 0usize;
        let mut steps = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let step = if item.as_map().is_some_and(|m| m.iter().any(|(k, _)| k.text() == Some("parallel"))) {
                self.parallel(item, i, targets, &mut ids, &mut n)
            } else {
                self.attack(item, targets, &mut ids, &mut n, true).map(|(a, delay)| Step {
                    name: a.id.clone(),
                    delay,
                    span: a.span,
                    attacks: vec![a],
                })
            };
            match step {
                Some(s) => steps.push(s),
                None => ok = false,
            }
        }
        ok.then_some(steps)
    }

    fn parallel(
        &mut self,
        node: &Node,
        index: usize,
        targets: Option<&[TargetSpec]>,
        ids: &mut BTreeSet<String>,
        n: &mut usize,
    ) -> Option<Step> {
        let f = self.fields(node, node.span, "a parallel step", &["name", "start-after", "parallel"])?;
        let name = f
            .get("name")
            .and_then(|n| self.string(n, "name"))
            .unwrap_or_else(|| format!("step-{}", index + 1));
        let delay = f.get("start-after").map_or(Some(Duration::ZERO), |n| self.duration(n, "start-after"));
        let list = self.required(&f, "parallel").and_then(|n| self.list(n, "parallel"));
        let list = list?;
        if list.is_empty() {
            self.err(
                f.key_span("parallel").unwrap_or(f.at),
                "`parallel` is empty".into(),
                Some("list the attacks that run together".into()),
            );
            return None;
        }
        let attacks: Vec<Option<AttackSpec>> =
            list.iter().map(|a| self.attack(a, targets, ids, n, false).map(|(a, _)| a)).collect();
        Some(Step {
            name,
            delay: delay?,
            attacks: attacks.into_iter().collect::<Option<Vec<_>>>()?,
            span: node.span,
        })
    }

    /// One attack; `delay_allowed` is false inside `parallel` (the group
    /// has the delay: its attacks start together).
    fn attack(
        &mut self,
        node: &Node,
        targets: Option<&[TargetSpec]>,
        ids: &mut BTreeSet<String>,
        n: &mut usize,
        delay_allowed: bool,
    ) -> Option<(AttackSpec, Duration)> {
        *n += 1;
        let Some(entries) = node.as_map() else {
            self.err(
                node.span,
                format!(
                    "wrong type: a method step must be a mapping (an attack or `parallel:`), found {}",
                    node.describe()
                ),
                Some("write e.g.\n  - fault: net-loss\n    percent: 5\n    duration: 30s".into()),
            );
            return None;
        };
        // The fault kind decides which other fields are allowed.
        let fault_node = entries.iter().find(|(k, _)| k.text() == Some("fault")).map(|(_, v)| v);
        let kind = match fault_node {
            None => {
                self.err(
                    node.span,
                    "missing field `fault` in a method step".into(),
                    Some(format!("name what to inject: {}", kinds())),
                );
                None
            }
            Some(v) => {
                let text = self.text(v, "fault")?;
                match find(text) {
                    Some(k) => Some(k),
                    None => {
                        let hint = if PLANNED.contains(&text) {
                            format!(
                                "`{text}` is planned but not in this version of chaos; available: {}",
                                kinds()
                            )
                        } else {
                            match did_you_mean(
                                text,
                                super::fault_kinds::fault_kinds().chain(PLANNED.iter().copied()),
                            ) {
                                Some(close) => format!("did you mean `{close}`? available: {}", kinds()),
                                None => format!("available: {}", kinds()),
                            }
                        };
                        self.err(v.span, format!("unknown fault kind `{text}`{}", origin(v)), Some(hint));
                        None
                    }
                }
            }
        };
        let mut known: Vec<&str> = STEP_FIELDS.to_vec();
        if !delay_allowed {
            known.retain(|k| *k != "start-after");
        }
        match kind {
            Some(k) => known.extend(params(k)),
            // Without a kind, accept every fault's parameters: report only
            // what is wrong for all of them.
            None => known.extend(all_params()),
        }
        let what = match kind {
            Some(k) => format!("a {} step", k.name),
            None => "a method step".into(),
        };
        if !delay_allowed && entries.iter().any(|(k, _)| k.text() == Some("start-after")) {
            let (k, _) = entries.iter().find(|(k, _)| k.text() == Some("start-after")).expect("just found");
            self.err(
                k.span,
                "`start-after` inside `parallel`: the attacks of a parallel step start together".into(),
                Some("put `start-after` on the parallel step itself, next to `parallel:`".into()),
            );
            known.push("start-after");
        }
        // `delay` is net-delay's (the packets'); a step waits with
        // `start-after`. Say so rather than "unknown field".
        if !known.contains(&"delay")
            && let Some((k, _)) = entries.iter().find(|(k, _)| k.text() == Some("delay"))
        {
            self.err(
                k.span,
                format!("unknown field `delay` in {}", kind.map_or("a method step".into(), |k| format!("a {} step", k.name))),
                Some("to wait before the step starts, write `start-after`; to delay packets, use `fault: net-delay`".into()),
            );
            known.push("delay");
        }
        let f = self.fields(node, node.span, &what, &known)?;
        let name = f.get("name").and_then(|v| self.string(v, "name"));
        let duration = self.required(&f, "duration").and_then(|v| self.positive_duration(v, "duration"));
        let delay = if delay_allowed {
            f.get("start-after").map_or(Some(Duration::ZERO), |v| self.duration(v, "start-after"))
        } else {
            Some(Duration::ZERO)
        };
        let target = self.step_target(&f, targets);
        let built = kind.and_then(|k| self.fault(k, &f));
        let (kind, duration, delay, target, built) = (kind?, duration?, delay?, target?, built?);
        let id = name.unwrap_or_else(|| format!("{}-{}", kind.name, *n));
        if !ids.insert(id.clone()) {
            let at = f.key_span("name").unwrap_or(node.span);
            self.err(
                at,
                format!("a second attack named `{id}`"),
                Some("attack names are unique within an experiment".into()),
            );
        }
        // The fault as written, `fault` and the kind's own fields: what a
        // cluster's runner puts in a ChaosAttack for its agent to parse.
        let fields = entries
            .iter()
            .filter_map(|(k, v)| k.text().map(|k| (k, v)))
            .filter(|(k, _)| *k == "fault" || !STEP_FIELDS.contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_json()))
            .collect();
        Some((AttackSpec { id, fault: built.fault, fields, target, duration, span: node.span }, delay))
    }

    /// The step's `target`, which must name one of `targets`; it may be
    /// left out when there is exactly one.
    fn step_target(&mut self, f: &Fields<'_>, targets: Option<&[TargetSpec]>) -> Option<String> {
        let names: Vec<&str> = targets.unwrap_or_default().iter().map(|t| t.name.as_str()).collect();
        match f.get("target") {
            None => match (targets, names.as_slice()) {
                (Some(_), [only]) => Some((*only).to_owned()),
                (Some(_), []) | (None, _) => None, // reported with `targets`
                (Some(_), many) => {
                    self.err(
                        f.at,
                        format!(
                            "missing target: this step does not say which target ({}) it attacks",
                            many.join(", ")
                        ),
                        Some(format!("add `target: {}`", many[0])),
                    );
                    None
                }
            },
            Some(v) => {
                let text = self.text(v, "target")?;
                if names.contains(&text) || targets.is_none() {
                    return Some(text.to_owned());
                }
                let hint = match did_you_mean(text, names.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None if names.is_empty() => "define it under `targets:`".into(),
                    None => format!("targets defined: {}", names.join(", ")),
                };
                self.err(
                    v.span,
                    format!("missing target: `{text}` is not defined under `targets`{}", origin(v)),
                    Some(hint),
                );
                None
            }
        }
    }
}
