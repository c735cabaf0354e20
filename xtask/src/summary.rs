//! Counting results across test kinds and kernels, and the closing line.

use std::{collections::BTreeMap, fmt};

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    pub fn one(outcome: &str) -> Self {
        match outcome {
            "passed" => Self { passed: 1, ..Self::default() },
            "skipped" => Self { skipped: 1, ..Self::default() },
            _ => Self { failed: 1, ..Self::default() },
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// Results per section (e.g. `lint`, `unit`, `host-6.18`, `debian-6.1`),
/// with how long each took, every failure with its reason, and why tests
/// were skipped.
#[derive(Default)]
pub struct Summary {
    pub sections: BTreeMap<String, (Counts, f64)>,
    order: Vec<String>,
    notes: BTreeMap<String, String>,
    failures: Vec<(String, String, String)>,
    skips: Vec<(String, String, String)>,
}

impl Summary {
    pub fn record(&mut self, section: &str, counts: Counts, seconds: f64) {
        if !self.sections.contains_key(section) {
            self.order.push(section.to_owned());
        }
        let entry = self.sections.entry(section.to_owned()).or_default();
        entry.0.add(counts);
        entry.1 += seconds;
    }

    /// A failure to list at the end: (section, what, why).
    pub fn fail(&mut self, section: &str, what: &str, why: &str) {
        self.failures.push((section.to_owned(), what.to_owned(), why.to_owned()));
    }

    /// A skipped test to list at the end: (section, what, why).
    pub fn skip(&mut self, section: &str, what: &str, why: &str) {
        self.skips.push((section.to_owned(), what.to_owned(), why.to_owned()));
    }

    /// A remark shown beside the section's row (e.g. the exact kernel).
    pub fn note(&mut self, section: &str, note: &str) {
        self.notes.insert(section.to_owned(), note.to_owned());
    }

    /// Take in what another summary recorded (e.g. a VM run on a thread of
    /// its own), after what this one has.
    pub fn merge(&mut self, other: Summary) {
        for name in &other.order {
            let (counts, seconds) = other.sections[name];
            self.record(name, counts, seconds);
        }
        self.notes.extend(other.notes);
        self.failures.extend(other.failures);
        self.skips.extend(other.skips);
    }

    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (c, _) in self.sections.values() {
            t.add(*c);
        }
        t
    }

    pub fn print(&self) {
        if !self.skips.is_empty() {
            // One line per section and reason: most skips share a few
            // reasons (a capability this kernel lacks).
            println!("\nskipped:");
            let mut by_reason: Vec<(&str, &str, Vec<&str>)> = Vec::new();
            for (section, what, why) in &self.skips {
                match by_reason.iter_mut().find(|(s, w, _)| s == section && w == why) {
                    Some((_, _, tests)) => tests.push(what),
                    None => by_reason.push((section, why, vec![what])),
                }
            }
            for (section, why, tests) in by_reason {
                let which =
                    if tests.len() == 1 { tests[0].to_owned() } else { format!("{} tests", tests.len()) };
                println!("  [{section}] {which}: {why}");
            }
        }
        if !self.failures.is_empty() {
            println!("\nfailures:");
            for (section, what, why) in &self.failures {
                println!("  [{section}] {what}");
                for line in why.lines() {
                    println!("      {line}");
                }
            }
        }
        println!("\n{:<14} {:>7} {:>7} {:>8} {:>9}", "section", "passed", "failed", "skipped", "seconds");
        for name in &self.order {
            let (c, s) = self.sections[name];
            let note = self.notes.get(name).map(|n| format!("  {n}")).unwrap_or_default();
            println!("{name:<14} {:>7} {:>7} {:>8} {s:>9.1}{note}", c.passed, c.failed, c.skipped);
        }
        println!("\n{}", self.total());
    }
}

/// The record `chaos-integration --results-json` prints for each test, just
/// before libtest's event for it: what libtest's JSON lacks (an ignored
/// test's reason, the time).
#[derive(serde::Deserialize, Debug, PartialEq, Clone)]
pub struct TestResult {
    pub test: String,
    pub outcome: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub seconds: f64,
}

/// A machine-readable line of `chaos-integration --format json
/// --results-json`: libtest's events and the runner's records.
#[derive(Debug, PartialEq)]
pub enum Line {
    Record(TestResult),
    /// `{"type": "test", "event": "started", "name": ...}`
    Started(String),
    /// `{"type": "test", "event": "ok|failed|ignored", "name": ...}`, as
    /// `passed`, `failed` or `skipped`, with libtest's message if any.
    Finished {
        test: String,
        outcome: &'static str,
        message: String,
    },
    /// `{"type": "suite", "event": "ok|failed", "passed": N, ...}`: the
    /// runner's own count, at its very end.
    Closing(Counts),
    /// Any other libtest event (the suite's start, a benchmark).
    Other,
}

/// Split a line into what a person wrote and the machine line after it: a
/// VM merges the runner's stdout and stderr into one stream, so a test's
/// unfinished line (e.g. progress dots) may come just before a record.
pub fn parse_line(line: &str) -> Option<(&str, Line)> {
    for (start, _) in line.match_indices('{') {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line[start..]) else { continue };
        if let Some(parsed) = classify(value) {
            return Some((&line[..start], parsed));
        }
    }
    None
}

