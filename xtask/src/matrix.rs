//! The privileged integration tests on each kernel of the matrix: this
//! machine's kernel, then Debian's in VMs. The same two binaries run
//! everywhere; each kernel is one section of the summary, counted from the
//! runner's libtest JSON events (`--format json`), with each test's reason
//! and time from the record it prints just before its event
//! (`--results-json`, see tests/src/harness.rs).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Context;

use crate::{
    build::Binaries,
    kernels::Kernel,
    summary::{Counts, Line, Summary, TestResult, parse_line},
    vm::{self, Exit},
};

/// Which integration tests a kernel runs when `./x test` is given no
/// filter. CI time decides: the whole suite takes 25 to 30 minutes per VM
/// on a slow 2-core machine, and two whole suites side by side already take
/// most of CI's budget.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tier {
    /// Every test (but the `ONE_VM` tests given to 6.12): 6.1 (the oldest
    /// kernel with everything chaos uses, no TCX) and this machine's
    /// kernel.
    Whole,
    /// Every test but `HOST_COVERED` (and the `ONE_VM` tests given to
    /// 6.1): 6.12 (TCX, as on this machine).
    KernelDependent,
    /// `REDUCED` but `REDUCED_SKIPS`: what tells whether each mechanism
    /// loads and works on the kernel, and every way an attack ends.
    Reduced,
}

/// The reduced tier, as name filters (a test runs if its name contains one;
/// see tests/src/harness.rs): the doctor suite (every capability probed
/// matches what the kernel is expected to have), at least one end-to-end
/// test per fault family and mechanism, and the safety suite (deadline,
/// SIGTERM, kill -9, hung loader; for every family; SIGINT left out by
/// `REDUCED_SKIPS`). Left out: the
/// kill-point torture (about 7 minutes per kernel), input validation and
/// the experiment runner (kernel-independent: the whole-suite kernels cover
/// them), and the finer statistics of each family.
///
/// Short on purpose: virtme-ng passed the guest's script, filters included,
/// base64-encoded on the kernel command line, which holds 2048 bytes
/// (COMMAND_LINE_SIZE, arch/x86/include/uapi/asm/setup.h). With the tests'
/// full names it did not fit: 7.2 stopped at boot in `__fortify_panic`
/// (start_kernel copying the command line) and 5.10 ran nothing. The script
/// is a file now (vm::ScriptFile), so the bound below is only a check that
/// the tier stays reduced.
pub const REDUCED: &[&str] = &[
    "doctor::",
    "safety::",
    // net-loss: tc egress (TCX where present, else netlink), cgroup_skb
    // ingress, and the netlink filter's own ending (kill -9, then recover).
    "egress_rates",
    "ingress_rates",
    "netlink_kill9",
    // Burst loss: a BTF-defined map whose value holds a bpf_spin_lock.
    "bursts_follow",
    // The families that pace packets through fq (departure times), and the
    // fq qdisc's installation and removal on every ending.
    "delay_and_jitter",
    "reorder_rate",
    "throughput_m",
    "restored_on",
    "duplicate_rate",
    "corrupt_rate",
    // io-error through the BPF LSM and through fmod_ret (on 5.10, with the
    // bounded path walk, whose bound walk_depth checks); io-error's and
    // clock-skew's refusals where no mechanism loads.
    "sqlite_reports",
    "walk_depth",
    "unavailable_says",
    // clock-skew: fexit with the vDSO detached at exec, the tracepoint
    // fallback, uprobes in running processes.
    "tools_in_the",
    // net-refuse: the sock_addr programs (errno by bpf_set_retval from 6.1,
    // EPERM and the refusal of another errno before).
    "connects_fail",
    // ... and incoming: the sk_lookup program on the target's namespaces.
    "targets_listen",
    // dns-error: the tc egress classifier answering on veth and loopback;
    // over TCP, sock_ops and sk_msg (5.10 removes a message only up to its
    // last byte).
    "answers_m",
    "acts_on_l",
    // Effects on what the target receives: TCX ingress, the ifb, and how
    // an attack ends there.
    "kill9_and",
    // net-reset: inet_diag SOCK_DESTROY, and the sockets' cgroup ids.
    "resets_both",
    "point_fa",
    "processes_read",
    // kill: cgroup.kill (5.14), and pidfds before it.
    "kills_every",
    // The agent's pod where BPF memory counts against RLIMIT_MEMLOCK
    // (before 5.11): 5.10 runs it; 7.2 skips it, naming why.
    "memlock_before_5_11",
];

