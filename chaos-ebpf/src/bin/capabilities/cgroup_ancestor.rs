//! `bpf_get_current_ancestor_cgroup_id` in a tracing program: clock-skew's
//! programs (fexit, tracepoints, raw tracepoint, uprobes) match the target
//! cgroup and its descendants with it. Every one of those program types
//! takes its helpers from bpf_tracing_func_proto (kernel/trace/bpf_trace.c),
//! which lists this helper from Linux 5.14 on; 5.10's verifier says
//! `unknown func bpf_get_current_ancestor_cgroup_id#123`.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_ancestor_cgroup_id},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_cgroup_ancestor(_ctx: RawTracePointContext) -> i32 {
    // Never true for a task making syscalls (see kprobe_override.rs): the
    // verifier judges the call, the program never makes it.
    if bpf_get_current_pid_tgid() == 0 {
        // SAFETY: a helper call with a plain integer argument.
        let _ = unsafe { bpf_get_current_ancestor_cgroup_id(1) };
    }
    0
}
