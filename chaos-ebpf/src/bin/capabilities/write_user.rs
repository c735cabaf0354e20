//! `bpf_probe_write_user`: refused by the verifier under kernel lockdown
//! (security_locked_down(LOCKDOWN_BPF_WRITE_USER) in
//! kernel/trace/bpf_trace.c, bpf_tracing_func_proto).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_write_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn probe_write_user(_ctx: RawTracePointContext) -> i32 {
    // Never true for a task making syscalls; see kprobe_override.rs.
    if bpf_get_current_pid_tgid() == 0 {
        let v: u8 = 0;
        // SAFETY: never executed; present for the verifier to judge.
        let _ = unsafe { bpf_probe_write_user(core::ptr::null_mut(), &v) };
    }
    0
}
