//! The planner against the capability sets recorded on every kernel of the
//! test matrix (`chaos doctor --json` there; `tests/capabilities/*.json`,
//! kept current by the integration test `doctor::matches_expected_capabilities`):
//! which mechanism each fault kind gets on each kernel, and which are
//! refused with which message.

use super::*;
use crate::capabilities::{CapabilitySet, Finding, Findings, REQUIREMENTS};

const HOST_6_18: &str = include_str!("../../tests/capabilities/host-6.18.json");
const DEBIAN_6_1: &str = include_str!("../../tests/capabilities/debian-6.1.json");
const DEBIAN_6_12: &str = include_str!("../../tests/capabilities/debian-6.12.json");
const DEBIAN_5_10: &str = include_str!("../../tests/capabilities/debian-5.10.json");
const DEBIAN_7_2: &str = include_str!("../../tests/capabilities/debian-7.2.json");
/// Every recorded set, by kernel.
const RECORDED: [(&str, &str); 5] = [
    ("host-6.18", HOST_6_18),
    ("debian-5.10", DEBIAN_5_10),
    ("debian-6.1", DEBIAN_6_1),
    ("debian-6.12", DEBIAN_6_12),
    ("debian-7.2", DEBIAN_7_2),
];

/// Distribution kernels the matrix cannot boot: sets derived from their
/// published configs (docs/distributions.md says from which), by kernel.
const DISTROS: [(&str, &str); 6] = [
    ("Ubuntu 22.04", include_str!("../../tests/capabilities/distros/ubuntu-22.04.json")),
    ("Ubuntu 24.04", include_str!("../../tests/capabilities/distros/ubuntu-24.04.json")),
    ("RHEL 9", include_str!("../../tests/capabilities/distros/rhel-9.json")),
    ("Amazon Linux 2023", include_str!("../../tests/capabilities/distros/al2023.json")),
    ("Bottlerocket", include_str!("../../tests/capabilities/distros/bottlerocket.json")),
    ("COS", include_str!("../../tests/capabilities/distros/cos.json")),
];

fn distro(name: &str) -> CapabilitySet {
    set(DISTROS.iter().find(|(n, _)| *n == name).expect("a distribution").1)
}

fn set(json: &str) -> CapabilitySet {
    CapabilitySet::from_json(json).expect("a recorded capability set")
}

fn demand(kind: &str) -> Demand {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, d)| *d).expect("a fault kind")
}

fn planned(caps: &CapabilitySet, kind: &str, prefs: &Preferences) -> Result<Mechanism> {
    plan_demand(kind, demand(kind), caps, prefs)
}

