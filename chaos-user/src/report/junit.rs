//! The JUnit XML report, the format every CI system reads: one test suite
//! per experiment, one test case per thing that can go wrong — the steady
//! state before injecting, each attack, each probe of the hypothesis, each
//! abort condition, the recovery.
//!
//! A violated hypothesis is a `<failure>` of that probe's case; an abort by
//! a signal or an internal error is an `<error>`; what did not run is
//! `<skipped>`.

use std::{path::Path, time::Duration};

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

use super::Report;
use crate::error::Result;

/// One test case.
struct Case {
    name: String,
    time: f64,
    outcome: Outcome,
    out: String,
}

enum Outcome {
    Passed,
    Failure { kind: &'static str, message: String },
    Error { message: String },
    Skipped { message: String },
}

fn cases(r: &Report) -> Vec<Case> {
    let mut cases = Vec::new();
    let case = |name: String, outcome: Outcome| Case { name, time: 0.0, outcome, out: String::new() };
    // `chaos attack` has no hypothesis: no steady state, no recovery.
    let hypothesis = r.experiment.kind != "attack";
    match &r.steady_state {
        _ if !hypothesis => {}
        Some(ss) => {
            let failed: Vec<String> =
                ss.probes.iter().filter(|p| !p.ok).map(|p| format!("{}: {}", p.name, p.detail)).collect();
            let mut c = case(
                "steady state before injection".into(),
                if ss.held {
                    Outcome::Passed
                } else {
                    Outcome::Failure { kind: "steady-state", message: failed.join("; ") }
                },
            );
            c.time = ss.probes.iter().map(|p| p.latency_ms).fold(0.0, f64::max) / 1000.0;
            c.out = ss.probes.iter().map(|p| format!("{}: {}\n", p.name, p.detail)).collect();
            cases.push(c);
        }
        None => cases.push(case(
            "steady state before injection".into(),
            Outcome::Skipped { message: "not checked: the run ended before".into() },
        )),
    }
    for step in &r.steps {
        for a in &step.attacks {
            let name = format!("attack {}: {} on {}", a.id, a.fault, a.target);
            let outcome = match a.status.as_str() {
                "completed" => Outcome::Passed,
                "aborted" => match &r.abort {
                    // The attack did its job; the failure belongs to the
                    // probe that tripped, reported in its own case.
                    Some(ab) if ab.cause == "hypothesis" || ab.cause == "abort-condition" => Outcome::Passed,
                    _ => Outcome::Error { message: a.ended.clone().unwrap_or_else(|| "aborted".into()) },
                },
                "failed" => Outcome::Error { message: a.error.clone().unwrap_or_else(|| "failed".into()) },
                "planned" => Outcome::Skipped { message: "dry run: planned, not injected".into() },
                _ => Outcome::Skipped { message: "not run".into() },
            };
            let mut c = case(name, outcome);
            if let Some(counters) = &a.counters {
                c.out = format!(
                    "mechanism: {}\ninjected into {} of {} matching events ({} after the kernel deadline)\n",
                    super::describe_value(&a.mechanism),
                    counters.injected,
                    counters.matched,
                    counters.expired
                );
                if let Some(us) = a.inert_after_us {
                    c.out += &format!("inert {us} us after the stop call\n");
                }
            }
            cases.push(c);
        }
    }
    for p in &r.probes {
        let label = if p.role == "hypothesis" { "hypothesis" } else { "abort condition" };
        let name = format!("{label}: {}", p.name);
        let outcome = match p.outcome.as_str() {
            "violated" => Outcome::Failure { kind: "hypothesis-violated", message: p.outcome_detail.clone() },
            "not-recovered" => Outcome::Failure { kind: "not-recovered", message: p.outcome_detail.clone() },
            "triggered" => Outcome::Failure { kind: "abort-condition", message: p.outcome_detail.clone() },
            "not-run" => Outcome::Skipped { message: "not watched: the method did not start".into() },
            _ => Outcome::Passed,
        };
        let mut c = case(name, outcome);
        c.time = p.latency_ms_avg.unwrap_or(0.0) / 1000.0;
        c.out = format!(
            "{} ({}); {} checks, {} failed, at most {} in a row (tolerated: {})\n",
            p.check,
            p.kind,
            p.stats.checks,
            p.stats.failed,
            p.stats.max_consecutive_failures,
            p.failures.saturating_sub(1)
        );
        cases.push(c);
    }
    match &r.recovery {
        Some(rec) => {
            let mut c = case(
                format!("recovery within {}", rec.within),
                if rec.recovered {
                    Outcome::Passed
                } else {
                    Outcome::Failure { kind: "not-recovered", message: rec.detail.clone() }
                },
            );
            c.time = rec.after_ms.unwrap_or(0) as f64 / 1000.0;
            cases.push(c);
        }
        None if hypothesis && r.verdict != "error" => cases.push(case(
            "recovery".into(),
            Outcome::Skipped { message: "not checked: the method did not complete".into() },
        )),
        None => {}
    }
    if r.verdict == "error" {
        cases.push(case("run".into(), Outcome::Error { message: r.reason.clone() }));
    }
    if let Some(a) = &r.abort
        && ["signal", "max-duration", "target-gone"].contains(&a.cause.as_str())
    {
        cases.push(case(format!("run ({})", a.cause), Outcome::Error { message: a.detail.clone() }));
    }
    cases
}

/// The report as JUnit XML, written by `quick-junit` (nextest's writer):
/// the escaping, the characters XML 1.0 forbids and the counts in the
/// suite's attributes are its business.
pub fn render(r: &Report) -> String {
    let class = format!("chaos.{}", r.experiment.name);
    let mut suite = TestSuite::new(r.experiment.name.as_str());
    // JUnit's timestamps carry no sub-millisecond part; a report whose start
    // does not parse (never written by chaos) just goes without one.
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&r.started) {
        suite.set_timestamp(t);
    }
    suite.set_time(secs(r.duration_seconds));
    let mut props = vec![
        ("verdict".to_owned(), r.verdict.clone()),
        ("exit_code".to_owned(), r.exit_code.to_string()),
        ("reason".to_owned(), r.reason.clone()),
        ("file".to_owned(), r.experiment.file.clone()),
        ("chaos_version".to_owned(), r.chaos_version.clone()),
    ];
    props.extend(r.experiment.variables.iter().map(|(k, v)| (format!("variable.{k}"), v.clone())));
    suite.add_properties(props.into_iter().map(|(k, v)| Property::new(k, v)));
    for c in cases(r) {
        let status = match c.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failure { kind, message } => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_type(kind).set_message(message.as_str()).set_description(message);
                s
            }
            Outcome::Error { message } => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(message.as_str()).set_description(message);
                s
            }
            Outcome::Skipped { message } => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(message);
                s
            }
        };
        let mut case = TestCase::new(c.name, status);
        case.set_classname(class.as_str()).set_time(secs(c.time));
        if !c.out.is_empty() {
            case.set_system_out(c.out);
        }
        suite.add_test_case(case);
    }
    let mut report = quick_junit::Report::new("chaos");
    report.set_time(secs(r.duration_seconds)).add_test_suite(suite);
    // Serializing into memory fails only on a bug of the writer.
    report.to_string().unwrap_or_else(|e| format!("<!-- chaos: cannot write JUnit XML: {e} -->\n"))
}