fn classify(value: serde_json::Value) -> Option<Line> {
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let num = |key: &str| value.get(key).and_then(|v| v.as_u64()).map(|n| n as usize);
    match text("type").as_deref() {
        None => serde_json::from_value(value).ok().map(Line::Record),
        Some("test") => {
            let test = text("name")?;
            let outcome = match text("event")?.as_str() {
                "started" => return Some(Line::Started(test)),
                "ok" => "passed",
                "ignored" => "skipped",
                _ => "failed",
            };
            Some(Line::Finished { test, outcome, message: text("stdout").unwrap_or_default() })
        }
        Some("suite") if text("event")? == "started" => Some(Line::Other),
        Some("suite") => Some(Line::Closing(Counts {
            passed: num("passed")?,
            failed: num("failed")?,
            skipped: num("ignored")?,
        })),
        Some(_) => Some(Line::Other),
    }
}

/// Parse libtest's `test result: ok. 12 passed; 0 failed; 1 ignored; ...`
/// lines; ignored tests count as skipped.
pub fn parse_libtest(output: &str) -> Counts {
    let mut c = Counts::default();
    for line in output.lines().filter(|l| l.trim_start().starts_with("test result:")) {
        let num = |word: &str| -> usize {
            line.split(';')
                .find_map(|part| {
                    let part = part.trim().trim_start_matches(|ch: char| !ch.is_ascii_digit());
                    let (n, w) = part.split_once(' ')?;
                    (w.trim() == word).then(|| n.parse().ok()).flatten()
                })
                .unwrap_or(0)
        };
        c.passed += num("passed");
        c.failed += num("failed");
        c.skipped += num("ignored");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_lines() {
        let out = "running 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(parse_libtest(out), Counts { passed: 8, failed: 2, skipped: 1 });
    }

    #[test]
    fn parses_runner_lines() {
        let record = r#"{"detail":"x","outcome":"skipped","seconds":0.5,"test":"a::b"}"#;
        let want =
            TestResult { test: "a::b".into(), outcome: "skipped".into(), detail: "x".into(), seconds: 0.5 };
        assert_eq!(parse_line(record), Some(("", Line::Record(want.clone()))));
        let after_partial = format!("0.. 20.. {{x}} [last loss -0.3 ms] {record}");
        assert_eq!(
            parse_line(&after_partial),
            Some(("0.. 20.. {x} [last loss -0.3 ms] ", Line::Record(want)))
        );
        assert_eq!(parse_line("test a::b ... ok"), None);
        assert_eq!(parse_line(r#"{"unrelated": 1}"#), None);
        // libtest-mimic 0.8's JSON events, as printed.
        assert_eq!(
            parse_line(r#"{ "type": "test", "event": "started", "name": "a::b" }"#),
            Some(("", Line::Started("a::b".into())))
        );
        assert_eq!(
            parse_line(r#"{ "type": "test", "name": "a::b", "event": "ignored" }"#),
            Some(("", Line::Finished { test: "a::b".into(), outcome: "skipped", message: String::new() }))
        );
        assert_eq!(
            parse_line(
                r#"{ "type": "test", "name": "a::b", "event": "failed", "stdout": "Error: \"boom\"\n" }"#
            ),
            Some((
                "",
                Line::Finished {
                    test: "a::b".into(),
                    outcome: "failed",
                    message: "Error: \"boom\"\n".into()
                }
            ))
        );
        assert_eq!(
            parse_line(r#"{ "type": "suite", "event": "started", "test_count": 3 }"#),
            Some(("", Line::Other))
        );
        assert_eq!(
            parse_line(
                r#"{ "type": "suite", "event": "failed", "passed": 14, "failed": 2, "ignored": 1, "measured": 0, "filtered_out": 55, "exec_time": 1.5 }"#
            ),
            Some(("", Line::Closing(Counts { passed: 14, failed: 2, skipped: 1 })))
        );
    }
}
