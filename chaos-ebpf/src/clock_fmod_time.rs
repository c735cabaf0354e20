//! Clock skew, `time(2)`'s return value: an fmod_ret program on
//! `__x64_sys_time`, where the kernel lets one modify a system call (the
//! system call wrappers are on the error-injection list with
//! CONFIG_FUNCTION_ERROR_INJECTION: ALLOW_ERROR_INJECTION in
//! arch/x86/include/asm/syscall_wrapper.h; kernel/bpf/verifier.c,
//! check_attach_modify_return). For a targeted caller it answers the call
//! itself — the shifted time, stored through `tloc` too, as the system call
//! does — and the system call does not run (kernel/bpf/trampoline.c,
//! invoke_bpf_mod_ret: a non-zero return skips the function). That closes
//! what fexit cannot: `time(NULL)` returns the time in a register only, so
//! `openssl x509 -checkend` in a process started during the attack read the
//! true time. For every other caller it returns 0 and the system call runs.
//!
//! When this program is attached, `clock_fexit_time` is not (it would shift
//! the stored value a second time). Like `io_fmod_open`, the entry point is
//! in an `fexit/` section for aya-obj's parser and loaded as fmod_ret by
//! chaos itself (chaos-user/src/attach/fmod_ret.rs).

use core::ffi::c_void;

use aya_ebpf::programs::FExitContext;

use crate::clock::time_answer;

// Not aya's `#[fexit]`: its entry point returns 0 whatever the program
// returns, and the value is the point here.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/__x64_sys_time")]
pub fn clock_fmod_time(ctx: *mut c_void) -> i64 {
    try_clock_fmod_time(FExitContext::new(ctx))
}

fn try_clock_fmod_time(ctx: FExitContext) -> i64 {
    // long __x64_sys_time(const struct pt_regs *regs), then the value the
    // fmod_ret programs before this one returned: never undo their answer.
    let previous: i64 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    time_answer(ctx.arg::<u64>(0))
}
