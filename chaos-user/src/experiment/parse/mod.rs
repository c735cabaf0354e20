//! Experiment files: YAML tree -> validated [`Experiment`], collecting
//! every problem with its line and column and what to write instead.
//!
//! Values are read with the same parsers as the command line's flags
//! ([`crate::units`], the fault enums), so a file and `chaos attack` accept
//! the same spellings and reject the same mistakes with the same messages.
//! Fault kinds and their parameters are listed in one table
//! (`fault_kinds.rs`): a new fault is one entry there.

use std::{collections::BTreeSet, path::PathBuf, str::FromStr, time::Duration};

use regex::Regex;

use super::{
    diag::{Diagnostic, Diagnostics, Pos, Span, did_you_mean},
    model::{Experiment, Origin, Pick, Selector, Step, TargetSpec},
    vars,
    yaml::{self, Node},
};
use crate::{
    runtime::{PodQuery, Runtime, label_pairs},
    units::{AttackDuration, MAX_DURATION, format_duration, parse_duration},
};

mod envelope;
mod fault_kinds;
mod method;
mod probe;
mod step;

/// For the unit tests that check a step and its `chaos attack` flags agree.
#[cfg(test)]
pub(crate) use self::step::fault_of;
pub use self::{
    envelope::{API_VERSION, KIND},
    fault_kinds::fault_kinds,
    step::step_fault,
};

/// Parse and validate an experiment file. `file` names it in messages;
/// `overrides` are the `--set` pairs.
pub fn parse(file: &str, text: &str, overrides: &[(String, String)]) -> Result<Experiment, Diagnostics> {
    let (root, problems) = match yaml::parse(text) {
        Ok(parsed) => parsed,
        Err(d) => return Err(Diagnostics::new(file, text, vec![d])),
    };
    let mut c = Conv { problems };
    let Some(mut root) = c.unwrap_envelope(root) else {
        return Err(Diagnostics::new(file, text, c.problems));
    };
    let top = Span::at(Pos { line: 1, col: 1 });
    let Some(entries) = root.as_map() else {
        c.err(
            root.span,
            format!("an experiment file is a mapping of fields, found {}", root.describe()),
            Some("start with `name: my-experiment`; see experiments/README.md".into()),
        );
        return Err(Diagnostics::new(file, text, c.problems));
    };
    let vars_node = entries.iter().find(|(k, _)| k.text() == Some("variables"));
    let vars_at = vars_node.map_or(top, |(k, _)| k.span);
    let variables = vars::collect(vars_node.map(|(_, v)| v), overrides, vars_at, &mut c.problems);
    if let yaml::Kind::Map(entries) = &mut root.kind {
        for (k, v) in entries.iter_mut() {
            if k.text() != Some("variables") {
                vars::substitute(v, &variables, &mut c.problems);
            }
        }
    }
    let experiment = c.experiment(&root, top, file, variables);
    match experiment {
        Some(e) if c.problems.is_empty() => Ok(e),
        _ => Err(Diagnostics::new(file, text, c.problems)),
    }
}

/// Read and parse a file; problems become one [`crate::error::Error::Invalid`]
/// listing all of them.
pub fn load(path: &std::path::Path, overrides: &[(String, String)]) -> crate::error::Result<Experiment> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::error::Error::invalid(format!("cannot read experiment file {}: {e}", path.display()))
    })?;
    parse(&path.display().to_string(), &text, overrides).map_err(|d| {
        let n = d.len();
        crate::error::Error::invalid(format!(
            "{} has {n} problem{}:\n{d}",
            path.display(),
            if n == 1 { "" } else { "s" }
        ))
    })
}

/// The converter: typed readers that record a problem and return `None`.
struct Conv {
    problems: Vec<Diagnostic>,
}

/// A mapping's entries, checked against the fields it may have.
struct Fields<'n> {
    entries: &'n [(Node, Node)],
    /// Where to report a missing field: the key holding this mapping.
    at: Span,
    what: String,
}

