//! `clock_libc_enter` as a uprobe_multi program (Linux 6.6): attached with
//! a BPF link filtered by pid instead of a perf event per process. Per-task
//! perf events switch the scheduler's `perf_sched_events` static key, and
//! every switch patches `__schedule()` (see kernel/events/core.c,
//! `account_event()`); a BPF link patches no kernel text.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};

use crate::clock::libc_enter;

#[uprobe(multi)]
pub fn clock_libc_enter_multi(ctx: ProbeContext) -> u32 {
    // int clock_gettime(clockid_t clockid, struct timespec *tp)
    let (Some(clock), Some(tp)) = (ctx.arg::<i32>(0), ctx.arg::<u64>(1)) else { return 0 };
    libc_enter(clock, tp);
    0
}