fn ok(caps: &CapabilitySet, kind: &str) -> Mechanism {
    planned(caps, kind, &Preferences::default()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn refused(caps: &CapabilitySet, kind: &str, prefs: &Preferences) -> String {
    match planned(caps, kind, prefs) {
        Ok(m) => panic!("{kind} planned as {m:?}, expected a refusal"),
        Err(e) => {
            assert_eq!(e.exit_code(), crate::error::ExitCode::Invalid, "{e}");
            e.to_string()
        }
    }
}

fn net(egress: Option<EgressMode>, ingress: bool, fq: bool) -> Mechanism {
    Mechanism::Net(NetMechanism { egress, ingress_cgroup_skb: ingress, receive: false, fq })
}

fn layers(m: &Mechanism) -> Vec<SafetyLayer> {
    m.safety().iter().map(|s| s.layer).collect()
}

use SafetyLayer::*;

#[test]
fn every_fixture_answers_every_capability() {
    for (name, json) in RECORDED.into_iter().chain(DISTROS) {
        let caps = set(json);
        assert!(caps.unknown().is_empty(), "{name}: unknown {:?}", caps.unknown());
        assert_eq!(caps.capabilities.len(), REQUIREMENTS.len(), "{name}");
        assert!(!caps.kernel.is_empty(), "{name}");
    }
}

#[test]
fn host_6_18_tcx_and_no_fq_lsm_or_write_user() {
    let caps = set(HOST_6_18);
    let tcx = Some(EgressMode::Tcx);
    assert_eq!(ok(&caps, "net-loss"), net(tcx, true, false));
    assert_eq!(ok(&caps, "net-duplicate"), net(tcx, false, false));
    assert_eq!(ok(&caps, "net-corrupt"), net(tcx, false, false));
    assert_eq!(layers(&ok(&caps, "net-loss")), [ControllerStop, KernelDeadline, LinksDieWithProcess]);
    for kind in ["net-delay", "net-rate", "net-reorder"] {
        let e = refused(&caps, kind, &Preferences::default());
        assert!(
            e.starts_with(&format!(
                "{kind} is unavailable on this kernel (departure times need the fq qdisc): fq qdisc: "
            )) && e.contains("sch_fq"),
            "{e}"
        );
    }
    let e = refused(&caps, "io-error", &Preferences::default());
    assert!(
        e.starts_with("io-error is unavailable because no mechanism works on this kernel: BPF LSM: "),
        "{e}"
    );
    assert!(e.contains("kprobe + bpf_override_return: "), "{e}");
    let e = refused(&caps, "clock-skew", &Preferences::default());
    if cfg!(target_arch = "x86_64") {
        assert!(e.starts_with("clock-skew: kernel lockdown=integrity forbids bpf_probe_write_user"), "{e}");
    }
    // Forced netlink: the kernel has it too.
    let netlink = Preferences { egress: Some(EgressMode::Netlink), ..Default::default() };
    assert_eq!(planned(&caps, "net-loss", &netlink).unwrap(), net(Some(EgressMode::Netlink), true, false));
}

#[test]
fn debian_6_1_netlink_fq_lsm_and_fexit() {
    let caps = set(DEBIAN_6_1);
    let netlink = Some(EgressMode::Netlink);
    assert_eq!(ok(&caps, "net-loss"), net(netlink, true, false));
    for kind in ["net-delay", "net-rate", "net-reorder"] {
        let m = ok(&caps, kind);
        assert_eq!(m, net(netlink, false, true), "{kind}");
        let safety = m.safety();
        // The tag link dies with the process; the filter and fq need
        // recover.
        assert_eq!(
            layers(&m),
            [ControllerStop, KernelDeadline, LinksDieWithProcess, RecoverRecord],
            "{kind}"
        );
        let covers = &safety[3].covers;
        assert!(covers.contains("netlink tc egress filter") && covers.contains("fq qdisc"), "{covers}");
    }
    assert_eq!(ok(&caps, "net-duplicate"), net(netlink, false, false));
    let io = ok(&caps, "io-error");
    assert_eq!(
        io,
        Mechanism::Io(IoMechanism {
            via: IoVia::BpfLsm,
            file_open: true,
            file_permission: true,
            walk: IoWalk::BpfLoop,
            ancestry: Ancestry::Helper
        })
    );
    assert_eq!(layers(&io), [ControllerStop, KernelDeadline, LinksDieWithProcess]);
    // Opens only: no file_permission program.
    let opens =
        plan_demand("io", Demand::Io { read_write: false, windowed: false }, &caps, &Preferences::default())
            .unwrap();
    assert_eq!(
        opens,
        Mechanism::Io(IoMechanism {
            via: IoVia::BpfLsm,
            file_open: true,
            file_permission: false,
            walk: IoWalk::BpfLoop,
            ancestry: Ancestry::Helper
        })
    );
    if cfg!(target_arch = "x86_64") {
        let clock = ok(&caps, "clock-skew");
        assert_eq!(
            clock,
            Mechanism::Clock(ClockMechanism {
                syscalls: SyscallHook::Fexit,
                exec_detach_vdso: true,
                libc_uprobes: true,
                time_fmod_ret: false,
                ancestry: Ancestry::Helper
            })
        );
        assert_eq!(layers(&clock), [ControllerStop, KernelDeadline, LinksDieWithProcess]);
        let tp = Preferences { clock_syscalls: Some(SyscallHook::Tracepoint), ..Default::default() };
        assert!(matches!(
            planned(&caps, "clock-skew", &tp).unwrap(),
            Mechanism::Clock(ClockMechanism { syscalls: SyscallHook::Tracepoint, .. })
        ));
    }
    // No TCX before 6.6: forcing it is refused, naming the probe's reason.
    let tcx = Preferences { egress: Some(EgressMode::Tcx), ..Default::default() };
    let e = refused(&caps, "net-loss", &tcx);
    assert!(e.starts_with("net-loss is unavailable on this kernel (egress): tc (TCX link): "), "{e}");
}

#[test]
fn debian_6_12_tcx_fq_lsm_and_fexit() {
    let caps = set(DEBIAN_6_12);
    let tcx = Some(EgressMode::Tcx);
    assert_eq!(ok(&caps, "net-loss"), net(tcx, true, false));
    for kind in ["net-delay", "net-rate", "net-reorder"] {
        let m = ok(&caps, kind);
        assert_eq!(m, net(tcx, false, true), "{kind}");
        assert_eq!(
            layers(&m),
            [ControllerStop, KernelDeadline, LinksDieWithProcess, RecoverRecord],
            "{kind}"
        );
        assert_eq!(m.safety()[3].covers, "the fq qdisc installed on each egress device");
    }
    assert!(matches!(ok(&caps, "io-error"), Mechanism::Io(IoMechanism { file_permission: true, .. })));
    if cfg!(target_arch = "x86_64") {
        assert!(matches!(
            ok(&caps, "clock-skew"),
            Mechanism::Clock(ClockMechanism { syscalls: SyscallHook::Fexit, libc_uprobes: true, .. })
        ));
    }
}

/// The distributions' kernels, from their published configs: Ubuntu
/// builds the BPF LSM but leaves it out of its LSM list, so io-error goes
/// through fmod_ret on 24.04 and is refused on 22.04 (5.15: no bpf_loop
/// for either mechanism), naming each; the others list `bpf`.
/// Bottlerocket's default lockdown forbids bpf_probe_write_user, which
/// clock-skew needs.
#[test]
fn distributions_plan_as_their_configs_allow() {
    let (netlink, tcx) = (Some(EgressMode::Netlink), Some(EgressMode::Tcx));
    for (name, egress) in [("Ubuntu 22.04", netlink), ("Ubuntu 24.04", tcx)] {
        let caps = distro(name);
        assert_eq!(ok(&caps, "net-loss"), net(egress, true, false), "{name}");
        assert_eq!(ok(&caps, "net-delay"), net(egress, false, true), "{name}");
        assert!(caps.has(Capability::KprobeOverride), "{name}");
    }
    // 5.15: no BPF LSM by default, no bpf_loop: fmod_ret with the bounded
    // walk, the ancestor helper (5.14).
    assert_eq!(
        ok(&distro("Ubuntu 22.04"), "io-error"),
        Mechanism::Io(IoMechanism {
            via: IoVia::FmodRet,
            file_open: true,
            file_permission: true,
            walk: IoWalk::Bounded,
            ancestry: Ancestry::Helper
        })
    );
    assert!(
        matches!(
            ok(&distro("Ubuntu 24.04"), "io-error"),
            Mechanism::Io(IoMechanism { via: IoVia::FmodRet, .. })
        ),
        "Ubuntu 24.04"
    );
    for name in ["RHEL 9", "Amazon Linux 2023", "Bottlerocket", "COS"] {
        let caps = distro(name);
        assert_eq!(ok(&caps, "net-loss"), net(netlink, true, false), "{name}");
        assert_eq!(ok(&caps, "net-rate"), net(netlink, false, true), "{name}");
        assert!(
            matches!(ok(&caps, "io-error"), Mechanism::Io(IoMechanism { via: IoVia::BpfLsm, .. })),
            "{name}"
        );
    }
    if cfg!(target_arch = "x86_64") {
        for name in ["Ubuntu 22.04", "Ubuntu 24.04", "RHEL 9", "Amazon Linux 2023", "COS"] {
            assert!(
                matches!(
                    ok(&distro(name), "clock-skew"),
                    Mechanism::Clock(ClockMechanism { syscalls: SyscallHook::Fexit, libc_uprobes: true, .. })
                ),
                "{name}"
            );
        }
        let e = refused(&distro("Bottlerocket"), "clock-skew", &Preferences::default());
        assert!(e.starts_with("clock-skew"), "{e}");
    }
}

/// Debian 11 as installed: no TCX; the BPF LSM built but not active, and no
/// bpf_loop, so io-error goes through fmod_ret with the bounded path walk;
/// tracing programs cannot call bpf_get_current_ancestor_cgroup_id, so
/// io-error and clock-skew read the task's ancestor cgroups.
#[test]
fn debian_5_10_netlink_fq_fexit_fmod_ret_and_task_reads() {
    let caps = set(DEBIAN_5_10);
    let netlink = Some(EgressMode::Netlink);
    assert_eq!(ok(&caps, "net-loss"), net(netlink, true, false));
    for kind in ["net-delay", "net-rate", "net-reorder"] {
        assert_eq!(ok(&caps, kind), net(netlink, false, true), "{kind}");
    }
    assert_eq!(ok(&caps, "net-corrupt"), net(netlink, false, false));
    assert_eq!(
        ok(&caps, "io-error"),
        Mechanism::Io(IoMechanism {
            via: IoVia::FmodRet,
            file_open: true,
            file_permission: true,
            walk: IoWalk::Bounded,
            ancestry: Ancestry::TaskRead
        })
    );
    // Call windows need atomic fetch-and-add, which the bounded programs
    // are built without: refused, saying which flags and why.
    let windowed = Demand::Io { read_write: true, windowed: true };
    let e = plan_demand("io-error", windowed, &caps, &Preferences::default()).unwrap_err().to_string();
    assert!(e.contains("--after/--first are not available on this kernel") && e.contains("bpf_loop"), "{e}");
    // The BPF LSM cannot be forced where it is not active.
    let lsm = Preferences { io_via: Some(IoVia::BpfLsm), ..Default::default() };
    let e = refused(&caps, "io-error", &lsm);
    assert!(e.contains("`bpf` is not an active LSM"), "{e}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            ok(&caps, "clock-skew"),
            Mechanism::Clock(ClockMechanism {
                syscalls: SyscallHook::Fexit,
                exec_detach_vdso: true,
                libc_uprobes: true,
                time_fmod_ret: false,
                ancestry: Ancestry::TaskRead
            })
        );
    }
    // Without the task reads too, nothing matches descendants: refused,
    // naming both.
    let mut without = caps.clone();
    without.capabilities.iter_mut().filter(|f| f.capability == Capability::CgroupAncestorRead).for_each(
        |f| {
            f.available = false;
            f.detail = "no ancestor_ids".into();
        },
    );
    for kind in ["io-error", "clock-skew"] {
        if kind == "clock-skew" && !cfg!(target_arch = "x86_64") {
            continue;
        }
        let e = refused(&without, kind, &Preferences::default());
        assert!(
            e.contains("(matching the target cgroup's descendants): ancestor cgroup (tracing): ")
                && e.contains("unknown func bpf_get_current_ancestor_cgroup_id")
                && e.contains("ancestor cgroup (task read): no ancestor_ids"),
            "{kind}: {e}"
        );
    }
}

/// sid's 7.2 has what 6.12 has, and lets a program answer a system call:
/// the same plans, but clock-skew answers time(2) by fmod_ret there.
#[test]
fn debian_7_2_plans_as_6_12_with_time_answered() {
    let (new, old) = (set(DEBIAN_7_2), set(DEBIAN_6_12));
    for (kind, _) in KINDS {
        if *kind == "clock-skew" {
            continue;
        }
        assert_eq!(ok(&new, kind), ok(&old, kind), "{kind}");
    }
    if cfg!(target_arch = "x86_64") {
        let Mechanism::Clock(on_6_12) = ok(&old, "clock-skew") else { panic!("not clock") };
        assert!(!on_6_12.time_fmod_ret);
        assert_eq!(
            ok(&new, "clock-skew"),
            Mechanism::Clock(ClockMechanism { time_fmod_ret: true, ..on_6_12 })
        );
        // Never with the tracepoints: their exit would shift what the
        // answer stored a second time.
        let tp = Preferences { clock_syscalls: Some(SyscallHook::Tracepoint), ..Default::default() };
        assert!(matches!(
            planned(&new, "clock-skew", &tp).unwrap(),
            Mechanism::Clock(ClockMechanism { syscalls: SyscallHook::Tracepoint, time_fmod_ret: false, .. })
        ));
    }
}

/// Unprivileged, only the privileges and cgroup v2 are probed: nothing
/// that needs another capability is planned, and each refusal names
/// --capabilities.
#[test]
fn unknown_capabilities_are_never_taken_for_present() {
    let caps = CapabilitySet {
        kernel: "x".into(),
        capabilities: vec![
            Finding {
                capability: Capability::Root,
                available: false,
                detail: "missing CAP_BPF".into(),
                probed: true,
            },
            Finding {
                capability: Capability::CgroupV2,
                available: true,
                detail: "mounted".into(),
                probed: true,
            },
        ],
    };
    for (kind, _) in KINDS {
        if *kind == "clock-skew" && !cfg!(target_arch = "x86_64") {
            continue;
        }
        // No BPF: a cgroup v2 file, planned where cgroup v2 is known.
        if *kind == "pause" {
            assert_eq!(ok(&caps, kind), Mechanism::Pause(PauseMechanism { via: PauseVia::CgroupFreeze }));
            continue;
        }
        if *kind == "kill" {
            assert_eq!(ok(&caps, kind), Mechanism::Kill(KillMechanism { via: KillVia::Cgroup }));
            continue;
        }
        let e = refused(&caps, kind, &Preferences::default());
        assert!(e.contains("cannot be planned") && e.contains("--capabilities FILE"), "{kind}: {e}");
    }
    // TCX unknown, netlink known: not planned as netlink, which the
    // machine might not use.
    let mut partial = set(DEBIAN_6_12);
    partial.capabilities.retain(|p| p.capability != Capability::Tcx);
    let e = refused(&partial, "net-loss", &Preferences::default());
    assert!(e.contains("tc (TCX link): unknown") && e.contains("--capabilities"), "{e}");
    // Unknown uprobes: planned without them (less than the machine may do).
    if cfg!(target_arch = "x86_64") {
        let mut no_uprobe = set(DEBIAN_6_12);
        no_uprobe.capabilities.retain(|p| p.capability != Capability::Uprobe);
        assert!(matches!(
            ok(&no_uprobe, "clock-skew"),
            Mechanism::Clock(ClockMechanism { libc_uprobes: false, .. })
        ));
    }
}

/// `chaos doctor --json` is the serialized set: it reads back as the same
/// set, whatever else the report holds; what is not such a report is
/// refused with the reason.
#[test]
fn doctor_json_round_trips() {
    for (_, json) in RECORDED {
        let caps = set(json);
        let again = serde_json::to_string(&caps).unwrap();
        assert_eq!(CapabilitySet::from_json(&again).unwrap(), caps);
        // Each row carries the table's words, as doctor prints them.
        let v: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(v["capabilities"][0]["name"], "privileges");
        assert!(v["capabilities"][0]["used_for"].is_string());
    }
    for bad in [
        "",
        "{}",
        "[]",
        r#"{"capabilities": [{"capability": "warp-drive", "available": true, "detail": ""}]}"#,
    ] {
        assert!(CapabilitySet::from_json(bad).is_err(), "{bad:?}");
    }
    let twice = r#"{"capabilities": [{"capability": "tcx", "available": true, "detail": ""},
                                      {"capability": "tcx", "available": false, "detail": ""}]}"#;
    assert!(CapabilitySet::from_json(twice).unwrap_err().contains("twice"));
}

