//! `chaos doctor` reports what ENVIRONMENT.md measured on each kernel, and
//! leaves nothing behind.

use std::collections::BTreeMap;

use crate::{
    fixtures::runner,
    harness::{Ctx, Skip},
};

/// Expected availability per kernel (../shared/ENVIRONMENT.md). Selected by
/// `CHAOS_KERNEL` (`host-6.18`, `debian-6.1`, `debian-6.12`), which `./x
/// test` sets for the host and for each VM.
fn expected(kernel: &str) -> Option<BTreeMap<&'static str, bool>> {
    let (yes, no): (&[&str], &[&str]) = match kernel {
        "host-6.18" => (
            &[
                "privileges",
                "cgroup v2",
                "bpffs",
                "tc (TCX link)",
                "tc (netlink filter)",
                "cgroup_skb",
                "cgroup_sock_addr",
                "tracepoint",
                "raw_tracepoint",
                "tp_btf",
                "uprobe",
            ],
            &[
                "kprobe",
                "kprobe override",
                "fentry",
                "fmod_ret",
                "BPF LSM",
                "bpf_probe_write_user",
                "fq qdisc",
                "netem qdisc",
            ],
        ),
        "debian-6.1" => (
            &[
                "privileges",
                "cgroup v2",
                "bpffs",
                "tc (netlink filter)",
                "cgroup_skb",
                "cgroup_sock_addr",
                "tracepoint",
                "raw_tracepoint",
                "tp_btf",
                "uprobe",
                "kprobe",
                "fentry",
                "BPF LSM",
                "bpf_probe_write_user",
                "fq qdisc",
                "netem qdisc",
            ],
            &["tc (TCX link)", "kprobe override", "fmod_ret"],
        ),
        "debian-6.12" => (
            &[
                "privileges",
                "cgroup v2",
                "bpffs",
                "tc (TCX link)",
                "tc (netlink filter)",
                "cgroup_skb",
                "cgroup_sock_addr",
                "tracepoint",
                "raw_tracepoint",
                "tp_btf",
                "uprobe",
                "kprobe",
                "fentry",
                "BPF LSM",
                "bpf_probe_write_user",
                "fq qdisc",
                "netem qdisc",
            ],
            &["kprobe override", "fmod_ret"],
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
    Ok(())
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
    let out = runner::run(&["doctor"])?;
    anyhow::ensure!(out.code() == Some(0), "chaos doctor failed: {}", out.stderr);
    let after = std::fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    anyhow::ensure!(before == after, "chaos doctor changed the mount table ({before} -> {after} mounts)");
    // Programs, cgroups and namespaces are checked by the harness after
    // every test.
    Ok(())
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
}
