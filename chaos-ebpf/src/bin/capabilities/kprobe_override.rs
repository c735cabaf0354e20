//! A kprobe calling `bpf_override_return`: the verifier only offers the
//! helper with CONFIG_BPF_KPROBE_OVERRIDE, and attaching only succeeds on a
//! function marked ALLOW_ERROR_INJECTION (CONFIG_FUNCTION_ERROR_INJECTION).
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_override_return},
    macros::kprobe,
    programs::ProbeContext,
};

#[kprobe]
pub fn probe_kprobe_override(ctx: ProbeContext) -> u32 {
    // Never true for a task making syscalls (pid 0 is the idle task), so the
    // probe overrides nothing even if it fires; the verifier still sees the
    // helper call.
    if bpf_get_current_pid_tgid() == 0 {
        // SAFETY: ctx is the pt_regs the kernel gave this kprobe.
        unsafe { bpf_override_return(ctx.as_ptr().cast(), 0) };
    }
    0
}