/// The README's fault × kernel table, generated from the recorded sets
/// (each `chaos doctor --json` on that kernel; the integration test
/// `doctor::matches_expected_capabilities` fails when one is stale), never
/// written by hand. `CHAOS_BLESS=1 cargo test -p chaos-user
/// readme_fault_kernel_table` rewrites it.
#[test]
fn readme_fault_kernel_table_is_generated() {
    ensure_generated(
        "README.md",
        "fault × kernel",
        "chaos-user/tests/capabilities/*.json",
        fault_kernel_table(),
    );
}

/// The same for docs/distributions.md, from the sets derived from the
/// distributions' published configs.
#[test]
fn readme_fault_kernel_table_of_distributions() {
    ensure_generated(
        "docs/distributions.md",
        "fault × distribution",
        "chaos-user/tests/capabilities/distros/*.json",
        fault_distro_table(),
    );
}

/// `file` (from the repository's root) holds `generated` between its
/// markers; `CHAOS_BLESS=1` rewrites it.
fn ensure_generated(file: &str, what: &str, from: &str, generated: String) {
    let begin = format!(
        "<!-- {what}: generated from {from} by chaos-user/src/plan/tests.rs (CHAOS_BLESS=1 cargo test -p \
         chaos-user readme_fault_kernel_table) -->\n"
    );
    const END: &str = "<!-- end of the generated table -->";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(b), Some(e)) = (text.find(&begin), text.find(END)) else {
        panic!("{file} has no generated {what} table (markers {begin:?} … {END:?})")
    };
    let committed = &text[b + begin.len()..e];
    if std::env::var_os("CHAOS_BLESS").is_some() {
        let text = format!("{}{begin}{generated}{}", &text[..b], &text[e..]);
        std::fs::write(&path, text).unwrap();
        return;
    }
    assert_eq!(
        committed, generated,
        "{file}'s {what} table is not what the capability sets plan: regenerate it with \
         `CHAOS_BLESS=1 cargo test -p chaos-user readme_fault_kernel_table`"
    );
}