/// What the reduced tier leaves out of what `REDUCED` selects: a SIGINT
/// ends an attack exactly as a SIGTERM does (chaos-user/src/signals.rs
/// turns both into the same stop), so the reduced kernels take SIGTERM's
/// endings, what systemd and Kubernetes send, and the whole-suite kernels
/// both (7 tests, about 90 s per reduced kernel).
pub const REDUCED_SKIPS: &[&str] = &["safety::ends_on_sigint"];

/// Tests whose outcome depends on no kernel mechanism beyond net-loss's
/// (input validation, the experiment runner's logic, the probes): they run
/// on this machine's kernel and on 6.1, which inject net-loss through TCX
/// and netlink filters respectively, and not again on 6.12, where they took
/// about 160 of 1630 s (2026-12-02) on the VM that decides CI's time. The
/// experiment runner's kill -9 tests stay: they check what is left in the
/// kernel. Also here, though this machine cannot run them: io-error's
/// statistics through fmod_ret, the same program and attach point as on
/// 6.1 (6.12 keeps the BPF LSM's, and fmod_ret's endings in `safety::`).
pub const HOST_COVERED: &[&str] = &[
    "cli::",
    "demo::",
    "probes::",
    // net-refuse's clients and filters: the same programs as on 6.1.
    "net_refuse::bad_flags",
    "net_refuse::real_clients",
    "net_refuse::filters",
    // Incoming refusals' share, clients and refusals: the same program as
    // on 6.1.
    "net_refuse_incoming::refuses_the",
    "net_refuse_incoming::real_clients",
    "net_refuse_incoming::refused_without",
    // net-partition's refusals: the CLI's validation alone.
    "net_partition::bad",
    // dns-error's clients, share and refusals: the same program as
    // answers_matching (which runs everywhere).
    "dns_error::bad",
    "dns_error::real_resolvers",
    "dns_error::fails_the",
    // net-reset's share, interval and endings: chaos's own thread, on the
    // same kernel interface as resets_both (which runs everywhere).
    "net_reset::bad",
    "net_reset::resets_the",
    "net_reset::resets_every",
    "net_reset::ends_with",
    "net_reset::real_clients",
    // Duplication and corruption of what the target receives: the same
    // programs and ifb as on this machine (6.18); 6.12 keeps the delay,
    // the rate (fq, which this machine lacks) and the endings.
    "net_receive::duplicates",
    "net_receive::corrupted",
    "experiment::validate",
    "experiment::dry_run",
    "experiment::hypothesis_holds",
    "experiment::attack_is",
    "experiment::violated",
    "experiment::failed_steady",
    "experiment::abort_condition",
    // io-error's statistics through fmod_ret: see above (about 100 s).
    "io_error::fmod_ret::",
    // kill: signals and cgroup.kill (5.14), the same on 6.1; its fallback
    // without cgroup.kill runs on 5.10 (REDUCED).
    "kill::",
];

