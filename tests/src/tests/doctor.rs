//! `chaos doctor` reports what ENVIRONMENT.md measured on each kernel, and
//! leaves nothing behind.

use std::collections::BTreeMap;

use crate::{
    fixtures::runner,
    harness::{Ctx, Skip},
};

/// What every Debian kernel of the matrix (5.10 to 7.2) has.
const DEBIAN: &[&str] = &[
    "privileges",
    "cgroup v2",
    "cgroup v2 cpu controller",
    "cgroup v2 memory controller",
    "cgroup v2 io controller",
    "bpffs",
    "tc (netlink filter)",
    "cgroup_skb",
    "cgroup_sock_addr",
    "sk_lookup",
    "sk_msg and sock_ops",
    "sock_destroy (inet_diag)",
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "uprobe",
    "kprobe",
    "fentry",
    "fmod_ret",
    "bpf_probe_write_user",
    "fq qdisc",
    "netem qdisc",
];

/// Expected availability per kernel (../shared/ENVIRONMENT.md). Selected by
/// `CHAOS_KERNEL` (`host-6.18`, `debian-5.10`, `debian-6.1`, `debian-6.12`, `debian-7.2`), which `./x
/// test` sets for the host and for each VM.
fn expected(kernel: &str) -> Option<BTreeMap<&'static str, bool>> {
    let (yes, no): (Vec<&str>, &[&str]) = match kernel {
        // This project's host: TCX and the ancestor helper, but lockdown
        // (no bpf_probe_write_user), no kprobes or trampolines, no fq or
        // netem; the rest of the Debian common set.
        "host-6.18" => {
            const NO: &[&str] = &[
                // A hybrid layout: the cpu, memory and io (blkio)
                // controllers are on v1 hierarchies.
                "cgroup v2 cpu controller",
                "cgroup v2 memory controller",
                "cgroup v2 io controller",
                "kprobe",
                "kprobe override",
                "fentry",
                "fmod_ret",
                "fmod_ret on system calls",
                "BPF LSM",
                "bpf_probe_write_user",
                "fq qdisc",
                "netem qdisc",
                "ancestor cgroup (task read)",
            ];
            let common = DEBIAN.iter().copied().filter(|c| !NO.contains(c));
            (
                common
                    .chain([
                        "tc (TCX link)",
                        "ancestor cgroup (tracing)",
                        "bpf_loop",
                        "bpf_set_retval (sock_addr)",
                        "ifb ingress queue",
                    ])
                    .collect(),
                NO,
            )
        }
        // Debian 11: the BPF LSM is built in but not in the default `lsm=`
        // list (CONFIG_LSM); no TCX (6.6); tracing programs may not call
        // bpf_get_current_ancestor_cgroup_id (5.14), but may read the
        // task's cgroup (`cgroup.ancestor_ids`, before 6.0); no bpf_loop
        // (5.17). System calls are not on the error-injection list before
        // 7.2 (Debian's configs: no CONFIG_FUNCTION_ERROR_INJECTION), so no
        // program may answer time(2) there.
        "debian-5.10" => (
            [DEBIAN, &["ancestor cgroup (task read)"]].concat(),
            &[
                "tc (TCX link)",
                "kprobe override",
                "BPF LSM",
                "bpf_loop",
                "ancestor cgroup (tracing)",
                "fmod_ret on system calls",
                "bpf_set_retval (sock_addr)",
                "ifb ingress queue",
            ],
        ),
        // From 6.0 on, `struct cgroup` has `ancestors[]`, not the ids the
        // task read needs: the helper serves.
        "debian-6.1" => (
            [DEBIAN, &["BPF LSM", "ancestor cgroup (tracing)", "bpf_loop", "bpf_set_retval (sock_addr)"]]
                .concat(),
            &[
                "tc (TCX link)",
                "kprobe override",
                "fmod_ret on system calls",
                "ancestor cgroup (task read)",
                "ifb ingress queue",
            ],
        ),
        "debian-6.12" => (
            [
                DEBIAN,
                &[
                    "BPF LSM",
                    "tc (TCX link)",
                    "ancestor cgroup (tracing)",
                    "bpf_loop",
                    "bpf_set_retval (sock_addr)",
                    "ifb ingress queue",
                ],
            ]
            .concat(),
            &["kprobe override", "fmod_ret on system calls", "ancestor cgroup (task read)"],
        ),
        "debian-7.2" => (
            [
                DEBIAN,
                &[
                    "BPF LSM",
                    "tc (TCX link)",
                    "ancestor cgroup (tracing)",
                    "bpf_loop",
                    "fmod_ret on system calls",
                    "bpf_set_retval (sock_addr)",
                    "ifb ingress queue",
                ],
            ]
            .concat(),
            &["kprobe override", "ancestor cgroup (task read)"],
        ),
        _ => return None,
    };
    Some(yes.iter().map(|n| (*n, true)).chain(no.iter().map(|n| (*n, false))).collect())
}

