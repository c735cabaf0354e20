//! Reading the current task's cgroup through kernel memory, as the fault
//! programs do where `bpf_get_current_ancestor_cgroup_id` is missing
//! (chaos-ebpf/src/cgroup.rs): `bpf_get_current_task` and
//! `bpf_probe_read_kernel` (Linux 5.5) in a tracing program. The offsets
//! come from the kernel's BTF, which the loader checks. Loaded, never
//! attached.
use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_cgroup_read(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: helper without arguments; bpf_probe_read_kernel fails
    // cleanly on any address.
    let task = unsafe { bpf_get_current_task() };
    let _ = unsafe { bpf_probe_read_kernel(task as *const u64) };
    0
}