/// Tests that one VM kernel covers, each with the kernel that runs it (or
/// this machine alone, `Kernel::Host`: what needs neither a kernel
/// mechanism nor a container runtime, which a VM would only repeat):
///
/// - those that need a VM for a container runtime, not for a kernel
///   mechanism (the runtimes run only in the VMs here: see
///   tests/src/fixtures/containers.rs). What they check of chaos, a
///   container or pod found through its runtime's API and resolved to its
///   cgroup and network namespace, is the same on every kernel, and the
///   faults they inject are each tested on both kernels by their family's
///   own tests. They took about 600 s on each of 6.1 and 6.12
///   (2026-12-04), a third of either VM and of CI's time. The split is by
///   the whole run's critical path: the VM that finishes first takes
///   5.10, the longest reduced kernel (1072 s against 7.2's 721 s in a
///   fresh-clone run, 2026-12-04), so 6.1 (which also runs the demo's
///   container and the tests 6.12 leaves to it) gets the shorter share:
///   with docker and the CRI-O stand-in on 6.1 the lanes were 6.1 1609 s +
///   5.10 against 6.12 1672 s + 7.2. With kill's docker test added to
///   6.12 they were 6.1 1104 s + 5.10 614 s against 6.12 1387 s + 7.2
///   541 s (2026-12-05, fresh clone): `kill_follows` (48 s), with the
///   rest of kill on 6.1, and `targets_lists` (51 s) went to 6.1;
/// - `pause`, whose one kernel interface, cgroup v2's `cgroup.freeze`
///   (Linux 5.2), is the same on every kernel of the matrix: on this
///   machine's kernel (cgroup v2 beside v1) and on 6.12 (cgroup v2 alone);
/// - `cpu-starve`, `memory-pressure` and `io-throttle`, whose interfaces,
///   `cpu.max` (Linux 4.15), `memory.high` and `io.max` (4.5), are also
///   the same on every kernel of the matrix (io.max's format read back
///   the same on 5.10 and 6.12, 2026-12-05); this machine's cpu, memory
///   and io controllers are on cgroup v1, so the host runs only their
///   refusals.
pub const ONE_VM: &[(&str, Kernel)] = &[
    ("containers::pod_covers", Kernel::Debian6_1),
    ("containers::net_loss_by_name::docker", Kernel::Debian6_12),
    ("containers::cri_o", Kernel::Debian6_12),
    ("containers::net_loss_by_name::podman", Kernel::Debian6_12),
    ("containers::net_loss_by_name::containerd", Kernel::Debian6_12),
    ("containers::targets_lists", Kernel::Debian6_1),
    ("containers::io_error_and_clock_skew", Kernel::Debian6_12),
    ("containers::kill_follows", Kernel::Debian6_1),
    // The agent on a CRI pod: the same code on every kernel that pauses.
    ("kube::agent_runs", Kernel::Debian6_1),
    // The agent's image in a CRI pod: on 6.12, beside the other runtimes'
    // tests there, for the lanes' balance.
    ("kube_daemonset::agent_pod", Kernel::Debian6_12),
    // ... and on the one kernel of the matrix that charges BPF memory to
    // RLIMIT_MEMLOCK.
    ("kube_daemonset::memlock", Kernel::Debian5_10),
    // The runner's own decisions need no kernel and no runtime: this
    // machine; with the agent on a CRI pod: 6.1, beside the agent's test.
    ("kube_controller::runner_verdicts", Kernel::Host),
    ("kube_controller::runner_and_agent", Kernel::Debian6_1),
    ("pause::", Kernel::Debian6_12),
    ("cpu_starve::", Kernel::Debian6_12),
    ("memory_pressure::", Kernel::Debian6_12),
    ("io_throttle::", Kernel::Debian6_12),
];

impl Kernel {
    /// The tests this kernel runs by default. 5.10 and 7.2 are the ends of
    /// the range users run: what differs there is whether each mechanism
    /// loads, which the reduced tier shows.
    pub fn tier(self) -> Tier {
        match self {
            Kernel::Host | Kernel::Debian6_1 => Tier::Whole,
            Kernel::Debian6_12 => Tier::KernelDependent,
            Kernel::Debian5_10 | Kernel::Debian7_2 => Tier::Reduced,
        }
    }
}

/// The runner's name filters on `kernel`: the user's, if any (an explicit
/// choice runs on every kernel asked for, whatever its tier), else the
/// kernel's tier (as filters, or `--skip`s).
fn filters_for(kernel: Kernel, user: &[String]) -> Vec<String> {
    if !user.is_empty() {
        return user.to_vec();
    }
    // On this machine the container tests skip themselves, with the reason.
    let elsewhere = ONE_VM.iter().filter(|(_, k)| kernel != Kernel::Host && *k != kernel).map(|(f, _)| *f);
    let skip = |f: &str| ["--skip".to_owned(), f.to_owned()];
    match kernel.tier() {
        Tier::Whole => elsewhere.flat_map(skip).collect(),
        Tier::KernelDependent => HOST_COVERED.iter().copied().chain(elsewhere).flat_map(skip).collect(),
        Tier::Reduced => REDUCED
            .iter()
            .map(|f| (*f).to_owned())
            .chain(REDUCED_SKIPS.iter().copied().flat_map(skip))
            .collect(),
    }
}