/// Every row of the kernel's expectations is in doctor's report with the
/// expected answer, and doctor reports nothing the table does not know. A
/// kernel without a table fails (a new kernel in the matrix needs one):
/// a capability that disappears must never turn the tests that need it into
/// quiet skips.
pub fn matches_expected_capabilities(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let Ok(kernel) = std::env::var("CHAOS_KERNEL") else {
        return Err(
            Skip("CHAOS_KERNEL is not set: run through ./x test, which names each kernel".into()).into()
        );
    };
    let want = expected(&kernel).ok_or_else(|| {
        anyhow::anyhow!(
            "no capability expectations for kernel {kernel:?}: add its row to tests/src/tests/doctor.rs \
             (measured, as ../shared/ENVIRONMENT.md does)"
        )
    })?;
    let out = runner::run(&["doctor", "--json"])?;
    anyhow::ensure!(out.code() == Some(0), "chaos doctor failed: {}", out.stderr);
    let report = out.events.first().ok_or_else(|| anyhow::anyhow!("chaos doctor --json printed no JSON"))?;
    let rows = report["capabilities"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no `capabilities` array in doctor's report: {report}"))?;
    anyhow::ensure!(
        mismatches(&want, rows).is_empty(),
        "on {kernel}:\n{}",
        mismatches(&want, rows).join("\n")
    );
    // The capability set recorded for this kernel, which the planner's unit
    // tests plan from, is still what doctor reports here.
    let recorded = recorded(&kernel).ok_or_else(|| {
        anyhow::anyhow!(
            "no recorded capability set for kernel {kernel:?}: record it with `chaos doctor --json > \
             chaos-user/tests/capabilities/{kernel}.json` on that kernel"
        )
    })?;
    let stale = stale_rows(recorded, rows)?;
    anyhow::ensure!(
        stale.is_empty(),
        "chaos-user/tests/capabilities/{kernel}.json is stale on {kernel} (record it again with \
         `chaos doctor --json`):\n{}",
        stale.join("\n")
    );
    Ok(())
}

/// The capability sets the planner's unit tests use (chaos-user/src/plan/tests.rs).
fn recorded(kernel: &str) -> Option<&'static str> {
    Some(match kernel {
        "host-6.18" => include_str!("../../../chaos-user/tests/capabilities/host-6.18.json"),
        "debian-6.1" => include_str!("../../../chaos-user/tests/capabilities/debian-6.1.json"),
        "debian-6.12" => include_str!("../../../chaos-user/tests/capabilities/debian-6.12.json"),
        "debian-5.10" => include_str!("../../../chaos-user/tests/capabilities/debian-5.10.json"),
        "debian-7.2" => include_str!("../../../chaos-user/tests/capabilities/debian-7.2.json"),
        _ => return None,
    })
}

/// Where a recorded set and doctor's rows disagree: a capability with
/// another answer, one only one side has, one not probed.
fn stale_rows(recorded: &str, rows: &[serde_json::Value]) -> anyhow::Result<Vec<String>> {
    let file: serde_json::Value = serde_json::from_str(recorded)?;
    let answers = |rows: &[serde_json::Value]| -> BTreeMap<String, (bool, bool)> {
        rows.iter()
            .map(|r| {
                let id = r["capability"].as_str().unwrap_or_default().to_owned();
                (id, (r["available"] == true, r["probed"] != false))
            })
            .collect()
    };
    let then = answers(file["capabilities"].as_array().map(Vec::as_slice).unwrap_or_default());
    let now = answers(rows);
    let mut out = Vec::new();
    for id in then.keys().chain(now.keys()).collect::<std::collections::BTreeSet<_>>() {
        match (then.get(id), now.get(id)) {
            (Some(t), Some(n)) if t == n && t.1 => {}
            (t, n) => out.push(format!("{id}: recorded (available, probed) {t:?}, doctor now {n:?}")),
        }
    }
    Ok(out)
}

