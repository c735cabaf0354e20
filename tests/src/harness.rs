//! A small test runner: runs the registered tests in order, catches panics,
//! tells skips from failures, checks for leaks after each test, and prints
//! one line per test plus the summary `N passed, N failed, N skipped`.
//!
//! With `--json`, each result is also printed on stdout as one JSON object
//! (`{"test", "outcome", "detail", "seconds"}`), which `./x test` collects
//! from the host and from every VM kernel.

use std::{
    io::Write,
    panic::{AssertUnwindSafe, catch_unwind},
    time::Instant,
};

use chaos::capabilities::{Capabilities, Capability};

/// A test: a name (`file::case`) and a function.
pub struct Test {
    pub name: &'static str,
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
}

/// What a test gets: capability probes (cached for the whole run).
pub struct Ctx {
    caps: Capabilities,
}

/// Returned (through `?`) by a test that cannot run here.
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

impl Ctx {
    /// Skip unless the kernel has `cap`; the reason is the probe's.
    pub fn require(&mut self, cap: Capability) -> anyhow::Result<()> {
        let probe = self.caps.probe(cap);
        if probe.available { Ok(()) } else { Err(Skip(format!("needs {cap}: {}", probe.detail)).into()) }
    }

    /// Skip unless the kernel has at least one of `caps`.
    pub fn require_any(&mut self, caps: &[Capability]) -> anyhow::Result<()> {
        let mut reasons = Vec::new();
        for cap in caps {
            let probe = self.caps.probe(*cap);
            if probe.available {
                return Ok(());
            }
            reasons.push(format!("{cap}: {}", probe.detail));
        }
        Err(Skip(format!("needs one of: {}", reasons.join("; "))).into())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

pub fn main(args: &[String], tests: &[Test]) -> std::process::ExitCode {
    if let Some(bad) = args.iter().find(|a| a.starts_with('-') && !matches!(a.as_str(), "--json" | "--list"))
    {
        let status = if matches!(bad.as_str(), "-h" | "--help") { 0 } else { 3 };
        if status != 0 {
            eprintln!("chaos-integration: unknown option {bad:?}");
        }
        eprintln!(
            "usage: chaos-integration [--json] [--list] [FILTER...]   run the tests whose name contains a FILTER\n\
             \x20      chaos-integration bench <net|net-delay|io|clock>   a benchmark (see bench/README.md)\n\
             \x20      chaos-integration helper ...                       traffic helpers the tests spawn"
        );
        return std::process::ExitCode::from(status);
    }
    let json = args.iter().any(|a| a == "--json");
    let list = args.iter().any(|a| a == "--list");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    if list {
        for t in &selected {
            println!("{}", t.name);
        }
        return std::process::ExitCode::SUCCESS;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("chaos-integration: the integration tests need root (they create namespaces and cgroups)");
        return std::process::ExitCode::from(3);
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("running {} integration tests on kernel {}", selected.len(), kernel.trim());
    let mut ctx = Ctx { caps: Capabilities::new() };
    let mut counts = [0usize; 3];
    for test in selected {
        eprint!("test {} ... ", test.name);
        let _ = std::io::stderr().flush();
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| (test.run)(&mut ctx)));
        let (mut outcome, mut detail) = match result {
            Ok(Ok(())) => (Outcome::Passed, String::new()),
            Ok(Err(e)) => match e.downcast_ref::<Skip>() {
                Some(skip) => (Outcome::Skipped, skip.0.clone()),
                None => (Outcome::Failed, format!("{e:#}")),
            },
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                (Outcome::Failed, format!("panicked: {msg}"))
            }
        };
        // A test that leaks fails, whatever it asserted.
        if let Err(leak) = crate::fixtures::leaks::check() {
            crate::fixtures::leaks::clean();
            if outcome != Outcome::Failed {
                outcome = Outcome::Failed;
                detail = format!("leaked: {leak}");
            } else {
                detail = format!("{detail}; also leaked: {leak}");
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let label = match outcome {
            Outcome::Passed => "ok".to_owned(),
            Outcome::Failed => "FAILED".to_owned(),
            Outcome::Skipped => format!("skipped: {detail}"),
        };
        eprintln!("{label} ({seconds:.1}s)");
        if outcome == Outcome::Failed {
            for line in detail.lines() {
                eprintln!("    {line}");
            }
        }
        counts[outcome as usize] += 1;
        if json {
            let o = match outcome {
                Outcome::Passed => "passed",
                Outcome::Failed => "failed",
                Outcome::Skipped => "skipped",
            };
            println!(
                "{}",
                serde_json::json!({ "test": test.name, "outcome": o, "detail": detail, "seconds": seconds })
            );
        }
    }
    eprintln!("{} passed, {} failed, {} skipped", counts[0], counts[1], counts[2]);
    if counts[1] > 0 { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
