//! The integration tests on a standard harness: libtest-mimic gives the
//! command line and the output of `cargo test` (`--list`, name filters,
//! `--exact`, `--skip`, `--ignored`, `--format pretty|terse|json`), and this
//! module adds what these tests need around each one:
//!
//! - one at a time, in the registry's order: they share the machine
//!   (namespaces, cgroups, BPF programs), and the leak check below would
//!   see a neighbour's objects as leaks;
//! - a test that needs a kernel capability this machine lacks returns
//!   [`Skip`] (through [`Ctx::require`]) and is reported *ignored*, with the
//!   probe's reason. libtest-mimic (>= 0.8.2) decides ignoring at run time
//!   ([`Completion::Ignored`]), so requirements stay where they are checked,
//!   inside the test, next to the code that needs them;
//! - a panic is caught here (not by libtest-mimic) so that the leak check
//!   still runs after it; then it is a failure like any other;
//! - after every test, [`crate::fixtures::leaks`]: a test that leaves
//!   anything behind fails, whatever it asserted;
//! - the time each test took.
//!
//! libtest-mimic's JSON events carry neither an ignored test's reason nor a
//! test's time, which `./x test` shows for every kernel. So with
//! `--format json --results-json`, each test also prints one line of its
//! own, `{"test", "outcome", "detail", "seconds"}`, just before
//! libtest-mimic's event for it; xtask reads both (`xtask/src/matrix.rs`).

use std::{
    io::Write,
    panic::{AssertUnwindSafe, catch_unwind},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Instant,
};

use chaos::capabilities::{Capabilities, Capability};
use clap::Parser;
use libtest_mimic::{Arguments, Completion, Failed, FormatSetting, Trial};

/// A test: its name (`file::case`, from its path: see [`register!`]) and
/// its function.
pub struct Test {
    pub name: &'static str,
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
}

/// The registry: one `module::function` path per line (or deeper:
/// `safety::case::family`), run in this order. Each name is made from the
/// path itself, so it cannot drift from the function; a test function left
/// out of the list is never called, which the compiler reports as dead code
/// (and clippy `-D warnings` refuses).
macro_rules! register {
    ($($module:ident $(:: $rest:ident)+),* $(,)?) => {
        pub const ALL: &[$crate::harness::Test] = &[$(
            $crate::harness::Test {
                name: concat!(stringify!($module) $(, "::", stringify!($rest))+),
                run: $module $(:: $rest)+,
            },
        )*];
    };
}
pub(crate) use register;

/// What a test gets: capability probes (cached for the whole run).
pub struct Ctx {
    caps: Capabilities,
}

/// Whether the tests run on the host rather than in a VM (`./x test` sets
/// `CHAOS_KERNEL` to `host-<release>` there): tests whose cost is a start
/// under emulation repeat less in a VM.
pub fn on_host() -> bool {
    std::env::var("CHAOS_KERNEL").is_ok_and(|k| k.starts_with("host-"))
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
        let probe = self.caps.detect(cap);
        if probe.available { Ok(()) } else { Err(Skip(format!("needs {cap}: {}", probe.detail)).into()) }
    }

    /// Whether the kernel has `cap` (for a test that checks what happens
    /// either way).
    pub fn has(&mut self, cap: Capability) -> bool {
        self.caps.detect(cap).available
    }

    /// Skip unless the kernel has at least one of `caps`.
    pub fn require_any(&mut self, caps: &[Capability]) -> anyhow::Result<()> {
        let mut reasons = Vec::new();
        for cap in caps {
            let probe = self.caps.detect(*cap);
            if probe.available {
                return Ok(());
            }
            reasons.push(format!("{cap}: {}", probe.detail));
        }
        Err(Skip(format!("needs one of: {}", reasons.join("; "))).into())
    }
}

