//! The privileged integration tests on each kernel of the matrix: this
//! machine's kernel, then Debian's in VMs. The same two binaries run
//! everywhere; each kernel is one section of the summary, counted from the
//! runner's JSON lines.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Context;

use crate::{
    build::Binaries,
    kernels::Kernel,
    summary::{Counts, Summary, TestResult, parse_closing_line, parse_result},
    vm::{self, Exit},
};

pub fn run(
    summary: &mut Summary,
    kernels: &[Kernel],
    bins: &Binaries,
    filters: &[String],
    vm: &vm::Options,
) -> anyhow::Result<()> {
    for &kernel in kernels {
        match kernel {
            Kernel::Host => host(summary, bins, filters)?,
            _ => in_vm(summary, kernel, bins, filters, vm)?,
        }
    }
    Ok(())
}

/// What one kernel's run reported.
#[derive(Default)]
struct Tally {
    counts: Counts,
    failures: Vec<TestResult>,
    /// The runner's own `N passed, N failed, N skipped`.
    closing: Option<Counts>,
}

impl Tally {
    /// Take in one output line; false if it is for a human.
    fn line(&mut self, line: &str) -> bool {
        if let Some(closing) = parse_closing_line(line) {
            self.closing = Some(closing);
            return false;
        }
        let Some(result) = parse_result(line) else { return false };
        self.counts.add(Counts::one(&result.outcome));
        if result.outcome != "passed" && result.outcome != "skipped" {
            self.failures.push(result);
        }
        true
    }

    fn record(self, summary: &mut Summary, section: &str, seconds: f64) {
        for f in &self.failures {
            summary.fail(section, &f.test, &f.detail);
        }
        summary.record(section, self.counts, seconds);
    }
}

fn host(summary: &mut Summary, bins: &Binaries, filters: &[String]) -> anyhow::Result<()> {
    let label = Kernel::Host.label();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("== integration tests on {label} (this machine, kernel {})", release.trim());
    let t = Instant::now();
    let mut child = Command::new(&bins.integration)
        .arg("--json")
        .args(filters)
        .env("CHAOS_BIN", &bins.chaos)
        .env("CHAOS_KERNEL", &label)
        .stdout(Stdio::piped())
        .spawn()
        .context("running the integration tests")?;
    let mut tally = Tally::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        tally.line(&line);
    }
    let status = child.wait()?;
    if !status.success() && tally.counts.failed == 0 {
        tally.counts.failed += 1;
        summary.fail(&label, "chaos-integration", &format!("exited with {status}"));
    }
    summary.note(&label, &format!("kernel {}", release.trim()));
    tally.record(summary, &label, t.elapsed().as_secs_f64());
    Ok(())
}

fn in_vm(
    summary: &mut Summary,
    kernel: Kernel,
    bins: &Binaries,
    filters: &[String],
    opts: &vm::Options,
) -> anyhow::Result<()> {
    let label = kernel.label();
    let idle =
        opts.idle_timeout.map(|i| format!(", or {} s without output", i.as_secs())).unwrap_or_default();
    eprintln!(
        "== integration tests on {label} (VM, QEMU TCG; killed after {} s{idle})",
        opts.timeout.as_secs()
    );
    let t = Instant::now();
    let mut argv = vec![bins.integration.display().to_string(), "--json".to_owned()];
    argv.extend(filters.iter().cloned());
    let script = vm::guest_script(&vm::guest_env(&bins.chaos, kernel), &argv);
    let mut tally = Tally::default();
    let run = vm::run(
        kernel,
        &script,
        |line| {
            if !tally.line(line) {
                eprintln!("{line}");
            }
        },
        opts,
    );
    let out = match run {
        Ok(out) => out,
        Err(e) if vm::interrupted() => return Err(e),
        Err(e) => {
            // The VM could not even start: one failure naming why.
            eprintln!("!! {label}: {e:#}");
            summary.fail(&label, "VM", &format!("{e:#}"));
            summary.record(&label, Counts::one("failed"), t.elapsed().as_secs_f64());
            return Ok(());
        }
    };
    let reported = tally.counts.passed + tally.counts.failed + tally.counts.skipped;
    // A broken VM is one failure, whatever the tests said before it broke.
    let vm_failure = match (out.broken(), tally.closing) {
        (Some(reason), _) => Some(format!("{reason} ({reported} results arrived before)")),
        (None, None) => Some(format!(
            "the VM ended ({}) before the test runner finished ({reported} results arrived)",
            out.exit
        )),
        (None, Some(closing)) if closing != tally.counts => {
            Some(format!("results lost on the way: the runner counted {closing}, {} arrived", tally.counts))
        }
        _ if out.exit != Exit::Code(0) && tally.counts.failed == 0 => {
            Some(format!("chaos-integration: {} with no failed test", out.exit))
        }
        _ => None,
    };
    if let Some(reason) = &vm_failure {
        eprintln!("!! {label}: {reason}; the last console lines:");
        out.print_console_tail();
        tally.counts.failed += 1;
        summary.fail(&label, "VM", reason);
    }
    let boot = out.boot_seconds.map(|b| format!(", boot {b:.0} s")).unwrap_or_default();
    summary.note(&label, &format!("kernel {}, VM{boot}", out.release));
    tally.record(summary, &label, t.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_results_and_the_closing_line() {
        let mut t = Tally::default();
        assert!(!t.line("test a ... ok"));
        assert!(t.line(r#"{"detail":"","outcome":"passed","seconds":1.0,"test":"a"}"#));
        assert!(t.line(r#"{"detail":"boom","outcome":"failed","seconds":1.0,"test":"b"}"#));
        assert!(t.line(r#"{"detail":"needs x","outcome":"skipped","seconds":0.0,"test":"c"}"#));
        assert!(!t.line("1 passed, 1 failed, 1 skipped"));
        assert_eq!(t.counts, Counts { passed: 1, failed: 1, skipped: 1 });
        assert_eq!(t.closing, Some(t.counts));
        assert_eq!(t.failures.len(), 1);
        assert_eq!(t.failures[0].detail, "boom");
    }
}
