//! Clock skew, system call path, on kernels without BPF trampolines (the
//! fexit programs, `clock_fexit_*`, are preferred: they cost nothing to
//! other system calls): the entry of `clock_gettime(2)` (the
//! `syscalls/sys_enter_clock_gettime` tracepoint). Remembers where the
//! result goes when the caller is targeted and the clock is shifted;
//! `clock_exit` shifts it. Programs reach this when they have no vDSO (see
//! `clock_exec`), when the vDSO cannot serve the clock, or when they make
//! the system call themselves.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use chaos_abi::clock::KIND_TIMESPEC;

use crate::clock::syscall_enter;

#[tracepoint]
pub fn clock_enter_gettime(ctx: TracePointContext) -> u32 {
    // The tracepoint's record (events/syscalls/sys_enter_clock_gettime/
    // format): int __syscall_nr at 8, clockid_t which_clock at 16, struct
    // __kernel_timespec *tp at 24 (arguments are stored as 8-byte words).
    // SAFETY: offsets inside the record; a failed read passes the call.
    let (Ok(nr), Ok(clock), Ok(tp)) =
        (unsafe { (ctx.read_at::<i32>(8), ctx.read_at::<u64>(16), ctx.read_at::<u64>(24)) })
    else {
        return 0;
    };
    syscall_enter(nr, KIND_TIMESPEC, clock as i32, tp);
    0
}