/// The command line: libtest's, plus what this suite adds.
#[derive(Parser)]
#[command(
    name = "chaos-integration",
    about = "chaos's privileged integration tests (run them through `./x test`)",
    help_template = "{about}\n\n{usage-heading} {usage}\n\n{all-args}\n\n{after-help}",
    after_help = "A test runs if its name contains any FILTER (equals one, with --exact). \
                  The tests always run one at a time.\n\n\
                  Also:\n  \
                  chaos-integration bench <net|net-delay|io|clock|conn>  a benchmark (see bench/README.md)\n  \
                  chaos-integration helper ...                       traffic helpers the tests spawn\n\n\
                  Exit status: 0 all selected tests passed or were ignored, 101 a test failed, \
                  3 bad usage or not root."
)]
struct Cli {
    #[command(flatten)]
    libtest: Arguments,
    /// More filters (libtest-mimic takes one; `cargo test` takes several).
    #[arg(value_name = "FILTER")]
    more_filters: Vec<String>,
    /// With --format json: one more line per test, {"test", "outcome",
    /// "detail", "seconds"}, carrying what libtest's events lack (an ignored
    /// test's reason, the time). For `./x test`.
    #[arg(long)]
    results_json: bool,
}

/// Bad usage: documented exit status 3 (as before this harness).
const USAGE: u8 = 3;

pub fn main(args: &[String], tests: &'static [Test]) -> ExitCode {
    let cli = match Cli::try_parse_from(
        std::iter::once("chaos-integration".to_owned()).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { 0 });
        }
    };
    let mut args = cli.libtest;
    if let Some(n @ 2..) = args.test_threads {
        eprintln!(
            "chaos-integration: --test-threads {n}: these tests share the machine (namespaces, cgroups, \
             the leak check after each) and run one at a time; leave --test-threads out or set it to 1"
        );
        return ExitCode::from(USAGE);
    }
    // On the main thread, in order: the doctor guard runs first.
    args.test_threads = Some(1);
    if cli.results_json && args.format != Some(FormatSetting::Json) {
        eprintln!(
            "chaos-integration: --results-json needs --format json (its lines would break libtest's pretty \
             and terse lines)"
        );
        return ExitCode::from(USAGE);
    }
    let mut selected: Vec<&'static Test> = tests.iter().collect();
    if !cli.more_filters.is_empty() {
        // libtest-mimic matches one filter; with several, select here.
        let filters: Vec<String> = args.filter.take().into_iter().chain(cli.more_filters).collect();
        let exact = args.exact;
        selected.retain(|t| {
            filters.iter().any(|f| if exact { t.name == f } else { t.name.contains(f.as_str()) })
        });
    }
    if !args.list {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "chaos-integration: the integration tests need root (they create namespaces and cgroups)"
            );
            return ExitCode::from(USAGE);
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        eprintln!("integration tests on kernel {}", kernel.trim());
        crate::fixtures::leaks::settle_before_suite();
    }
    let ctx = Arc::new(Mutex::new(Ctx { caps: Capabilities::new() }));
    // libtest-mimic prints "test NAME ... " before a test and its outcome
    // after; in that format, the time goes between the two.
    let time_inline =
        args.logfile.is_none() && matches!(args.format, None | Some(FormatSetting::Pretty)) && !args.quiet;
    let report = Report { results_json: cli.results_json, time_inline };
    let trials = selected
        .into_iter()
        .map(|test| {
            let ctx = Arc::clone(&ctx);
            Trial::ignorable_test(test.name, move || run_one(test, &ctx, report))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

#[derive(Clone, Copy)]
struct Report {
    results_json: bool,
    time_inline: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// Run one test, then the leak check; say how it went.
fn run_one(test: &Test, ctx: &Mutex<Ctx>, report: Report) -> Result<Completion, Failed> {
    let started = Instant::now();
    let result = {
        // A poisoned lock only means an earlier test panicked while holding
        // it; the probe cache inside is still valid.
        let mut ctx = ctx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        catch_unwind(AssertUnwindSafe(|| (test.run)(&mut ctx)))
    };
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
    let word = match outcome {
        Outcome::Passed => "passed",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
    };
    let mut out = std::io::stdout().lock();
    if report.results_json {
        let record =
            serde_json::json!({ "test": test.name, "outcome": word, "detail": detail, "seconds": seconds });
        let _ = writeln!(out, "{record}");
    } else if report.time_inline {
        let _ = write!(out, "({seconds:.1}s) ");
    }
    let _ = out.flush();
    match outcome {
        Outcome::Passed => Ok(Completion::Completed),
        Outcome::Skipped => Ok(Completion::ignored_with(detail)),
        Outcome::Failed => Err(detail.into()),
    }
}