impl<'n> Fields<'n> {
    /// The value of `key`; `None` when absent or empty (`key:`).
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _)| k.text() == Some(key)).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    /// The value of `key` as written, empty or not.
    fn raw(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _)| k.text() == Some(key)).map(|(_, v)| v)
    }

    fn key_span(&self, key: &str) -> Option<Span> {
        self.entries.iter().find(|(k, _)| k.text() == Some(key)).map(|(k, _)| k.span)
    }

    fn has(&self, key: &str) -> bool {
        self.key_span(key).is_some()
    }
}

/// " (from ${loss} = `abc`)" for values that came from variables.
fn origin(node: &Node) -> String {
    match node.scalar().map(|s| s.substituted.as_slice()) {
        Some([]) | None => String::new(),
        Some(used) => {
            let parts: Vec<String> = used.iter().map(|(k, v)| format!("${{{k}}} = `{v}`")).collect();
            format!(" (from {})", parts.join(", "))
        }
    }
}

impl Conv {
    fn err(&mut self, span: Span, message: String, hint: Option<String>) {
        self.problems.push(Diagnostic { span, message, hint });
    }

    /// `node` as a mapping with only `known` fields (others are reported,
    /// with the closest known name as the hint).
    fn fields<'n>(&mut self, node: &'n Node, at: Span, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let Some(entries) = node.as_map() else {
            self.err(
                node.span,
                format!("wrong type: {what} must be a mapping of fields, found {}", node.describe()),
                Some(format!("its fields are: {}", known.join(", "))),
            );
            return None;
        };
        for (k, _) in entries {
            let name = k.text().unwrap_or_default();
            if !known.contains(&name) {
                let hint = match did_you_mean(name, known.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("{what} has these fields: {}", known.join(", ")),
                };
                self.err(k.span, format!("unknown field `{name}` in {what}"), Some(hint));
            }
        }
        Some(Fields { entries, at, what: what.to_owned() })
    }

    fn required<'n>(&mut self, f: &Fields<'n>, key: &str) -> Option<&'n Node> {
        let v = f.get(key);
        if v.is_none() {
            let (span, msg) = match f.key_span(key) {
                // `origin`: an empty value often comes from `--set NAME=`.
                Some(s) => (
                    s,
                    format!(
                        "`{key}` in {} has no value{}",
                        f.what,
                        f.raw(key).map(origin).unwrap_or_default()
                    ),
                ),
                None => (f.at, format!("missing field `{key}` in {}", f.what)),
            };
            self.err(span, msg, Some(format!("add e.g. {}", example(key))));
        }
        v
    }

    /// A scalar's text; numbers and booleans count as their text.
    fn text<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        if node.scalar().is_some_and(|s| s.broken) {
            return None;
        }
        match node.text() {
            Some(t) if !node.is_null() => Some(t),
            _ => {
                self.err(
                    node.span,
                    format!("wrong type: `{what}` must be a single value, found {}", node.describe()),
                    None,
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        self.text(node, what).map(str::to_owned)
    }

    /// A scalar parsed by `parse`, whose error message is shown as is.
    fn typed<T>(
        &mut self,
        node: &Node,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(node, what)?;
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(node.span, format!("`{what}`: {e}{}", origin(node)), None);
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.typed(node, what, |t| {
            let d = parse_duration(t)?;
            if d > MAX_DURATION {
                return Err(format!("{t} is longer than {}; check the unit", format_duration(MAX_DURATION)));
            }
            Ok(d)
        })
    }

    fn positive_duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        self.typed(node, what, |t| AttackDuration::from_str(t).map(|d| d.0))
    }

    fn count(&mut self, node: &Node, what: &str) -> Option<u32> {
        self.typed(node, what, |t| match t.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(format!("`{t}` is not a whole number from 1 to 1000")),
        })
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        self.typed(node, what, |t| {
            t.parse::<f64>().ok().filter(|v| !v.is_nan()).ok_or_else(|| format!("`{t}` is not a number"))
        })
    }

    fn regex(&mut self, node: &Node, what: &str) -> Option<Regex> {
        self.typed(node, what, |t| Regex::new(t).map_err(|e| format!("not a valid regular expression: {e}")))
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match node.as_seq() {
            Some(items) => Some(items),
            None => {
                self.err(
                    node.span,
                    format!("wrong type: `{what}` must be a list, found {}", node.describe()),
                    Some(format!("write `{what}: [a, b]` or one `- item` per line")),
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let items = self.list(node, what)?;
        let strings: Vec<Option<String>> = items.iter().map(|n| self.string(n, what)).collect();
        strings.into_iter().collect()
    }

    fn experiment(
        &mut self,
        root: &Node,
        top: Span,
        file: &str,
        variables: vars::Vars,
    ) -> Option<Experiment> {
        let f = self.fields(
            root,
            top,
            "the experiment",
            &[
                "name",
                "description",
                "tags",
                "variables",
                "targets",
                "hypothesis",
                "method",
                "abort",
                "max-duration",
            ],
        )?;
        let name = self.required(&f, "name").and_then(|n| self.string(n, "name"));
        let description =
            f.get("description").and_then(|n| self.string(n, "description")).map(|d| d.trim().to_owned());
        let tags = f.get("tags").map_or(Some(Vec::new()), |n| self.string_list(n, "tags"));
        let targets = match f.get("targets") {
            Some(n) => self.targets(n),
            None => {
                self.err(
                    f.key_span("targets").unwrap_or(top),
                    "missing target: the experiment has no `targets`".into(),
                    Some("add e.g.\n  targets:\n    app:\n      cgroup: /system.slice/app.service".into()),
                );
                None
            }
        };
        let mut probe_names = BTreeSet::new();
        let hypothesis = self
            .required(&f, "hypothesis")
            .and_then(|n| self.hypothesis(n, f.key_span("hypothesis").unwrap_or(top), &mut probe_names));
        let abort = match f.get("abort") {
            None => Some(Vec::new()),
            Some(n) => self.probes(n, "abort", &mut probe_names),
        };
        let method = self.required(&f, "method").and_then(|n| self.method(n, targets.as_deref()));
        let max_duration = f.get("max-duration").map(|n| (n, self.positive_duration(n, "max-duration")));
        let (name, tags, targets, hypothesis, abort, method) =
            (name?, tags?, targets?, hypothesis?, abort?, method?);
        let planned = method.iter().map(Step::length).sum::<Duration>();
        let max_duration = match max_duration {
            None => planned + hypothesis.recover_within + Duration::from_secs(60),
            Some((node, d)) => {
                let d = d?;
                if d < planned {
                    self.err(
                        node.span,
                        format!(
                            "max-duration {} is shorter than the method, which takes {} (delays plus the longest attack of each step)",
                            format_duration(d),
                            format_duration(planned)
                        ),
                        Some(format!(
                            "raise it to at least {}, or shorten the method",
                            format_duration(planned + hypothesis.recover_within)
                        )),
                    );
                }
                d
            }
        };
        Some(Experiment {
            origin: Origin::File,
            file: file.to_owned(),
            name,
            description,
            tags,
            variables,
            targets,
            hypothesis,
            method,
            abort,
            max_duration,
        })
    }

    fn targets(&mut self, node: &Node) -> Option<Vec<TargetSpec>> {
        let Some(entries) = node.as_map() else {
            self.err(
                node.span,
                format!(
                    "wrong type: `targets` must be a mapping of names to targets, found {}",
                    node.describe()
                ),
                Some("write e.g.\n  targets:\n    app:\n      cgroup: /system.slice/app.service".into()),
            );
            return None;
        };
        if entries.is_empty() {
            self.err(
                node.span,
                "missing target: `targets` is empty".into(),
                Some("name at least one target".into()),
            );
            return None;
        }
        let mut out = Vec::new();
        for (k, v) in entries {
            let name = k.text().unwrap_or_default().to_owned();
            let what = format!("target `{name}`");
            let Some(f) = self.fields(
                v,
                k.span,
                &what,
                &[
                    "cgroup",
                    "pid",
                    "container",
                    "runtime",
                    "pod",
                    "pod-uid",
                    "pod-selector",
                    "node-selector",
                    "count",
                    "percent",
                    "allow-host",
                ],
            ) else {
                continue;
            };
            // A key left empty (`cgroup: ${target}` with `--set target=`)
            // counts as absent beside one that has a value, so that a
            // reusable file can offer several kinds of target and let
            // `--set` choose one. Left alone, it is reported (`required`).
            let keys = ["cgroup", "pid", "container", "pod", "pod-uid", "pod-selector"];
            let filled: Vec<&str> = keys.into_iter().filter(|k| f.get(k).is_some()).collect();
            let mut given = match keys.into_iter().find(|k| f.has(k)) {
                Some(first) if filled.is_empty() => vec![first],
                _ => filled,
            };
            let pods = given.iter().filter(|k| k.starts_with("pod")).count();
            if pods == 1 {
                // `container` beside a pod key narrows the pod to it.
                given.retain(|k| *k != "container");
            }
            let selector = match given.as_slice() {
                // `required`: an empty value (`cgroup:`, `--set target=`)
                // alone is a problem to report, not a target to drop
                // silently.
                ["cgroup"] => self
                    .required(&f, "cgroup")
                    .and_then(|n| self.string(n, "cgroup"))
                    .map(|p| Selector::Cgroup(PathBuf::from(p))),
                ["pid"] => self.required(&f, "pid").and_then(|n| {
                    self.typed(n, "pid", |t| match t.parse::<i32>() {
                        Ok(p) if p > 0 => Ok(p),
                        _ => Err(format!("`{t}` is not a process id (a positive number)")),
                    })
                    .map(Selector::Pid)
                }),
                ["container"] => {
                    let runtime = match f.get("runtime") {
                        None => Some(None),
                        Some(n) => self
                            .typed(n, "runtime", |t| {
                                <Runtime as clap::ValueEnum>::from_str(t, false).map_err(|_| {
                                    let names: Vec<&str> = Runtime::ALL.iter().map(|r| r.name()).collect();
                                    format!(
                                        "`{t}` is not a container runtime chaos knows ({})",
                                        names.join(", ")
                                    )
                                })
                            })
                            .map(Some),
                    };
                    let name = self.required(&f, "container").and_then(|n| self.string(n, "container"));
                    match (name, runtime) {
                        (Some(name), Some(runtime)) => Some(Selector::Container { name, runtime }),
                        _ => None,
                    }
                }
                [key @ ("pod" | "pod-uid" | "pod-selector")] => {
                    let query = self.required(&f, key).and_then(|n| {
                        self.typed(n, key, |t| match *key {
                            "pod" => PodQuery::name(t),
                            "pod-uid" if !t.trim().is_empty() => Ok(PodQuery::Uid(t.trim().to_owned())),
                            "pod-uid" => Err("an empty uid".to_owned()),
                            _ => PodQuery::selector(t),
                        })
                    });
                    let container = match f.get("container") {
                        None => Some(None),
                        Some(n) => self.string(n, "container").map(Some),
                    };
                    match (query, container) {
                        (Some(query), Some(container)) => Some(Selector::Pod { query, container }),
                        _ => None,
                    }
                }
                [] => {
                    self.err(
                        k.span,
                        format!(
                            "missing target: {what} says none of `cgroup`, `pid`, `container`, `pod`, \
                             `pod-uid`, `pod-selector`"
                        ),
                        Some(
                            "add `cgroup: /path/in/the/cgroup/tree`, `pid: 1234`, `container: web` or \
                             `pod: shop/web-0`"
                                .into(),
                        ),
                    );
                    None
                }
                _ => {
                    self.err(k.span, format!("{what} gives {}; give exactly one", given.join(" and ")), None);
                    None
                }
            };
            let allow_host = f.get("allow-host").map_or(Some(false), |n| self.boolean(n, "allow-host"));
            let narrowing = self.narrowing(&f, &what, &given);
            if let (Some(selector), Some(allow_host), Some((pick, node_selector))) =
                (selector, allow_host, narrowing)
            {
                out.push(TargetSpec { name, selector, allow_host, pick, node_selector, span: k.span });
            }
        }
        Some(out)
    }

    /// `count`/`percent` and `node-selector`: they narrow what a
    /// `pod-selector` matches, and mean nothing beside another key.
    fn narrowing(
        &mut self,
        f: &Fields<'_>,
        what: &str,
        given: &[&str],
    ) -> Option<(Pick, Vec<(String, String)>)> {
        let mut ok = true;
        for key in ["count", "percent", "node-selector"] {
            if let Some(span) = f.key_span(key)
                && given != ["pod-selector"]
            {
                self.err(
                    span,
                    format!("`{key}` in {what} narrows the pods `pod-selector` matches, and {what} has none"),
                    Some("write e.g. `pod-selector: app=web` beside it, or drop it".into()),
                );
                ok = false;
            }
        }
        let pick = match (f.get("count"), f.get("percent")) {
            (Some(_), Some(_)) => {
                let span = f.key_span("percent").unwrap_or(f.at);
                self.err(span, format!("{what} gives `count` and `percent`; give one"), None);
                None
            }
            (Some(n), None) => self.count(n, "count").map(Pick::Count),
            (None, Some(n)) => self
                .typed(n, "percent", |t| match t.trim_end_matches('%').parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
                    _ => Err(format!("`{t}` is not a percentage above 0 and at most 100")),
                })
                .map(Pick::Percent),
            (None, None) => Some(Pick::All),
        };
        let nodes = match f.get("node-selector") {
            None => Some(Vec::new()),
            Some(n) => self.typed(n, "node-selector", |t| label_pairs(t, "node")),
        };
        match (ok, pick, nodes) {
            (true, Some(pick), Some(nodes)) => Some((pick, nodes)),
            _ => None,
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        self.typed(node, what, |t| match t {
            "true" | "True" | "TRUE" | "yes" => Ok(true),
            "false" | "False" | "FALSE" | "no" => Ok(false),
            _ => Err(format!("`{t}` is not true or false")),
        })
    }
}

/// What to write for a missing field.
fn example(key: &str) -> String {
    let e = match key {
        "name" => "name: checkout-lossy-db",
        "percent" => "percent: 5",
        "duration" => "duration: 30s",
        "url" => "url: http://10.0.0.5:8080/health",
        "address" => "address: 10.0.0.5:5432",
        "run" => "run: curl -fsS http://10.0.0.5:8080/health",
        "query" => "query: sum(rate(http_requests_total{code=~\"5..\"}[1m]))",
        "probes" => "probes:\n  - name: health\n    http: {url: http://10.0.0.5:8080/health}",
        "hypothesis" => {
            "hypothesis:\n  probes:\n    - name: health\n      http: {url: http://10.0.0.5:8080/health}"
        }
        "method" => "method:\n  - fault: net-loss\n    percent: 5\n    duration: 30s",
        "parallel" => "parallel:\n  - {fault: net-loss, percent: 5, duration: 30s}",
        other => return format!("`{other}: ...` (experiments/README.md lists every field)"),
    };
    if e.contains('\n') { format!("\n  {}", e.replace('\n', "\n  ")) } else { format!("`{e}`") }
}
