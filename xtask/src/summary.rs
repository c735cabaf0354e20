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
/// with how long each took.
#[derive(Default)]
pub struct Summary {
    pub sections: BTreeMap<String, (Counts, f64)>,
    order: Vec<String>,
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

    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (c, _) in self.sections.values() {
            t.add(*c);
        }
        t
    }

    pub fn print(&self) {
        println!("\n{:<14} {:>7} {:>7} {:>8} {:>9}", "section", "passed", "failed", "skipped", "seconds");
        for name in &self.order {
            let (c, s) = self.sections[name];
            println!("{name:<14} {:>7} {:>7} {:>8} {s:>9.1}", c.passed, c.failed, c.skipped);
        }
        println!("\n{}", self.total());
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
}