/// What differs between the expectations and doctor's rows: a different
/// answer, a row doctor did not report, a row the table does not know.
fn mismatches(want: &BTreeMap<&str, bool>, rows: &[serde_json::Value]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for row in rows {
        let name = row["name"].as_str().unwrap_or_default();
        seen.insert(name.to_owned());
        let Some(available) = row["available"].as_bool() else {
            out.push(format!("{name}: no `available` answer in {row}"));
            continue;
        };
        match want.get(name) {
            Some(&w) if w != available => out.push(format!(
                "{name}: doctor says {}, ENVIRONMENT.md says {} ({})",
                if available { "yes" } else { "no" },
                if w { "yes" } else { "no" },
                row["detail"].as_str().unwrap_or_default()
            )),
            Some(_) => {}
            None => out.push(format!("{name}: not in the expectations table")),
        }
    }
    for name in want.keys().filter(|n| !seen.contains(**n)) {
        out.push(format!("{name}: expected, but doctor did not report it"));
    }
    out
}

pub fn leaves_nothing_behind(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let before = std::fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    let watch = MountWatch::start()?;
    let out = runner::run(&["doctor"])?;
    let seen = watch.stop();
    anyhow::ensure!(out.code() == Some(0), "chaos doctor failed: {}", out.stderr);
    let after = std::fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    anyhow::ensure!(before == after, "chaos doctor changed the mount table ({before} -> {after} mounts)");
    // Not even for a moment: a mount the host sees outlives a chaos killed
    // mid-probe, and one on a path in /tmp mounts over what another user
    // made there. doctor mounts in a private mount namespace.
    let ours: Vec<&String> = seen
        .iter()
        .filter(|l| {
            let fstype = l.split_once(" - ").and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("");
            ["bpf", "securityfs", "tracefs"].contains(&fstype) || l.contains("chaos-")
        })
        .collect();
    anyhow::ensure!(ours.is_empty(), "while chaos doctor ran, the host's mount table showed:\n{ours:#?}");
    // Programs, cgroups and namespaces are checked by the harness after
    // every test.
    Ok(())
}

/// Mounts that appear in this process's mount namespace while it runs:
/// every change wakes poll(2) on /proc/self/mountinfo with POLLPRI
/// (`mounts_poll()` in fs/proc_namespace.c), and the table is read then.
struct MountWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl MountWatch {
    fn start() -> anyhow::Result<Self> {
        use std::{
            io::{Read as _, Seek as _},
            os::fd::AsRawFd as _,
            sync::atomic::Ordering,
        };
        let mut file = std::fs::File::open("/proc/self/mountinfo")?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let baseline: std::collections::BTreeSet<String> = text.lines().map(str::to_owned).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
                // SAFETY: one pollfd we own.
                unsafe { libc::poll(&mut pfd, 1, 20) };
                let mut text = String::new();
                if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
                    for l in text.lines().filter(|l| !baseline.contains(*l)) {
                        if !seen.iter().any(|s: &String| s == l) {
                            seen.push(l.to_owned());
                        }
                    }
                }
            }
            seen
        });
        Ok(Self { stop, thread })
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// A leftover `chaos-probe-<pid>` cgroup (of a doctor that was killed, or
/// planted) at the very name a probe would use must not make a capability
/// look missing, which would turn the tests that need it into skips.
/// chaos's pid is steered into a range of planted names through
/// /proc/sys/kernel/ns_last_pid (the next pid is that plus one, when free).
pub fn leftover_probe_cgroups_change_nothing(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let available = |out: &runner::Ended| -> anyhow::Result<BTreeMap<String, bool>> {
        anyhow::ensure!(out.code() == Some(0), "chaos doctor failed: {}", out.stderr);
        let report =
            out.events.first().ok_or_else(|| anyhow::anyhow!("chaos doctor --json printed nothing"))?;
        Ok(report["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r["name"].as_str().unwrap_or_default().to_owned(), r["available"] == true))
            .collect())
    };
    let baseline = available(&runner::run(&["doctor", "--json"])?)?;
    let mount = chaos::targets::CgroupFs::discover()?.mount;
    let read_num = |f: &str| -> anyhow::Result<i32> { Ok(std::fs::read_to_string(f)?.trim().parse()?) };
    let pid_max = read_num("/proc/sys/kernel/pid_max")?;
    const SPAN: i32 = 64;
    let first = match read_num("/proc/sys/kernel/ns_last_pid")? + 500 {
        p if p + SPAN < pid_max => p,
        _ => 1000,
    };
    let planted = Planted(
        (first..first + SPAN)
            .map(|p| mount.join(format!("chaos-probe-{p}")))
            .filter(|d| std::fs::create_dir(d).is_ok())
            .collect(),
    );
    anyhow::ensure!(
        planted.0.len() == SPAN as usize,
        "could not plant {SPAN} cgroups at chaos-probe-{first}.."
    );
    let mut landed = None;
    for _ in 0..10 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (first - 1).to_string())?;
        let run = runner::ChaosRun::start(&["doctor", "--json"])?;
        let pid = run.pid;
        let out = run.wait(std::time::Duration::from_secs(120))?;
        if (first..first + SPAN).contains(&pid) {
            landed = Some((pid, out));
            break;
        }
    }
    let Some((pid, out)) = landed else {
        anyhow::bail!(
            "could not start chaos with a pid in {first}..{} (the machine forks too much)",
            first + SPAN
        );
    };
    let with_leftover = available(&out)?;
    let changed: Vec<String> = baseline
        .iter()
        .filter(|(name, yes)| with_leftover.get(*name) != Some(yes))
        .map(|(name, yes)| {
            format!("{name}: {yes} before, {:?} with chaos-probe-{pid} left over", with_leftover.get(name))
        })
        .collect();
    anyhow::ensure!(
        changed.is_empty(),
        "a leftover cgroup changed chaos doctor's result:\n{}",
        changed.join("\n")
    );
    let gone: Vec<_> = planted.0.iter().filter(|d| !d.exists()).collect();
    anyhow::ensure!(gone.is_empty(), "chaos removed cgroups it did not create: {gone:?}");
    Ok(())
}

