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

pub fn matches_expected_capabilities(_ctx: &mut Ctx) -> anyhow::Result<()> {
    let kernel = std::env::var("CHAOS_KERNEL").unwrap_or_default();
    let Some(want) = expected(&kernel) else {
        return Err(Skip(format!("no expectations for CHAOS_KERNEL={kernel:?} (set by ./x test)")).into());
    };
    let out = runner::run(&["doctor", "--json"])?;
    anyhow::ensure!(out.code() == Some(0), "chaos doctor failed: {}", out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(out.events.first().map(|v| v.to_string()).as_deref().unwrap_or("{}"))?;
    let mut mismatches = Vec::new();
    for row in report["capabilities"].as_array().into_iter().flatten() {
        let name = row["name"].as_str().unwrap_or_default();
        let available = row["available"].as_bool().unwrap_or(false);
        match want.get(name) {
            Some(&w) if w != available => mismatches.push(format!(
                "{name}: doctor says {}, ENVIRONMENT.md says {} ({})",
                if available { "yes" } else { "no" },
                if w { "yes" } else { "no" },
                row["detail"].as_str().unwrap_or_default()
            )),
            Some(_) => {}
            None => mismatches.push(format!("{name}: not in the expectations table")),
        }
    }
    anyhow::ensure!(mismatches.is_empty(), "on {kernel}:\n{}", mismatches.join("\n"));
    Ok(())
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
