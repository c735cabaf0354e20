//! Clock skew for programs started in the target: a raw tracepoint on
//! `sched_process_exec`, which exec_binprm() (fs/exec.c) fires after the
//! binary handler built the new program's stack and before the program
//! runs an instruction. For a targeted task, the program detaches the vDSO
//! (see `clock::detach_vdso`): its C library then reads every clock
//! through system calls, which `clock_exit` shifts — whatever the library
//! (glibc, musl, static, Go's runtime, which find the vDSO through the
//! auxiliary vector too). The vDSO stays mapped; nothing reads it.
//!
//! Untargeted execs cost one rule lookup.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use chaos_abi::clock::FLAG_DETACH_VDSO;

use crate::clock::{Exec, config, detach_vdso, lookup};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn clock_exec(ctx: RawTracePointContext) -> i32 {
    let Some(config) = config() else { return 0 };
    let Some(mut hit) = lookup(&config) else { return 0 };
    let flags = hit.rule.flags;
    let counters = hit.counters();
    counters.execs += 1;
    if flags & FLAG_DETACH_VDSO == 0 {
        return 0;
    }
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    // (include/trace/events/sched.h).
    let bprm: u64 = ctx.arg(2);
    match detach_vdso(bprm, &config.binprm) {
        Exec::Detached => counters.vdso_detached += 1,
        Exec::NoVdso => {}
        Exec::Unrecognised => counters.exec_unrecognised += 1,
        Exec::WriteFailed => counters.write_failed += 1,
    }
    0
}