/// A scratch cgroup of a chaos killed mid-probe (`chaos-probe-<pid>-<16
/// hex>`, its pid dead) is in no state file: `chaos recover` removes it and
/// says so. One named for a live process, and names of another form, are
/// left alone.
pub fn recover_removes_a_killed_probes_cgroup(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let mount = chaos::targets::CgroupFs::discover()?.mount;
    // A pid that is certainly dead: a child we reaped.
    let mut child = std::process::Command::new("true").spawn()?;
    child.wait()?;
    let dead = child.id();
    let live = std::process::id();
    let names = [
        format!("chaos-probe-{dead}-0123456789abcdef"),
        format!("chaos-probe-{live}-0123456789abcdef"),
        format!("chaos-probe-{dead}"),
        format!("chaos-probe-{dead}-not-hex-digits!!"),
    ];
    let planted = Planted(names.iter().map(|n| mount.join(n)).collect());
    for d in &planted.0 {
        std::fs::create_dir(d)?;
    }
    let out = runner::recover()?;
    anyhow::ensure!(out.code() == Some(0), "chaos recover failed: {}", out.stderr);
    let left: Vec<bool> = planted.0.iter().map(|d| d.exists()).collect();
    anyhow::ensure!(
        left == [false, true, true, true],
        "after chaos recover, which of {names:?} exist: {left:?} (expected only the first removed)"
    );
    let said = out.events.iter().any(|e| {
        e["outcome"] == "removed"
            && e["object"].as_str().is_some_and(|o| o.ends_with(&names[0]))
            && e["owner_pid"] == dead
    });
    anyhow::ensure!(said, "chaos recover did not report the removal: {:?}", out.events);
    Ok(())
}

/// The cgroups a test planted, removed on drop (also on failure).
struct Planted(Vec<std::path::PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_extra_and_wrong_rows_are_mismatches() {
        let want = expected("debian-6.12").unwrap();
        let rows: Vec<serde_json::Value> =
            want.iter().map(|(n, a)| serde_json::json!({"name": n, "available": a})).collect();
        assert!(mismatches(&want, &rows).is_empty());
        // A row absent from doctor's report.
        assert_eq!(mismatches(&want, &rows[1..]).len(), 1);
        // A row with no answer, a wrong answer, an unknown row.
        let mut bad = rows.clone();
        bad[0] = serde_json::json!({"name": bad[0]["name"]});
        bad[1]["available"] = serde_json::json!(!bad[1]["available"].as_bool().unwrap());
        bad.push(serde_json::json!({"name": "warp drive", "available": true}));
        assert_eq!(mismatches(&want, &bad).len(), 3, "{:?}", mismatches(&want, &bad));
        assert!(expected("host-9.99").is_none());
    }

    #[test]
    fn stale_recorded_sets_are_found() {
        let file = recorded("debian-6.12").unwrap();
        let rows: Vec<serde_json::Value> =
            serde_json::from_str::<serde_json::Value>(file).unwrap()["capabilities"]
                .as_array()
                .unwrap()
                .clone();
        assert!(stale_rows(file, &rows).unwrap().is_empty());
        let mut changed = rows.clone();
        changed[3]["available"] = serde_json::json!(!changed[3]["available"].as_bool().unwrap());
        assert_eq!(stale_rows(file, &changed).unwrap().len(), 1);
        assert_eq!(stale_rows(file, &rows[1..]).unwrap().len(), 1);
        let mut unprobed = rows.clone();
        unprobed[5]["probed"] = serde_json::json!(false);
        assert_eq!(stale_rows(file, &unprobed).unwrap().len(), 1);
    }
}
