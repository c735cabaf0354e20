//! Clock skew, system call path: the entry of `gettimeofday(2)` (the
//! `syscalls/sys_enter_gettimeofday` tracepoint). See `clock_enter_gettime`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use chaos_abi::clock::KIND_TIMEVAL;

use crate::clock::syscall_enter;

#[tracepoint]
pub fn clock_enter_gettimeofday(ctx: TracePointContext) -> u32 {
    // int __syscall_nr at 8, struct __kernel_old_timeval *tv at 16 (the
    // timezone at 24 is not a clock).
    // SAFETY: offsets inside the record.
    let (Ok(nr), Ok(tv)) = (unsafe { (ctx.read_at::<i32>(8), ctx.read_at::<u64>(16)) }) else {
        return 0;
    };
    syscall_enter(nr, KIND_TIMEVAL, 0, tv);
    0
}