/// One row per fault kind, one column per kernel (oldest first, this
/// machine's last): the mechanism planned there, or the capabilities any
/// one of which would make the planner take it.
fn fault_kernel_table() -> String {
    let kernels: Vec<(String, CapabilitySet)> =
        ["debian-5.10", "debian-6.1", "debian-6.12", "debian-7.2", "host-6.18"]
            .into_iter()
            .map(|k| {
                let heading = match k.strip_prefix("debian-") {
                    Some(version) => format!("Debian {version}"),
                    None => format!("{} (this project's host: lockdown)", k.trim_start_matches("host-")),
                };
                (heading, set(RECORDED.iter().find(|(n, _)| *n == k).expect("recorded").1))
            })
            .collect();
    table(&kernels)
}

/// The same table for the distribution kernels, with each column's kernel.
fn fault_distro_table() -> String {
    let kernels: Vec<(String, CapabilitySet)> = DISTROS
        .into_iter()
        .map(|(name, json)| {
            let caps = set(json);
            (format!("{name} ({})", caps.kernel), caps)
        })
        .collect();
    table(&kernels)
}

fn table(kernels: &[(String, CapabilitySet)]) -> String {
    let mut out = String::from("| fault |");
    for (heading, _) in kernels {
        out.push_str(&format!(" {heading} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(kernels.len()));
    out.push('\n');
    for (kind, _) in KINDS {
        out.push_str(&format!("| {kind} |"));
        for (_, caps) in kernels {
            out.push_str(&format!(" {} |", cell(caps, kind)));
        }
        out.push('\n');
    }
    out
}

fn cell(caps: &CapabilitySet, kind: &str) -> String {
    let prefs = Preferences::default();
    match planned(caps, kind, &prefs) {
        Ok(Mechanism::Net(n)) => {
            let mut parts = vec![match n.egress {
                Some(EgressMode::Tcx) => "TCX",
                Some(EgressMode::Netlink) => "netlink tc",
                None => "",
            }];
            if n.ingress_cgroup_skb {
                parts.push("cgroup_skb");
            }
            if n.receive {
                parts.push("TCX ingress + ifb");
            }
            if n.fq {
                parts.push("fq");
            }
            parts.retain(|p| !p.is_empty());
            parts.join(" + ")
        }
        Ok(Mechanism::Io(m)) => {
            let mut parts = vec![match (m.via, m.walk) {
                (IoVia::BpfLsm, _) => "BPF LSM".to_owned(),
                (IoVia::FmodRet, IoWalk::BpfLoop) => "fmod_ret".to_owned(),
                (IoVia::FmodRet, IoWalk::Bounded) => {
                    format!("fmod_ret (paths up to {} levels)", chaos_abi::io::MAX_DEPTH_BOUNDED)
                }
            }];
            if m.ancestry == Ancestry::TaskRead {
                parts.push("cgroup read".into());
            }
            parts.join(" + ")
        }
        Ok(Mechanism::Conn(_)) => "cgroup sock_addr".to_owned(),
        Ok(Mechanism::Reset(_)) => "inet_diag SOCK_DESTROY".to_owned(),
        Ok(Mechanism::Pause(_)) => "cgroup freezer".to_owned(),
        Ok(Mechanism::Cpu(_)) => "cgroup cpu.max".to_owned(),
        Ok(Mechanism::Kill(_)) => "cgroup signals".to_owned(),
        Ok(Mechanism::Memory(_)) => "cgroup memory.high".to_owned(),
        Ok(Mechanism::Block(_)) => "cgroup io.max".to_owned(),
        Ok(Mechanism::Dns(d)) => {
            let udp = match d.egress {
                EgressMode::Tcx => "TCX",
                EgressMode::Netlink => "netlink tc",
            };
            if d.tcp { format!("{udp} + sk_msg (TCP)") } else { format!("{udp} (UDP only: no sk_msg)") }
        }
        // Refused with its usual errno only: EPERM still works.
        Err(_)
            if matches!(demand(kind), Demand::Conn(_))
                && plan_demand(
                    kind,
                    Demand::Conn(ConnDemand { sets_errno: false, ..ConnDemand::ALL }),
                    caps,
                    &prefs,
                )
                .is_ok() =>
        {
            format!("cgroup sock_addr (EPERM only: no {})", Capability::SockAddrRetval)
        }
        Ok(Mechanism::Clock(c)) => {
            let mut parts = vec![match c.syscalls {
                SyscallHook::Fexit => "fexit",
                SyscallHook::Tracepoint => "tracepoints",
            }];
            if c.time_fmod_ret {
                parts.push("fmod_ret time(2)");
            }
            if c.libc_uprobes {
                parts.push("uprobes");
            }
            if c.ancestry == Ancestry::TaskRead {
                parts.push("cgroup read");
            }
            parts.join(" + ")
        }
        Err(_) => {
            // The capabilities this kernel lacks, each of which alone would
            // let the planner take the fault (io-error's kprobe override
            // would not: that mechanism is not implemented).
            let would: Vec<String> = demand(kind)
                .consults()
                .iter()
                .filter(|c| !caps.has(**c))
                .filter(|c| {
                    let mut with = caps.clone();
                    with.capabilities
                        .iter_mut()
                        .filter(|f| f.capability == **c)
                        .for_each(|f| f.available = true);
                    planned(&with, kind, &prefs).is_ok()
                })
                .map(|c| c.to_string())
                .collect();
            if !would.is_empty() {
                return format!("refused: no {}", would.join(" or "));
            }
            // Else all of the missing ones together (the receive side of
            // the net family needs both TCX and the ifb).
            let missing: Vec<Capability> =
                demand(kind).consults().iter().copied().filter(|c| !caps.has(*c)).collect();
            let mut with = caps.clone();
            with.capabilities
                .iter_mut()
                .filter(|f| missing.contains(&f.capability))
                .for_each(|f| f.available = true);
            assert!(
                planned(&with, kind, &prefs).is_ok(),
                "{kind} on {}: refused, and not even every missing capability would do",
                caps.kernel
            );
            let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
            format!("refused: no {}", names.join(" and "))
        }
    }
}

/// Findings that record what the planner asked for.
struct Asked<'a> {
    set: &'a CapabilitySet,
    asked: std::cell::RefCell<Vec<Capability>>,
}

impl Findings for Asked<'_> {
    fn get(&self, capability: Capability) -> Option<&Finding> {
        self.asked.borrow_mut().push(capability);
        self.set.get(capability)
    }

    fn kernel(&self) -> &str {
        self.set.kernel()
    }
}

/// An attack probes what its planner reads (`Capabilities`), so the
/// planner reads a fallback's capability only when the first choice is
/// missing: io-error where the BPF LSM works never loads the fmod_ret probe
/// (a second or more of verifier time under emulation), net-loss with TCX
/// never the netlink one, clock-skew with fexit never the tracepoint one.
#[test]
fn fallbacks_are_read_only_when_the_first_choice_is_missing() {
    let first = set(DEBIAN_6_12);
    let cases = [
        ("io-error", Capability::FmodRet),
        ("io-error", Capability::KprobeOverride),
        ("net-loss", Capability::TcNetlink),
        ("clock-skew", Capability::Tracepoint),
    ];
    for (kind, fallback) in cases {
        let asked = Asked { set: &first, asked: Default::default() };
        plan_demand(kind, demand(kind), &asked, &Preferences::default()).expect("planned on 6.12");
        assert!(!asked.asked.borrow().contains(&fallback), "{kind} read {fallback} on 6.12");
    }
    // Where the first choice is missing, the fallback is read (and taken).
    let ubuntu = distro("Ubuntu 24.04");
    let asked = Asked { set: &ubuntu, asked: Default::default() };
    let m = plan_demand("io-error", demand("io-error"), &asked, &Preferences::default()).expect("planned");
    assert!(matches!(m, Mechanism::Io(IoMechanism { via: IoVia::FmodRet, .. })), "{m:?}");
    assert!(asked.asked.borrow().contains(&Capability::FmodRet));
}

/// net-refuse: any errno from 6.1 on (bpf_set_retval), EPERM alone on
/// 5.10, where another errno is refused with that reason; its links are
/// fds, and the kernel-side deadline covers every rule.
#[test]
fn net_refuse_errno_follows_the_kernel() {
    let prefs = Preferences::default();
    let any = Demand::Conn(ConnDemand::ALL);
    let eperm = Demand::Conn(ConnDemand { sets_errno: false, sendmsg: false, ..ConnDemand::ALL });
    for (name, json) in [("debian-6.1", DEBIAN_6_1), ("debian-7.2", DEBIAN_7_2), ("host-6.18", HOST_6_18)] {
        let m = plan_demand("net-refuse", any, &set(json), &prefs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            m,
            Mechanism::Conn(ConnMechanism {
                outgoing: true,
                errno: ConnErrno::SetRetval,
                sendmsg: true,
                incoming: true
            }),
            "{name}"
        );
        assert_eq!(layers(&m), [ControllerStop, KernelDeadline, LinksDieWithProcess], "{name}");
    }
    let old = set(DEBIAN_5_10);
    let e = plan_demand("net-refuse", any, &old, &prefs).unwrap_err().to_string();
    assert!(e.contains("EPERM only") && e.contains("--errno EPERM"), "{e}");
    assert_eq!(
        plan_demand("net-refuse", eperm, &old, &prefs).unwrap(),
        Mechanism::Conn(ConnMechanism {
            outgoing: true,
            errno: ConnErrno::Eperm,
            sendmsg: false,
            incoming: true
        })
    );
    // Incoming only: no cgroup programs, so no errno to give, on 5.10 too.
    let incoming =
        Demand::Conn(ConnDemand { outgoing: false, sets_errno: false, sendmsg: false, incoming: true });
    assert_eq!(
        plan_demand("net-refuse", incoming, &old, &prefs).unwrap(),
        Mechanism::Conn(ConnMechanism {
            outgoing: false,
            errno: ConnErrno::Eperm,
            sendmsg: false,
            incoming: true
        })
    );
}

/// dns-error: the egress classifier, as TCX where the kernel has it (with
/// the links dying with chaos), else as a netlink filter (recorded for
/// `recover`); the kernel-side deadline either way. Queries over TCP
/// where sk_msg is there, never a refusal where it is not.
#[test]
fn dns_error_is_a_tc_egress_classifier() {
    for (name, json) in RECORDED.into_iter().chain(DISTROS) {
        let caps = set(json);
        let m = ok(&caps, "dns-error");
        let tcx = caps.has(Capability::Tcx);
        let egress = if tcx { EgressMode::Tcx } else { EgressMode::Netlink };
        let tcp = caps.has(Capability::SkMsg);
        assert_eq!(m, Mechanism::Dns(dns::DnsMechanism { egress, tcp }), "{name}");
        let mut want = vec![ControllerStop, KernelDeadline];
        if tcx || tcp {
            // The TCX link, the sock_ops link, or both.
            want.push(LinksDieWithProcess);
        }
        if !tcx {
            want.push(RecoverRecord);
        }
        assert_eq!(layers(&m), want, "{name}");
    }
}

/// net-reset: inet_diag on every recorded kernel; no kernel-side deadline
/// (no rule in the kernel) but the in-process layer; refused with the
/// probe's reason where SOCK_DESTROY is missing.
#[test]
fn net_reset_is_inet_diag_everywhere_and_acts_in_process() {
    let prefs = Preferences::default();
    for (name, json) in RECORDED.into_iter().chain(DISTROS) {
        let m = plan_demand("net-reset", Demand::Reset, &set(json), &prefs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m, Mechanism::Reset(ResetMechanism { via: ResetVia::InetDiag }), "{name}");
        assert_eq!(layers(&m), [ControllerStop, InProcess], "{name}");
    }
    let missing = HOST_6_18.replace(
        "\"capability\": \"sock-destroy\",\n            \"detail\": \"SOCK_DESTROY of a missing socket answered ENOENT: supported\"",
        "\"capability\": \"sock-destroy\",\n            \"detail\": \"no CONFIG_INET_DIAG_DESTROY\"",
    );
    let missing = missing.replacen(
        "\"available\": true,\n            \"capability\": \"sock-destroy\"",
        "\"available\": false,\n            \"capability\": \"sock-destroy\"",
        1,
    );
    let e = plan_demand("net-reset", Demand::Reset, &set(&missing), &prefs).unwrap_err().to_string();
    assert!(e.contains("net-reset") && e.contains("no CONFIG_INET_DIAG_DESTROY"), "{e}");
}

/// Effects on what the target receives: the TCX ingress classifier and the
/// ifb where the kernel has both (6.12, 7.2, this host's 6.18 but for its
/// missing fq), refused with the reason before 6.6; loss alone on what it
/// receives stays the socket-level program everywhere.
#[test]
fn received_effects_need_tcx_and_the_ifb() {
    for json in [DEBIAN_6_12, DEBIAN_7_2] {
        let Mechanism::Net(m) = ok(&set(json), INGRESS_KIND) else { panic!("not net") };
        assert!(m.receive && !m.ingress_cgroup_skb && m.fq && m.egress.is_none(), "{m:?}");
    }
    for json in [DEBIAN_5_10, DEBIAN_6_1] {
        let e = refused(&set(json), INGRESS_KIND, &Preferences::default());
        assert!(e.contains("ifb ingress queue") && e.contains("6.4"), "{e}");
    }
    let e = refused(&set(HOST_6_18), INGRESS_KIND, &Preferences::default());
    assert!(e.contains("fq qdisc"), "{e}");
    let Mechanism::Net(m) = ok(&set(DEBIAN_5_10), "net-loss") else { panic!("not net") };
    assert!(m.ingress_cgroup_skb && !m.receive, "{m:?}");
}