/// Run the integration tests on `kernels`: this machine's kernel first (on
/// its own: those tests check machine-wide state), then the VMs, `jobs` at
/// a time. Each VM runs its two vCPUs on one host thread (see vm::run), so
/// VMs on a 2-core machine run side by side at nearly full speed; their
/// lines are then prefixed with the kernel's label.
pub fn run(
    summary: &mut Summary,
    kernels: &[Kernel],
    bins: &Binaries,
    filters: &[String],
    vm: &vm::Options,
    jobs: usize,
) -> anyhow::Result<()> {
    if kernels.contains(&Kernel::Host) {
        host(summary, bins, filters)?;
    }
    let vms: Vec<Kernel> = kernels.iter().copied().filter(|k| *k != Kernel::Host).collect();
    let jobs = jobs.clamp(1, vm::MAX_VMS);
    if jobs == 1 || vms.len() < 2 {
        for kernel in vms {
            in_vm(summary, kernel, bins, filters, vm, &mut Output::Live)?;
        }
        return Ok(());
    }
    // A queue of kernels that `jobs` threads take from; each records into
    // a summary of its own, merged in the matrix's order at the end.
    let queue = std::sync::Mutex::new(vms.iter().copied().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(vms.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue lock").first().copied();
                    let Some((i, kernel)) = next else { break };
                    queue.lock().expect("queue lock").retain(|(j, _)| *j != i);
                    let mut own = Summary::default();
                    let mut out = Output::Prefixed { label: kernel.label(), partial: String::new() };
                    let r = in_vm(&mut own, kernel, bins, filters, vm, &mut out);
                    results.lock().expect("results lock").push((i, own, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|(i, _, _)| *i);
    for (_, own, r) in results {
        summary.merge(own);
        r?;
    }
    Ok(())
}

/// Where a VM's lines go: straight through, or (VMs side by side) whole
/// lines, each after its kernel's label.
enum Output {
    Live,
    Prefixed { label: String, partial: String },
}

impl Output {
    fn print(&mut self, text: &str) {
        match self {
            Output::Live => eprint!("{text}"),
            Output::Prefixed { label, partial } => {
                partial.push_str(text);
                while let Some(end) = partial.find('\n') {
                    let line: String = partial.drain(..=end).collect();
                    eprint!("[{label}] {line}");
                }
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::Prefixed { label, partial } = self
            && !partial.is_empty()
        {
            eprintln!("[{label}] {partial}");
        }
    }
}

/// The runner's options that make its output machine-readable.
const RUNNER_ARGS: [&str; 3] = ["--format", "json", "--results-json"];

/// What one kernel's run reported.
#[derive(Default)]
struct Tally {
    counts: Counts,
    failures: Vec<TestResult>,
    skips: Vec<TestResult>,
    /// The runner's own count (libtest's closing suite event).
    closing: Option<Counts>,
    /// The record of the test under way, until libtest's event for it.
    record: Option<TestResult>,
}

impl Tally {
    /// Take in one output line; return what a person should see of it
    /// (`test NAME ... ` when a test starts, its outcome and time when it
    /// ends, any other line as it is).
    fn line(&mut self, line: &str) -> String {
        let Some((before, parsed)) = parse_line(line) else { return format!("{line}\n") };
        let shown = match parsed {
            Line::Record(record) => {
                self.record = Some(record);
                String::new()
            }
            Line::Started(test) => format!("test {test} ... "),
            Line::Finished { test, outcome, message } => {
                let result = match self.record.take() {
                    Some(r) if r.test == test => r,
                    // No record: libtest itself ignored the test, or the
                    // runner died inside it. Counted from libtest's event.
                    _ => {
                        let detail =
                            if outcome == "skipped" { "ignored, no reason given".into() } else { message };
                        TestResult { test, outcome: outcome.to_owned(), detail, seconds: 0.0 }
                    }
                };
                self.counts.add(Counts::one(outcome));
                let shown = match outcome {
                    "passed" => format!("ok ({:.1}s)\n", result.seconds),
                    "skipped" => format!("skipped: {} ({:.1}s)\n", result.detail, result.seconds),
                    _ => {
                        let mut s = format!("FAILED ({:.1}s)\n", result.seconds);
                        for l in result.detail.lines() {
                            s.push_str(&format!("    {l}\n"));
                        }
                        s
                    }
                };
                match outcome {
                    "passed" => {}
                    "skipped" => self.skips.push(result),
                    _ => self.failures.push(result),
                }
                shown
            }
            Line::Closing(closing) => {
                self.closing = Some(closing);
                format!("{closing}\n")
            }
            Line::Other => String::new(),
        };
        format!("{before}{shown}")
    }

    fn record(self, summary: &mut Summary, section: &str, seconds: f64) {
        for f in &self.failures {
            summary.fail(section, &f.test, &f.detail);
        }
        for s in &self.skips {
            summary.skip(section, &s.test, &s.detail);
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
        .args(RUNNER_ARGS)
        .args(filters_for(Kernel::Host, filters))
        .env("CHAOS_BIN", &bins.chaos)
        .env("CHAOS_KERNEL", &label)
        .stdout(Stdio::piped())
        .spawn()
        .context("running the integration tests")?;
    let mut tally = Tally::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        eprint!("{}", tally.line(&line));
    }
    let status = child.wait()?;
    let failure = match tally.closing {
        None => Some(format!("exited with {status} before its closing count")),
        Some(closing) if closing != tally.counts => {
            Some(format!("results lost on the way: the runner counted {closing}, {} arrived", tally.counts))
        }
        _ if !status.success() && tally.counts.failed == 0 => Some(format!("exited with {status}")),
        _ => None,
    };
    if let Some(reason) = failure {
        tally.counts.failed += 1;
        summary.fail(&label, "chaos-integration", &reason);
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
    output: &mut Output,
) -> anyhow::Result<()> {
    let label = kernel.label();
    let idle =
        opts.idle_timeout.map(|i| format!(", or {} s without output", i.as_secs())).unwrap_or_default();
    output.print(&format!(
        "== integration tests on {label} (VM, QEMU TCG; killed after {} s{idle})\n",
        opts.timeout.as_secs()
    ));
    let t = Instant::now();
    let mut argv = vec![bins.integration.display().to_string()];
    argv.extend(RUNNER_ARGS.map(String::from));
    argv.extend(filters_for(kernel, filters));
    let script = vm::guest_script(&vm::guest_env(&bins.chaos, kernel), &argv);
    let mut tally = Tally::default();
    let run = vm::run(kernel, &script, |line| output.print(&tally.line(line)), opts);
    let out = match run {
        Ok(out) => out,
        Err(e) if vm::interrupted() => return Err(e),
        Err(e) => {
            // The VM could not even start: one failure naming why.
            output.print(&format!("!! {label}: {e:#}\n"));
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
        output.print(&format!("!! {label}: {reason}; the last console lines:\n"));
        for line in out.console_tail() {
            output.print(&format!("    | {line}\n"));
        }
        tally.counts.failed += 1;
        summary.fail(&label, "VM", reason);
    }
    let boot = out.boot_seconds.map(|b| format!(", boot {b:.0} s")).unwrap_or_default();
    let tier = match (filters.is_empty(), kernel.tier()) {
        (true, Tier::Reduced) => ", reduced tier",
        (true, Tier::KernelDependent) => ", kernel-dependent tier",
        _ => "",
    };
    summary.note(&label, &format!("kernel {}, VM{boot}{tier}", out.release));
    tally.record(summary, &label, t.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduced_tier_names_registered_tests() {
        // Each filter selects a registered test (a renamed test must not
        // silently drop out of the tier).
        let registry = include_str!("../../tests/src/tests/mod.rs");
        let names: Vec<&str> = registry
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| l.contains("::") && !l.contains(' ') && !l.starts_with("//"))
            .collect();
        for f in REDUCED.iter().chain(REDUCED_SKIPS).chain(HOST_COVERED).chain(ONE_VM.iter().map(|(f, _)| f))
        {
            assert!(names.iter().any(|n| n.contains(f)), "{f} selects no test in tests/src/tests/mod.rs");
        }
        // What 6.12 leaves to the host runs on the host.
        assert!(filters_for(Kernel::Host, &[]).is_empty());
        // What the host alone runs, no VM runs.
        for (f, _) in ONE_VM.iter().filter(|(_, k)| *k == Kernel::Host) {
            for k in [Kernel::Debian6_1, Kernel::Debian6_12] {
                assert!(filters_for(k, &[]).chunks(2).any(|p| p[1] == *f), "{f} runs on {k:?}");
            }
        }
        // The kill -9 tests of the experiment runner stay on every kernel.
        assert!(!names.iter().any(|n| n.contains("kill9") && HOST_COVERED.iter().any(|f| n.contains(f))));
        // The reduced tier stays short (see REDUCED).
        let length: usize = REDUCED.iter().map(|f| f.len() + 1).sum();
        assert!(length <= 352, "the reduced tier's filters take {length} bytes");
        // The whole doctor and safety suites (every ending of every family),
        // and less than the whole suite.
        assert!(REDUCED.contains(&"doctor::") && REDUCED.contains(&"safety::"));
        let selected = names.iter().filter(|n| REDUCED.iter().any(|f| n.contains(f))).count();
        assert!(selected < names.len(), "{selected} of {}", names.len());
        // Each container, pause, cpu-starve, memory-pressure, io-throttle
        // and agent test runs on exactly one VM kernel.
        for n in names.iter().filter(|n| {
            [
                "containers::",
                "pause::",
                "cpu_starve::",
                "memory_pressure::",
                "io_throttle::",
                "kube_controller::runner_and",
            ]
            .iter()
            .any(|p| n.starts_with(p))
        }) {
            let on = [Kernel::Debian6_1, Kernel::Debian6_12]
                .into_iter()
                .filter(|k| {
                    let skips = filters_for(*k, &[]);
                    !skips.chunks(2).any(|p| n.contains(p[1].as_str()))
                })
                .count();
            assert_eq!(on, 1, "{n} runs on {on} of 6.1 and 6.12");
        }
    }

    #[test]
    fn user_filters_override_the_tier() {
        let user = vec!["net_loss".to_owned()];
        assert_eq!(filters_for(Kernel::Debian5_10, &user), user);
        assert_eq!(filters_for(Kernel::Debian7_2, &[]).len(), REDUCED.len() + 2 * REDUCED_SKIPS.len());
        let given = |k: Kernel| ONE_VM.iter().filter(|(_, on)| *on == k).count();
        // A VM skips what another VM or the host alone runs.
        assert_eq!(
            filters_for(Kernel::Debian6_1, &[]).len(),
            2 * (given(Kernel::Debian6_12) + given(Kernel::Debian5_10) + given(Kernel::Host))
        );
        assert_eq!(
            filters_for(Kernel::Debian6_12, &[]).len(),
            2 * (HOST_COVERED.len()
                + given(Kernel::Debian6_1)
                + given(Kernel::Debian5_10)
                + given(Kernel::Host))
        );
        assert_eq!(filters_for(Kernel::Debian6_12, &user), user);
        assert!(filters_for(Kernel::Host, &[]).is_empty());
    }

    #[test]
    fn tallies_results_and_the_closing_line() {
        let mut t = Tally::default();
        let lines = [
            r#"{ "type": "suite", "event": "started", "test_count": 4 }"#,
            r#"{ "type": "test", "event": "started", "name": "a" }"#,
            r#"{"detail":"","outcome":"passed","seconds":1.25,"test":"a"}"#,
            r#"{ "type": "test", "name": "a", "event": "ok" }"#,
            r#"{ "type": "test", "event": "started", "name": "b" }"#,
            "progress 1.. 2..",
            r#"3.. {"detail":"boom\nwhy","outcome":"failed","seconds":2.0,"test":"b"}"#,
            r#"{ "type": "test", "name": "b", "event": "failed", "stdout": "Error: \"boom\"\n" }"#,
            r#"{ "type": "test", "event": "started", "name": "c" }"#,
            r#"{"detail":"needs x","outcome":"skipped","seconds":0.0,"test":"c"}"#,
            r#"{ "type": "test", "name": "c", "event": "ignored" }"#,
            r#"{ "type": "test", "event": "started", "name": "d" }"#,
            r#"{ "type": "test", "name": "d", "event": "ignored" }"#,
            r#"{ "type": "suite", "event": "failed", "passed": 1, "failed": 1, "ignored": 2, "measured": 0, "filtered_out": 0, "exec_time": 3.3 }"#,
        ];
        let shown: String = lines.iter().map(|l| t.line(l)).collect();
        assert_eq!(
            shown,
            "test a ... ok (1.2s)\n\
             test b ... progress 1.. 2..\n3.. FAILED (2.0s)\n    boom\n    why\n\
             test c ... skipped: needs x (0.0s)\n\
             test d ... skipped: ignored, no reason given (0.0s)\n\
             1 passed, 1 failed, 2 skipped\n"
        );
        assert_eq!(t.counts, Counts { passed: 1, failed: 1, skipped: 2 });
        assert_eq!(t.closing, Some(t.counts));
        assert_eq!(t.failures.len(), 1);
        assert_eq!(t.failures[0].detail, "boom\nwhy");
        assert_eq!(
            t.skips.iter().map(|s| s.detail.as_str()).collect::<Vec<_>>(),
            ["needs x", "ignored, no reason given"]
        );
    }
}
