//! Clock skew for processes that were already running when the attack
//! started (they read clocks through the vDSO, which no hook sees): a
//! uprobe on the C library's `clock_gettime`, attached per process (so
//! that only the target's processes take the breakpoint). Remembers where
//! the result goes; `clock_libc_return` shifts it.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};

use crate::clock::libc_enter;

#[uprobe]
pub fn clock_libc_enter(ctx: ProbeContext) -> u32 {
    // int clock_gettime(clockid_t clockid, struct timespec *tp)
    let (Some(clock), Some(tp)) = (ctx.arg::<i32>(0), ctx.arg::<u64>(1)) else { return 0 };
    libc_enter(clock, tp);
    0
}