/// Seconds as a duration; a negative or non-finite value (never measured)
/// as zero rather than a panic.
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

pub fn write(path: &Path, report: &Report) -> Result<()> {
    super::json::write_atomic(path, render(report).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        AbortRecord, AttackRecord, ProbeCheck, ProbeRecord, RecoveryRecord, SteadyState, StepRecord,
    };

    fn report(verdict: &str) -> Report {
        Report {
            chaos_version: "0.1.0".into(),
            verdict: verdict.into(),
            reason: "because <reasons> & \"quotes\"".into(),
            started: "2026-11-26T12:00:00.000Z".into(),
            duration_seconds: 12.5,
            experiment: crate::report::ExperimentInfo {
                name: "lossy link".into(),
                file: "x.yaml".into(),
                variables: [("loss".to_owned(), "5".to_owned())].into(),
                ..Default::default()
            },
            steady_state: Some(SteadyState {
                held: true,
                probes: vec![ProbeCheck {
                    name: "api".into(),
                    role: "hypothesis".into(),
                    ok: true,
                    latency_ms: 3.0,
                    detail: "200 in 3ms".into(),
                }],
            }),
            steps: vec![StepRecord {
                name: "s".into(),
                delay: "0s".into(),
                status: "completed".into(),
                attacks: vec![AttackRecord {
                    id: "net-loss-1".into(),
                    fault: "net-loss".into(),
                    parameters: serde_json::json!({}),
                    target: "/sys/fs/cgroup/x".into(),
                    duration: "10s".into(),
                    mechanism: serde_json::json!({"family": "net"}),
                    status: "completed".into(),
                    started_monotonic_ns: None,
                    deadline_monotonic_ns: None,
                    ended: Some("deadline".into()),
                    counters: Some(Default::default()),
                    inert_monotonic_ns: None,
                    inert_after_us: Some(40),
                    detached_after_us: None,
                    error: None,
                }],
            }],
            probes: vec![ProbeRecord {
                name: "api".into(),
                role: "hypothesis".into(),
                kind: "http".into(),
                check: "GET http://x/ -> status 2xx".into(),
                interval: "1s".into(),
                timeout: "1s".into(),
                failures: 1,
                stats: Default::default(),
                latency_ms_avg: Some(2.0),
                outcome: "held".into(),
                outcome_detail: String::new(),
            }],
            recovery: Some(RecoveryRecord {
                within: "30s".into(),
                recovered: true,
                after_ms: Some(300),
                detail: "ok".into(),
            }),
            ..Default::default()
        }
    }

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("invalid XML ({e}):\n{xml}"))
    }

    #[test]
    fn held_run_is_valid_junit_with_all_cases_passing() {
        let xml = render(&report("held"));
        let doc = parse(&xml);
        let suites = doc.root_element();
        assert_eq!(suites.tag_name().name(), "testsuites");
        let suite = suites.children().find(|n| n.has_tag_name("testsuite")).unwrap();
        assert_eq!(suite.attribute("name"), Some("lossy link"));
        assert_eq!(suite.attribute("failures"), Some("0"));
        assert_eq!(suite.attribute("errors"), Some("0"));
        let names: Vec<&str> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .filter_map(|n| n.attribute("name"))
            .collect();
        assert_eq!(
            names,
            vec![
                "steady state before injection",
                "attack net-loss-1: net-loss on /sys/fs/cgroup/x",
                "hypothesis: api",
                "recovery within 30s"
            ]
        );
        assert_eq!(suite.attribute("tests"), Some("4"));
        assert_eq!(suites.attribute("tests"), Some("4"));
        assert_eq!(suite.attribute("timestamp"), Some("2026-11-26T12:00:00.000+00:00"));
        assert_eq!(suite.attribute("time"), Some("12.500"));
        let attack = suite.children().find(|n| n.attribute("name") == Some(names[1])).unwrap();
        assert_eq!(attack.attribute("classname"), Some("chaos.lossy link"));
        let out = attack.children().find(|n| n.has_tag_name("system-out")).and_then(|n| n.text());
        assert!(out.is_some_and(|o| o.contains("inert 40 us after the stop call")), "{xml}");
        let reason = suite
            .descendants()
            .find(|n| n.has_tag_name("property") && n.attribute("name") == Some("reason"))
            .unwrap();
        assert_eq!(reason.attribute("value"), Some("because <reasons> & \"quotes\""));
    }

    #[test]
    fn an_attack_is_its_attack_case_alone() {
        let mut r = report("completed");
        r.experiment.kind = "attack".into();
        r.steady_state = None;
        r.probes.clear();
        r.recovery = None;
        let xml = render(&r);
        let doc = parse(&xml);
        let names: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .filter_map(|n| n.attribute("name"))
            .collect();
        assert_eq!(names, vec!["attack net-loss-1: net-loss on /sys/fs/cgroup/x"], "{xml}");
    }

    #[test]
    fn violation_is_a_failure_of_the_probe_and_signals_are_errors() {
        let mut r = report("violated");
        r.probes[0].outcome = "violated".into();
        r.probes[0].outcome_detail = "timed out\u{1}".into();
        r.steps[0].attacks[0].status = "aborted".into();
        r.abort = Some(AbortRecord {
            cause: "hypothesis".into(),
            probe: Some("api".into()),
            detail: "timed out".into(),
            decided_monotonic_ns: 1,
            inert_after_decision_us: Some(30),
            detached_after_decision_us: Some(900),
        });
        r.recovery = None;
        let xml = render(&r);
        let doc = parse(&xml);
        let failure = doc.descendants().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(failure.attribute("type"), Some("hypothesis-violated"));
        assert_eq!(failure.parent().unwrap().attribute("name"), Some("hypothesis: api"));
        let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
        assert_eq!(
            (suite.attribute("failures"), suite.attribute("errors"), suite.attribute("skipped")),
            (Some("1"), Some("0"), Some("1"))
        );

        r.abort.as_mut().unwrap().cause = "signal".into();
        r.probes[0].outcome = "held".into();
        let xml = render(&r);
        let doc = parse(&xml);
        let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
        assert_eq!(suite.attribute("failures"), Some("0"));
        assert_eq!(suite.attribute("errors"), Some("2"), "{xml}");
    }

    #[test]
    fn not_started_fails_the_steady_state_and_skips_the_rest() {
        let mut r = report("not-started");
        r.steady_state.as_mut().unwrap().held = false;
        r.steady_state.as_mut().unwrap().probes[0].ok = false;
        r.steps[0].attacks[0].status = "not-run".into();
        r.steps[0].attacks[0].counters = None;
        r.probes[0].outcome = "not-run".into();
        r.recovery = None;
        let doc_text = render(&r);
        let doc = parse(&doc_text);
        let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
        assert_eq!(
            (suite.attribute("failures"), suite.attribute("skipped")),
            (Some("1"), Some("3")),
            "{doc_text}"
        );
    }
}
