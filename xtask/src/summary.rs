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
/// with how long each took, and every failure with its reason.
#[derive(Default)]
pub struct Summary {
    pub sections: BTreeMap<String, (Counts, f64)>,
    order: Vec<String>,
    notes: BTreeMap<String, String>,
    failures: Vec<(String, String, String)>,
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

    /// A remark shown beside the section's row (e.g. the exact kernel).
    pub fn note(&mut self, section: &str, note: &str) {
        self.notes.insert(section.to_owned(), note.to_owned());
    }

    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (c, _) in self.sections.values() {
            t.add(*c);
        }
        t
    }

    pub fn print(&self) {
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

/// One line of `chaos-integration --json`.
#[derive(serde::Deserialize, Debug, PartialEq)]
pub struct TestResult {
    pub test: String,
    pub outcome: String,
    #[serde(default)]
    pub detail: String,
}

/// A result line, also when something else was written to the same stream
/// just before it without a newline (a VM merges the runner's stdout and
/// stderr into one stream).
pub fn parse_result(line: &str) -> Option<TestResult> {
    let start = line.find('{')?;
    serde_json::from_str(&line[start..]).ok()
}

/// The runner's closing line `N passed, N failed, N skipped`.
pub fn parse_closing_line(line: &str) -> Option<Counts> {
    let mut parts = line.trim().split(", ");
    let mut num = |word: &str| -> Option<usize> {
        let (n, w) = parts.next()?.split_once(' ')?;
        if w == word { n.parse().ok() } else { None }
    };
    let c = Counts { passed: num("passed")?, failed: num("failed")?, skipped: num("skipped")? };
    parts.next().is_none().then_some(c)
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
        let json = r#"{"detail":"x","outcome":"skipped","seconds":0.1,"test":"a::b"}"#;
        let want = TestResult { test: "a::b".into(), outcome: "skipped".into(), detail: "x".into() };
        assert_eq!(parse_result(json), Some(want));
        let after_partial = format!("[last loss -0.3 ms] {json}");
        assert_eq!(parse_result(&after_partial).unwrap().test, "a::b");
        assert_eq!(parse_result("test a::b ... ok (0.1s)"), None);
        assert_eq!(
            parse_closing_line("14 passed, 2 failed, 1 skipped"),
            Some(Counts { passed: 14, failed: 2, skipped: 1 })
        );
        assert_eq!(parse_closing_line("running 17 integration tests"), None);
        assert_eq!(parse_closing_line("1 passed, 0 failed, 0 skipped, 3 more"), None);
    }
}
